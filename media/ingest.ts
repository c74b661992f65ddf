/**
 * Image ingest (seed 001: bytes never touch PostgreSQL). An upload is spooled to a temporary file
 * while counted (over the byte limit it stops at once), then validated before anything is stored:
 *
 * 1. the type is sniffed from the bytes (file-type), never taken from the name or the header a
 *    client sent; SVG, which file-type leaves to text, is recognised and refused (it can reference
 *    external files and URLs); anything but JPEG, PNG, WebP, AVIF, HEIC/HEIF, GIF and TIFF is
 *    refused;
 * 2. the header is read (sharp `metadata()`, no decode) and checked against the pixel limit — a
 *    pixel bomb is refused before a single pixel is decoded — and for one frame (GIF: its first);
 *    a HEIC coded with HEVC is refused when this libvips cannot decode HEVC (`hevcDecodes`);
 * 3. one decode (sharp, `failOn: 'warning'`, `limitInputPixels`, a timeout) produces the
 *    orientation-corrected large variant, from which the medium and small ones and the colour
 *    palette are made; a truncated or corrupt file fails here (media/pixels.ts; the server runs
 *    it in a media thread, media/pixel-threads.ts, so its pixels never sit on the event loop's heap);
 * 4. EXIF is read with exifr into `metadata` (GPS kept for the owner; served variants carry no
 *    metadata unless the owner opted in to sharing location);
 * 5. only then are the original and the variants written to the blob store, and the images row
 *    and an `image_uploaded` activity inserted in one transaction.
 *
 * Every step runs inside the shared image queue (bounded concurrency, bounded waiting): sharp
 * does its work in libuv's thread pool, so the event loop keeps serving WebSockets meanwhile.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import exifr from 'exifr';
import { fileTypeFromFile } from 'file-type';
import sharp, { type Metadata } from 'sharp';
import { AppError } from '../shared/errors.ts';
import { newId, newImageId } from '../shared/ids.ts';
import type { Database } from '../persistence/db.ts';
import { insertActivity } from '../persistence/repositories/activities.ts';
import { insertIngestedImage, type ImageRecord } from '../persistence/repositories/images.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { ACCEPTED, hevcDecodes, isAcceptedMime, type AcceptedMime, type JobQueue } from './sharp.ts';
import { processPixels, sharpError, type PixelJob, type Processed } from './pixels.ts';
import { STANDARD_VARIANTS, standardSpec, variantKey, type StandardVariant } from './variants.ts';

export interface IngestLimits {
  maxPixels: number;
  timeoutMs: number;
}

export interface IngestDeps {
  db: Database;
  blobs: BlobStore;
  queue: JobQueue;
  limits: IngestLimits;
  /** Step 3 off the event loop (media/pixel-threads.ts); absent: in process. */
  pixels?: (job: PixelJob) => Promise<Processed>;
  /** Where uploads are spooled while validated. */
  spoolDir: string;
}

export interface IngestRequest {
  userId: string;
  title: string;
  filename: string;
  privacyLevel: 'public' | 'followers' | 'private';
  /** The owner opted in to serving EXIF location with the variants. */
  shareLocation: boolean;
}

/** A pass-through that fails with `image_too_large` once more than `max` bytes went through. */
export function byteLimit(max: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > max) return callback(new AppError('image_too_large', `The image is larger than ${max} bytes.`));
      callback(null, chunk);
    },
  });
}

export interface Spooled {
  readonly path: string;
  readonly size: number;
  /** Removes the temporary file. */
  dispose(): Promise<void>;
}

/** Streams `body` into a temporary file under `dir`, refusing more than `maxBytes`. */
export async function spool(body: Readable, dir: string, maxBytes: number): Promise<Spooled> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${randomBytes(12).toString('hex')}.upload`);
  let size = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      size += chunk.length;
      callback(null, chunk);
    },
  });
  try {
    await pipeline(body, byteLimit(maxBytes), counter, createWriteStream(path, { flags: 'wx', mode: 0o600 }));
  } catch (error) {
    await rm(path, { force: true });
    throw error;
  }
  return { path, size, dispose: () => rm(path, { force: true }) };
}

async function head(path: string, bytes: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(bytes);
    const { bytesRead } = await handle.read(buffer, 0, bytes, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** SVG is XML text, which file-type does not classify: recognise it to refuse it by name. */
function svgRefusal(start: Buffer): AppError | undefined {
  const text = start.toString('utf8').replace(/^\uFEFF/, '').trimStart();
  if (!/^(<\?xml[^>]*>\s*)?(<!--[\s\S]*?-->\s*|<!DOCTYPE[^>]*>\s*)*<svg[\s>]/i.test(text)) return undefined;
  const external = /(xlink:)?href\s*=\s*["']\s*(?!#)[^"']+/i.test(text) || /<!ENTITY/i.test(text);
  return new AppError(
    'image_type_not_accepted',
    external
      ? 'SVG is not accepted: it references external resources (href/entities), which a server must never fetch.'
      : 'SVG is not accepted: it is a document that can reference external resources, not an image.',
  );
}

/** Step 1: what the bytes are. */
export async function sniff(path: string): Promise<AcceptedMime> {
  const type = await fileTypeFromFile(path);
  if (!type) {
    throw svgRefusal(await head(path, 64 * 1024)) ?? new AppError('not_an_image');
  }
  if (isAcceptedMime(type.mime)) return type.mime;
  if (type.mime === 'application/xml' || type.mime === 'image/svg+xml') {
    throw svgRefusal(await head(path, 64 * 1024)) ?? new AppError('not_an_image', 'The bytes are an XML document, not an image.');
  }
  if (type.mime.startsWith('image/') || type.mime === 'application/xml') {
    throw new AppError('image_type_not_accepted', `${type.mime} is not accepted: JPEG, PNG, WebP, AVIF, HEIC, GIF (first frame) and TIFF are.`);
  }
  throw new AppError('not_an_image', `The bytes are not an image (they look like ${type.mime}).`);
}

export interface Inspected {
  readonly mime: AcceptedMime;
  /** Dimensions with the EXIF orientation applied. */
  readonly width: number;
  readonly height: number;
  readonly metadata: Metadata;
}

/** Step 2: the header only; pixel and frame limits before any decode. */
export async function inspect(path: string, limits: IngestLimits): Promise<Inspected> {
  const mime = await sniff(path);
  let metadata: Metadata;
  try {
    // limitInputPixels: false here — we compare ourselves, to say which limit — the decode below keeps it.
    metadata = await sharp(path, { failOn: 'warning', limitInputPixels: false }).metadata();
  } catch (error) {
    throw sharpError(error);
  }
  if (metadata.format !== ACCEPTED[mime]) {
    throw new AppError('image_corrupt', `The bytes start like ${mime} but do not parse as it.`);
  }
  if (metadata.format === 'heif' && metadata.compression === 'hevc' && !(await hevcDecodes())) {
    throw new AppError(
      'image_type_not_accepted',
      "This HEIC image is coded with HEVC, which this server's image library cannot decode (its libheif has no HEVC decoder); convert it to JPEG or AVIF. JPEG, PNG, WebP, AVIF, GIF (first frame) and TIFF are accepted.",
    );
  }
  const { width, height } = metadata.autoOrient ?? metadata;
  if (!width || !height) throw new AppError('image_corrupt', 'The image header has no dimensions.');
  if (width * height > limits.maxPixels) {
    throw new AppError('image_too_many_pixels', `The image has ${width}×${height} pixels; at most ${limits.maxPixels} are accepted.`);
  }
  // GIF: its first frame is the image. Others: one frame or page expected (animated WebP/PNG,
  // multi-page TIFF, HEIF collections and AVIF sequences are refused).
  const frames = metadata.pages ?? 1;
  if (frames > 1 && mime !== 'image/gif') {
    throw new AppError('image_multiframe', `The image has ${frames} frames or pages; one is expected.`);
  }
  return { mime, width, height, metadata };
}

/** The EXIF fields kept in `images.metadata` (exifr, from the file; GPS apart). */
async function readExif(path: string): Promise<{ exif: Record<string, unknown>; gps?: { latitude: number; longitude: number; altitude?: number } }> {
  let tags: Record<string, unknown> | undefined;
  try {
    tags = (await exifr.parse(path, { tiff: true, exif: true, gps: true, ifd1: false, interop: false, xmp: false, icc: false, iptc: false, jfif: false, ihdr: false, makerNote: false, userComment: false })) as Record<string, unknown> | undefined;
  } catch {
    tags = undefined; // EXIF is optional: a broken EXIF block does not make the image unusable
  }
  if (!tags) return { exif: {} };
  const pick = ['Make', 'Model', 'LensModel', 'Software', 'DateTimeOriginal', 'CreateDate', 'ExposureTime', 'FNumber', 'ISO', 'FocalLength', 'Flash', 'Orientation', 'ImageDescription', 'Artist', 'Copyright'];
  const exif: Record<string, unknown> = {};
  for (const name of pick) {
    const value = tags[name];
    if (value === undefined || value === null) continue;
    const key = name.charAt(0).toLowerCase() + name.slice(1);
    if (value instanceof Date) exif[key] = Number.isNaN(value.getTime()) ? undefined : value.toISOString();
    else if (typeof value === 'string') exif[key] = value.slice(0, 200);
    else if (typeof value === 'number' && Number.isFinite(value)) exif[key] = value;
  }
  const latitude = tags.latitude, longitude = tags.longitude;
  if (typeof latitude === 'number' && typeof longitude === 'number' && Number.isFinite(latitude) && Number.isFinite(longitude)) {
    const altitude = typeof tags.GPSAltitude === 'number' ? tags.GPSAltitude : undefined;
    return { exif, gps: { latitude, longitude, ...(altitude === undefined ? {} : { altitude }) } };
  }
  return { exif };
}

/** The whole ingest of a spooled file; nothing is stored unless every check passed. */
export async function ingestFile(deps: IngestDeps, file: Spooled, request: IngestRequest): Promise<ImageRecord> {
  const outcome = await deps.queue.run(async () => {
    const inspected = await inspect(file.path, deps.limits);
    const [processed, exif] = await Promise.all([
      (deps.pixels ?? processPixels)({
        path: file.path,
        mime: inspected.mime,
        hasAlpha: inspected.metadata.hasAlpha ?? false,
        limits: deps.limits,
        keepExif: request.shareLocation,
      }),
      readExif(file.path),
    ]);
    // Validated: now store. The original under its content address, then the variants (named
    // by the original's digest), at once.
    const stored = await deps.blobs.putStream('originals/', createReadStream(file.path), inspected.mime);
    const hasAlpha = inspected.metadata.hasAlpha ?? false;
    const original = { mime: inspected.mime, hasAlpha, keepExif: request.shareLocation };
    const thumbnails: Record<string, string> = {};
    await Promise.all(
      (Object.keys(STANDARD_VARIANTS) as StandardVariant[]).map(async (name) => {
        const spec = standardSpec(name, original);
        const key = variantKey(stored.sha256, spec);
        await deps.blobs.put(key, processed.variants[name], `image/${spec.format}`);
        thumbnails[name] = key;
      }),
    );
    const m = inspected.metadata;
    const metadata = {
      sha256: stored.sha256,
      format: m.format,
      hasAlpha,
      space: m.space,
      channels: m.channels,
      density: m.density,
      orientation: m.orientation ?? 1,
      exif: exif.exif,
      ...(exif.gps ? { gps: exif.gps } : {}),
      shareLocation: request.shareLocation,
    };
    const imageId = newImageId();
    return deps.db.transaction(async (tx) => {
      const image = await insertIngestedImage(tx, {
        imageId,
        userId: request.userId,
        title: request.title,
        filename: request.filename,
        mimeType: inspected.mime,
        fileSize: stored.size,
        width: inspected.width,
        height: inspected.height,
        storagePath: stored.key,
        thumbnailPaths: thumbnails,
        privacyLevel: request.privacyLevel,
        metadata,
        colorPalette: processed.palette,
      });
      await insertActivity(tx, {
        activityId: newId('activity'),
        actorId: request.userId,
        activityType: 'image_uploaded',
        targetType: 'image',
        targetId: imageId,
        metadata: { title: request.title, mimeType: inspected.mime, width: inspected.width, height: inspected.height },
      });
      return image;
    });
  });
  if (!outcome) throw new AppError('image_busy');
  return outcome.value;
}
