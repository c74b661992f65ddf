/**
 * Adjustment layers: a function of the colours below (everything composited under the layer so
 * far), on unpremultiplied sRGB 8-bit values; alpha is untouched. Per-channel adjustments become a
 * 256-entry lookup table; the others (hue/saturation, vibrance, threshold) work per pixel. The
 * functions themselves are in shared/color.ts (the editor page draws with the same ones); here
 * they run over Buffers, fused where the profile asked for it.
 */
import type { AdjustmentLayerData, BlendMode } from '../shared/canvas.ts';
import { adjustPixels, channelCurve, channelLuts, clamp01, hueRotateMatrix, pixelAdjustment, saturateMatrix, type Out } from '../shared/color.ts';

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
  adjustPixels(out, a);
  return out;
}
