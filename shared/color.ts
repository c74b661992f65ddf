/**
 * Colour maths shared by the server's renderer (renderer/) and the editor page (web/), so both
 * give a canvas the same meaning: the schema's colour strings, the Filter Effects Level 1 colour
 * matrices, the adjustment layers' curves and per-pixel functions, and the noise hash. Pure
 * functions on numbers (0..1 channels unless stated), no Buffer, no Node built-ins: browsers run
 * this too.
 */
import type { AdjustmentLayerData, Filter } from './canvas.ts';

/** 8-bit channels, alpha 0..255 (not premultiplied). */
export interface Rgba {
  r: number;
  g: number;
  b: number;
  a: number;
}

export const TRANSPARENT: Rgba = { r: 0, g: 0, b: 0, a: 0 };

export function parseColor(value: string): Rgba {
  if (value === 'transparent') return TRANSPARENT;
  let hex = value.slice(1);
  if (hex.length === 3 || hex.length === 4) hex = [...hex].map((c) => c + c).join('');
  if (hex.length === 6) hex += 'ff';
  if (!/^[0-9a-fA-F]{8}$/.test(hex)) throw new Error(`not a colour: ${value}`);
  const n = (i: number) => parseInt(hex.slice(i, i + 2), 16);
  return { r: n(0), g: n(2), b: n(4), a: n(6) };
}

/** `#rrggbb` (no alpha) for SVG and Pango attributes. */
export function hex6(c: Rgba): string {
  return `#${[c.r, c.g, c.b].map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

/** Row-major 3×4: [r', g', b'] = M · [r, g, b, 1] (values 0..1). */
export type ColorMatrix = readonly number[];

export function colorMatrix(filter: Filter): ColorMatrix | undefined {
  switch (filter.type) {
    case 'brightness': {
      const s = filter.amount;
      return [s, 0, 0, 0, 0, s, 0, 0, 0, 0, s, 0];
    }
    case 'contrast': {
      const s = filter.amount;
      const i = 0.5 - 0.5 * s;
      return [s, 0, 0, i, 0, s, 0, i, 0, 0, s, i];
    }
    case 'invert': {
      const a = filter.amount;
      const s = 1 - 2 * a;
      return [s, 0, 0, a, 0, s, 0, a, 0, 0, s, a];
    }
    case 'grayscale': {
      const k = 1 - filter.amount;
      return [
        0.2126 + 0.7874 * k, 0.7152 - 0.7152 * k, 0.0722 - 0.0722 * k, 0,
        0.2126 - 0.2126 * k, 0.7152 + 0.2848 * k, 0.0722 - 0.0722 * k, 0,
        0.2126 - 0.2126 * k, 0.7152 - 0.7152 * k, 0.0722 + 0.9278 * k, 0,
      ];
    }
    case 'sepia': {
      const k = 1 - filter.amount;
      return [
        0.393 + 0.607 * k, 0.769 - 0.769 * k, 0.189 - 0.189 * k, 0,
        0.349 - 0.349 * k, 0.686 + 0.314 * k, 0.168 - 0.168 * k, 0,
        0.272 - 0.272 * k, 0.534 - 0.534 * k, 0.131 + 0.869 * k, 0,
      ];
    }
    case 'saturate':
      return saturateMatrix(filter.amount);
    case 'hue-rotate':
      return hueRotateMatrix(filter.degrees);
    default:
      return undefined;
  }
}

export function saturateMatrix(s: number): ColorMatrix {
  return [
    0.213 + 0.787 * s, 0.715 - 0.715 * s, 0.072 - 0.072 * s, 0,
    0.213 - 0.213 * s, 0.715 + 0.285 * s, 0.072 - 0.072 * s, 0,
    0.213 - 0.213 * s, 0.715 - 0.715 * s, 0.072 + 0.928 * s, 0,
  ];
}

export function hueRotateMatrix(degrees: number): ColorMatrix {
  const t = (degrees * Math.PI) / 180;
  const c = Math.cos(t);
  const s = Math.sin(t);
  return [
    0.213 + c * 0.787 - s * 0.213, 0.715 - c * 0.715 - s * 0.715, 0.072 - c * 0.072 + s * 0.928, 0,
    0.213 - c * 0.213 + s * 0.143, 0.715 + c * 0.285 + s * 0.14, 0.072 - c * 0.072 - s * 0.283, 0,
    0.213 - c * 0.213 - s * 0.787, 0.715 - c * 0.715 + s * 0.715, 0.072 + c * 0.928 + s * 0.072, 0,
  ];
}

/** A stable pseudo-random value in [0, 1) for a pixel of the working frame and a seed. */
export function noiseAt(x: number, y: number, seed: number): number {
  let h = (Math.imul(x, 0x27d4eb2d) ^ Math.imul(y, 0x165667b1) ^ seed) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}

export function seedOf(id: string): number {
  let h = 2166136261;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619);
  return h >>> 0;
}

export const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

const toLinear = (v: number) => (v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);

const toSrgb = (v: number) => (v <= 0.0031308 ? v * 12.92 : 1.055 * v ** (1 / 2.4) - 0.055);

/** The per-channel curve of an adjustment (value 0..1 → 0..1), or undefined if not per-channel. */
export function channelCurve(a: AdjustmentLayerData): ((v: number, channel: 0 | 1 | 2) => number) | undefined {
  switch (a.adjustment) {
    case 'brightness-contrast': {
      // GIMP's definition: slope tan((contrast + 1)·π/4) around mid-grey, then + brightness.
      const slope = Math.tan(((Math.min(a.contrast, 0.999) + 1) * Math.PI) / 4);
      return (v) => clamp01((v - 0.5) * slope + 0.5 + a.brightness);
    }
    case 'levels': {
      const span = Math.max(1e-6, a.inputWhite - a.inputBlack);
      return (v) => {
        const x = clamp01((v * 255 - a.inputBlack) / span) ** (1 / a.gamma);
        return clamp01((a.outputBlack + x * (a.outputWhite - a.outputBlack)) / 255);
      };
    }
    case 'curves': {
      const curve = monotoneCurve(a.points);
      const only = a.channel === 'red' ? 0 : a.channel === 'green' ? 1 : a.channel === 'blue' ? 2 : -1;
      return (v, channel) => (only === -1 || only === channel ? clamp01(curve(v * 255) / 255) : v);
    }
    case 'exposure': {
      // In linear light: × 2^exposure, then the optional gamma, back to sRGB.
      const k = 2 ** a.exposure;
      const g = a.gamma ?? 1;
      return (v) => toSrgb(clamp01(toLinear(v) * k) ** (1 / g));
    }
    case 'invert':
      return (v) => 1 - v;
    default:
      return undefined;
  }
}

/** Fritsch–Carlson monotone cubic through the curve points (x sorted, duplicates dropped), flat outside. */
export function monotoneCurve(points: ReadonlyArray<readonly [number, number]>): (x: number) => number {
  const pts = [...points].sort((p, q) => p[0] - q[0]).filter((p, i, all) => i === 0 || p[0] !== all[i - 1]![0]);
  const n = pts.length;
  if (n === 1) return () => pts[0]![1];
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const d: number[] = [];
  for (let i = 0; i < n - 1; i++) d.push((ys[i + 1]! - ys[i]!) / (xs[i + 1]! - xs[i]!));
  const m: number[] = [d[0]!];
  for (let i = 1; i < n - 1; i++) m.push(d[i - 1]! * d[i]! <= 0 ? 0 : (d[i - 1]! + d[i]!) / 2);
  m.push(d[n - 2]!);
  for (let i = 0; i < n - 1; i++) {
    if (d[i] === 0) {
      m[i] = 0;
      m[i + 1] = 0;
      continue;
    }
    const a = m[i]! / d[i]!;
    const b = m[i + 1]! / d[i]!;
    const s = a * a + b * b;
    if (s > 9) {
      const t = 3 / Math.sqrt(s);
      m[i] = t * a * d[i]!;
      m[i + 1] = t * b * d[i]!;
    }
  }
  return (x) => {
    if (x <= xs[0]!) return ys[0]!;
    if (x >= xs[n - 1]!) return ys[n - 1]!;
    let i = 0;
    while (x > xs[i + 1]!) i++;
    const h = xs[i + 1]! - xs[i]!;
    const t = (x - xs[i]!) / h;
    const t2 = t * t;
    const t3 = t2 * t;
    return (2 * t3 - 3 * t2 + 1) * ys[i]! + (t3 - 2 * t2 + t) * h * m[i]! + (-2 * t3 + 3 * t2) * ys[i + 1]! + (t3 - t2) * h * m[i + 1]!;
  };
}

/** Where a per-pixel adjustment writes its result (reused, so the hot loop allocates nothing). */
export type Out = [number, number, number];

/** out = clamp(M · (r, g, b)) without allocating. */
export function matrixInto(m: ColorMatrix, r: number, g: number, b: number, out: Out): void {
  out[0] = clamp01(m[0]! * r + m[1]! * g + m[2]! * b + m[3]!);
  out[1] = clamp01(m[4]! * r + m[5]! * g + m[6]! * b + m[7]!);
  out[2] = clamp01(m[8]! * r + m[9]! * g + m[10]! * b + m[11]!);
}

/** The adjustment of one pixel (0..1 values, written to `out`), for adjustments that are not per-channel. */
export function pixelAdjustment(a: AdjustmentLayerData): ((r: number, g: number, b: number, out: Out) => void) | undefined {
  switch (a.adjustment) {
    case 'hue-saturation': {
      const hue = hueRotateMatrix(a.hue);
      const sat = saturateMatrix(1 + a.saturation);
      const l = a.lightness;
      return (r, g, b, out) => {
        matrixInto(hue, r, g, b, out);
        matrixInto(sat, out[0], out[1], out[2], out);
        if (l > 0) for (let k = 0; k < 3; k++) out[k] = out[k]! + (1 - out[k]!) * l;
        else if (l < 0) for (let k = 0; k < 3; k++) out[k] = out[k]! * (1 + l);
      };
    }
    case 'vibrance':
      // Saturation scaled by how unsaturated the pixel already is.
      return (r, g, b, out) => {
        const s = Math.max(r, g, b) - Math.min(r, g, b);
        matrixInto(saturateMatrix(1 + a.vibrance * (1 - s)), r, g, b, out);
      };
    case 'threshold':
      return (r, g, b, out) => {
        const v = (0.2126 * r + 0.7152 * g + 0.0722 * b) * 255 >= a.level ? 1 : 0;
        out[0] = out[1] = out[2] = v;
      };
    default:
      return undefined;
  }
}

/** 256-entry lookup tables, one per channel, of a per-channel curve. */
export function channelLuts(curve: (v: number, channel: 0 | 1 | 2) => number): [Uint8Array, Uint8Array, Uint8Array] {
  return [0, 1, 2].map((c) => {
    const lut = new Uint8Array(256);
    for (let v = 0; v < 256; v++) lut[v] = Math.round(curve(v / 255, c as 0 | 1 | 2) * 255);
    return lut;
  }) as [Uint8Array, Uint8Array, Uint8Array];
}

/** Applies an adjustment to RGBA bytes (not premultiplied) in place; alpha and empty pixels untouched. */
export function adjustPixels(px: Uint8Array | Uint8ClampedArray, a: AdjustmentLayerData): void {
  const curve = channelCurve(a);
  if (curve) {
    const luts = channelLuts(curve);
    for (let i = 0; i < px.length; i += 4) {
      px[i] = luts[0][px[i]!]!;
      px[i + 1] = luts[1][px[i + 1]!]!;
      px[i + 2] = luts[2][px[i + 2]!]!;
    }
    return;
  }
  const f = pixelAdjustment(a)!;
  const c: Out = [0, 0, 0];
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 3] === 0) continue;
    f(px[i]! / 255, px[i + 1]! / 255, px[i + 2]! / 255, c);
    // (x + 0.5) | 0 is Math.round for x ≥ 0, and much cheaper in a per-pixel loop
    px[i] = (clamp01(c[0]) * 255 + 0.5) | 0;
    px[i + 1] = (clamp01(c[1]) * 255 + 0.5) | 0;
    px[i + 2] = (clamp01(c[2]) * 255 + 0.5) | 0;
  }
}

/**
 * The noise filter on RGBA bytes in place: each non-empty pixel moves by (noiseAt − ½)·amount·255
 * on all three channels. `left`/`top` place the buffer in the frame the noise is keyed to, so a
 * layer's noise does not move when its bounding box does.
 */
export function addNoisePixels(px: Uint8Array | Uint8ClampedArray, width: number, left: number, top: number, amount: number, seed: number): void {
  const height = px.length / 4 / width;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      if (px[i + 3] === 0) continue;
      const delta = (noiseAt(left + x, top + y, seed) - 0.5) * amount * 255;
      for (let k = 0; k < 3; k++) {
        const v = px[i + k]! + delta;
        px[i + k] = v < 0 ? 0 : v > 255 ? 255 : (v + 0.5) | 0;
      }
    }
  }
}
