/**
 * On-demand renders and thumbnails end to end: the real server (child process) and, on
 * PostgreSQL, a real render worker in another process (`RENDER_WORKER=off` on the server), real
 * HocuspocusProvider clients, real local blob storage, images decoded with sharp.
 *
 * - a new version's thumbnail reaches every client of the session as `thumbnailReady` (NOTIFY
 *   from the worker process to the node holding the connections), with a URL signed per user that
 *   an `<img>` can load without a token; the version's JSON carries `thumbnailUrl`/`renderUrl`;
 * - `GET /api/versions/:id/render`: size/format parameters, strong ETag, 304 on If-None-Match,
 *   Cache-Control by privacy, access as for reading the version, bad parameters 400, signed URLs
 *   tampered/expired 403;
 * - `GET /api/sessions/:id/render`: the live canvas, for members only, a new ETag after an edit;
 * - an image layer shows only an image the canvas's owner may see (never another user's private
 *   original), and the cache key follows visibility;
 * - embedded mode (PGlite): the inline worker makes thumbnails and the clients hear of them.
 */
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import sharp from 'sharp';
import type * as Y from 'yjs';
import { addLayer } from '../shared/layers.ts';
import { parseServerMessage, type ThumbnailReadyMessage, type VersionsServerMessage } from '../shared/versions.ts';
import { UrlSigner } from '../server/signed-urls.ts';
import { LocalBlobStore } from '../storage/local.ts';
import { acknowledged, connectClient, waitFor, type Client } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { startServerProcess, tempDir, TEST_SECRET, type ServerProcess } from './support/server-process.ts';
import { startWorkerProcess } from './support/worker-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

const signer = new UrlSigner(TEST_SECRET);

function inbox(client: Client): VersionsServerMessage[] {
  const messages: VersionsServerMessage[] = [];
  client.provider.on('stateless', ({ payload }: { payload: string }) => {
    const message = parseServerMessage(payload);
    if (message) messages.push(message);
  });
  return messages;
}

/** An image row whose original (a solid 64×48 PNG of `color`) is in the blob store under `dataDir`. */
async function solidImage(db: pg.Pool, dataDir: string, userId: string, color: string, privacyLevel: 'public' | 'private' = 'private') {
  const blobs = new LocalBlobStore(join(dataDir, 'blobs'));
  const png = await sharp({ create: { width: 64, height: 48, channels: 3, background: color } }).png().toBuffer();
  const { key } = await blobs.putStream('originals/', Readable.from([png]), 'image/png');
  await blobs.close();
  const imageId = await createImage(db, userId, { privacyLevel, width: 64, height: 48 });
  await db.query('UPDATE images SET storage_path = $2 WHERE image_id = $1', [imageId, key]);
  return imageId;
}

async function get(server: ServerProcess, path: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${server.url}${path}`, { headers });
  const body = Buffer.from(await response.arrayBuffer());
  return { status: response.status, headers: response.headers, body };
}

async function centerPixel(png: Buffer): Promise<[number, number, number]> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const at = (Math.floor(info.height / 2) * info.width + Math.floor(info.width / 2)) * 3;
  return [data[at]!, data[at + 1]!, data[at + 2]!];
}

describe('renders on PostgreSQL, worker in another process', () => {
  let server: ServerProcess;
  let db: pg.Pool;
  let dataDir: string;

  beforeAll(async () => {
    const database = await createDatabase('renders');
    register(database.drop);
    dataDir = tempDir(register, 'ifc-renders-');
    server = await startServerProcess({ transport: 'node', databaseUrl: database.url, dataDir, register, env: { RENDER_WORKER: 'off' } });
    db = openPool(database.url, register);
    await startWorkerProcess({ name: 'render-worker', databaseUrl: database.url, dataDir, register, env: { THUMBNAIL_SIZES: '128,32' } });
  });

  it('sends thumbnailReady to every client of the session, with a URL signed for each user', async () => {
    const owner = await createActor(db, 'owner');
    const viewer = await createActor(db, 'viewer');
    const imageId = await solidImage(db, dataDir, owner.userId, '#3366cc');
    const sessionId = await createSession(server.url, owner.token, imageId);
    await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: viewer.userId, permissions: { canEdit: false } },
    });
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    const v = connectClient(server.wsUrl, sessionId, viewer.token, register);
    const [inA, inV] = [inbox(a), inbox(v)];
    await Promise.all([a.synced, v.synced]);

    const saved = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
    expect(saved.status).toBe(201);
    const versionId = saved.body.version.versionId as string;
    expect(saved.body.version.renderUrl).toMatch(new RegExp(`^/api/versions/${versionId}/render\\?.*sig=`));

    const ready = (box: VersionsServerMessage[]) => () =>
      box.find((m): m is ThumbnailReadyMessage => m.type === 'thumbnailReady' && m.versionId === versionId);
    const [forA, forV] = await Promise.all([
      waitFor(ready(inA), { timeout: 60_000, what: "the owner's thumbnailReady" }),
      waitFor(ready(inV), { timeout: 60_000, what: "the viewer's thumbnailReady" }),
    ]);
    expect(forA.sizes.map((s) => s.size)).toEqual([128, 32]);
    expect(new URL(forA.thumbnailUrl, server.url).searchParams.get('uid')).toBe(owner.userId);
    expect(new URL(forV.thumbnailUrl, server.url).searchParams.get('uid')).toBe(viewer.userId);

    // An <img> loads it without a token; it is the 128 px box of the 64×48 canvas as WebP.
    const thumb = await get(server, forV.thumbnailUrl);
    expect(thumb.status).toBe(200);
    expect(thumb.headers.get('content-type')).toBe('image/webp');
    expect(thumb.headers.get('cache-control')).toBe('private, max-age=3600');
    const meta = await sharp(thumb.body).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['webp', 128, 96]);
    // The worker rendered it: the route found it in the blob store (same key as thumbnail_path).
    const { rows } = await db.query<{ thumbnail_path: string }>('SELECT thumbnail_path FROM image_versions WHERE version_id = $1', [versionId]);
    expect(thumb.headers.get('etag')).toBe(`"${rows[0]!.thumbnail_path.slice('renders/'.length, -'.webp'.length)}"`);

    const detail = await api(server.url, 'GET', `/api/versions/${versionId}`, { token: owner.token });
    expect(detail.body.version.thumbnailPath).toBe(rows[0]!.thumbnail_path);
    expect(detail.body.version.thumbnailUrl).toMatch(/sig=/);
    expect((await get(server, detail.body.version.thumbnailUrl)).status).toBe(200);
  });

  it('renders a version on demand: parameters, strong ETag, 304, Cache-Control, access, bad input', async () => {
    const owner = await createActor(db, 'owner');
    const stranger = await createActor(db, 'stranger');
    const imageId = await solidImage(db, dataDir, owner.userId, '#33cc66', 'public');
    const sessionId = await createSession(server.url, owner.token, imageId);
    const saved = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
    const versionId = saved.body.version.versionId as string;
    const path = `/api/versions/${versionId}/render`;
    const auth = { authorization: `Bearer ${owner.token}` };

    const png = await get(server, `${path}?width=32&format=png`, auth);
    expect(png.status).toBe(200);
    expect(png.headers.get('content-type')).toBe('image/png');
    const etag = png.headers.get('etag')!;
    expect(etag).toMatch(/^"[0-9a-f]{64}"$/); // strong: no W/
    expect(png.headers.get('cache-control')).toBe('public, max-age=3600'); // a public image
    expect((await sharp(png.body).metadata()).width).toBe(32);
    expect(await centerPixel(png.body)).toEqual([0x33, 0xcc, 0x66]);

    const again = await get(server, `${path}?format=png&width=32`, { ...auth, 'if-none-match': etag });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    expect(again.headers.get('etag')).toBe(etag);
    const other = await get(server, `${path}?width=16&format=png`, { ...auth, 'if-none-match': etag });
    expect(other.status).toBe(200);
    expect(other.headers.get('etag')).not.toBe(etag);

    // Signed: no token; the same ETag; tampered or expired is 403.
    const signed = signer.sign('GET', path, owner.userId, { width: 32, format: 'png' });
    const viaSig = await get(server, signed);
    expect([viaSig.status, viaSig.headers.get('etag')]).toEqual([200, etag]);
    const tampered = await get(server, signed.replace('width=32', 'width=33'));
    expect([tampered.status, JSON.parse(tampered.body.toString()).error.code]).toEqual([403, 'invalid_signature']);
    const expired = await get(server, signer.sign('GET', path, owner.userId, {}, { expires: Math.floor(Date.now() / 1000) - 5 }));
    expect([expired.status, JSON.parse(expired.body.toString()).error.code]).toEqual([403, 'signature_expired']);

    // Access as for reading the version: the stranger may read a public image's versions…
    expect((await get(server, `${path}?width=32&format=png`, { authorization: `Bearer ${stranger.token}` })).status).toBe(200);
    // …but not a private one's.
    await db.query(`UPDATE images SET privacy_level = 'private' WHERE image_id = $1`, [imageId]);
    const hidden = await get(server, `${path}?width=32`, { authorization: `Bearer ${stranger.token}` });
    expect([hidden.status, JSON.parse(hidden.body.toString()).error.code]).toEqual([404, 'version_not_found']);
    const privateAnswer = await get(server, `${path}?width=32&format=png`, auth);
    expect(privateAnswer.headers.get('cache-control')).toBe('private, max-age=3600');
    expect((await get(server, `${path}?width=32`)).status).toBe(401);

    for (const query of ['width=0', 'width=abc', 'format=gif', 'dpr=9', 'color=red', 'width=32&width=64']) {
      const bad = await get(server, `${path}?${query}`, auth);
      expect([bad.status, JSON.parse(bad.body.toString()).error.code], query).toEqual([400, 'invalid_render_options']);
    }
    const missing = await get(server, `/api/versions/ver_doesnotexist0000/render`, auth);
    expect(missing.status).toBe(404);
  });

  it('renders the live canvas of a session for its members, with a new ETag after an edit', async () => {
    const owner = await createActor(db, 'owner');
    const stranger = await createActor(db, 'stranger');
    const imageId = await solidImage(db, dataDir, owner.userId, '#cc3333');
    const sessionId = await createSession(server.url, owner.token, imageId);
    const path = `/api/sessions/${sessionId}/render?width=64&format=png`;
    const auth = { authorization: `Bearer ${owner.token}` };

    const first = await get(server, path, auth);
    expect(first.status).toBe(200);
    expect(first.headers.get('cache-control')).toBe('private, no-cache');
    expect(await centerPixel(first.body)).toEqual([0xcc, 0x33, 0x33]);
    const etag = first.headers.get('etag')!;
    expect((await get(server, path, { ...auth, 'if-none-match': etag })).status).toBe(304);

    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    await a.synced;
    a.doc.getMap('layers').forEach((layer) => (layer as Y.Map<unknown>).set('visible', false));
    a.doc.getMap('meta').set('background', '#ffffff');
    await acknowledged(a);
    const edited = await get(server, path, { ...auth, 'if-none-match': etag });
    expect(edited.status).toBe(200);
    expect(edited.headers.get('etag')).not.toBe(etag);
    expect(await centerPixel(edited.body)).toEqual([0xff, 0xff, 0xff]);

    const refused = await get(server, path, { authorization: `Bearer ${stranger.token}` });
    expect([refused.status, JSON.parse(refused.body.toString()).error.code]).toEqual([403, 'forbidden']);
    const signedForStranger = await get(server, signer.sign('GET', `/api/sessions/${sessionId}/render`, stranger.userId));
    expect(signedForStranger.status).toBe(403);
  });

  it("never renders another user's private original into a canvas; the cache follows visibility", async () => {
    const owner = await createActor(db, 'owner');
    const other = await createActor(db, 'other');
    const mine = await solidImage(db, dataDir, owner.userId, '#3366cc');
    const theirs = await solidImage(db, dataDir, other.userId, '#ff0000', 'private');
    const sessionId = await createSession(server.url, owner.token, mine);
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    await a.synced;
    addLayer(a.doc, { type: 'image', name: 'not mine', data: { imageId: theirs } }, { placement: 'top' });
    await acknowledged(a);
    const path = `/api/sessions/${sessionId}/render?format=png`;
    const auth = { authorization: `Bearer ${owner.token}` };

    const hidden = await get(server, path, auth);
    expect(hidden.status).toBe(200);
    expect(await centerPixel(hidden.body)).toEqual([0x33, 0x66, 0xcc]); // their red layer is not there

    await db.query(`UPDATE images SET privacy_level = 'public' WHERE image_id = $1`, [theirs]);
    const shown = await get(server, path, { ...auth, 'if-none-match': hidden.headers.get('etag')! });
    expect(shown.status).toBe(200); // a new key: the render is not the cached one
    expect(await centerPixel(shown.body)).toEqual([0xff, 0x00, 0x00]);
  });
});

describe('renders in embedded mode (PGlite, inline worker)', () => {
  it('makes the thumbnail of a new version and tells the clients', async () => {
    const dataDir = tempDir(register, 'ifc-renders-embedded-');
    const server = await startServerProcess({ transport: 'node', dataDir, register });
    const db = openPool(server.databaseUrl, register);
    const owner = await createActor(db, 'owner');
    const imageId = await solidImage(db, dataDir, owner.userId, '#123456');
    const sessionId = await createSession(server.url, owner.token, imageId);
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    const messages = inbox(a);
    await a.synced;
    const saved = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
    const versionId = saved.body.version.versionId as string;
    const ready = await waitFor(
      () => messages.find((m): m is ThumbnailReadyMessage => m.type === 'thumbnailReady' && m.versionId === versionId),
      { timeout: 60_000, what: 'thumbnailReady from the inline worker' },
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${server.output().slice(-4000)}`);
    });
    const thumb = await get(server, ready.thumbnailUrl);
    expect(thumb.status).toBe(200);
    expect((await sharp(thumb.body).metadata()).width).toBe(256);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/imageflow_render_jobs_total\{outcome="done",node="[^"]+"\} 1/);
    expect(metrics).toMatch(/imageflow_render_queue_waiting\{node="[^"]+"\} 0/);
  }, 180_000);
});
