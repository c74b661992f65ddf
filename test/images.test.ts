/**
 * Image ingest and files end to end: the real server (child process, node transport, PostgreSQL),
 * real files made with sharp (JPEG with EXIF orientation and GPS, PNG with alpha, WebP, AVIF,
 * GIF, TIFF; a HEIC coded with HEVC, made with libheif's heif-enc) and hostile ones (pixel bomb,
 * truncated JPEG and AVIF, SVG with an external href, text named
 * .png, a zip, an animated WebP, too many bytes); the direct upload path on the local store and
 * on S3 (a real s3rver); `/file` resizing, ETag/304, Cache-Control, signed URLs and access.
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { threadCpu } from '../bench/lib/procfs.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, openPool } from './support/fixtures.ts';
import { alphaPng, hevcHeic, photoJpeg, pngBomb, solid, svgWithExternalHref, zipFile } from './support/images.ts';
import { hevcDecodes } from '../media/sharp.ts';
import { startS3, type S3Server } from './support/s3.ts';
import { startServerProcess, tempDir, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

const MAX_BODY = 3 * 1024 * 1024;

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read whatever JSON came back
type Json = any;

async function upload(server: ServerProcess, token: string, bytes: Uint8Array | ReadableStream<Uint8Array>, query = '') {
  const res = await fetch(`${server.url}/api/images${query}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
    body: bytes,
    ...(bytes instanceof ReadableStream ? { duplex: 'half' } : {}),
  } as RequestInit);
  return { status: res.status, body: (await res.json()) as Json };
}

async function file(server: ServerProcess, path: string, init: RequestInit & { token?: string } = {}) {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  const res = await fetch(`${server.url}${path}`, { ...init, headers });
  return { res, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** A labelled counter's value from /metrics (0 when the series does not exist yet). */
async function readMetric(url: string, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && wanted.every((w) => l.includes(w)));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

function walk(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true, recursive: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

describe('image ingest on the local blob store', () => {
  let server: ServerProcess;
  let db: pg.Pool;
  let owner: { userId: string; token: string };
  let other: { userId: string; token: string };
  const blobs = () => walk(join(server.dataDir, 'blobs', 'data'));
  const imageCount = async () => Number((await db.query('SELECT count(*) FROM images')).rows[0].count);

  beforeAll(async () => {
    const database = await createDatabase('img');
    register(database.drop);
    server = await startServerProcess({
      transport: 'node',
      databaseUrl: database.url,
      register,
      env: { IMAGE_MAX_BODY_BYTES: String(MAX_BODY), IMAGE_MAX_PIXELS: String(40_000_000) },
    });
    db = openPool(database.url, register);
    owner = await createActor(db, 'owner');
    other = await createActor(db, 'other');
  });

  it('ingests a JPEG with EXIF orientation and GPS: oriented size, EXIF, palette, thumbnails, activity; GPS only for the owner', async () => {
    const jpeg = await photoJpeg(600, 400, { orientation: 6, gps: true });
    const { status, body } = await upload(server, owner.token, jpeg, '?title=Harbour&filename=IMG_0001.JPG&privacyLevel=public');
    expect(status, JSON.stringify(body)).toBe(201);
    const image = body.image;
    expect(image).toMatchObject({
      title: 'Harbour',
      filename: 'IMG_0001.JPG',
      mimeType: 'image/jpeg',
      fileSize: jpeg.length,
      width: 400, // orientation 6: the stored 600×400 is shown 400×600
      height: 600,
      privacyLevel: 'public',
      userId: owner.userId,
    });
    expect(image.storagePath).toMatch(/^originals\/[0-9a-f]{64}$/);
    expect(image.metadata).toMatchObject({ orientation: 6, format: 'jpeg', exif: { make: 'TestCam', model: 'T1' } });
    expect(image.metadata.gps.latitude).toBeCloseTo(52.52, 2);
    expect(Object.keys(image.thumbnailPaths).sort()).toEqual(['large', 'medium', 'small']);
    // Red and blue halves: both among the dominant colours.
    const colours = (image.colorPalette as Array<{ color: string; share: number }>).map((c) => c.color);
    expect(colours.length).toBeGreaterThanOrEqual(2);
    const rgb = (h: string) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)) as [number, number, number];
    expect(colours.some((c) => rgb(c)[0] > 150 && rgb(c)[2] < 80)).toBe(true);
    expect(colours.some((c) => rgb(c)[2] > 150 && rgb(c)[0] < 80)).toBe(true);

    const activity = await db.query('SELECT actor_id, activity_type, target_type FROM activities WHERE target_id = $1', [image.imageId]);
    expect(activity.rows).toEqual([{ actor_id: owner.userId, activity_type: 'image_uploaded', target_type: 'image' }]);
    const row = await db.query('SELECT storage_path, thumbnail_paths FROM images WHERE image_id = $1', [image.imageId]);
    expect(row.rows[0].storage_path).toBe(image.storagePath);

    // Another user sees the public image without its location.
    const seen = await api(server.url, 'GET', `/api/images/${image.imageId}`, { token: other.token });
    expect(seen.status).toBe(200);
    expect(seen.body.image.metadata.gps).toBeUndefined();
    expect(seen.body.image.metadata.exif.make).toBe('TestCam');

    // The thumbnails are served (signed URLs, no token), oriented, without EXIF (no GPS leaves).
    for (const [name, box] of [['small', 256], ['medium', 1024], ['large', 2048]] as const) {
      const { res, bytes } = await file(server, seen.body.image.thumbnailUrls[name]);
      expect(res.status, name).toBe(200);
      expect(res.headers.get('content-type')).toBe('image/jpeg');
      const meta = await sharp(bytes).metadata();
      expect(meta.height, name).toBe(Math.min(box, 600));
      expect(meta.width, name).toBe(Math.round((Math.min(box, 600) * 400) / 600));
      expect(meta.exif, name).toBeUndefined();
      expect(meta.orientation ?? 1, name).toBe(1);
    }
  });

  it('keeps EXIF (with GPS) on served variants only when the owner opts in', async () => {
    const jpeg = await photoJpeg(300, 200, { gps: true });
    const { status, body } = await upload(server, owner.token, jpeg, '?shareLocation=true');
    expect(status, JSON.stringify(body)).toBe(201);
    const { res, bytes } = await file(server, `${body.image.fileUrl}`);
    expect(res.status).toBe(200);
    const meta = await sharp(bytes).metadata();
    expect(meta.exif).toBeDefined();
    const exifr = (await import('exifr')).default;
    expect((await exifr.gps(bytes)).latitude).toBeCloseTo(52.52, 2);
  });

  it('ingests a PNG with alpha (kept in its variants), WebP, AVIF, the first frame of a GIF, TIFF', async () => {
    const png = await upload(server, owner.token, await alphaPng(), '?filename=logo.png');
    expect(png.status, JSON.stringify(png.body)).toBe(201);
    expect(png.body.image).toMatchObject({ mimeType: 'image/png', width: 120, height: 80, metadata: { hasAlpha: true } });
    const small = await file(server, png.body.image.thumbnailUrls.small);
    expect(small.res.headers.get('content-type')).toBe('image/webp');
    const original = await file(server, png.body.image.fileUrl);
    expect(original.res.headers.get('content-type')).toBe('image/png');
    const px = await sharp(original.bytes).raw().toBuffer({ resolveWithObject: true });
    expect(px.info.channels).toBe(4);
    expect(px.data[3]).toBe(0); // top-left transparent
    expect(px.data[(px.info.width - 1) * 4 + 3]).toBe(255); // top-right opaque

    const cases: Array<[string, Buffer, string]> = [
      ['webp', await solid(90, 60, '#336699').webp().toBuffer(), 'image/webp'],
      ['avif', await solid(64, 48, '#00aa00').avif().toBuffer(), 'image/avif'],
      ['tiff', await solid(50, 40, '#aa0000').tiff().toBuffer(), 'image/tiff'],
    ];
    const frames = [await solid(20, 20, '#ff0000').png().toBuffer(), await solid(20, 20, '#0000ff').png().toBuffer()];
    cases.push(['gif', await sharp(frames, { join: { animated: true } }).gif().toBuffer(), 'image/gif']);
    for (const [name, bytes, mime] of cases) {
      const res = await upload(server, owner.token, bytes, `?filename=x.${name}`);
      expect(res.status, `${name}: ${JSON.stringify(res.body)}`).toBe(201);
      expect(res.body.image.mimeType, name).toBe(mime);
      expect(res.body.image.width, name).toBeGreaterThan(0);
      const thumb = await file(server, res.body.image.thumbnailUrls.small);
      expect(thumb.res.status, name).toBe(200);
    }
  });

  it('decodes off the event loop: while 12 MP JPEGs are ingested the main thread does a small share of the work', async () => {
    // CPU time per thread (/proc), not wall-clock stalls, which load on a shared machine stretches.
    const twelve = await photoJpeg(4000, 3000, { quality: 90 });
    const pid = server.child.pid!;
    await upload(server, owner.token, await photoJpeg(600, 400)); // warm-up: modules loaded, JIT
    const before = threadCpu(pid);
    const results = await Promise.all([0, 1, 2].map(() => upload(server, owner.token, twelve)));
    const after = threadCpu(pid);
    for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(201);
    const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
    const total = [...after.keys()].reduce((sum, name) => sum + delta(name), 0);
    const main = delta('main');
    // Measured here: about a quarter (receiving, hashing, sniffing, EXIF, SQL); decoding or a
    // per-pixel loop in JavaScript on the loop would put most of the time there.
    expect(total).toBeGreaterThan(0.2);
    expect(main / total, `main ${main.toFixed(2)} s of ${total.toFixed(2)} s`).toBeLessThan(0.4);
  });

  it('takes the type from the bytes, not the name', async () => {
    const res = await upload(server, owner.token, await solid(30, 30, '#123456').png().toBuffer(), '?filename=photo.jpg');
    expect(res.status).toBe(201);
    expect(res.body.image).toMatchObject({ mimeType: 'image/png', filename: 'photo.jpg', title: 'photo' });
  });

  it('refuses hostile and broken files with a clear error, storing nothing', async () => {
    const blobsBefore = blobs().length;
    const imagesBefore = await imageCount();
    const noise = await sharp({ create: { width: 400, height: 300, channels: 3, background: '#888', noise: { type: 'gaussian', mean: 0, sigma: 40 } } }).jpeg().toBuffer();
    const noiseAvif = await sharp({ create: { width: 400, height: 300, channels: 3, background: '#888', noise: { type: 'gaussian', mean: 0, sigma: 40 } } }).avif().toBuffer();
    const frames = [await solid(20, 20, '#ff0000').png().toBuffer(), await solid(20, 20, '#0000ff').png().toBuffer()];
    const cases: Array<[string, Buffer, number, string, RegExp?]> = [
      ['pixel bomb (30000×30000 PNG header)', pngBomb(), 413, 'image_too_many_pixels', /30000×30000/],
      ['truncated JPEG', noise.subarray(0, Math.floor(noise.length * 0.6)), 422, 'image_corrupt'],
      // libvips's HEIF loader names the file it read in its message: the server's spool path.
      ['truncated AVIF', noiseAvif.subarray(0, Math.floor(noiseAvif.length * 0.6)), 422, 'image_corrupt', /bad seek/],
      ['SVG with an external href', svgWithExternalHref, 415, 'image_type_not_accepted', /external/],
      ['text named .png', Buffer.from('just some text, honestly\n'.repeat(20)), 415, 'not_an_image'],
      ['a zip', zipFile(), 415, 'not_an_image', /zip/],
      ['an animated WebP', await sharp(frames, { join: { animated: true } }).webp().toBuffer(), 422, 'image_multiframe'],
      ['empty body', Buffer.alloc(0), 415, 'not_an_image'],
      ['JPEG header then garbage', Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(2000, 0x41)]), 422, 'image_corrupt'],
    ];
    for (const [name, bytes, status, code, message] of cases) {
      const res = await upload(server, owner.token, bytes, `?filename=${encodeURIComponent(name)}.png`);
      expect(res.status, `${name}: ${JSON.stringify(res.body)}`).toBe(status);
      expect(res.body.error.code, name).toBe(code);
      if (message) expect(res.body.error.message, name).toMatch(message);
      expect(res.body.error.message, `${name}: no server path in the message`).not.toContain(server.dataDir);
    }
    expect(blobs().length).toBe(blobsBefore);
    expect(await imageCount()).toBe(imagesBefore);
    expect(walk(join(server.dataDir, 'spool'))).toEqual([]);
    expect(await readMetric(server.url, 'imageflow_images_ingested_total', { result: 'image_too_many_pixels' })).toBeGreaterThanOrEqual(1);
  });

  it('a HEIC coded with HEVC (as phones write it): refused 415 naming HEVC where libvips cannot decode it, storing nothing; accepted where it can', async () => {
    const blobsBefore = blobs().length;
    const imagesBefore = await imageCount();
    const res = await upload(server, owner.token, hevcHeic(), '?filename=IMG_0001.HEIC');
    if (await hevcDecodes()) {
      // A libvips built with an HEVC decoder (libde265): an ordinary image.
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body.image).toMatchObject({ mimeType: 'image/heic', width: 64, height: 48 });
      return;
    }
    expect(res.status, JSON.stringify(res.body)).toBe(415);
    expect(res.body.error.code).toBe('image_type_not_accepted');
    expect(res.body.error.message).toMatch(/HEVC/);
    expect(blobs().length).toBe(blobsBefore);
    expect(await imageCount()).toBe(imagesBefore);
    expect(walk(join(server.dataDir, 'spool'))).toEqual([]);
  });

  it('refuses a body over IMAGE_MAX_BODY_BYTES, announced or streamed without a length, storing nothing', async () => {
    const blobsBefore = blobs().length;
    const big = Buffer.alloc(MAX_BODY + 1, 1);
    const announced = await upload(server, owner.token, big);
    expect(announced.status).toBe(413);
    expect(announced.body.error.code).toBe('image_too_large');
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent > MAX_BODY + 65_536) return controller.close();
        sent += 65_536;
        controller.enqueue(new Uint8Array(65_536));
      },
    });
    const streamed = await upload(server, owner.token, stream);
    expect(streamed.status).toBe(413);
    expect(streamed.body.error.code).toBe('image_too_large');
    expect(blobs().length).toBe(blobsBefore);
    expect(walk(join(server.dataDir, 'spool'))).toEqual([]);
    // The server still serves.
    expect((await api(server.url, 'GET', '/healthz')).status).toBe(200);
  });

  it('direct upload on the local store: announce, PUT to the signed URL, complete', async () => {
    const jpeg = await photoJpeg(800, 600);
    const start = await api(server.url, 'POST', '/api/uploads', { token: owner.token, body: { filename: 'big.jpg', mimeType: 'image/jpeg', fileSize: jpeg.length } });
    expect(start.status, JSON.stringify(start.body)).toBe(201);
    expect(start.body).toMatchObject({ uploadId: expect.stringMatching(/^upl_/), method: 'PUT' });
    const { uploadId, uploadUrl, headers } = start.body;

    const early = await api(server.url, 'POST', `/api/uploads/${uploadId}/complete`, { token: owner.token, body: {} });
    expect(early.status).toBe(409);
    expect(early.body.error.code).toBe('upload_incomplete');

    const tampered = new URL(uploadUrl);
    tampered.searchParams.set('expires', String(Number(tampered.searchParams.get('expires')) + 60));
    const forged = await fetch(tampered, { method: 'PUT', headers, body: new Uint8Array(jpeg) });
    expect(forged.status).toBe(403);
    expect(((await forged.json()) as Json).error.code).toBe('invalid_signature');

    const short = await fetch(uploadUrl, { method: 'PUT', headers, body: new Uint8Array(jpeg.subarray(0, 100)) });
    expect(short.status).toBe(422);
    expect(((await short.json()) as Json).error.code).toBe('upload_size_mismatch');

    const put = await fetch(uploadUrl, { method: 'PUT', headers, body: new Uint8Array(jpeg) });
    expect(put.status, await put.clone().text()).toBe(200);

    const stranger = await api(server.url, 'POST', `/api/uploads/${uploadId}/complete`, { token: other.token, body: {} });
    expect(stranger.status).toBe(404);
    expect(stranger.body.error.code).toBe('upload_not_found');

    const done = await api(server.url, 'POST', `/api/uploads/${uploadId}/complete`, { token: owner.token, body: { title: 'Direct' } });
    expect(done.status, JSON.stringify(done.body)).toBe(201);
    expect(done.body.image).toMatchObject({ title: 'Direct', filename: 'big.jpg', width: 800, height: 600, fileSize: jpeg.length });
    const again = await api(server.url, 'POST', `/api/uploads/${uploadId}/complete`, { token: owner.token, body: {} });
    expect(again.status).toBe(200);
    expect(again.body.image.imageId).toBe(done.body.image.imageId);
    // The upload's temporary object is gone; its row names the image.
    const row = await db.query('SELECT status, image_id, storage_key FROM image_uploads WHERE upload_id = $1', [uploadId]);
    expect(row.rows[0]).toMatchObject({ status: 'completed', image_id: done.body.image.imageId });
    expect(existsSync(join(server.dataDir, 'blobs', 'data', row.rows[0].storage_key))).toBe(false);
  });

  it('direct upload: an expired upload is refused, and swept (bytes and row) at the owner\'s next announcement', async () => {
    const png = await solid(40, 40, '#abcdef').png().toBuffer();
    const start = await api(server.url, 'POST', '/api/uploads', { token: owner.token, body: { filename: 'late.png', mimeType: 'image/png', fileSize: png.length } });
    expect((await fetch(start.body.uploadUrl, { method: 'PUT', headers: start.body.headers, body: new Uint8Array(png) })).status).toBe(200);
    const { rows } = await db.query("UPDATE image_uploads SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour' WHERE upload_id = $1 RETURNING storage_key", [start.body.uploadId]);
    const stored = join(server.dataDir, 'blobs', 'data', rows[0].storage_key);
    expect(existsSync(stored)).toBe(true);
    const late = await api(server.url, 'POST', `/api/uploads/${start.body.uploadId}/complete`, { token: owner.token, body: {} });
    expect(late.status).toBe(410);
    expect(late.body.error.code).toBe('upload_expired');
    const next = await api(server.url, 'POST', '/api/uploads', { token: owner.token, body: { filename: 'next.png', mimeType: 'image/png', fileSize: 10 } });
    expect(next.status).toBe(201);
    expect(existsSync(stored)).toBe(false);
    expect((await db.query('SELECT 1 FROM image_uploads WHERE upload_id = $1', [start.body.uploadId])).rowCount).toBe(0);
  });

  it('direct upload refusals: too large or not accepted when announced; hostile bytes at completion (nothing kept)', async () => {
    const tooBig = await api(server.url, 'POST', '/api/uploads', { token: owner.token, body: { filename: 'x.jpg', mimeType: 'image/jpeg', fileSize: 10 * 1024 ** 3 } });
    expect(tooBig.status).toBe(413);
    expect(tooBig.body.error.code).toBe('image_too_large');
    const svg = await api(server.url, 'POST', '/api/uploads', { token: owner.token, body: { filename: 'x.svg', mimeType: 'image/svg+xml', fileSize: 100 } });
    expect(svg.status).toBe(415);
    expect(svg.body.error.code).toBe('image_type_not_accepted');

    // Announced as JPEG, the bytes are a zip: refused at completion, the bytes deleted.
    const zip = zipFile();
    const start = await api(server.url, 'POST', '/api/uploads', { token: owner.token, body: { filename: 'a.jpg', mimeType: 'image/jpeg', fileSize: zip.length } });
    expect((await fetch(start.body.uploadUrl, { method: 'PUT', headers: start.body.headers, body: new Uint8Array(zip) })).status).toBe(200);
    const done = await api(server.url, 'POST', `/api/uploads/${start.body.uploadId}/complete`, { token: owner.token, body: {} });
    expect(done.status).toBe(415);
    expect(done.body.error.code).toBe('not_an_image');
    const row = await db.query('SELECT status, storage_key FROM image_uploads WHERE upload_id = $1', [start.body.uploadId]);
    expect(row.rows[0].status).toBe('failed');
    expect(existsSync(join(server.dataDir, 'blobs', 'data', row.rows[0].storage_key))).toBe(false);
  });

  it('/file resizes by URL parameters, with a strong ETag, 304, Cache-Control by privacy, and access as for the image', async () => {
    const jpeg = await photoJpeg(2040, 1356, { quality: 90 });
    const pub = (await upload(server, owner.token, jpeg, '?privacyLevel=public')).body.image;
    const priv = (await upload(server, owner.token, await photoJpeg(400, 300), '?privacyLevel=private')).body.image;

    const path = `/api/images/${pub.imageId}/file?width=512&height=512&fit=inside&format=jpeg&quality=80`;
    const first = await file(server, path, { token: other.token });
    expect(first.res.status).toBe(200);
    expect(first.res.headers.get('content-type')).toBe('image/jpeg');
    expect(first.res.headers.get('cache-control')).toMatch(/^public/);
    const etag = first.res.headers.get('etag')!;
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/); // strong: no W/
    expect(await sharp(first.bytes).metadata()).toMatchObject({ width: 512, height: 340, format: 'jpeg' });

    const again = await file(server, path, { token: other.token, headers: { 'if-none-match': etag } });
    expect(again.res.status).toBe(304);
    expect(again.res.headers.get('etag')).toBe(etag);
    expect(again.bytes.length).toBe(0);
    // The same bytes again from the cached variant (poll: it is stored after the first answer).
    const deadline = Date.now() + 20_000;
    let cached = 0;
    while (cached < 1 && Date.now() < deadline) {
      const r = await file(server, path, { token: other.token });
      expect(r.bytes.equals(first.bytes)).toBe(true);
      expect(r.res.headers.get('etag')).toBe(etag);
      cached = await readMetric(server.url, 'imageflow_image_file_requests_total', { outcome: 'cached' });
    }
    expect(cached).toBeGreaterThanOrEqual(1);

    const dpr = await file(server, `/api/images/${pub.imageId}/file?width=256&dpr=2&format=webp`, { token: other.token });
    expect(dpr.res.headers.get('content-type')).toBe('image/webp');
    expect((await sharp(dpr.bytes).metadata()).width).toBe(512);
    const auto = await file(server, `/api/images/${pub.imageId}/file?width=64&format=auto`, { token: other.token, headers: { accept: 'image/avif,image/webp,*/*' } });
    expect(auto.res.headers.get('content-type')).toBe('image/avif');
    expect(auto.res.headers.get('vary')).toMatch(/Accept/);
    expect((await sharp(auto.bytes).metadata()).format).toBe('heif');
    const plain = await file(server, `/api/images/${pub.imageId}/file?width=64&format=auto`, { token: other.token, headers: { accept: 'image/*' } });
    expect(plain.res.headers.get('content-type')).toBe('image/jpeg');
    expect(plain.res.headers.get('etag')).not.toBe(auto.res.headers.get('etag'));
    const cover = await file(server, `/api/images/${pub.imageId}/file?width=100&height=100&fit=cover&format=png`, { token: owner.token });
    expect(await sharp(cover.bytes).metadata()).toMatchObject({ width: 100, height: 100, format: 'png' });
    expect(cover.res.headers.get('etag')).not.toBe(etag);

    for (const bad of ['width=0', 'width=99999', 'fit=squash', 'format=bmp', 'quality=101', 'dpr=9', 'width=4000&dpr=2', 'width=abc']) {
      const r = await api(server.url, 'GET', `/api/images/${pub.imageId}/file?${bad}`, { token: owner.token });
      expect(r.status, bad).toBe(400);
      expect(r.body.error.code, bad).toBe('invalid_image_parameters');
    }

    // Private: the owner gets it with a private Cache-Control; anyone else 404 (existence does not leak).
    const own = await file(server, `/api/images/${priv.imageId}/file?width=64`, { token: owner.token });
    expect(own.res.status).toBe(200);
    expect(own.res.headers.get('cache-control')).toMatch(/^private/);
    const denied = await api(server.url, 'GET', `/api/images/${priv.imageId}/file?width=64`, { token: other.token });
    expect(denied.status).toBe(404);
    expect(denied.body.error.code).toBe('image_not_found');
    expect((await api(server.url, 'GET', `/api/images/${priv.imageId}`, { token: other.token })).status).toBe(404);
    expect((await api(server.url, 'GET', `/api/images/${priv.imageId}/file`)).status).toBe(401);

    // A row without a stored file (made without ingest): a clear 404, not a 500.
    const bare = await createImage(db, owner.userId, { privacyLevel: 'public' });
    const missing = await api(server.url, 'GET', `/api/images/${bare}/file?width=64`, { token: owner.token });
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('image_file_missing');

    // Signed URLs: the owner's works without a token; tampered or someone else's params are refused.
    const signed = priv.thumbnailUrls.small as string;
    expect((await file(server, signed)).res.status).toBe(200);
    const tampered = new URL(signed, server.url);
    tampered.searchParams.set('width', '2000');
    const forged = await file(server, `${tampered.pathname}${tampered.search}`);
    expect(forged.res.status).toBe(403);
    const expired = new URL(signed, server.url);
    expired.searchParams.set('expires', '1000');
    expect((await file(server, `${expired.pathname}${expired.search}`)).res.status).toBe(403);
  });
});

describe('sharp hardening (media/sharp.ts)', () => {
  it('blocks every loader but the accepted formats (and the renderer\'s SVG from a buffer)', async () => {
    const { hardenSharp } = await import('../media/sharp.ts');
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>');
    const dir = tempDir(register, 'harden-');
    const svgFile = join(dir, 'x.svg');
    writeFileSync(svgFile, svg);
    hardenSharp({ extraLoaders: [] });
    await expect(sharp(svg).metadata()).rejects.toThrow(/unsupported image format/);
    await expect(sharp(svgFile).metadata()).rejects.toThrow(/unsupported image format/);
    hardenSharp();
    expect((await sharp(svg).metadata()).format).toBe('svg');
    await expect(sharp(svgFile).metadata()).rejects.toThrow(/unsupported image format/);
    for (const bytes of [await solid(8, 8, '#f00').jpeg().toBuffer(), await solid(8, 8, '#f00').png().toBuffer(), await solid(8, 8, '#f00').webp().toBuffer(), await solid(8, 8, '#f00').tiff().toBuffer()]) {
      expect((await sharp(bytes).metadata()).width).toBe(8);
    }
  });
});

describe('image ingest on S3 (a real s3rver)', () => {
  let server: ServerProcess;
  let s3: S3Server;
  let owner: { userId: string; token: string };

  beforeAll(async () => {
    s3 = await startS3(register, 'ingest-test');
    const database = await createDatabase('imgs3');
    register(database.drop);
    server = await startServerProcess({ transport: 'node', databaseUrl: database.url, register, env: { ...s3.env() } });
    const db = openPool(database.url, register);
    owner = await createActor(db, 'owner');
  });

  it('stores originals and variants in the bucket, never under DATA_DIR, and serves them', async () => {
    const res = await upload(server, owner.token, await photoJpeg(640, 480, { orientation: 3 }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const image = res.body.image;
    expect(walk(join(server.dataDir, 'blobs'))).toEqual([]);
    const objects = walk(s3.directory).map((p) => p.slice(s3.directory.length));
    expect(objects.some((p) => p.includes(image.storagePath))).toBe(true);
    const { res: fileRes, bytes } = await file(server, `/api/images/${image.imageId}/file?width=320`, { token: owner.token });
    expect(fileRes.status).toBe(200);
    expect((await sharp(bytes).metadata()).width).toBe(320);
  });

  it('direct upload: a presigned PUT straight to the bucket, then complete', async () => {
    const png = await alphaPng(200, 100);
    const start = await api(server.url, 'POST', '/api/uploads', { token: owner.token, body: { filename: 'direct.png', mimeType: 'image/png', fileSize: png.length } });
    expect(start.status, JSON.stringify(start.body)).toBe(201);
    expect(start.body.uploadUrl.startsWith(s3.endpoint)).toBe(true);
    const put = await fetch(start.body.uploadUrl, { method: start.body.method, headers: start.body.headers, body: new Uint8Array(png) });
    expect(put.status).toBe(200);
    const done = await api(server.url, 'POST', `/api/uploads/${start.body.uploadId}/complete`, { token: owner.token, body: { privacyLevel: 'public' } });
    expect(done.status, JSON.stringify(done.body)).toBe(201);
    expect(done.body.image).toMatchObject({ mimeType: 'image/png', width: 200, height: 100, privacyLevel: 'public', title: 'direct' });
  });
});
