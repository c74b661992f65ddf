/**
 * Layer filters (shared/canvas.ts `filterSchema`), applied in order to a layer's raster before its
 * opacity and blend mode, as CSS `filter` does. Colour filters use the Filter Effects Level 1
 * matrices and transfer functions on unpremultiplied sRGB values (as browsers apply the filter
 * functions), clamped to [0, 1] after each filter. Lengths are canvas pixels, scaled with the output.
 */
import sharp from 'sharp';
import type { Filter } from '../shared/canvas.ts';
import { addNoisePixels, colorMatrix, parseColor, type ColorMatrix } from '../shared/color.ts';
import { padRaster, type Raster } from './raster.ts';
import { placePixels } from './transform.ts';

/** Applies consecutive colour matrices (clamping after each) to every pixel, in place. */
export function applyColorMatrices(data: Buffer, matrices: readonly ColorMatrix[]): void {
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 0) continue;
    let r = data[i]! / 255;
    let g = data[i + 1]! / 255;
    let b = data[i + 2]! / 255;
    for (const m of matrices) {
      const nr = m[0]! * r + m[1]! * g + m[2]! * b + m[3]!;
      const ng = m[4]! * r + m[5]! * g + m[6]! * b + m[7]!;
      const nb = m[8]! * r + m[9]! * g + m[10]! * b + m[11]!;
      r = nr < 0 ? 0 : nr > 1 ? 1 : nr;
      g = ng < 0 ? 0 : ng > 1 ? 1 : ng;
      b = nb < 0 ? 0 : nb > 1 ? 1 : nb;
    }
    // (x + 0.5) | 0: Math.round for x ≥ 0 (r, g, b are clamped), cheaper per pixel
    data[i] = (r * 255 + 0.5) | 0;
    data[i + 1] = (g * 255 + 0.5) | 0;
    data[i + 2] = (b * 255 + 0.5) | 0;
  }
}

/** How far (working pixels) the filters can move paint outward: the raster is padded by this. */
export function filterMargin(filters: readonly Filter[], scale: number): number {
  let m = 0;
  for (const f of filters) {
    if (f.type === 'blur') m += Math.ceil(3 * f.radius * scale);
    if (f.type === 'drop-shadow') m += Math.ceil(3 * (f.blur / 2) * scale + Math.max(Math.abs(f.offsetX), Math.abs(f.offsetY)) * scale);
    if (f.type === 'sharpen') m += 1;
    if (f.type === 'pixelate') m += Math.ceil(f.size * scale);
  }
  return Math.min(m, MAX_FILTER_MARGIN);
}

/**
 * The most a layer's raster grows for its filters (working pixels): paint further outside the
 * frame than this does not reach into it through a blur or shadow. Bounds a hostile filter's
 * memory (a 5,000² frame + 2 × 1,024 is ≈ 200 MB of RGBA at most).
 */
export const MAX_FILTER_MARGIN = 1024;

function raw(r: Raster) {
  return sharp(r.data, { raw: { width: r.width, height: r.height, channels: 4 }, limitInputPixels: false });
}

/** Above this σ (working pixels) a blur runs on a copy shrunk by σ / 4 and enlarged back. */
export const DIRECT_BLUR_SIGMA = 12;

async function blurRaster(r: Raster, sigma: number): Promise<Raster> {
  if (sigma < 0.3) return r;
  if (sigma > DIRECT_BLUR_SIGMA) {
    // A wide Gaussian has no detail left to lose at 1/k resolution, and a direct one costs
    // O(σ) per pixel (σ = 1000 would take minutes): shrink by k, blur by σ / k, enlarge.
    const k = Math.floor(sigma / 4);
    const w = Math.max(1, Math.round(r.width / k));
    const h = Math.max(1, Math.round(r.height / k));
    const blurred = await raw(r)
      .resize(w, h, { fit: 'fill', kernel: 'cubic' })
      .blur({ sigma: sigma / k, precision: 'float', minAmplitude: 0.01 })
      .raw()
      .toBuffer();
    // Enlarged by the pixel-centre bilinear path (libvips' upsizing is half a pixel off).
    const box = { left: 0, top: 0, width: r.width, height: r.height };
    const big = await placePixels({ data: blurred, width: w, height: h }, [r.width / w, 0, 0, r.height / h, 0, 0], box);
    const data = big && big.width === r.width && big.height === r.height ? big.data : Buffer.alloc(r.data.length);
    return { ...r, data };
  }
  // Float precision and a mask down to 1 % amplitude: libvips' defaults (integer mask, 20 %
  // cut-off) measured up to 18/255 off a true Gaussian.
  const data = await raw(r).blur({ sigma, precision: 'float', minAmplitude: 0.01 }).raw().toBuffer();
  return { ...r, data };
}

function pixelate(r: Raster, size: number): void {
  const d = r.data;
  const bx0 = Math.floor(r.left / size) * size;
  const by0 = Math.floor(r.top / size) * size;
  for (let by = by0; by < r.top + r.height; by += size) {
    for (let bx = bx0; bx < r.left + r.width; bx += size) {
      const x0 = Math.max(bx, r.left) - r.left, x1 = Math.min(bx + size, r.left + r.width) - r.left;
      const y0 = Math.max(by, r.top) - r.top, y1 = Math.min(by + size, r.top + r.height) - r.top;
      let sr = 0, sg = 0, sb = 0, sa = 0;
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          const i = (y * r.width + x) * 4;
          const a = d[i + 3]!;
          sr += d[i]! * a; sg += d[i + 1]! * a; sb += d[i + 2]! * a; sa += a;
        }
      }
      const n = (x1 - x0) * (y1 - y0);
      const a = Math.round(sa / n);
      const cr = sa > 0 ? Math.round(sr / sa) : 0, cg = sa > 0 ? Math.round(sg / sa) : 0, cb = sa > 0 ? Math.round(sb / sa) : 0;
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          const i = (y * r.width + x) * 4;
          d[i] = cr; d[i + 1] = cg; d[i + 2] = cb; d[i + 3] = a;
        }
      }
    }
  }
}

/**
 * 3×3 Laplacian sharpen on premultiplied values, clamped before unpremultiplying (sharp's
 * convolve divides by the unclamped alpha, which darkens colours along alpha edges).
 */
function sharpen(r: Raster, a: number): Buffer {
  const { width: w, height: h, data: d } = r;
  const pre = new Float32Array(w * h * 4);
  for (let i = 0; i < d.length; i += 4) {
    const al = d[i + 3]! / 255;
    pre[i] = (d[i]! / 255) * al; pre[i + 1] = (d[i + 1]! / 255) * al; pre[i + 2] = (d[i + 2]! / 255) * al; pre[i + 3] = al;
  }
  const out = Buffer.alloc(d.length);
  const at = (x: number, y: number, c: number) => (x < 0 || y < 0 || x >= w || y >= h ? 0 : pre[(y * w + x) * 4 + c]!);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 4;
      const v = [0, 0, 0, 0];
      for (let c = 0; c < 4; c++) {
        const s = (1 + 4 * a) * pre[i + c]! - a * (at(x - 1, y, c) + at(x + 1, y, c) + at(x, y - 1, c) + at(x, y + 1, c));
        v[c] = s < 0 ? 0 : s > 1 ? 1 : s;
      }
      const al = v[3]!;
      out[i + 3] = Math.round(al * 255);
      if (al > 0) for (let c = 0; c < 3; c++) out[i + c] = Math.round(Math.min(1, v[c]! / al) * 255);
    }
  }
  return out;
}

function addNoise(r: Raster, amount: number, seed: number): void {
  addNoisePixels(r.data, r.width, r.left, r.top, amount, seed);
}

/** Source-over of `top` onto `bottom` (same box), result in `bottom`. */
function over(top: Buffer, bottom: Buffer): void {
  for (let i = 0; i < top.length; i += 4) {
    const as = top[i + 3]! / 255;
    if (as === 0) continue;
    const ab = bottom[i + 3]! / 255;
    const ao = as + ab * (1 - as);
    for (let k = 0; k < 3; k++) {
      bottom[i + k] = Math.round((top[i + k]! * as + bottom[i + k]! * ab * (1 - as)) / ao);
    }
    bottom[i + 3] = Math.round(ao * 255);
  }
}

async function dropShadow(r: Raster, f: Extract<Filter, { type: 'drop-shadow' }>, scale: number): Promise<Raster> {
  const c = parseColor(f.color);
  const dx = Math.round(f.offsetX * scale);
  const dy = Math.round(f.offsetY * scale);
  const sigma = (f.blur / 2) * scale;
  let s: Raster;
  if (sigma >= 0.3 && sigma <= DIRECT_BLUR_SIGMA) {
    // One colour: only the alpha needs blurring (the colour of a premultiplied blur of one
    // colour is that colour), so the Gaussian runs on one band instead of four.
    const alpha = Buffer.alloc(r.width * r.height);
    for (let i = 0, j = 3; i < alpha.length; i++, j += 4) alpha[i] = Math.round((r.data[j]! * c.a) / 255);
    const blurred = await sharp(alpha, { raw: { width: r.width, height: r.height, channels: 1 }, limitInputPixels: false })
      .blur({ sigma, precision: 'float', minAmplitude: 0.01 })
      .toColourspace('b-w') // one band out, as in
      .raw()
      .toBuffer();
    const shadow = Buffer.alloc(r.data.length);
    for (let i = 0, j = 0; j < blurred.length; i += 4, j++) {
      shadow[i] = c.r; shadow[i + 1] = c.g; shadow[i + 2] = c.b; shadow[i + 3] = blurred[j]!;
    }
    s = { ...r, data: shadow };
  } else {
    const shadow = Buffer.alloc(r.data.length);
    for (let i = 0; i < shadow.length; i += 4) {
      shadow[i] = c.r; shadow[i + 1] = c.g; shadow[i + 2] = c.b;
      shadow[i + 3] = Math.round((r.data[i + 3]! * c.a) / 255);
    }
    s = await blurRaster({ ...r, data: shadow }, sigma);
  }
  // Shift the shadow by (dx, dy) inside the same box (the margin left room for it).
  const out = Buffer.alloc(r.data.length);
  const x0 = Math.max(0, dx), x1 = Math.min(r.width, r.width + dx);
  for (let y = 0; y < r.height; y++) {
    const sy = y - dy;
    if (sy < 0 || sy >= r.height || x1 <= x0) continue;
    s.data.copy(out, (y * r.width + x0) * 4, (sy * r.width + x0 - dx) * 4, (sy * r.width + x1 - dx) * 4);
  }
  over(r.data, out);
  return { ...r, data: out };
}

/** Applies the filters in order; `r` must already be padded by `filterMargin`. */
export async function applyFilters(input: Raster, filters: readonly Filter[], scale: number, seed: number): Promise<Raster> {
  let r: Raster = { ...input, data: Buffer.from(input.data) };
  let pending: ColorMatrix[] = [];
  const flushColor = () => {
    if (pending.length > 0) applyColorMatrices(r.data, pending);
    pending = [];
  };
  for (const f of filters) {
    const m = colorMatrix(f);
    if (m) {
      pending.push(m);
      continue;
    }
    flushColor();
    switch (f.type) {
      case 'blur':
        r = await blurRaster(r, f.radius * scale);
        break;
      case 'sharpen':
        if (f.amount > 0) r = { ...r, data: sharpen(r, f.amount) };
        break;
      case 'noise':
        if (f.amount > 0) addNoise(r, f.amount, seed);
        break;
      case 'pixelate': {
        const size = Math.max(1, Math.round(f.size * scale));
        if (size > 1) pixelate(r, size);
        break;
      }
      case 'drop-shadow':
        r = await dropShadow(r, f, scale);
        break;
      default:
        break;
    }
  }
  flushColor();
  return r;
}

export { padRaster };
