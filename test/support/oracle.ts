/**
 * The reference compositor the renderer is measured against: W3C Compositing and Blending Level 1
 * written out directly on float64 premultiplied pixels, plus an independent, supersampled
 * rasteriser for the layer geometry the tests use (rectangles with corner radius, ellipses,
 * polygons, lines, pen strokes, images under any affine map) and the filters and adjustments
 * defined from their specs. Slow and simple on purpose; tests only (never on a server thread).
 *
 *   Cs' = (1 − αb)·Cs + αb·B(Cb, Cs)           (spec §5.8, "mixing" the blend result)
 *   co  = αs·Cs' + (1 − αs)·cb                  (source-over, premultiplied: cb = αb·Cb)
 *   αo  = αs + αb·(1 − αs)
 */
import type { AdjustmentLayerData, BlendMode, Canvas, Filter, Layer } from '../../shared/canvas.ts';
import { layersInOrder } from '../../shared/layers.ts';
import { noiseAt, seedOf } from '../../shared/color.ts';

export interface Rgba8 {
  data: Buffer;
  width: number;
  height: number;
}

/** A float image: premultiplied r, g, b, a in 0..1. */
export interface FloatImage {
  data: Float64Array;
  width: number;
  height: number;
}

const newImage = (width: number, height: number): FloatImage => ({ data: new Float64Array(width * height * 4), width, height });

// ---------------------------------------------------------------------------------------------
// Blend functions, as the spec writes them (B(Cb, Cs), unpremultiplied)
// ---------------------------------------------------------------------------------------------
function multiply(cb: number, cs: number) { return cb * cs; }
function screen(cb: number, cs: number) { return cb + cs - cb * cs; }
function hardLight(cb: number, cs: number) { return cs <= 0.5 ? multiply(cb, 2 * cs) : screen(cb, 2 * cs - 1); }
function colorDodge(cb: number, cs: number) {
  if (cb === 0) return 0;
  if (cs === 1) return 1;
  return Math.min(1, cb / (1 - cs));
}
function colorBurn(cb: number, cs: number) {
  if (cb === 1) return 1;
  if (cs === 0) return 0;
  return 1 - Math.min(1, (1 - cb) / cs);
}
function softLight(cb: number, cs: number) {
  if (cs <= 0.5) return cb - (1 - 2 * cs) * cb * (1 - cb);
  const d = cb <= 0.25 ? ((16 * cb - 12) * cb + 4) * cb : Math.sqrt(cb);
  return cb + (2 * cs - 1) * (d - cb);
}
const separable: Record<string, (cb: number, cs: number) => number> = {
  normal: (_cb, cs) => cs,
  multiply,
  screen,
  overlay: (cb, cs) => hardLight(cs, cb),
  darken: Math.min,
  lighten: Math.max,
  'color-dodge': colorDodge,
  'color-burn': colorBurn,
  'hard-light': hardLight,
  'soft-light': softLight,
  difference: (cb, cs) => Math.abs(cb - cs),
  exclusion: (cb, cs) => cb + cs - 2 * cb * cs,
};

type C3 = { r: number; g: number; b: number };
function Lum(c: C3) { return 0.3 * c.r + 0.59 * c.g + 0.11 * c.b; }
function ClipColor(c: C3): C3 {
  const l = Lum(c);
  const n = Math.min(c.r, c.g, c.b);
  const x = Math.max(c.r, c.g, c.b);
  let { r, g, b } = c;
  if (n < 0) { r = l + ((r - l) * l) / (l - n); g = l + ((g - l) * l) / (l - n); b = l + ((b - l) * l) / (l - n); }
  if (x > 1) { r = l + ((r - l) * (1 - l)) / (x - l); g = l + ((g - l) * (1 - l)) / (x - l); b = l + ((b - l) * (1 - l)) / (x - l); }
  return { r, g, b };
}
function SetLum(c: C3, l: number): C3 {
  const d = l - Lum(c);
  return ClipColor({ r: c.r + d, g: c.g + d, b: c.b + d });
}
function Sat(c: C3) { return Math.max(c.r, c.g, c.b) - Math.min(c.r, c.g, c.b); }
function SetSat(c: C3, s: number): C3 {
  // "Cmax, Cmid, Cmin" refer to the channels of c in order of size
  const keys = (['r', 'g', 'b'] as const).slice().sort((p, q) => c[p] - c[q]);
  const [kMin, kMid, kMax] = keys as [keyof C3, keyof C3, keyof C3];
  const out: C3 = { r: 0, g: 0, b: 0 };
  if (c[kMax] > c[kMin]) {
    out[kMid] = ((c[kMid] - c[kMin]) * s) / (c[kMax] - c[kMin]);
    out[kMax] = s;
  } else {
    out[kMid] = 0;
    out[kMax] = 0;
  }
  out[kMin] = 0;
  return out;
}
const nonSeparable: Record<string, (cb: C3, cs: C3) => C3> = {
  hue: (cb, cs) => SetLum(SetSat(cs, Sat(cb)), Lum(cb)),
  saturation: (cb, cs) => SetLum(SetSat(cb, Sat(cs)), Lum(cb)),
  color: (cb, cs) => SetLum(cs, Lum(cb)),
  luminosity: (cb, cs) => SetLum(cb, Lum(cs)),
};

export function blendPixel(mode: BlendMode, cb: C3, cs: C3): C3 {
  const ns = nonSeparable[mode];
  if (ns) return ns(cb, cs);
  const f = separable[mode]!;
  return { r: f(cb.r, cs.r), g: f(cb.g, cs.g), b: f(cb.b, cs.b) };
}

/** Composites premultiplied `src` onto premultiplied `dst` (same size) with the mode, in place. */
export function compositeInto(dst: FloatImage, src: FloatImage, mode: BlendMode): void {
  const d = dst.data;
  const s = src.data;
  for (let i = 0; i < d.length; i += 4) {
    const as = s[i + 3]!;
    if (as <= 0) continue;
    const ab = d[i + 3]!;
    const Cs = { r: s[i]! / as, g: s[i + 1]! / as, b: s[i + 2]! / as };
    const Cb = ab > 0 ? { r: d[i]! / ab, g: d[i + 1]! / ab, b: d[i + 2]! / ab } : { r: 0, g: 0, b: 0 };
    const B = blendPixel(mode, Cb, Cs);
    const mixed = { r: (1 - ab) * Cs.r + ab * B.r, g: (1 - ab) * Cs.g + ab * B.g, b: (1 - ab) * Cs.b + ab * B.b };
    d[i] = as * mixed.r + (1 - as) * d[i]!;
    d[i + 1] = as * mixed.g + (1 - as) * d[i + 1]!;
    d[i + 2] = as * mixed.b + (1 - as) * d[i + 2]!;
    d[i + 3] = as + ab * (1 - as);
  }
}

// ---------------------------------------------------------------------------------------------
// Geometry: supersampled coverage in layer-local coordinates
// ---------------------------------------------------------------------------------------------
type Mat = readonly number[];
function invert(m: Mat): Mat {
  const [a, b, c, d, e, f] = m as [number, number, number, number, number, number];
  const det = a * d - b * c;
  return [d / det, -b / det, -c / det, a / det, (c * f - d * e) / det, (b * e - a * f) / det];
}

function parseHex(color: string | null): { r: number; g: number; b: number; a: number } | undefined {
  if (color === null || color === 'transparent') return undefined;
  let h = color.slice(1);
  if (h.length <= 4) h = [...h].map((x) => x + x).join('');
  if (h.length === 6) h += 'ff';
  const v = (i: number) => parseInt(h.slice(i, i + 2), 16) / 255;
  return { r: v(0), g: v(2), b: v(4), a: v(6) };
}

function insideRoundedRect(x: number, y: number, x0: number, y0: number, x1: number, y1: number, r: number): boolean {
  if (x < x0 || x > x1 || y < y0 || y > y1) return false;
  if (r <= 0) return true;
  const cx = Math.min(Math.max(x, x0 + r), x1 - r);
  const cy = Math.min(Math.max(y, y0 + r), y1 - r);
  return (x - cx) ** 2 + (y - cy) ** 2 <= r * r;
}

function distToSegment(px: number, py: number, ax: number, ay: number, bx: number, by: number): number {
  const dx = bx - ax, dy = by - ay;
  const len2 = dx * dx + dy * dy;
  const t = len2 === 0 ? 0 : Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / len2));
  return Math.hypot(px - ax - t * dx, py - ay - t * dy);
}

function windingInside(x: number, y: number, pts: readonly number[]): boolean {
  let wn = 0;
  const n = pts.length / 2;
  for (let i = 0; i < n; i++) {
    const ax = pts[2 * i]!, ay = pts[2 * i + 1]!;
    const bx = pts[(2 * ((i + 1) % n))]!, by = pts[(2 * ((i + 1) % n)) + 1]!;
    const cross = (bx - ax) * (y - ay) - (x - ax) * (by - ay);
    if (ay <= y) { if (by > y && cross > 0) wn++; } else if (by <= y && cross < 0) wn--;
  }
  return wn !== 0;
}

/** The colour (unpremultiplied, with alpha) a layer paints at local point (x, y), or undefined. */
type Painter = (x: number, y: number) => { r: number; g: number; b: number; a: number } | undefined;

function over(top: ReturnType<Painter>, bottom: ReturnType<Painter>): ReturnType<Painter> {
  if (!top) return bottom;
  if (!bottom) return top;
  const a = top.a + bottom.a * (1 - top.a);
  if (a === 0) return undefined;
  const mix = (t: number, b: number) => (t * top.a + b * bottom.a * (1 - top.a)) / a;
  return { r: mix(top.r, bottom.r), g: mix(top.g, bottom.g), b: mix(top.b, bottom.b), a };
}

function shapePainter(layer: Extract<Layer, { type: 'shape' }>): Painter {
  const d = layer.data;
  const fill = parseHex(d.fill);
  const stroke = d.strokeWidth > 0 ? parseHex(d.stroke) : undefined;
  const h = d.strokeWidth / 2;
  switch (d.shape) {
    case 'rectangle': {
      const r = Math.min(d.cornerRadius ?? 0, d.width / 2, d.height / 2);
      return (x, y) => {
        const f = fill && insideRoundedRect(x, y, 0, 0, d.width, d.height, r) ? fill : undefined;
        const s = stroke && insideRoundedRect(x, y, -h, -h, d.width + h, d.height + h, r > 0 ? r + h : 0) && !insideRoundedRect(x, y, h, h, d.width - h, d.height - h, Math.max(0, r - h)) ? stroke : undefined;
        return over(s, f);
      };
    }
    case 'ellipse':
      return (x, y) => (fill && ((x - d.width / 2) / (d.width / 2)) ** 2 + ((y - d.height / 2) / (d.height / 2)) ** 2 <= 1 ? fill : undefined);
    case 'polygon':
      return (x, y) => (fill && windingInside(x, y, d.points ?? []) ? fill : undefined);
    case 'line': {
      const p = d.points && d.points.length >= 4 ? d.points : [0, 0, d.width, d.height];
      const [ax, ay, bx, by] = p as [number, number, number, number];
      const len = Math.hypot(bx - ax, by - ay);
      return (x, y) => {
        if (!stroke || len === 0) return undefined;
        const t = ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / len;
        const n = Math.abs((x - ax) * (by - ay) - (y - ay) * (bx - ax)) / len;
        return t >= 0 && t <= len && n <= h ? stroke : undefined;
      };
    }
    case 'path': {
      // Tests use polygonal paths only: "M x y L x y … Z" (absolute).
      const nums = (d.path ?? '').match(/-?\d+(?:\.\d+)?/g)?.map(Number) ?? [];
      return (x, y) => (fill && windingInside(x, y, nums) ? fill : undefined);
    }
  }
}

function penPainter(layer: Extract<Layer, { type: 'drawing' }>): Painter {
  const strokes = layer.data.strokes;
  return (x, y) => {
    let out: ReturnType<Painter>;
    for (const s of strokes) {
      let near = false;
      const p = s.points;
      for (let i = 0; i + 3 < p.length || (i === 0 && p.length === 2); i += 2) {
        const [ax, ay] = [p[i]!, p[i + 1]!];
        const [bx, by] = p.length === 2 ? [ax, ay] : [p[i + 2]!, p[i + 3]!];
        if (distToSegment(x, y, ax, ay, bx, by) <= s.width / 2) { near = true; break; }
      }
      if (!near) continue;
      if (s.tool === 'eraser') {
        if (out) out = { ...out, a: out.a * (1 - (s.opacity ?? 1)) };
        continue;
      }
      if (s.tool !== 'pen') throw new Error('the oracle draws pen and eraser strokes only');
      const c = parseHex(s.color)!;
      out = over({ ...c, a: c.a * (s.opacity ?? 1) }, out);
    }
    return out;
  };
}

function imagePainter(layer: Extract<Layer, { type: 'image' }>, images: Map<string, Rgba8>): Painter | undefined {
  const t = imageTexels(layer, images);
  if (!t) return undefined;
  const { crop, texel } = t;
  // Minification reference: nearest texel, box-filtered by the supersampling (area average).
  return (x, y) => {
    if (x < 0 || y < 0 || x >= crop.width || y >= crop.height) return undefined;
    const [r, g, b, a] = texel(Math.floor(x), Math.floor(y));
    return a > 0 ? { r: r / a, g: g / a, b: b / a, a } : undefined;
  };
}

function imageTexels(layer: Extract<Layer, { type: 'image' }>, images: Map<string, Rgba8>) {
  const img = images.get(layer.data.imageId);
  if (!img) return undefined;
  const crop = layer.data.crop ?? { x: 0, y: 0, width: img.width, height: img.height };
  return {
    crop,
    /** Premultiplied texel (px, py) of the cropped, flipped image, clamped to its edge. */
    texel: (px: number, py: number) => {
      const cx = Math.min(crop.width - 1, Math.max(0, px));
      const cy = Math.min(crop.height - 1, Math.max(0, py));
      const fx = layer.data.flipX ? crop.width - 1 - cx : cx;
      const fy = layer.data.flipY ? crop.height - 1 - cy : cy;
      const i = ((fy + crop.y) * img.width + (fx + crop.x)) * 4;
      const a = img.data[i + 3]! / 255;
      return [(img.data[i]! / 255) * a, (img.data[i + 1]! / 255) * a, (img.data[i + 2]! / 255) * a, a] as const;
    },
  };
}

/**
 * Magnification reference: bilinear interpolation between texel centres, point-sampled at the
 * pixel centre's pre-image, times the supersampled share of the pixel inside the image's border.
 */
function magnifiedImage(layer: Extract<Layer, { type: 'image' }>, width: number, height: number, images: Map<string, Rgba8>, n: number): FloatImage {
  const out = newImage(width, height);
  const t = imageTexels(layer, images);
  if (!t) return out;
  const inv = invert(layer.transform);
  const local = (cx: number, cy: number) => [inv[0]! * cx + inv[2]! * cy + inv[4]!, inv[1]! * cx + inv[3]! * cy + inv[5]!] as const;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let inside = 0;
      for (let sy = 0; sy < n; sy++) for (let sx = 0; sx < n; sx++) {
        const [lx, ly] = local(x + (sx + 0.5) / n, y + (sy + 0.5) / n);
        if (lx >= 0 && ly >= 0 && lx < t.crop.width && ly < t.crop.height) inside++;
      }
      if (inside === 0) continue;
      const [lx, ly] = local(x + 0.5, y + 0.5);
      const u = lx - 0.5, v = ly - 0.5;
      const x0 = Math.floor(u), y0 = Math.floor(v);
      const fx = u - x0, fy = v - y0;
      const i = (y * width + x) * 4;
      for (const [dx, dy, w] of [[0, 0, (1 - fx) * (1 - fy)], [1, 0, fx * (1 - fy)], [0, 1, (1 - fx) * fy], [1, 1, fx * fy]] as const) {
        const tx = t.texel(x0 + dx, y0 + dy);
        for (let c = 0; c < 4; c++) out.data[i + c]! += tx[c]! * w * (inside / (n * n));
      }
    }
  }
  return out;
}

/** A layer's pixels before filters/opacity: premultiplied, averaged over n×n samples per pixel. */
export function rasterizeLayer(layer: Exclude<Layer, { type: 'adjustment' | 'text' }>, width: number, height: number, images: Map<string, Rgba8>, n = 8): FloatImage {
  const m = layer.transform;
  if (layer.type === 'drawing' && layer.data.strokes.length === 1 && layer.data.strokes[0]!.tool === 'brush') {
    // A brush stroke: the pen's stroke, blurred by a Gaussian of σ = width / 6 (in layer units).
    const stroke = layer.data.strokes[0]!;
    const pen = rasterizeLayer({ ...layer, data: { strokes: [{ ...stroke, tool: 'pen' }] } }, width, height, images, n);
    return gaussianBlur(pen, (stroke.width / 6) * Math.sqrt(Math.abs(m[0] * m[3] - m[1] * m[2])));
  }
  if (layer.type === 'image' && Math.sqrt(Math.abs(m[0] * m[3] - m[1] * m[2])) > 1 + 1e-9) return magnifiedImage(layer, width, height, images, n);
  const out = newImage(width, height);
  const painter = layer.type === 'shape' ? shapePainter(layer) : layer.type === 'drawing' ? penPainter(layer) : imagePainter(layer, images);
  if (!painter) return out;
  const inv = invert(layer.transform);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 0, g = 0, b = 0, a = 0;
      for (let sy = 0; sy < n; sy++) {
        for (let sx = 0; sx < n; sx++) {
          const cx = x + (sx + 0.5) / n;
          const cy = y + (sy + 0.5) / n;
          const lx = inv[0]! * cx + inv[2]! * cy + inv[4]!;
          const ly = inv[1]! * cx + inv[3]! * cy + inv[5]!;
          const c = painter(lx, ly);
          if (!c) continue;
          r += c.r * c.a; g += c.g * c.a; b += c.b * c.a; a += c.a;
        }
      }
      const i = (y * width + x) * 4;
      const k = n * n;
      out.data[i] = r / k; out.data[i + 1] = g / k; out.data[i + 2] = b / k; out.data[i + 3] = a / k;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Filters (Filter Effects Level 1 definitions; lengths in canvas pixels)
// ---------------------------------------------------------------------------------------------
function mapColors(img: FloatImage, f: (r: number, g: number, b: number) => [number, number, number]): void {
  const d = img.data;
  const c01 = (v: number) => Math.min(1, Math.max(0, v));
  for (let i = 0; i < d.length; i += 4) {
    const a = d[i + 3]!;
    if (a <= 0) continue;
    const [r, g, b] = f(d[i]! / a, d[i + 1]! / a, d[i + 2]! / a);
    d[i] = c01(r) * a; d[i + 1] = c01(g) * a; d[i + 2] = c01(b) * a;
  }
}

/** feColorMatrix type="saturate" / "hueRotate" and the shorthand functions, from the spec text. */
function specMatrix(f: Filter): number[][] | undefined {
  const lum = [0.2126, 0.7152, 0.0722];
  switch (f.type) {
    case 'grayscale': {
      const a = 1 - f.amount;
      return [
        [lum[0]! + (1 - lum[0]!) * a, lum[1]! - lum[1]! * a, lum[2]! - lum[2]! * a],
        [lum[0]! - lum[0]! * a, lum[1]! + (1 - lum[1]!) * a, lum[2]! - lum[2]! * a],
        [lum[0]! - lum[0]! * a, lum[1]! - lum[1]! * a, lum[2]! + (1 - lum[2]!) * a],
      ];
    }
    case 'sepia': {
      const a = 1 - f.amount;
      return [
        [0.393 + 0.607 * a, 0.769 - 0.769 * a, 0.189 - 0.189 * a],
        [0.349 - 0.349 * a, 0.686 + 0.314 * a, 0.168 - 0.168 * a],
        [0.272 - 0.272 * a, 0.534 - 0.534 * a, 0.131 + 0.869 * a],
      ];
    }
    case 'saturate': {
      const s = f.amount;
      return [
        [0.213 + 0.787 * s, 0.715 - 0.715 * s, 0.072 - 0.072 * s],
        [0.213 - 0.213 * s, 0.715 + 0.285 * s, 0.072 - 0.072 * s],
        [0.213 - 0.213 * s, 0.715 - 0.715 * s, 0.072 + 0.928 * s],
      ];
    }
    case 'hue-rotate': {
      const t = (f.degrees * Math.PI) / 180;
      const [c, s] = [Math.cos(t), Math.sin(t)];
      return [
        [0.213 + c * 0.787 - s * 0.213, 0.715 - c * 0.715 - s * 0.715, 0.072 - c * 0.072 + s * 0.928],
        [0.213 - c * 0.213 + s * 0.143, 0.715 + c * 0.285 + s * 0.14, 0.072 - c * 0.072 - s * 0.283],
        [0.213 - c * 0.213 - s * 0.787, 0.715 - c * 0.715 + s * 0.715, 0.072 + c * 0.928 + s * 0.072],
      ];
    }
    default:
      return undefined;
  }
}

function gaussianBlur(img: FloatImage, sigma: number): FloatImage {
  if (sigma <= 0) return img;
  const radius = Math.ceil(3 * sigma);
  const k: number[] = [];
  for (let i = -radius; i <= radius; i++) k.push(Math.exp(-(i * i) / (2 * sigma * sigma)));
  const sum = k.reduce((p, q) => p + q, 0);
  const kernel = k.map((v) => v / sum);
  const pass = (src: FloatImage, dx: number, dy: number) => {
    const out = newImage(src.width, src.height);
    for (let y = 0; y < src.height; y++) {
      for (let x = 0; x < src.width; x++) {
        for (let t = -radius; t <= radius; t++) {
          const xx = x + t * dx, yy = y + t * dy;
          if (xx < 0 || yy < 0 || xx >= src.width || yy >= src.height) continue;
          const w = kernel[t + radius]!;
          const si = (yy * src.width + xx) * 4, oi = (y * src.width + x) * 4;
          for (let c = 0; c < 4; c++) out.data[oi + c]! += src.data[si + c]! * w;
        }
      }
    }
    return out;
  };
  return pass(pass(img, 1, 0), 0, 1);
}

export function applyFilter(img: FloatImage, f: Filter, seed: number): FloatImage {
  const m = specMatrix(f);
  if (m) {
    mapColors(img, (r, g, b) => [0, 1, 2].map((i) => m[i]![0]! * r + m[i]![1]! * g + m[i]![2]! * b) as [number, number, number]);
    return img;
  }
  switch (f.type) {
    case 'brightness': // feComponentTransfer linear, slope = amount
      mapColors(img, (r, g, b) => [r * f.amount, g * f.amount, b * f.amount]);
      return img;
    case 'contrast': { // linear, slope = amount, intercept = −(0.5·amount) + 0.5
      const i = -(0.5 * f.amount) + 0.5;
      mapColors(img, (r, g, b) => [r * f.amount + i, g * f.amount + i, b * f.amount + i]);
      return img;
    }
    case 'invert': // table [amount, 1 − amount]
      mapColors(img, (r, g, b) => [r, g, b].map((v) => f.amount + v * (1 - 2 * f.amount)) as [number, number, number]);
      return img;
    case 'blur':
      return gaussianBlur(img, f.radius);
    case 'noise': {
      const d = img.data;
      for (let y = 0; y < img.height; y++) for (let x = 0; x < img.width; x++) {
        const i = (y * img.width + x) * 4;
        const a = d[i + 3]!;
        if (a <= 0) continue;
        const delta = (noiseAt(x, y, seed) - 0.5) * f.amount;
        for (let c = 0; c < 3; c++) d[i + c] = Math.min(1, Math.max(0, d[i + c]! / a + delta)) * a;
      }
      return img;
    }
    case 'pixelate': {
      const s = Math.max(1, Math.round(f.size));
      const out = newImage(img.width, img.height);
      for (let by = 0; by < img.height; by += s) for (let bx = 0; bx < img.width; bx += s) {
        const sum = [0, 0, 0, 0];
        let count = 0;
        for (let y = by; y < Math.min(by + s, img.height); y++) for (let x = bx; x < Math.min(bx + s, img.width); x++) {
          const i = (y * img.width + x) * 4;
          for (let c = 0; c < 4; c++) sum[c]! += img.data[i + c]!;
          count++;
        }
        for (let y = by; y < Math.min(by + s, img.height); y++) for (let x = bx; x < Math.min(bx + s, img.width); x++) {
          const i = (y * img.width + x) * 4;
          for (let c = 0; c < 4; c++) out.data[i + c] = sum[c]! / count;
        }
      }
      return out;
    }
    case 'sharpen': {
      const a = f.amount;
      const out = newImage(img.width, img.height);
      const at = (x: number, y: number, c: number) =>
        x < 0 || y < 0 || x >= img.width || y >= img.height ? 0 : img.data[(y * img.width + x) * 4 + c]!;
      for (let y = 0; y < img.height; y++) for (let x = 0; x < img.width; x++) {
        for (let c = 0; c < 4; c++) {
          const v = (1 + 4 * a) * at(x, y, c) - a * (at(x - 1, y, c) + at(x + 1, y, c) + at(x, y - 1, c) + at(x, y + 1, c));
          out.data[(y * img.width + x) * 4 + c] = Math.min(1, Math.max(0, v));
        }
      }
      return out;
    }
    case 'drop-shadow': {
      const col = parseHex(f.color) ?? { r: 0, g: 0, b: 0, a: 0 };
      let shadow = newImage(img.width, img.height);
      for (let i = 0; i < img.data.length; i += 4) {
        const a = img.data[i + 3]! * col.a;
        shadow.data[i] = col.r * a; shadow.data[i + 1] = col.g * a; shadow.data[i + 2] = col.b * a; shadow.data[i + 3] = a;
      }
      shadow = gaussianBlur(shadow, f.blur / 2);
      const moved = newImage(img.width, img.height);
      const dx = Math.round(f.offsetX), dy = Math.round(f.offsetY);
      for (let y = 0; y < img.height; y++) for (let x = 0; x < img.width; x++) {
        const sx = x - dx, sy = y - dy;
        if (sx < 0 || sy < 0 || sx >= img.width || sy >= img.height) continue;
        for (let c = 0; c < 4; c++) moved.data[(y * img.width + x) * 4 + c] = shadow.data[(sy * img.width + sx) * 4 + c]!;
      }
      compositeInto(moved, img, 'normal');
      return moved;
    }
    default:
      throw new Error(`no oracle for filter ${f.type}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Adjustments (float, per pixel, from their definitions in the README)
// ---------------------------------------------------------------------------------------------
const srgbToLinear = (v: number) => (v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4));
const linearToSrgb = (v: number) => (v <= 0.0031308 ? 12.92 * v : 1.055 * Math.pow(v, 1 / 2.4) - 0.055);

function interpolateCurve(points: ReadonlyArray<readonly [number, number]>, x: number): number {
  // Fritsch–Carlson monotone cubic Hermite, written from the paper's steps.
  const p = [...points].sort((a, b) => a[0] - b[0]);
  const n = p.length;
  if (x <= p[0]![0]) return p[0]![1];
  if (x >= p[n - 1]![0]) return p[n - 1]![1];
  const delta = p.slice(0, -1).map((q, i) => (p[i + 1]![1] - q[1]) / (p[i + 1]![0] - q[0]));
  const m = p.map((_, i) => (i === 0 ? delta[0]! : i === n - 1 ? delta[n - 2]! : delta[i - 1]! * delta[i]! <= 0 ? 0 : (delta[i - 1]! + delta[i]!) / 2));
  for (let i = 0; i < n - 1; i++) {
    if (delta[i] === 0) { m[i] = 0; m[i + 1] = 0; continue; }
    const al = m[i]! / delta[i]!, be = m[i + 1]! / delta[i]!;
    if (al * al + be * be > 9) { const t = 3 / Math.hypot(al, be); m[i] = t * al * delta[i]!; m[i + 1] = t * be * delta[i]!; }
  }
  const i = p.findIndex((q, k) => k < n - 1 && x >= q[0] && x <= p[k + 1]![0]);
  const h = p[i + 1]![0] - p[i]![0];
  const t = (x - p[i]![0]) / h;
  const h00 = 2 * t ** 3 - 3 * t ** 2 + 1, h10 = t ** 3 - 2 * t ** 2 + t, h01 = -2 * t ** 3 + 3 * t ** 2, h11 = t ** 3 - t ** 2;
  return h00 * p[i]![1] + h10 * h * m[i]! + h01 * p[i + 1]![1] + h11 * h * m[i + 1]!;
}

export function adjustColor(a: AdjustmentLayerData, c: C3): C3 {
  const c01 = (v: number) => Math.min(1, Math.max(0, v));
  const each = (f: (v: number) => number): C3 => ({ r: c01(f(c.r)), g: c01(f(c.g)), b: c01(f(c.b)) });
  const matrix = (m: number[][], x: C3): C3 => ({
    r: c01(m[0]![0]! * x.r + m[0]![1]! * x.g + m[0]![2]! * x.b),
    g: c01(m[1]![0]! * x.r + m[1]![1]! * x.g + m[1]![2]! * x.b),
    b: c01(m[2]![0]! * x.r + m[2]![1]! * x.g + m[2]![2]! * x.b),
  });
  switch (a.adjustment) {
    case 'brightness-contrast': {
      const slope = Math.tan(((Math.min(a.contrast, 0.999) + 1) * Math.PI) / 4);
      return each((v) => (v - 0.5) * slope + 0.5 + a.brightness);
    }
    case 'levels':
      return each((v) => (a.outputBlack + Math.pow(c01((v * 255 - a.inputBlack) / Math.max(1e-6, a.inputWhite - a.inputBlack)), 1 / a.gamma) * (a.outputWhite - a.outputBlack)) / 255);
    case 'curves': {
      const f = (v: number) => interpolateCurve(a.points, v * 255) / 255;
      if (a.channel === 'rgb') return each(f);
      return { r: a.channel === 'red' ? c01(f(c.r)) : c.r, g: a.channel === 'green' ? c01(f(c.g)) : c.g, b: a.channel === 'blue' ? c01(f(c.b)) : c.b };
    }
    case 'exposure':
      return each((v) => linearToSrgb(Math.pow(c01(srgbToLinear(v) * Math.pow(2, a.exposure)), 1 / (a.gamma ?? 1))));
    case 'invert':
      return each((v) => 1 - v);
    case 'threshold': {
      const v = (0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b) * 255 >= a.level ? 1 : 0;
      return { r: v, g: v, b: v };
    }
    case 'hue-saturation': {
      const hue = specMatrix({ type: 'hue-rotate', degrees: a.hue })!;
      const sat = specMatrix({ type: 'saturate', amount: 1 + a.saturation })!;
      const x = matrix(sat, matrix(hue, c));
      const l = a.lightness;
      const light = (v: number) => (l > 0 ? v + (1 - v) * l : v * (1 + l));
      return { r: light(x.r), g: light(x.g), b: light(x.b) };
    }
    case 'vibrance': {
      const s = Math.max(c.r, c.g, c.b) - Math.min(c.r, c.g, c.b);
      return matrix(specMatrix({ type: 'saturate', amount: 1 + a.vibrance * (1 - s) })!, c);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The whole canvas (no text layers), at canvas size
// ---------------------------------------------------------------------------------------------
export function oracleRender(canvas: Canvas, images: Map<string, Rgba8>, samples = 8): FloatImage {
  const { width, height } = canvas.meta;
  const out = newImage(width, height);
  const bg = parseHex(canvas.meta.background);
  if (bg) for (let i = 0; i < out.data.length; i += 4) { out.data[i] = bg.r * bg.a; out.data[i + 1] = bg.g * bg.a; out.data[i + 2] = bg.b * bg.a; out.data[i + 3] = bg.a; }
  for (const [id, layer] of layersInOrder(canvas.layers)) {
    if (!layer.visible || layer.opacity === 0) continue;
    if (layer.type === 'text') throw new Error('the oracle has no text');
    if (layer.type === 'adjustment') {
      let adjusted = newImage(width, height);
      for (let i = 0; i < out.data.length; i += 4) {
        const ab = out.data[i + 3]!;
        if (ab <= 0) continue;
        const c = adjustColor(layer.data, { r: out.data[i]! / ab, g: out.data[i + 1]! / ab, b: out.data[i + 2]! / ab });
        adjusted.data[i] = c.r * ab; adjusted.data[i + 1] = c.g * ab; adjusted.data[i + 2] = c.b * ab; adjusted.data[i + 3] = ab;
      }
      for (const f of layer.filters) adjusted = applyFilter(adjusted, f, seedOf(id));
      // mixed in where the backdrop has pixels, keeping its alpha
      for (let i = 0; i < out.data.length; i += 4) {
        const ab = out.data[i + 3]!;
        if (ab <= 0) continue;
        const aa = adjusted.data[i + 3]!;
        const Cb = { r: out.data[i]! / ab, g: out.data[i + 1]! / ab, b: out.data[i + 2]! / ab };
        const Cs = aa > 0 ? { r: adjusted.data[i]! / aa, g: adjusted.data[i + 1]! / aa, b: adjusted.data[i + 2]! / aa } : Cb;
        const B = blendPixel(layer.blendMode, Cb, Cs);
        const t = Math.min(1, layer.opacity * (aa / ab));
        out.data[i] = ((1 - t) * Cb.r + t * B.r) * ab;
        out.data[i + 1] = ((1 - t) * Cb.g + t * B.g) * ab;
        out.data[i + 2] = ((1 - t) * Cb.b + t * B.b) * ab;
      }
      continue;
    }
    let src = rasterizeLayer(layer, width, height, images, samples);
    for (const f of layer.filters) src = applyFilter(src, f, seedOf(id));
    for (let i = 0; i < src.data.length; i++) src.data[i]! *= layer.opacity;
    compositeInto(out, src, layer.blendMode);
  }
  return out;
}

/** Unpremultiplied 8-bit, as an encoder would get it. */
export function toRgba8(img: FloatImage): Buffer {
  const out = Buffer.alloc(img.data.length);
  for (let i = 0; i < img.data.length; i += 4) {
    const a = img.data[i + 3]!;
    out[i + 3] = Math.round(a * 255);
    if (a <= 0) continue;
    for (let c = 0; c < 3; c++) out[i + c] = Math.round(Math.min(1, img.data[i + c]! / a) * 255);
  }
  return out;
}

export interface Difference {
  /** Largest channel difference (0..255) over pixels whose alpha is at least `minAlpha` in both. */
  max: number;
  /** Mean channel difference. */
  mean: number;
  /** Share of channel values more than 2 apart. */
  over2: number;
}

/** Compares premultiplied-equivalent values (colour × alpha, and alpha), 0..255. */
export function difference(a: Buffer, b: Buffer): Difference {
  let max = 0, sum = 0, over2 = 0, n = 0;
  for (let i = 0; i < a.length; i += 4) {
    const aa = a[i + 3]! / 255, ba = b[i + 3]! / 255;
    for (let c = 0; c < 4; c++) {
      const va = c === 3 ? a[i + 3]! : a[i + c]! * aa;
      const vb = c === 3 ? b[i + 3]! : b[i + c]! * ba;
      const d = Math.abs(va - vb);
      max = Math.max(max, d);
      sum += d;
      if (d > 2) over2++;
      n++;
    }
  }
  return { max: Math.round(max * 100) / 100, mean: Math.round((sum / n) * 1000) / 1000, over2: Math.round((over2 / n) * 10000) / 10000 };
}
