/** Colour strings of the canvas schema (`#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`, `transparent`). */

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
