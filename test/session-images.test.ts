/**
 * Reading an image through a session (`GET /api/images/:id/file?session=`): the page draws a
 * canvas's image layers, and a canvas may name any image its session's owner may see. A member
 * of the session (owner or participant, read-only too) may read those; nobody else, and not a
 * participant once removed; without `session` only the image's own visibility counts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createSession, openPool } from './support/fixtures.ts';
import { startServerProcess, tempDir, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

describe('images read through a session', () => {
  let server: ServerProcess;
  let owner: { userId: string; token: string };
  let member: { userId: string; token: string };
  let stranger: { userId: string; token: string };
  let imageId: string;
  let sessionId: string;

  const read = (token: string, session?: string) =>
    fetch(`${server.url}/api/images/${imageId}/file?width=16${session ? `&session=${session}` : ''}`, { headers: { authorization: `Bearer ${token}` } });

  beforeAll(async () => {
    const database = await createDatabase('simg');
    register(database.drop);
    server = await startServerProcess({ transport: 'node', databaseUrl: database.url, dataDir: tempDir(register), register });
    const db = openPool(database.url, register);
    owner = await createActor(db, 'owner');
    member = await createActor(db, 'member');
    stranger = await createActor(db, 'stranger');
    const png = await sharp({ create: { width: 32, height: 32, channels: 4, background: '#ff0000' } }).png().toBuffer();
    const res = await fetch(`${server.url}/api/images?title=private`, {
      method: 'POST',
      headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'image/png' },
      body: png,
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { image: { imageId: string; privacyLevel: string } };
    imageId = body.image.imageId;
    expect(body.image.privacyLevel).toBe('private');
    sessionId = await createSession(server.url, owner.token, imageId);
    const invited = await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: member.userId, permissions: { canEdit: false } },
    });
    expect(invited.status).toBeLessThan(300);
  });

  it("lets the session's members read its owner's private image, and nobody else", async () => {
    expect((await read(owner.token)).status).toBe(200);
    // A private image is the owner's alone…
    expect((await read(member.token)).status).toBe(404);
    // …but a member of a session of its owner reads it through that session (read-only too).
    expect((await read(member.token, sessionId)).status).toBe(200);
    // A stranger does not, with or without naming the session, nor with a made-up one.
    expect((await read(stranger.token, sessionId)).status).toBe(404);
    expect((await read(stranger.token)).status).toBe(404);
    expect((await read(member.token, 'ses_doesnotexist0000')).status).toBe(404);
    expect((await read(member.token, '../x')).status).toBe(404);
  });

  it('stops at once for a removed participant', async () => {
    const removed = await api(server.url, 'DELETE', `/api/sessions/${sessionId}/participants/${member.userId}`, { token: owner.token });
    expect(removed.status).toBeLessThan(300);
    expect((await read(member.token, sessionId)).status).toBe(404);
  });
});
