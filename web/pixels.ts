/**
 * Per-pixel work the browser's Canvas 2D has no operation for: adjustment layers and the noise
 * filter, on non-premultiplied RGBA bytes (what `getImageData` gives). The formulas follow the
 * server's renderer (renderer/), so the page and the server agree on what a version looks like.
 */
import type { AdjustmentLayerData } from '../shared/canvas.ts';

/** `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`, `transparent` → [r, g, b, a] bytes. */
export function parseColor(value: string): [number, number, number, number] {
  if (value === 'transparent') return [0, 0, 0, 0];
  let hex = value.slice(1);
  if (hex.length <= 4) hex = [...hex].map((c) => c + c).join('');
  if (hex.length === 6) hex += 'ff';
  const n = Number.parseInt(hex, 16);
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

const clamp = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);

function curveLut(points: ReadonlyArray<readonly [number, number]>): Uint8Array {
  const sorted = [...points].sort((a, b) => a[0] - b[0]);
  const lut = new Uint8Array(256);
  for (let x = 0; x < 256; x++) {
    let i = 0;
    while (i < sorted.length - 1 && sorted[i + 1]![0] < x) i++;
    const [x0, y0] = sorted[Math.min(i, sorted.length - 1)]!;
    const [x1, y1] = sorted[Math.min(i + 1, sorted.length - 1)]!;
    const t = x1 === x0 ? 0 : Math.min(1, Math.max(0, (x - x0) / (x1 - x0)));
    lut[x] = Math.round(clamp(y0 + (y1 - y0) * t));
  }
  return lut;
}

function rgbToHsl(r: number, g: number, b: number): [number, number, number] {
  const max = Math.max(r, g, b);
  const min = Math.min(r, g, b);
  const l = (max + min) / 2;
  if (max === min) return [0, 0, l];
  const d = max - min;
  const s = l > 0.5 ? d / (2 - max - min) : d / (max + min);
  const h = max === r ? (g - b) / d + (g < b ? 6 : 0) : max === g ? (b - r) / d + 2 : (r - g) / d + 4;
  return [h / 6, s, l];
}

function hslToRgb(h: number, s: number, l: number): [number, number, number] {
  if (s === 0) return [l, l, l];
  const hue = (p: number, q: number, t: number) => {
    if (t < 0) t += 1;
    if (t > 1) t -= 1;
    if (t < 1 / 6) return p + (q - p) * 6 * t;
    if (t < 1 / 2) return q;
    if (t < 2 / 3) return p + (q - p) * (2 / 3 - t) * 6;
    return p;
  };
  const q = l < 0.5 ? l * (1 + s) : l + s - l * s;
  const p = 2 * l - q;
  return [hue(p, q, h + 1 / 3), hue(p, q, h), hue(p, q, h - 1 / 3)];
}

/** Applies an adjustment to every pixel's colour (alpha unchanged), in place. */
export function adjustPixels(px: Uint8ClampedArray, adj: AdjustmentLayerData): void {
  const lut = [new Uint8Array(256), new Uint8Array(256), new Uint8Array(256)];
  let perPixel: ((r: number, g: number, b: number) => [number, number, number]) | undefined;
  switch (adj.adjustment) {
    case 'brightness-contrast':
      for (let v = 0; v < 256; v++) {
        const c = ((v / 255 - 0.5) * (1 + adj.contrast) + 0.5 + adj.brightness) * 255;
        lut[0]![v] = lut[1]![v] = lut[2]![v] = Math.round(clamp(c));
      }
      break;
    case 'levels':
      for (let v = 0; v < 256; v++) {
        const t = Math.min(1, Math.max(0, (v - adj.inputBlack) / Math.max(1, adj.inputWhite - adj.inputBlack)));
        const o = adj.outputBlack + (adj.outputWhite - adj.outputBlack) * Math.pow(t, 1 / adj.gamma);
        lut[0]![v] = lut[1]![v] = lut[2]![v] = Math.round(clamp(o));
      }
      break;
    case 'curves': {
      const c = curveLut(adj.points);
      for (let v = 0; v < 256; v++) {
        lut[0]![v] = adj.channel === 'rgb' || adj.channel === 'red' ? c[v]! : v;
        lut[1]![v] = adj.channel === 'rgb' || adj.channel === 'green' ? c[v]! : v;
        lut[2]![v] = adj.channel === 'rgb' || adj.channel === 'blue' ? c[v]! : v;
      }
      break;
    }
    case 'exposure':
      for (let v = 0; v < 256; v++) {
        const o = Math.pow(Math.min(1, (v / 255) * Math.pow(2, adj.exposure)), 1 / (adj.gamma ?? 1)) * 255;
        lut[0]![v] = lut[1]![v] = lut[2]![v] = Math.round(clamp(o));
      }
      break;
    case 'invert':
      for (let v = 0; v < 256; v++) lut[0]![v] = lut[1]![v] = lut[2]![v] = 255 - v;
      break;
    case 'threshold':
      for (let v = 0; v < 256; v++) lut[0]![v] = lut[1]![v] = lut[2]![v] = v;
      perPixel = (r, g, b) => {
        const y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
        const o = y >= adj.level ? 255 : 0;
        return [o, o, o];
      };
      break;
    case 'hue-saturation':
      perPixel = (r, g, b) => {
        const [h, s, l] = rgbToHsl(r / 255, g / 255, b / 255);
        const nh = (((h + adj.hue / 360) % 1) + 1) % 1;
        const ns = Math.min(1, Math.max(0, s * (1 + adj.saturation)));
        const nl = adj.lightness >= 0 ? l + (1 - l) * adj.lightness : l * (1 + adj.lightness);
        const [nr, ng, nb] = hslToRgb(nh, ns, nl);
        return [nr * 255, ng * 255, nb * 255];
      };
      break;
    case 'vibrance':
      perPixel = (r, g, b) => {
        const max = Math.max(r, g, b);
        const avg = (r + g + b) / 3;
        const amount = ((Math.abs(max - avg) * 2) / 255) * -adj.vibrance;
        return [r + (max - r) * amount, g + (max - g) * amount, b + (max - b) * amount];
      };
      break;
  }
  for (let i = 0; i < px.length; i += 4) {
    if (perPixel) {
      const [r, g, b] = perPixel(px[i]!, px[i + 1]!, px[i + 2]!);
      px[i] = r;
      px[i + 1] = g;
      px[i + 2] = b;
    } else {
      px[i] = lut[0]![px[i]!]!;
      px[i + 1] = lut[1]![px[i + 1]!]!;
      px[i + 2] = lut[2]![px[i + 2]!]!;
    }
  }
}

/** Deterministic noise (a hash of the pixel index), so two drawings of one version agree. */
export function noisePixels(px: Uint8ClampedArray, amount: number): void {
  for (let i = 0, n = 0; i < px.length; i += 4, n++) {
    let h = Math.imul(n ^ 0x9e3779b9, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    const delta = ((h & 255) - 127.5) * amount;
    px[i] = px[i]! + delta;
    px[i + 1] = px[i + 1]! + delta;
    px[i + 2] = px[i + 2]! + delta;
  }
}
