/**
 * Adjustment layers: a function of the colours below (everything composited under the layer so
 * far), on unpremultiplied sRGB 8-bit values; alpha is untouched. Per-channel adjustments become a
 * 256-entry lookup table; the others (hue/saturation, vibrance, threshold) work per pixel.
 */
import type { AdjustmentLayerData } from '../shared/canvas.ts';
import { hueRotateMatrix, saturateMatrix, type ColorMatrix } from './filters.ts';

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);
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

function applyMatrix(m: ColorMatrix, r: number, g: number, b: number): [number, number, number] {
  return [
    clamp01(m[0]! * r + m[1]! * g + m[2]! * b + m[3]!),
    clamp01(m[4]! * r + m[5]! * g + m[6]! * b + m[7]!),
    clamp01(m[8]! * r + m[9]! * g + m[10]! * b + m[11]!),
  ];
}

/** The adjustment of one pixel (0..1 values), for adjustments that are not per-channel. */
export function pixelAdjustment(a: AdjustmentLayerData): ((r: number, g: number, b: number) => [number, number, number]) | undefined {
  switch (a.adjustment) {
    case 'hue-saturation': {
      const hue = hueRotateMatrix(a.hue);
      const sat = saturateMatrix(1 + a.saturation);
      const l = a.lightness;
      return (r, g, b) => {
        let c = applyMatrix(hue, r, g, b);
        c = applyMatrix(sat, c[0], c[1], c[2]);
        if (l > 0) return [c[0] + (1 - c[0]) * l, c[1] + (1 - c[1]) * l, c[2] + (1 - c[2]) * l];
        if (l < 0) return [c[0] * (1 + l), c[1] * (1 + l), c[2] * (1 + l)];
        return c;
      };
    }
    case 'vibrance': {
      // Saturation scaled by how unsaturated the pixel already is.
      return (r, g, b) => {
        const s = Math.max(r, g, b) - Math.min(r, g, b);
        return applyMatrix(saturateMatrix(1 + a.vibrance * (1 - s)), r, g, b);
      };
    }
    case 'threshold': {
      return (r, g, b) => {
        const y = (0.2126 * r + 0.7152 * g + 0.0722 * b) * 255;
        const v = y >= a.level ? 1 : 0;
        return [v, v, v];
      };
    }
    default:
      return undefined;
  }
}

/** The backdrop after the adjustment (a new buffer, same layout; alpha copied). */
export function adjust(backdrop: Buffer, a: AdjustmentLayerData): Buffer {
  const out = Buffer.from(backdrop);
  const curve = channelCurve(a);
  if (curve) {
    const luts = [0, 1, 2].map((c) => {
      const lut = new Uint8Array(256);
      for (let v = 0; v < 256; v++) lut[v] = Math.round(curve(v / 255, c as 0 | 1 | 2) * 255);
      return lut;
    }) as [Uint8Array, Uint8Array, Uint8Array];
    for (let i = 0; i < out.length; i += 4) {
      out[i] = luts[0][out[i]!]!;
      out[i + 1] = luts[1][out[i + 1]!]!;
      out[i + 2] = luts[2][out[i + 2]!]!;
    }
    return out;
  }
  const f = pixelAdjustment(a)!;
  for (let i = 0; i < out.length; i += 4) {
    if (out[i + 3] === 0) continue;
    const c = f(out[i]! / 255, out[i + 1]! / 255, out[i + 2]! / 255);
    out[i] = Math.round(clamp01(c[0]) * 255);
    out[i + 1] = Math.round(clamp01(c[1]) * 255);
    out[i + 2] = Math.round(clamp01(c[2]) * 255);
  }
  return out;
}
