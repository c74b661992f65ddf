/**
 * First-run demo data for the embedded mode: one user, one image and one edit session, so a new
 * user can connect a provider within a minute of `npm start`. Idempotent: reuses what exists.
 */
import type { Database } from '../persistence/db.ts';
import { getImage, insertImage } from '../persistence/repositories/images.ts';
import { getUser, insertUser } from '../persistence/repositories/users.ts';
import { listActiveSessionsOf } from '../persistence/repositories/sessions.ts';
import { createSession } from './sessions.ts';

export const DEMO_USER_ID = 'usr_demo';
export const DEMO_IMAGE_ID = 'img_demo';

export async function ensureDemo(db: Database): Promise<{ userId: string; sessionId: string; created: boolean }> {
  let created = false;
  if (!(await getUser(db, DEMO_USER_ID))) {
    await insertUser(db, { userId: DEMO_USER_ID, username: 'demo', email: 'demo@example.invalid', displayName: 'Demo User' });
    created = true;
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
  const [existing] = await listActiveSessionsOf(db, DEMO_USER_ID, DEMO_IMAGE_ID);
  if (existing) return { userId: DEMO_USER_ID, sessionId: existing.session_id, created };
  const session = await createSession(db, DEMO_USER_ID, { imageId: DEMO_IMAGE_ID, expiresInSeconds: 30 * 24 * 3600 });
  return { userId: DEMO_USER_ID, sessionId: session.session_id, created: true };
}
