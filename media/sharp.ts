/**
 * sharp, hardened for untrusted uploads (docs/STACK-NOTES.md): every libvips loader is blocked and only
 * the accepted formats' loaders are unblocked again (defence in depth behind our own sniffing:
 * SVG, PDF, the vips format, raw camera files, ImageMagick and friends never load), the tile
 * cache keeps no files open, and libvips uses one thread per image (concurrency is bounded by
 * our own queue instead, so a burst of uploads cannot take every core from the event loop).
 *
 * Process-wide (libvips' block list is global, worker threads included): call once from the
 * composition root. The renderer (renderer/vector.ts) rasterises SVG it generates itself from a
 * buffer, so `VipsForeignLoadSvgBuffer` is unblocked for it by default; uploads are loaded from
 * files (the SVG *file* loader stays blocked) after sniffing refused SVG, and stored originals are
 * only ever accepted formats. Pass `extraLoaders: []`-style options to change that.
 */
import sharp, { type FormatEnum } from 'sharp';

/** The formats ingest accepts: sniffed MIME type → sharp's `metadata().format`. */
export const ACCEPTED = {
  'image/jpeg': 'jpeg',
  'image/png': 'png',
  'image/webp': 'webp',
  'image/avif': 'heif',
  'image/heic': 'heif',
  'image/heif': 'heif',
  'image/gif': 'gif',
  'image/tiff': 'tiff',
} as const satisfies Record<string, keyof FormatEnum>;
export type AcceptedMime = keyof typeof ACCEPTED;

export const isAcceptedMime = (mime: string): mime is AcceptedMime => Object.hasOwn(ACCEPTED, mime);

/** libvips loader classes of the accepted formats, each from a file, a buffer and a source. */
const LOADERS = ['Jpeg', 'Png', 'Webp', 'Heif', 'Nsgif', 'Tiff'].flatMap((f) => ['File', 'Buffer', 'Source'].map((from) => `VipsForeignLoad${f}${from}`));

let hardened = false;

/**
 * A 64×48 HEIC whose image is coded with HEVC (made with libheif's `heif-enc -q 50`, x265), the
 * way phones write HEIC. sharp's prebuilt libvips reads HEIF headers but its libheif decodes AV1
 * (AVIF) only: HEVC needs a decoder plugin (libde265) that the prebuilt binaries leave out, for
 * patent reasons. Decoding this once says whether the libvips in use can (tests upload it as their HEVC file).
 */
export const HEVC_HEIC_SAMPLE = 'AAAAHGZ0eXBoZWljAAAAAG1pZjFoZWljbWlhZgAAAaptZXRhAAAAAAAAACFoZGxyAAAAAAAAAABwaWN0AAAAAAAAAAAAAAAAAAAAAA5waXRtAAAAAAACAAAAEGlkYXQAAAAAAEAAMAAAADhpbG9jAQAAAERAAAIAAQAAAAAAAAHOAAEAAAAAAAAAHQACAAEAAAAAAAAAAQAAAAAAAAAIAAAAOGlpbmYAAAAAAAIAAAAVaW5mZQIAAAEAAQAAaHZjMQAAAAAVaW5mZQIAAAAAAgAAZ3JpZAAAAADVaXBycAAAALNpcGNvAAAAc2h2Y0MBA3AAAAAAAAAAAAAe8AD8/fj4AAAPAyAAAQAYQAEMAf//A3AAAAMAkAAAAwAAAwAeugJAIQABACdCAQEDcAAAAwCQAAADAAADAB6gIIEFlurkprmwIAAAAwAgAAADACEiAAEABkQBwXPAiQAAABRpc3BlAAAAAAAAAEAAAABAAAAAFGlzcGUAAAAAAAAAQAAAADAAAAAQcGl4aQAAAAADCAgIAAAAGmlwbWEAAAAAAAAAAgABAoECAAICA4QAAAAaaXJlZgAAAAAAAAAOZGltZwACAAEAAQAAACVtZGF0AAAAGSgBrxOA9SeBP//gpUf/utZ4fg8Lfnny1PA=';
let hevc: Promise<boolean> | undefined;

/** Can this process's libvips decode HEVC-coded HEIF images? Asked once, then remembered. */
export function hevcDecodes(): Promise<boolean> {
  hevc ??= sharp(Buffer.from(HEVC_HEIC_SAMPLE, 'base64'), { failOn: 'error' })
    .raw()
    .toBuffer()
    .then(
      () => true,
      () => false,
    );
  return hevc;
}

/** Loaders other parts of the server need: the renderer's own SVG, from a buffer. */
export const RENDERER_LOADERS = ['VipsForeignLoadSvgBuffer'] as const;

export function hardenSharp(options: { extraLoaders?: readonly string[] } = {}): void {
  sharp.block({ operation: ['VipsForeignLoad'] });
  sharp.unblock({ operation: [...LOADERS, ...(options.extraLoaders ?? RENDERER_LOADERS)] });
  // One libvips thread per image: our queue bounds how many run (sharp's default on glibc
  // without jemalloc is 1 already; be explicit). No cached open files: temporary inputs go away.
  sharp.concurrency(1);
  sharp.cache({ memory: 64, files: 0, items: 200 });
  hardened = true;
}

export const isHardened = () => hardened;

/**
 * A small FIFO semaphore: at most `limit` jobs run, at most `queueLimit` wait; beyond that
 * `run` refuses at once (the caller answers 503) instead of letting work pile up in memory.
 */
export class JobQueue {
  readonly #limit: number;
  readonly #queueLimit: number;
  #running = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(limit: number, queueLimit: number) {
    this.#limit = limit;
    this.#queueLimit = queueLimit;
  }

  get running(): number {
    return this.#running;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  /** Runs `job` when a slot is free; `undefined` (without running it) when the queue is full. */
  async run<T>(job: () => Promise<T>): Promise<{ value: T } | undefined> {
    if (this.#running >= this.#limit) {
      if (this.#waiting.length >= this.#queueLimit) return undefined;
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#running++;
    }
    try {
      return { value: await job() };
    } finally {
      const next = this.#waiting.shift();
      // Hand the slot straight to the next waiter (running stays the same), else free it.
      if (next) next();
      else this.#running--;
    }
  }
}
