/**
 * Adjustment layers: a function of the colours below (everything composited under the layer so
 * far), on unpremultiplied sRGB 8-bit values; alpha is untouched. Per-channel adjustments become a
 * 256-entry lookup table; the others (hue/saturation, vibrance, threshold) work per pixel.
 */
import type { AdjustmentLayerData, BlendMode } from '../shared/canvas.ts';
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

type Out = [number, number, number];

/** out = clamp(M · (r, g, b)) without allocating. */
function matrixInto(m: ColorMatrix, r: number, g: number, b: number, out: Out): void {
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

/** hue-saturation, normal mode, fused and inlined (the hot loop of a full-frame adjustment). */
function hueSaturationInPlace(d: Buffer, hueDeg: number, saturation: number, lightness: number, opacity: number): void {
  const h = hueRotateMatrix(hueDeg);
  const s = saturateMatrix(1 + saturation);
  const [h0, h1, h2, , h4, h5, h6, , h8, h9, h10] = h as [number, number, number, number, number, number, number, number, number, number, number, number];
  const [s0, s1, s2, , s4, s5, s6, , s8, s9, s10] = s as [number, number, number, number, number, number, number, number, number, number, number, number];
  const keep = 1 - opacity;
  const l = lightness;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 0) continue;
    const r = d[i]! / 255, g = d[i + 1]! / 255, b = d[i + 2]! / 255;
    let x = h0 * r + h1 * g + h2 * b, y = h4 * r + h5 * g + h6 * b, z = h8 * r + h9 * g + h10 * b;
    x = x < 0 ? 0 : x > 1 ? 1 : x; y = y < 0 ? 0 : y > 1 ? 1 : y; z = z < 0 ? 0 : z > 1 ? 1 : z;
    let u = s0 * x + s1 * y + s2 * z, v = s4 * x + s5 * y + s6 * z, w = s8 * x + s9 * y + s10 * z;
    u = u < 0 ? 0 : u > 1 ? 1 : u; v = v < 0 ? 0 : v > 1 ? 1 : v; w = w < 0 ? 0 : w > 1 ? 1 : w;
    if (l > 0) { u += (1 - u) * l; v += (1 - v) * l; w += (1 - w) * l; } else if (l < 0) { u *= 1 + l; v *= 1 + l; w *= 1 + l; }
    d[i] = keep * d[i]! + Math.round(u * 255) * opacity + 0.5;
    d[i + 1] = keep * d[i + 1]! + Math.round(v * 255) * opacity + 0.5;
    d[i + 2] = keep * d[i + 2]! + Math.round(w * 255) * opacity + 0.5;
  }
}

function channelLuts(curve: (v: number, channel: 0 | 1 | 2) => number): [Uint8Array, Uint8Array, Uint8Array] {
  return [0, 1, 2].map((c) => {
    const lut = new Uint8Array(256);
    for (let v = 0; v < 256; v++) lut[v] = Math.round(curve(v / 255, c as 0 | 1 | 2) * 255);
    return lut;
  }) as [Uint8Array, Uint8Array, Uint8Array];
}

/**
 * Applies an adjustment layer without filters in place: the adjusted colour, blended with `mode`
 * and mixed in at `opacity` where the backdrop has pixels (alpha unchanged). Per-channel
 * adjustments under a separable mode fold into one lookup table per channel; the rest work per
 * pixel. Same result as `blendAdjusted(backdrop, adjust(backdrop, a), opacity, mode)`.
 */
export function applyAdjustment(backdrop: Buffer, a: AdjustmentLayerData, opacity: number, mode: BlendMode, blend: (mode: BlendMode) => ((cb: number, cs: number) => number) | undefined): boolean {
  const curve = channelCurve(a);
  const f = blend(mode);
  if (!f) return false;
  if (!curve) {
    if (mode !== 'normal') return false;
    if (a.adjustment === 'hue-saturation') {
      hueSaturationInPlace(backdrop, a.hue, a.saturation, a.lightness, opacity);
      return true;
    }
    // Per-pixel adjustment, normal mode: adjust and mix in one pass, in place.
    const px = pixelAdjustment(a)!;
    const c: Out = [0, 0, 0];
    const keep = 1 - opacity;
    for (let i = 0; i < backdrop.length; i += 4) {
      if (backdrop[i + 3] === 0) continue;
      const r = backdrop[i]!, g = backdrop[i + 1]!, b = backdrop[i + 2]!;
      px(r / 255, g / 255, b / 255, c);
      // the 8-bit adjusted value, as the unfused path rounds it, then the mix
      backdrop[i] = keep * r + opacity * Math.round(clamp01(c[0]) * 255) + 0.5;
      backdrop[i + 1] = keep * g + opacity * Math.round(clamp01(c[1]) * 255) + 0.5;
      backdrop[i + 2] = keep * b + opacity * Math.round(clamp01(c[2]) * 255) + 0.5;
    }
    return true;
  }
  const luts = channelLuts(curve).map((lut) => {
    const mixed = new Uint8Array(256);
    for (let v = 0; v < 256; v++) {
      const cb = v / 255;
      const x = (1 - opacity) * cb + opacity * f(cb, lut[v]! / 255);
      mixed[v] = x <= 0 ? 0 : x >= 1 ? 255 : Math.round(x * 255);
    }
    return mixed;
  }) as [Uint8Array, Uint8Array, Uint8Array];
  const [r, g, b] = luts;
  for (let i = 0; i < backdrop.length; i += 4) {
    if (backdrop[i + 3] === 0) continue;
    backdrop[i] = r[backdrop[i]!]!;
    backdrop[i + 1] = g[backdrop[i + 1]!]!;
    backdrop[i + 2] = b[backdrop[i + 2]!]!;
  }
  return true;
}

/** The backdrop after the adjustment (a new buffer, same layout; alpha copied). */
export function adjust(backdrop: Buffer, a: AdjustmentLayerData): Buffer {
  const out = Buffer.from(backdrop);
  const curve = channelCurve(a);
  if (curve) {
    const luts = channelLuts(curve);
    for (let i = 0; i < out.length; i += 4) {
      out[i] = luts[0][out[i]!]!;
      out[i + 1] = luts[1][out[i + 1]!]!;
      out[i + 2] = luts[2][out[i + 2]!]!;
    }
    return out;
  }
  const f = pixelAdjustment(a)!;
  const c: Out = [0, 0, 0];
  for (let i = 0; i < out.length; i += 4) {
    if (out[i + 3] === 0) continue;
    f(out[i]! / 255, out[i + 1]! / 255, out[i + 2]! / 255, c);
    out[i] = Math.round(clamp01(c[0]) * 255);
    out[i + 1] = Math.round(clamp01(c[1]) * 255);
    out[i + 2] = Math.round(clamp01(c[2]) * 255);
  }
  return out;
}
