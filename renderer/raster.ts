/**
 * A raster: RGBA, 8 bits per channel, not premultiplied (sharp's raw convention), positioned in
 * the working frame (the output's pixel grid) at integer `left`/`top`.
 */
import type { Box } from './geometry.ts';

export interface Raster {
  data: Buffer;
  width: number;
  height: number;
  left: number;
  top: number;
}

export function emptyRaster(box: Box): Raster {
  return { data: Buffer.alloc(box.width * box.height * 4), width: box.width, height: box.height, left: box.left, top: box.top };
}

export function rasterBox(r: Raster): Box {
  return { left: r.left, top: r.top, width: r.width, height: r.height };
}

/** The part of `r` inside `box` (a copy), or undefined when they do not overlap. */
export function cropRaster(r: Raster, box: Box): Raster | undefined {
  const left = Math.max(r.left, box.left);
  const top = Math.max(r.top, box.top);
  const right = Math.min(r.left + r.width, box.left + box.width);
  const bottom = Math.min(r.top + r.height, box.top + box.height);
  if (right <= left || bottom <= top) return undefined;
  if (left === r.left && top === r.top && right === r.left + r.width && bottom === r.top + r.height) return r;
  const width = right - left;
  const height = bottom - top;
  const data = Buffer.alloc(width * height * 4);
  for (let y = 0; y < height; y++) {
    const from = ((top - r.top + y) * r.width + (left - r.left)) * 4;
    r.data.copy(data, y * width * 4, from, from + width * 4);
  }
  return { data, width, height, left, top };
}

/** `r` grown by `margin` transparent pixels on every side (a copy). */
export function padRaster(r: Raster, margin: number): Raster {
  if (margin <= 0) return r;
  const width = r.width + 2 * margin;
  const height = r.height + 2 * margin;
  const data = Buffer.alloc(width * height * 4);
  for (let y = 0; y < r.height; y++) {
    r.data.copy(data, ((y + margin) * width + margin) * 4, y * r.width * 4, (y + 1) * r.width * 4);
  }
  return { data, width, height, left: r.left - margin, top: r.top - margin };
}

/** Multiplies every alpha by `opacity` (in place). */
export function scaleAlpha(r: Raster, opacity: number): void {
  if (opacity >= 1) return;
  const d = r.data;
  for (let i = 3; i < d.length; i += 4) d[i] = Math.round(d[i]! * opacity);
}

/** True when every alpha is 0. */
export function isTransparent(r: Raster): boolean {
  const d = r.data;
  for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return false;
  return true;
}

/** Premultiplied copy (for resampling with libvips operations sharp does not premultiply for). */
export function premultiply(data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(data.length);
  for (let i = 0; i < data.length; i += 4) {
    const a = data[i + 3]!;
    out[i] = Math.round((data[i]! * a) / 255);
    out[i + 1] = Math.round((data[i + 1]! * a) / 255);
    out[i + 2] = Math.round((data[i + 2]! * a) / 255);
    out[i + 3] = a;
  }
  return out;
}

/** Undoes `premultiply` in place. */
export function unpremultiply(data: Buffer): Buffer {
  for (let i = 0; i < data.length; i += 4) {
    const a = data[i + 3]!;
    if (a === 0) {
      data[i] = data[i + 1] = data[i + 2] = 0;
    } else if (a < 255) {
      data[i] = Math.min(255, Math.round((data[i]! * 255) / a));
      data[i + 1] = Math.min(255, Math.round((data[i + 1]! * 255) / a));
      data[i + 2] = Math.min(255, Math.round((data[i + 2]! * 255) / a));
    }
  }
  return data;
}
