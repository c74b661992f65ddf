/**
 * Blend modes. libvips has twelve natively, but only its `over` (normal) matches the W3C formulas
 * for translucent sources (test/renderer-oracle.test.ts measured the others up to 107/255 off), and
 * hue, saturation, color and luminosity are missing (sharp throws). So every mode but normal is
 * computed here on raw pixels, only over the layer's bounding box, with the W3C Compositing and
 * Blending Level 1 formulas:
 *   Cs' = (1 - αb)·Cs + αb·B(Cb, Cs);  αo = αs + αb·(1 - αs);  co = αs·Cs' + αb·Cb·(1 - αs).
 * Adjustment layers use the same blend functions with the backdrop's own alpha kept (the layer
 * paints only where there is something below it).
 */
import type { BlendMode } from '../shared/canvas.ts';
import type { Raster } from './raster.ts';

// ---- separable blend functions B(cb, cs) on 0..1 ----
function hardLight(cb: number, cs: number): number {
  return cs <= 0.5 ? cb * 2 * cs : cb + (2 * cs - 1) - cb * (2 * cs - 1);
}
function softLight(cb: number, cs: number): number {
  if (cs <= 0.5) return cb - (1 - 2 * cs) * cb * (1 - cb);
  const d = cb <= 0.25 ? ((16 * cb - 12) * cb + 4) * cb : Math.sqrt(cb);
  return cb + (2 * cs - 1) * (d - cb);
}
export const SEPARABLE: Record<string, (cb: number, cs: number) => number> = {
  normal: (_cb, cs) => cs,
  multiply: (cb, cs) => cb * cs,
  screen: (cb, cs) => cb + cs - cb * cs,
  overlay: (cb, cs) => hardLight(cs, cb),
  darken: (cb, cs) => Math.min(cb, cs),
  lighten: (cb, cs) => Math.max(cb, cs),
  'color-dodge': (cb, cs) => (cb === 0 ? 0 : cs >= 1 ? 1 : Math.min(1, cb / (1 - cs))),
  'color-burn': (cb, cs) => (cb >= 1 ? 1 : cs <= 0 ? 0 : 1 - Math.min(1, (1 - cb) / cs)),
  'hard-light': hardLight,
  'soft-light': softLight,
  difference: (cb, cs) => Math.abs(cb - cs),
  exclusion: (cb, cs) => cb + cs - 2 * cb * cs,
};

// ---- non-separable helpers on [r, g, b] in 0..1 ----
type Rgb = [number, number, number];
const lum = (c: Rgb) => 0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2];
function clipColor(c: Rgb): Rgb {
  const l = lum(c);
  const n = Math.min(c[0], c[1], c[2]);
  const x = Math.max(c[0], c[1], c[2]);
  let [r, g, b] = c;
  if (n < 0) {
    r = l + ((r - l) * l) / (l - n);
    g = l + ((g - l) * l) / (l - n);
    b = l + ((b - l) * l) / (l - n);
  }
  if (x > 1) {
    r = l + ((r - l) * (1 - l)) / (x - l);
    g = l + ((g - l) * (1 - l)) / (x - l);
    b = l + ((b - l) * (1 - l)) / (x - l);
  }
  return [r, g, b];
}
function setLum(c: Rgb, l: number): Rgb {
  const d = l - lum(c);
  return clipColor([c[0] + d, c[1] + d, c[2] + d]);
}
const sat = (c: Rgb) => Math.max(c[0], c[1], c[2]) - Math.min(c[0], c[1], c[2]);
function setSat(c: Rgb, s: number): Rgb {
  const out: Rgb = [0, 0, 0];
  const idx = [0, 1, 2].sort((i, j) => c[i]! - c[j]!) as [number, number, number];
  const [iMin, iMid, iMax] = idx;
  const cMin = c[iMin]!, cMid = c[iMid]!, cMax = c[iMax]!;
  if (cMax > cMin) {
    out[iMid] = ((cMid - cMin) * s) / (cMax - cMin);
    out[iMax] = s;
  }
  out[iMin] = 0;
  return out;
}
/** The spec's functions as written (the readable reference; the hot loops use `nonSeparableInto`). */
export const NON_SEPARABLE: Record<string, (cb: Rgb, cs: Rgb) => Rgb> = {
  hue: (cb, cs) => setLum(setSat(cs, sat(cb)), lum(cb)),
  saturation: (cb, cs) => setLum(setSat(cb, sat(cs)), lum(cb)),
  color: (cb, cs) => setLum(cs, lum(cb)),
  luminosity: (cb, cs) => setLum(cb, lum(cs)),
};

/**
 * The four non-separable modes on scalars into `out`, without allocating: the same arithmetic as
 * NON_SEPARABLE (SetSat's "max, mid, min" without sorting: (c − min)·s / (max − min) is s for the
 * max, 0 for the min and the spec's value for the mid, ties included). The array version made
 * three arrays and a sort per pixel: a luminosity layer's garbage alone forced a dozen scavenges
 * per render (bench/RESULTS.md, section render).
 */
const NS_MODES = { hue: 0, saturation: 1, color: 2, luminosity: 3 } as const;
function nonSeparableInto(mode: number, br: number, bg: number, bb: number, sr: number, sg: number, sb: number, out: Float64Array): void {
  let r: number, g: number, b: number, l: number;
  if (mode <= 1) {
    // hue: SetSat(Cs, Sat(Cb)); saturation: SetSat(Cb, Sat(Cs)); then SetLum(·, Lum(Cb)).
    const hue = mode === 0;
    const cr = hue ? sr : br, cg = hue ? sg : bg, cbb = hue ? sb : bb;
    const s = hue ? Math.max(br, bg, bb) - Math.min(br, bg, bb) : Math.max(sr, sg, sb) - Math.min(sr, sg, sb);
    const max = Math.max(cr, cg, cbb), min = Math.min(cr, cg, cbb);
    if (max > min) {
      const k = s / (max - min);
      r = (cr - min) * k; g = (cg - min) * k; b = (cbb - min) * k;
    } else {
      r = g = b = 0;
    }
    l = 0.3 * br + 0.59 * bg + 0.11 * bb;
  } else if (mode === 2) {
    r = sr; g = sg; b = sb; l = 0.3 * br + 0.59 * bg + 0.11 * bb;
  } else {
    r = br; g = bg; b = bb; l = 0.3 * sr + 0.59 * sg + 0.11 * sb;
  }
  // SetLum, then ClipColor
  const d = l - (0.3 * r + 0.59 * g + 0.11 * b);
  r += d; g += d; b += d;
  const cl = 0.3 * r + 0.59 * g + 0.11 * b;
  const n = Math.min(r, g, b);
  const x = Math.max(r, g, b);
  if (n < 0) {
    r = cl + ((r - cl) * cl) / (cl - n);
    g = cl + ((g - cl) * cl) / (cl - n);
    b = cl + ((b - cl) * cl) / (cl - n);
  }
  if (x > 1) {
    r = cl + ((r - cl) * (1 - cl)) / (x - cl);
    g = cl + ((g - cl) * (1 - cl)) / (x - cl);
    b = cl + ((b - cl) * (1 - cl)) / (x - cl);
  }
  out[0] = r; out[1] = g; out[2] = b;
}

const clamp255 = (v: number) => (v <= 0 ? 0 : v >= 255 ? 255 : (v + 0.5) | 0); // Math.round for v > 0, cheaper

/** B(cb, cs) of a separable mode for every pair of 8-bit values, 0..1 (64 K entries, cached). */
const lutCache = new Map<string, Float32Array>();
const lut8Cache = new Map<string, Uint8Array>();
/** The same table rounded to 8 bits: the result where source and backdrop are both opaque. */
export function separableLut8(mode: BlendMode): Uint8Array {
  let lut = lut8Cache.get(mode);
  if (!lut) {
    const f = separableLut(mode);
    lut = new Uint8Array(65536);
    for (let i = 0; i < 65536; i++) lut[i] = Math.round(Math.min(1, Math.max(0, f[i]!)) * 255);
    lut8Cache.set(mode, lut);
  }
  return lut;
}
export function separableLut(mode: BlendMode): Float32Array {
  let lut = lutCache.get(mode);
  if (!lut) {
    const f = SEPARABLE[mode]!;
    lut = new Float32Array(65536);
    for (let b = 0; b < 256; b++) for (let c = 0; c < 256; c++) lut[(b << 8) | c] = f(b / 255, c / 255);
    lutCache.set(mode, lut);
  }
  return lut;
}

/** round(a · opacity) for every 8-bit alpha: the layer's opacity, applied as its pixels are read. */
function alphaTable(opacity: number): Uint8Array {
  const t = new Uint8Array(256);
  for (let a = 0; a < 256; a++) t[a] = Math.round(a * opacity);
  return t;
}

/**
 * Source-over of `src` into the frame-sized `backdrop` (both unpremultiplied RGBA), in place, with
 * the source's alpha scaled by `opacity` (rounded to 8 bits; `src` itself is not written).
 * Opaque source pixels are copied; the rest use αo = αs + αb(1 − αs), Co = (αs·Cs + αb·Cb·(1 − αs)) / αo.
 */
export function overInto(backdrop: Buffer, frameWidth: number, frameHeight: number, src: Raster, opacity = 1): void {
  const alpha = alphaTable(Math.min(1, opacity));
  const x0 = Math.max(0, src.left), y0 = Math.max(0, src.top);
  const x1 = Math.min(frameWidth, src.left + src.width), y1 = Math.min(frameHeight, src.top + src.height);
  const s = src.data;
  for (let y = y0; y < y1; y++) {
    let si = ((y - src.top) * src.width + (x0 - src.left)) * 4;
    let bi = (y * frameWidth + x0) * 4;
    for (let x = x0; x < x1; x++, si += 4, bi += 4) {
      const a8 = alpha[s[si + 3]!]!;
      if (a8 === 0) continue;
      if (a8 === 255) {
        // A run of opaque pixels is copied as it is (one memcpy: a background photo is all run).
        let end = si + 4;
        while (end < si + (x1 - x) * 4 && alpha[s[end + 3]!] === 255) end += 4;
        const n = (end - si) >> 2;
        if (n >= 8) s.copy(backdrop, bi, si, end);
        else for (let k = 0; k < end - si; k++) backdrop[bi + k] = s[si + k]!;
        x += n - 1; si = end - 4; bi += (n - 1) * 4;
        continue;
      }
      const as = a8 / 255;
      const ab = backdrop[bi + 3]! / 255;
      const k = ab * (1 - as);
      const ao = as + k;
      const inv = 1 / ao;
      backdrop[bi] = (s[si]! * as + backdrop[bi]! * k) * inv + 0.5;
      backdrop[bi + 1] = (s[si + 1]! * as + backdrop[bi + 1]! * k) * inv + 0.5;
      backdrop[bi + 2] = (s[si + 2]! * as + backdrop[bi + 2]! * k) * inv + 0.5;
      backdrop[bi + 3] = ao * 255 + 0.5;
    }
  }
}

/** Blends `src` into the frame-sized `backdrop` (unpremultiplied RGBA) with any mode at `opacity`, in place. */
export function blendInto(backdrop: Buffer, frameWidth: number, frameHeight: number, src: Raster, mode: BlendMode, opacity = 1): void {
  if (mode === 'normal') return overInto(backdrop, frameWidth, frameHeight, src, opacity);
  const alpha = alphaTable(Math.min(1, opacity));
  const x0 = Math.max(0, src.left), y0 = Math.max(0, src.top);
  const x1 = Math.min(frameWidth, src.left + src.width), y1 = Math.min(frameHeight, src.top + src.height);
  const ns: number | undefined = NS_MODES[mode as keyof typeof NS_MODES];
  const lut = ns === undefined ? separableLut(mode) : undefined;
  const lut8 = ns === undefined ? separableLut8(mode) : undefined;
  const bl = new Float64Array(3);
  const s = src.data;
  for (let y = y0; y < y1; y++) {
    let si = ((y - src.top) * src.width + (x0 - src.left)) * 4;
    let bi = (y * frameWidth + x0) * 4;
    for (let x = x0; x < x1; x++, si += 4, bi += 4) {
      const as8 = alpha[s[si + 3]!]!;
      if (as8 === 0) continue;
      if (lut8 && as8 === 255 && backdrop[bi + 3] === 255) {
        // both opaque: Co = B(Cb, Cs)
        backdrop[bi] = lut8[(backdrop[bi]! << 8) | s[si]!]!;
        backdrop[bi + 1] = lut8[(backdrop[bi + 1]! << 8) | s[si + 1]!]!;
        backdrop[bi + 2] = lut8[(backdrop[bi + 2]! << 8) | s[si + 2]!]!;
        continue;
      }
      const as = as8 / 255;
      const ab = backdrop[bi + 3]! / 255;
      const b0 = backdrop[bi]!, b1 = backdrop[bi + 1]!, b2 = backdrop[bi + 2]!;
      const s0 = s[si]!, s1 = s[si + 1]!, s2 = s[si + 2]!;
      const cb0 = b0 / 255, cb1 = b1 / 255, cb2 = b2 / 255;
      const cs0 = s0 / 255, cs1 = s1 / 255, cs2 = s2 / 255;
      let bl0: number, bl1: number, bl2: number;
      if (lut) {
        bl0 = lut[(b0 << 8) | s0]!; bl1 = lut[(b1 << 8) | s1]!; bl2 = lut[(b2 << 8) | s2]!;
      } else if (ab > 0) {
        nonSeparableInto(ns!, cb0, cb1, cb2, cs0, cs1, cs2, bl);
        bl0 = bl[0]!; bl1 = bl[1]!; bl2 = bl[2]!;
      } else {
        bl0 = cs0; bl1 = cs1; bl2 = cs2;
      }
      // Cs' = (1 − αb)·Cs + αb·B; co = αs·Cs' + αb·Cb·(1 − αs); Co = co / αo (unrolled, the same arithmetic per channel)
      const ao = as + ab * (1 - as);
      backdrop[bi] = clamp255(((as * ((1 - ab) * cs0 + ab * bl0) + ab * cb0 * (1 - as)) / ao) * 255);
      backdrop[bi + 1] = clamp255(((as * ((1 - ab) * cs1 + ab * bl1) + ab * cb1 * (1 - as)) / ao) * 255);
      backdrop[bi + 2] = clamp255(((as * ((1 - ab) * cs2 + ab * bl2) + ab * cb2 * (1 - as)) / ao) * 255);
      backdrop[bi + 3] = clamp255(ao * 255);
    }
  }
}

/**
 * An adjustment layer: `adjusted` is the backdrop after the adjustment (and the layer's filters);
 * it is blended onto the backdrop with the mode at `opacity`, keeping the backdrop's alpha.
 */
export function blendAdjusted(backdrop: Buffer, adjusted: Buffer, opacity: number, mode: BlendMode): void {
  const cb = new Float64Array(3);
  const cs = new Float64Array(3);
  const ns: number | undefined = NS_MODES[mode as keyof typeof NS_MODES];
  const lut = mode === 'normal' || ns !== undefined ? undefined : separableLut(mode);
  const bl = new Float64Array(3);
  for (let i = 0; i < backdrop.length; i += 4) {
    if (backdrop[i + 3] === 0) continue;
    cb[0] = backdrop[i]! / 255; cb[1] = backdrop[i + 1]! / 255; cb[2] = backdrop[i + 2]! / 255;
    cs[0] = adjusted[i]! / 255; cs[1] = adjusted[i + 1]! / 255; cs[2] = adjusted[i + 2]! / 255;
    if (mode === 'normal') {
      bl[0] = cs[0]; bl[1] = cs[1]; bl[2] = cs[2];
    } else if (lut) {
      for (let k = 0; k < 3; k++) bl[k] = lut[(backdrop[i + k]! << 8) | adjusted[i + k]!]!;
    } else {
      nonSeparableInto(ns!, cb[0]!, cb[1]!, cb[2]!, cs[0]!, cs[1]!, cs[2]!, bl);
    }
    const k = opacity * (adjusted[i + 3]! / 255) / (backdrop[i + 3]! / 255 || 1);
    const t = Math.min(1, k);
    for (let c = 0; c < 3; c++) backdrop[i + c] = clamp255(((1 - t) * cb[c]! + t * bl[c]!) * 255);
  }
}
