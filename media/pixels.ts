/**
 * Ingest's pixel work (media/ingest.ts, step 3): the one decode of an upload, its three standard
 * variants and its palette. Pure over a file: it runs in a media thread (media/pixel-threads.ts),
 * so the decoded pixels — a raw buffer of up to 2048 × 2048 × 4 bytes per ingest — and sharp's
 * objects are allocated and collected in that thread's heap, not the event loop's; or in process
 * where no threads are wanted (tests, tools).
 */
import sharp from 'sharp';
import { AppError } from '../shared/errors.ts';
import { STANDARD_VARIANTS, applyVariant, decodeOptions, standardSpec, type StandardVariant } from './variants.ts';

/** Maps a sharp/libvips failure to a registry error. */
export function sharpError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (/pixel limit/i.test(message)) return new AppError('image_too_many_pixels');
  if (/timeout/i.test(message)) return new AppError('image_timeout');
  if (/unsupported image format/i.test(message)) return new AppError('image_type_not_accepted');
  // libvips starts a file load's messages with the file's path: the server's spool, not the client's business.
  const detail = (message.split('\n')[0] ?? '').replace(/(^|\s)\/[^\s:]*:\s*/g, '$1').slice(0, 160);
  return new AppError('image_corrupt', `The image is truncated or corrupt (${detail}).`);
}

type Rgb = readonly [number, number, number];
const hex = ([r, g, b]: Rgb) => `#${[r, g, b].map((v) => v.toString(16).padStart(2, '0')).join('')}`;

/**
 * A few dominant colours from a small RGB(A) thumbnail: pixels binned at 4 bits per channel
 * (fully transparent ones skipped), the most populous bins averaged, near-duplicates merged.
 */
export function dominantColours(pixels: Uint8Array, channels: number, count = 5): Array<{ color: string; share: number }> {
  const bins = new Map<number, { n: number; r: number; g: number; b: number }>();
  let total = 0;
  for (let i = 0; i + 2 < pixels.length; i += channels) {
    if (channels === 4 && pixels[i + 3]! < 16) continue;
    const r = pixels[i]!, g = pixels[i + 1]!, b = pixels[i + 2]!;
    const key = ((r >> 4) << 8) | ((g >> 4) << 4) | (b >> 4);
    const bin = bins.get(key) ?? { n: 0, r: 0, g: 0, b: 0 };
    bin.n++;
    bin.r += r;
    bin.g += g;
    bin.b += b;
    bins.set(key, bin);
    total++;
  }
  const picked: Array<{ rgb: Rgb; n: number }> = [];
  for (const bin of [...bins.values()].sort((a, b) => b.n - a.n)) {
    const rgb: Rgb = [Math.round(bin.r / bin.n), Math.round(bin.g / bin.n), Math.round(bin.b / bin.n)];
    const near = picked.find((p) => Math.abs(p.rgb[0] - rgb[0]) + Math.abs(p.rgb[1] - rgb[1]) + Math.abs(p.rgb[2] - rgb[2]) < 48);
    if (near) near.n += bin.n;
    else picked.push({ rgb, n: bin.n });
    if (picked.length >= count * 3) break;
  }
  return picked
    .sort((a, b) => b.n - a.n)
    .slice(0, count)
    .map((p) => ({ color: hex(p.rgb), share: total ? Math.round((p.n / total) * 1000) / 1000 : 0 }));
}

export interface Processed {
  readonly variants: Record<StandardVariant, Uint8Array>;
  readonly palette: Array<{ color: string; share: number }>;
}

/** What the pixel work needs to know of the original (from its header, already checked). */
export interface PixelJob {
  readonly path: string;
  readonly mime: string;
  readonly hasAlpha: boolean;
  readonly limits: { readonly maxPixels: number; readonly timeoutMs: number };
  /** The owner shares location: each variant keeps the EXIF, so it is made from the file. */
  readonly keepExif: boolean;
}

/** Ingest's step 3: one decode, three variants and the palette. */
export async function processPixels({ path, mime, hasAlpha, limits, keepExif }: PixelJob): Promise<Processed> {
  const seconds = Math.max(1, Math.ceil(limits.timeoutMs / 1000));
  const original = { mime, hasAlpha, keepExif };
  const largest = STANDARD_VARIANTS.large;
  try {
    // The decode: orientation applied, shrunk to the largest standard box (JPEG shrink-on-load).
    const { data, info } = await sharp(path, decodeOptions(limits))
      .timeout({ seconds })
      .resize({ width: largest, height: largest, fit: 'inside', withoutEnlargement: true })
      .raw()
      .toBuffer({ resolveWithObject: true });
    const raw = { raw: { width: info.width, height: info.height, channels: info.channels } } as const;
    // Raw pixels carry no EXIF: for an owner who shares location, each variant is made from the
    // original file (keepExif), at the cost of a decode each.
    const encode = (name: StandardVariant) =>
      applyVariant((keepExif ? sharp(path, decodeOptions(limits)) : sharp(data, raw)).timeout({ seconds }), standardSpec(name, original)).toBuffer();
    const [large, medium, small, swatch] = await Promise.all([
      encode('large'),
      encode('medium'),
      encode('small'),
      sharp(data, raw).resize(64, 64, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true }),
    ]);
    return { variants: { large, medium, small }, palette: dominantColours(swatch.data, swatch.info.channels) };
  } catch (error) {
    throw sharpError(error);
  }
}
