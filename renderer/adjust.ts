/**
 * Adjustment layers: a function of the colours below (everything composited under the layer so
 * far), on unpremultiplied sRGB 8-bit values; alpha is untouched. Per-channel adjustments become a
 * 256-entry lookup table; the others (hue/saturation, vibrance, threshold) work per pixel. The
 * functions themselves are in shared/color.ts (the editor page draws with the same ones); here
 * they run over Buffers, fused where the profile asked for it.
 */
import type { AdjustmentLayerData, BlendMode } from '../shared/canvas.ts';
import { adjustPixels, channelCurve, channelLuts, clamp01, hueRotateMatrix, pixelAdjustment, saturateMatrix, type Out } from '../shared/color.ts';

type Luts = [Uint8Array, Uint8Array, Uint8Array];

/**
 * One adjustment layer (no filters) as a per-pixel step: a lookup table per channel (a per-channel
 * adjustment under a separable mode, with the mode and the opacity folded in), or a per-pixel
 * function in normal mode mixed in at `opacity`.
 */
export type AdjustmentStep =
  | { kind: 'lut'; luts: Luts }
  | { kind: 'hue-saturation'; hue: number; saturation: number; lightness: number; opacity: number }
  | { kind: 'pixel'; px: (r: number, g: number, b: number, out: Out) => void; opacity: number };

/** The box of the frame to adjust, in frame pixels. */
export interface FrameBox {
  left: number;
  top: number;
  width: number;
  height: number;
}

/**
 * The step of an adjustment layer without filters, or undefined when it cannot be one (a
 * per-pixel adjustment under another mode than normal, or a non-separable mode: those go through
 * `adjust` + `blendAdjusted`).
 */
export function adjustmentStep(a: AdjustmentLayerData, opacity: number, mode: BlendMode, blend: (mode: BlendMode) => ((cb: number, cs: number) => number) | undefined): AdjustmentStep | undefined {
  const curve = channelCurve(a);
  const f = blend(mode);
  if (!f) return undefined;
  if (!curve) {
    if (mode !== 'normal') return undefined;
    if (a.adjustment === 'hue-saturation') return { kind: 'hue-saturation', hue: a.hue, saturation: a.saturation, lightness: a.lightness, opacity };
    return { kind: 'pixel', px: pixelAdjustment(a)!, opacity };
  }
  const luts = channelLuts(curve).map((lut) => {
    const mixed = new Uint8Array(256);
    for (let v = 0; v < 256; v++) {
      const cb = v / 255;
      const x = (1 - opacity) * cb + opacity * f(cb, lut[v]! / 255);
      mixed[v] = x <= 0 ? 0 : x >= 1 ? 255 : Math.round(x * 255);
    }
    return mixed;
  }) as Luts;
  return { kind: 'lut', luts };
}

const IDENTITY: Uint8Array = Uint8Array.from({ length: 256 }, (_, v) => v);
const composeLuts = (first: Luts, then: Luts): Luts => first.map((lut, c) => lut.map((v) => then[c]![v]!)) as Luts;

/**
 * Applies consecutive adjustment layers (their steps, bottom to top) in place, in one pass over
 * `box` (the part of the frame that has pixels; the rest is transparent and adjustments leave
 * transparent pixels alone). Lookup-table steps are composed with each other and folded into the
 * per-pixel step before or after them, so a curves layer over a hue-saturation layer costs one
 * pass, not two; each step still rounds to 8 bits where it did as a layer of its own, so the
 * result is the same bytes as applying them one by one.
 */
export function applyAdjustments(backdrop: Buffer, frameWidth: number, box: FrameBox, steps: readonly AdjustmentStep[]): void {
  const merged: AdjustmentStep[] = [];
  for (const step of steps) {
    const last = merged.at(-1);
    if (step.kind === 'lut' && last?.kind === 'lut') merged[merged.length - 1] = { kind: 'lut', luts: composeLuts(last.luts, step.luts) };
    else merged.push(step);
  }
  const pixelSteps = merged.filter((s) => s.kind !== 'lut');
  if (pixelSteps.length === 0) {
    const only = merged[0];
    if (only?.kind === 'lut') lutPass(backdrop, frameWidth, box, only.luts);
    return;
  }
  // Each table goes into the pixel step after it (the first one's "before") or before it ("after").
  let before: Luts | undefined;
  const passes: Array<{ step: Exclude<AdjustmentStep, { kind: 'lut' }>; before: Luts | undefined; after: Luts | undefined }> = [];
  for (const step of merged) {
    if (step.kind === 'lut') {
      const last = passes.at(-1);
      if (last) last.after = step.luts;
      else before = step.luts;
      continue;
    }
    passes.push({ step, before, after: undefined });
    before = undefined;
  }
  for (const { step, before: pre, after: post } of passes) {
    if (step.kind === 'hue-saturation') hueSaturationPass(backdrop, frameWidth, box, step, pre, post);
    else pixelPass(backdrop, frameWidth, box, step, pre, post);
  }
}

function lutPass(d: Buffer, frameWidth: number, box: FrameBox, [r, g, b]: Luts): void {
  for (let y = box.top; y < box.top + box.height; y++) {
    const end = (y * frameWidth + box.left + box.width) * 4;
    for (let i = (y * frameWidth + box.left) * 4; i < end; i += 4) {
      if (d[i + 3] === 0) continue;
      d[i] = r[d[i]!]!;
      d[i + 1] = g[d[i + 1]!]!;
      d[i + 2] = b[d[i + 2]!]!;
    }
  }
}

/**
 * hue-saturation in normal mode, inlined (the hot loop of a full-frame adjustment). The hue
 * matrix is applied through per-channel tables of its products (h·v/255 for every 8-bit v: the
 * same products the matrix would compute), the saturation matrix after the clamp as written.
 */
function hueSaturationPass(
  d: Buffer,
  frameWidth: number,
  box: FrameBox,
  step: Extract<AdjustmentStep, { kind: 'hue-saturation' }>,
  pre: Luts | undefined,
  post: Luts | undefined,
): void {
  const h = hueRotateMatrix(step.hue);
  const T = new Float64Array(9 * 256);
  for (let v = 0; v < 256; v++) for (let k = 0; k < 3; k++) for (let c = 0; c < 3; c++) T[(k * 3 + c) * 256 + v] = h[k * 4 + c]! * (v / 255);
  const s = saturateMatrix(1 + step.saturation);
  const [s0, s1, s2, , s4, s5, s6, , s8, s9, s10] = s as [number, number, number, number, number, number, number, number, number, number, number, number];
  const opacity = step.opacity;
  const keep = 1 - opacity;
  const l = step.lightness;
  const [pr, pg, pb] = pre ?? [IDENTITY, IDENTITY, IDENTITY];
  const [qr, qg, qb] = post ?? [IDENTITY, IDENTITY, IDENTITY];
  for (let y = box.top; y < box.top + box.height; y++) {
    const end = (y * frameWidth + box.left + box.width) * 4;
    for (let i = (y * frameWidth + box.left) * 4; i < end; i += 4) {
      if (d[i + 3] === 0) continue;
      const r = pr[d[i]!]!, g = pg[d[i + 1]!]!, b = pb[d[i + 2]!]!;
      let x = T[r]! + T[256 + g]! + T[512 + b]!;
      let yy = T[768 + r]! + T[1024 + g]! + T[1280 + b]!;
      let z = T[1536 + r]! + T[1792 + g]! + T[2048 + b]!;
      x = x < 0 ? 0 : x > 1 ? 1 : x; yy = yy < 0 ? 0 : yy > 1 ? 1 : yy; z = z < 0 ? 0 : z > 1 ? 1 : z;
      let u = s0 * x + s1 * yy + s2 * z, v = s4 * x + s5 * yy + s6 * z, w = s8 * x + s9 * yy + s10 * z;
      u = u < 0 ? 0 : u > 1 ? 1 : u; v = v < 0 ? 0 : v > 1 ? 1 : v; w = w < 0 ? 0 : w > 1 ? 1 : w;
      if (l > 0) { u += (1 - u) * l; v += (1 - v) * l; w += (1 - w) * l; } else if (l < 0) { u *= 1 + l; v *= 1 + l; w *= 1 + l; }
      // the 8-bit adjusted value (rounded as (x + 0.5) | 0: the same as Math.round for x ≥ 0, and
      // this whole pass 53 -> 24 ms CPU over a 1080p frame, since Math.round is not inlined as
      // cheaply here) mixed in at the opacity, truncated as a Uint8 store truncates
      d[i] = qr[(keep * r + ((u * 255 + 0.5) | 0) * opacity + 0.5) | 0]!;
      d[i + 1] = qg[(keep * g + ((v * 255 + 0.5) | 0) * opacity + 0.5) | 0]!;
      d[i + 2] = qb[(keep * b + ((w * 255 + 0.5) | 0) * opacity + 0.5) | 0]!;
    }
  }
}

/** Any other per-pixel adjustment in normal mode: adjust and mix in one pass, in place. */
function pixelPass(
  d: Buffer,
  frameWidth: number,
  box: FrameBox,
  step: Extract<AdjustmentStep, { kind: 'pixel' }>,
  pre: Luts | undefined,
  post: Luts | undefined,
): void {
  const { px, opacity } = step;
  const c: Out = [0, 0, 0];
  const keep = 1 - opacity;
  const [pr, pg, pb] = pre ?? [IDENTITY, IDENTITY, IDENTITY];
  const [qr, qg, qb] = post ?? [IDENTITY, IDENTITY, IDENTITY];
  for (let y = box.top; y < box.top + box.height; y++) {
    const end = (y * frameWidth + box.left + box.width) * 4;
    for (let i = (y * frameWidth + box.left) * 4; i < end; i += 4) {
      if (d[i + 3] === 0) continue;
      const r = pr[d[i]!]!, g = pg[d[i + 1]!]!, b = pb[d[i + 2]!]!;
      px(r / 255, g / 255, b / 255, c);
      // the 8-bit adjusted value, as the unfused path rounds it, then the mix
      d[i] = qr[(keep * r + opacity * ((clamp01(c[0]) * 255 + 0.5) | 0) + 0.5) | 0]!;
      d[i + 1] = qg[(keep * g + opacity * ((clamp01(c[1]) * 255 + 0.5) | 0) + 0.5) | 0]!;
      d[i + 2] = qb[(keep * b + opacity * ((clamp01(c[2]) * 255 + 0.5) | 0) + 0.5) | 0]!;
    }
  }
}

/** The backdrop after the adjustment (a new buffer, same layout; alpha copied). */
export function adjust(backdrop: Buffer, a: AdjustmentLayerData): Buffer {
  const out = Buffer.from(backdrop);
  adjustPixels(out, a);
  return out;
}
