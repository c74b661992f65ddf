/**
 * Places a source raster (image pixels, rendered text) into the working frame through an affine
 * matrix that maps source pixel space (pixel i covers [i, i+1)) to working-frame pixel space.
 *
 * - an integer translation is a copy;
 * - a shrinking scale with translation (no rotation/skew) is sharp's resize (premultiplied,
 *   Lanczos 3) of
 *   only the visible part, placed at the nearest whole pixel;
 * - anything else (enlarging, rotation, skew) is inverse-mapped bilinear sampling of premultiplied pixels over the visible
 *   bounding box (after a Lanczos pre-shrink when the matrix shrinks by more than ¾). libvips'
 *   `affine` would do that natively, but its output window depends on rounding that sharp does not
 *   expose (it ignores odx/ody when sizing), which would put layers off by a pixel.
 */
import sharp from 'sharp';
import { intersect, invert, transformedBox, type Box, type Matrix, multiply, scaleMatrix, translateMatrix } from './geometry.ts';
import { cropRaster, type Raster } from './raster.ts';

export interface Pixels {
  data: Buffer;
  width: number;
  height: number;
}

const EPS = 1e-6;

export async function placePixels(src: Pixels, m: Matrix, clip: Box): Promise<Raster | undefined> {
  if (src.width <= 0 || src.height <= 0) return undefined;
  const [a, b, c, d, e, f] = m;
  if (Math.abs(b) < EPS && Math.abs(c) < EPS) {
    if (Math.abs(a - 1) < EPS && Math.abs(d - 1) < EPS) {
      const placed: Raster = { ...src, left: Math.round(e), top: Math.round(f) };
      return cropRaster(placed, clip);
    }
    // Shrinking: sharp's resize (Lanczos); enlarging: the bilinear path below (libvips' upsizing
    // measured half a pixel off the pixel-centre convention).
    if (Math.abs(a) < 1 && Math.abs(d) < 1) return placeScaled(src, a, d, e, f, clip);
  }
  const visible = intersect(transformedBox(m, 0, 0, src.width, src.height, 1), clip);
  if (!visible) return undefined;
  const inv = invert(m);
  if (!inv) return undefined;
  // Source region the visible box needs (plus a margin for the bilinear footprint).
  const back = transformedBox(inv, visible.left, visible.top, visible.left + visible.width, visible.top + visible.height, 2);
  const region = intersect(back, { left: 0, top: 0, width: src.width, height: src.height });
  if (!region) return undefined;
  let pixels = await extract(src, region);
  let local = multiply(m, translateMatrix(region.left, region.top));
  const sx = Math.hypot(local[0], local[1]);
  const sy = Math.hypot(local[2], local[3]);
  if (sx < 0.75 || sy < 0.75) {
    const w = Math.max(1, Math.round(pixels.width * Math.min(1, sx)));
    const h = Math.max(1, Math.round(pixels.height * Math.min(1, sy)));
    pixels = await resize(pixels, w, h);
    local = multiply(local, scaleMatrix(region.width / w, region.height / h));
  }
  return bilinear(pixels, local, visible);
}

async function extract(src: Pixels, region: Box): Promise<Pixels> {
  if (region.left === 0 && region.top === 0 && region.width === src.width && region.height === src.height) return src;
  const r = cropRaster({ ...src, left: 0, top: 0 }, region)!;
  return { data: r.data, width: r.width, height: r.height };
}

async function resize(src: Pixels, width: number, height: number): Promise<Pixels> {
  const { data, info } = await sharp(src.data, { raw: { width: src.width, height: src.height, channels: 4 }, limitInputPixels: false })
    .resize(width, height, { fit: 'fill', kernel: 'lanczos3' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/** Scale (possibly mirrored) + translation: resize the visible part of the source, place it. */
async function placeScaled(src: Pixels, a: number, d: number, e: number, f: number, clip: Box): Promise<Raster | undefined> {
  const sa = Math.abs(a);
  const sd = Math.abs(d);
  if (sa * src.width < 0.5 || sd * src.height < 0.5) return undefined;
  let pixels = src;
  if (a < 0 || d < 0) {
    let img = sharp(src.data, { raw: { width: src.width, height: src.height, channels: 4 }, limitInputPixels: false });
    if (a < 0) img = img.flop();
    if (d < 0) img = img.flip();
    pixels = { data: await img.raw().toBuffer(), width: src.width, height: src.height };
  }
  // The mirrored source now maps with positive scales from (x0, y0).
  const x0 = a < 0 ? e + a * src.width : e;
  const y0 = d < 0 ? f + d * src.height : f;
  const target: Box = { left: Math.round(x0), top: Math.round(y0), width: Math.max(1, Math.round(sa * src.width)), height: Math.max(1, Math.round(sd * src.height)) };
  const visible = intersect(target, clip);
  if (!visible) return undefined;
  const kx = target.width / src.width;
  const ky = target.height / src.height;
  const sx0 = Math.max(0, Math.floor((visible.left - target.left) / kx) - 2);
  const sy0 = Math.max(0, Math.floor((visible.top - target.top) / ky) - 2);
  const sx1 = Math.min(src.width, Math.ceil((visible.left + visible.width - target.left) / kx) + 2);
  const sy1 = Math.min(src.height, Math.ceil((visible.top + visible.height - target.top) / ky) + 2);
  const region = { left: sx0, top: sy0, width: sx1 - sx0, height: sy1 - sy0 };
  const part = await extract(pixels, region);
  // Whole-pixel edges of the resized part, so neighbouring parts (and the unclipped case) agree.
  const px0 = Math.round(sx0 * kx);
  const py0 = Math.round(sy0 * ky);
  const pw = Math.max(1, Math.round(sx1 * kx) - px0);
  const ph = Math.max(1, Math.round(sy1 * ky) - py0);
  const resized = pw === part.width && ph === part.height ? part : await resize(part, pw, ph);
  return cropRaster({ ...resized, left: target.left + px0, top: target.top + py0 }, clip);
}

/** Inverse-mapped bilinear sampling (premultiplied, transparent outside the source). */
function bilinear(src: Pixels, m: Matrix, box: Box): Raster | undefined {
  const inv = invert(m);
  if (!inv) return undefined;
  const { width: sw, height: sh, data: s } = src;
  const out = Buffer.alloc(box.width * box.height * 4);
  const [ia, ib, ic, id, ie, iff] = inv;
  const row = sw * 4;
  for (let y = 0; y < box.height; y++) {
    const wy = box.top + y + 0.5;
    // u, v step by (ia, ib) per output pixel along the row
    let u = ia * (box.left + 0.5) + ic * wy + ie - 0.5;
    let v = ib * (box.left + 0.5) + id * wy + iff - 0.5;
    let o = y * box.width * 4;
    for (let x = 0; x < box.width; x++, u += ia, v += ib, o += 4) {
      if (u <= -1 || v <= -1 || u >= sw || v >= sh) continue;
      const x0 = Math.floor(u);
      const y0 = Math.floor(v);
      const fx = u - x0;
      const fy = v - y0;
      // the four taps' weights; taps outside the source weigh nothing (transparent)
      const inX0 = x0 >= 0, inX1 = x0 + 1 < sw, inY0 = y0 >= 0, inY1 = y0 + 1 < sh;
      const i00 = y0 * row + x0 * 4;
      let r = 0, g = 0, bl = 0, al = 0;
      if (inY0 && inX0) {
        const w = (1 - fx) * (1 - fy) * s[i00 + 3]!;
        r += s[i00]! * w; g += s[i00 + 1]! * w; bl += s[i00 + 2]! * w; al += w;
      }
      if (inY0 && inX1) {
        const i = i00 + 4;
        const w = fx * (1 - fy) * s[i + 3]!;
        r += s[i]! * w; g += s[i + 1]! * w; bl += s[i + 2]! * w; al += w;
      }
      if (inY1 && inX0) {
        const i = i00 + row;
        const w = (1 - fx) * fy * s[i + 3]!;
        r += s[i]! * w; g += s[i + 1]! * w; bl += s[i + 2]! * w; al += w;
      }
      if (inY1 && inX1) {
        const i = i00 + row + 4;
        const w = fx * fy * s[i + 3]!;
        r += s[i]! * w; g += s[i + 1]! * w; bl += s[i + 2]! * w; al += w;
      }
      if (al <= 0) continue;
      const k = 1 / al;
      out[o] = r * k + 0.5;
      out[o + 1] = g * k + 0.5;
      out[o + 2] = bl * k + 0.5;
      out[o + 3] = al + 0.5;
    }
  }
  return { data: out, width: box.width, height: box.height, left: box.left, top: box.top };
}
