/**
 * Variants: an original resized by URL parameters (seed 001's dynamic resizing) and the standard
 * thumbnails ingest makes. A variant is named by its original's sha-256 and its normalised
 * parameters, so the blob key and the strong ETag follow from the request alone — a 304 or a
 * cached variant costs no image work — and the thumbnails ingest stores are the very variants
 * `/file` asks for with the same parameters.
 */
import { createHash } from 'node:crypto';
import sharp, { type Sharp, type SharpOptions } from 'sharp';
import { z } from 'zod';
import { AppError } from '../shared/errors.ts';
import { blobKey, type BlobKey } from '../storage/blob-store.ts';

/** Bumped when the pipeline's output changes: old ETags and cached variants then miss. */
export const PIPELINE_VERSION = 1;

export const FITS = ['cover', 'contain', 'fill', 'inside', 'outside'] as const;
/**
 * Output formats. AVIF is slow to encode (≈ 1.8/s at sharp's default effort here, docs/STACK-NOTES.md):
 * it is encoded at effort 2, through the same bounded queue, and cached like any variant.
 */
export const FORMATS = ['jpeg', 'png', 'webp', 'avif'] as const;
export const MAX_OUTPUT_DIMENSION = 4096;

export interface VariantSpec {
  /** Output box in pixels (dpr applied); absent = the original's. */
  readonly width?: number | undefined;
  readonly height?: number | undefined;
  readonly fit: (typeof FITS)[number];
  readonly format: (typeof FORMATS)[number];
  readonly quality: number;
  /** Keep EXIF (the owner opted in to sharing location); otherwise every metadata block is stripped. */
  readonly keepExif: boolean;
}

const dimension = z.coerce.number().int().min(1).max(MAX_OUTPUT_DIMENSION);
const paramsSchema = z.strictObject({
  width: dimension.optional(),
  height: dimension.optional(),
  fit: z.enum(FITS).optional(),
  format: z.enum([...FORMATS, 'auto']).optional(),
  quality: z.coerce.number().int().min(1).max(100).optional(),
  dpr: z.coerce.number().min(1).max(4).optional(),
});

/** The parameters `/file` reads; others (a signed URL's uid/expires/sig) are ignored here. */
export const VARIANT_PARAMS = ['width', 'height', 'fit', 'format', 'quality', 'dpr'] as const;

/** The default output format for an original: its own if served live, else JPEG (PNG with alpha). */
export function defaultFormat(mime: string, hasAlpha: boolean): VariantSpec['format'] {
  if (mime === 'image/png') return 'png';
  if (mime === 'image/webp') return 'webp';
  if (mime === 'image/jpeg') return 'jpeg';
  return hasAlpha ? 'png' : 'jpeg';
}

/** `format=auto`: the best the client's `Accept` header names (AVIF, then WebP), else the default. */
export function negotiateFormat(accept: string | undefined, fallback: VariantSpec['format']): VariantSpec['format'] {
  const types = (accept ?? '').toLowerCase();
  if (/\bimage\/avif\b/.test(types)) return 'avif';
  if (/\bimage\/webp\b/.test(types)) return 'webp';
  return fallback;
}

/** Parses and normalises URL parameters; throws 400 `invalid_image_parameters`. */
export function parseVariant(
  query: Record<string, string | undefined>,
  original: { mime: string; hasAlpha: boolean; keepExif: boolean },
  accept?: string,
): VariantSpec {
  const picked = Object.fromEntries(VARIANT_PARAMS.flatMap((k) => (query[k] === undefined ? [] : [[k, query[k]]])));
  const parsed = paramsSchema.safeParse(picked);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AppError('invalid_image_parameters', `Invalid image parameter ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}.`);
  }
  const p = parsed.data;
  const dpr = p.dpr ?? 1;
  const scale = (v: number | undefined) => {
    if (v === undefined) return undefined;
    const scaled = Math.round(v * dpr);
    if (scaled > MAX_OUTPUT_DIMENSION) {
      throw new AppError('invalid_image_parameters', `width and height times dpr may be at most ${MAX_OUTPUT_DIMENSION}.`);
    }
    return scaled;
  };
  return {
    width: scale(p.width),
    height: scale(p.height),
    fit: p.fit ?? 'inside',
    format:
      p.format === 'auto'
        ? negotiateFormat(accept, defaultFormat(original.mime, original.hasAlpha))
        : (p.format ?? defaultFormat(original.mime, original.hasAlpha)),
    quality: p.quality ?? 80,
    keepExif: original.keepExif,
  };
}

function canonicalSpec(spec: VariantSpec): string {
  return `v${PIPELINE_VERSION};w=${spec.width ?? ''};h=${spec.height ?? ''};fit=${spec.fit};f=${spec.format};q=${spec.quality};exif=${spec.keepExif ? 1 : 0}`;
}

function variantHash(originalSha256: string, spec: VariantSpec): string {
  return createHash('sha256').update(`${originalSha256}\n${canonicalSpec(spec)}`).digest('hex');
}

export function variantKey(originalSha256: string, spec: VariantSpec): BlobKey {
  const hash = variantHash(originalSha256, spec);
  return blobKey(`variants/${hash.slice(0, 2)}/${hash}.${spec.format}`);
}

/** A strong ETag: the same original and parameters always give the same bytes' tag. */
export function variantEtag(originalSha256: string, spec: VariantSpec): string {
  return `"${variantHash(originalSha256, spec).slice(0, 32)}"`;
}

export const FORMAT_MIME: Record<VariantSpec['format'], string> = { jpeg: 'image/jpeg', png: 'image/png', webp: 'image/webp', avif: 'image/avif' };

/** Options every decode of untrusted bytes uses. */
export function decodeOptions(limits: { maxPixels: number }): SharpOptions {
  return { failOn: 'warning', limitInputPixels: limits.maxPixels, autoOrient: true, sequentialRead: true };
}

/** Applies a spec's resize and encoder to a pipeline. */
export function applyVariant(pipeline: Sharp, spec: VariantSpec): Sharp {
  let p = pipeline;
  if (spec.width !== undefined || spec.height !== undefined) {
    p = p.resize({ width: spec.width, height: spec.height, fit: spec.fit, withoutEnlargement: true });
  }
  if (spec.keepExif) p = p.keepExif();
  switch (spec.format) {
    case 'jpeg':
      return p.jpeg({ quality: spec.quality });
    case 'png':
      return p.png({ compressionLevel: 6 });
    case 'webp':
      return p.webp({ quality: spec.quality });
    case 'avif':
      return p.avif({ quality: spec.quality, effort: 2 });
  }
}

/**
 * Resizes an original: bytes held in memory (bounded by the upload limit and the job queue) or a
 * file libvips reads itself (the local blob store's; no Buffer of the original on the JS heap).
 */
export async function renderVariant(input: Buffer | string, spec: VariantSpec, limits: { maxPixels: number; timeoutMs: number }): Promise<Buffer> {
  const pipeline = sharp(input, decodeOptions(limits)).timeout({ seconds: Math.max(1, Math.ceil(limits.timeoutMs / 1000)) });
  return applyVariant(pipeline, spec).toBuffer();
}

/** The standard variants ingest stores (`images.thumbnail_paths`), inside a square box. */
export const STANDARD_VARIANTS = { small: 256, medium: 1024, large: 2048 } as const;
export type StandardVariant = keyof typeof STANDARD_VARIANTS;

export function standardSpec(name: StandardVariant, original: { mime: string; hasAlpha: boolean; keepExif: boolean }): VariantSpec {
  const size = STANDARD_VARIANTS[name];
  return parseVariant({ width: String(size), height: String(size), fit: 'inside', format: original.hasAlpha ? 'webp' : 'jpeg' }, original);
}
