/**
 * First-run demo data for the embedded mode: two users, one image and one edit session, so a new
 * user can connect a provider — and a second person — within a minute of `npm start`. Idempotent:
 * reuses what exists. The demo's own session is remembered in `DATA_DIR/demo.json`, so another
 * session on the demo image (made through the API) never replaces the one printed.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Hocuspocus } from '@hocuspocus/server';
import { join } from 'node:path';
import type { Database } from '../persistence/db.ts';
import { getImage, insertImage } from '../persistence/repositories/images.ts';
import { getParticipant } from '../persistence/repositories/participants.ts';
import { getSession } from '../persistence/repositories/sessions.ts';
import { getUser, insertUser } from '../persistence/repositories/users.ts';
import { inviteParticipant } from './participants.ts';
import { createSession } from './sessions.ts';

export const DEMO_USER_ID = 'usr_demo';
/** The second demo user: a participant of the demo session who may edit, to try collaboration. */
export const DEMO_GUEST_ID = 'usr_demo_guest';
export const DEMO_IMAGE_ID = 'img_demo';

export interface Demo {
  userId: string;
  guestId: string;
  sessionId: string;
  created: boolean;
}

async function rememberedSession(file: string): Promise<string | undefined> {
  try {
    return (JSON.parse(await readFile(file, 'utf8')) as { sessionId?: string }).sessionId;
  } catch {
    return undefined; // first run, or an unreadable file: a new demo session is made
  }
}

export async function ensureDemo(deps: { db: Database; hocuspocus: Hocuspocus }, dataDir: string): Promise<Demo> {
  const { db } = deps;
  let created = false;
  if (!(await getUser(db, DEMO_USER_ID))) {
    await insertUser(db, { userId: DEMO_USER_ID, username: 'demo', email: 'demo@example.invalid', displayName: 'Demo User' });
    created = true;
  }
  if (!(await getUser(db, DEMO_GUEST_ID))) {
    await insertUser(db, { userId: DEMO_GUEST_ID, username: 'demo-guest', email: 'demo-guest@example.invalid', displayName: 'Demo Guest' });
  }
  if (!(await getImage(db, DEMO_IMAGE_ID))) {
    await insertImage(db, {
      imageId: DEMO_IMAGE_ID,
      userId: DEMO_USER_ID,
      title: 'Demo canvas',
      filename: 'demo.png',
      mimeType: 'image/png',
      fileSize: 0,
      width: 1280,
      height: 800,
      storagePath: 'blobs/demo.png',
      privacyLevel: 'private',
    });
  }
  const file = join(dataDir, 'demo.json');
  const remembered = await rememberedSession(file);
  let session = remembered ? await getSession(db, remembered) : undefined;
  if (!session || !session.is_active || session.expires_at.getTime() <= Date.now()) {
    session = await createSession(db, DEMO_USER_ID, { imageId: DEMO_IMAGE_ID, expiresInSeconds: 30 * 24 * 3600 });
    await writeFile(file, `${JSON.stringify({ sessionId: session.session_id })}\n`);
    created = true;
  }
  if (!(await getParticipant(db, session.session_id, DEMO_GUEST_ID))) {
    await inviteParticipant(deps, session.session_id, DEMO_USER_ID, { userId: DEMO_GUEST_ID, permissions: { canEdit: true } });
  }
  return { userId: DEMO_USER_ID, guestId: DEMO_GUEST_ID, sessionId: session.session_id, created };
}
