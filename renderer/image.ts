/**
 * Image layers: the original's bytes from the caller's ImageSource, EXIF-oriented, cropped,
 * mirrored, then placed through the layer's matrix. A missing, unreadable or undecodable image is
 * an empty (transparent) layer, never a failed render; the caller checked access before.
 */
import sharp from 'sharp';
import type { ImageLayerData } from '../shared/canvas.ts';
import { intersect, multiply, scaleMatrix, transformedBox, type Box, type Matrix } from './geometry.ts';
import type { Raster } from './raster.ts';
import { placePixels } from './transform.ts';

/** Largest original decoded (pixels); sharp refuses bigger inputs before decoding. */
export const MAX_INPUT_PIXELS = 100_000_000;

export interface DecodedImage {
  data: Buffer;
  width: number;
  height: number;
}

/**
 * Decodes the part of the original the layer shows. When the layer shrinks it a lot (thumbnails),
 * the decode itself shrinks (JPEG/WebP shrink-on-load through sharp's resize).
 */
export async function decodeImage(bytes: Uint8Array, data: ImageLayerData, m: Matrix, clip: Box): Promise<{ pixels: DecodedImage; matrix: Matrix } | undefined> {
  const input = sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error', sequentialRead: true }).autoOrient();
  const meta = await sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' }).metadata();
  const oriented = (meta.orientation ?? 1) >= 5;
  const fullW = oriented ? meta.height : meta.width;
  const fullH = oriented ? meta.width : meta.height;
  if (!fullW || !fullH) return undefined;
  let crop: Box = { left: 0, top: 0, width: fullW, height: fullH };
  if (data.crop) {
    const c = intersect(
      { left: Math.floor(data.crop.x), top: Math.floor(data.crop.y), width: Math.ceil(data.crop.width), height: Math.ceil(data.crop.height) },
      crop,
    );
    if (!c) return undefined;
    crop = c;
  }
  // Nothing of the layer on screen: skip the decode.
  if (!intersect(transformedBox(m, 0, 0, crop.width, crop.height, 1), clip)) return undefined;
  let img = input;
  if (crop.left !== 0 || crop.top !== 0 || crop.width !== fullW || crop.height !== fullH) img = img.extract(crop);
  if (data.flipX) img = img.flop();
  if (data.flipY) img = img.flip();
  const sx = Math.hypot(m[0], m[1]);
  const sy = Math.hypot(m[2], m[3]);
  let matrix = m;
  const axisAligned = Math.abs(m[1]) < 1e-9 && Math.abs(m[2]) < 1e-9;
  if (axisAligned && m[0] > 0 && m[3] > 0 && sx < 1 && sy < 1) {
    // A shrink without rotation: resized to its final size in the decode pipeline (JPEG/WebP
    // shrink-on-load included), so placing it is a whole-pixel copy. Edges go to whole pixels.
    const left = Math.round(m[4]);
    const top = Math.round(m[5]);
    const w = Math.max(1, Math.round(m[4] + crop.width * sx) - left);
    const h = Math.max(1, Math.round(m[5] + crop.height * sy) - top);
    img = img.resize(w, h, { fit: 'fill', kernel: 'lanczos3' });
    matrix = [1, 0, 0, 1, left, top];
  } else if (sx < 0.5 && sy < 0.5) {
    // Shrink on decode when the layer is shown at under half size, to 1.25× its shown size: what
    // is left (a scale of 0.8) is above placePixels' ¾ pre-shrink threshold, so it is sampled
    // bilinearly at once (at 1.5× a second Lanczos resize ran: one more sharp pipeline per
    // rotated image of a thumbnail).
    const w = Math.max(1, Math.round(crop.width * sx * 1.25));
    const h = Math.max(1, Math.round(crop.height * sy * 1.25));
    img = img.resize(w, h, { fit: 'fill', kernel: 'lanczos3' });
    matrix = multiply(m, scaleMatrix(crop.width / w, crop.height / h));
  }
  const { data: raw, info } = await img.ensureAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 4) return undefined;
  return { pixels: { data: raw, width: info.width, height: info.height }, matrix };
}

/** The layer's raster; undefined when nothing of it is visible; null when the bytes do not decode. */
export async function rasterizeImage(
  bytes: Uint8Array,
  data: ImageLayerData,
  m: Matrix,
  clip: Box,
): Promise<Raster | undefined | null> {
  let decoded: Awaited<ReturnType<typeof decodeImage>>;
  try {
    decoded = await decodeImage(bytes, data, m, clip);
  } catch {
    return null; // not an image sharp can read: an empty layer, like a missing one
  }
  if (!decoded) return undefined;
  return placePixels(decoded.pixels, decoded.matrix, clip);
}
