/**
 * Text layers through Pango (sharp's `text` input) with the shipped fonts (renderer/fonts.ts).
 *
 * libvips crops rendered text to the ink rectangle, which loses where the layout's box is. The
 * markup therefore starts with an invisible strut paragraph (an overlined "X" at alpha 1/65535:
 * decorations count as ink, invisible glyphs still do), which pins the image's top edge to the
 * layout's top; a one-off calibration render of two struts measures that paragraph's height, i.e.
 * where the real first line starts. Horizontally the box edge is inferred from the alignment
 * (left/justify: 0; centre: centred in the wrap width; right: flush with it); glyph side bearings
 * (≤ 1-2 px) are the only error.
 */
import sharp from 'sharp';
import type { TextLayerData } from '../shared/canvas.ts';
import { hex6, parseColor } from '../shared/color.ts';
import { safeFamily, useShippedFonts } from './fonts.ts';
import { multiply, scaleMatrix, translateMatrix, type Box, type Matrix, meanScale } from './geometry.ts';
import type { Raster } from './raster.ts';
import { placePixels } from './transform.ts';

export function escapeMarkup(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function weightOf(w: TextLayerData['fontWeight']): number {
  if (w === undefined || w === 'normal') return 400;
  if (w === 'bold') return 700;
  return w;
}

/** The outer span's attributes for a text layer rendered at `px` pixels per em. */
function spanAttributes(data: TextLayerData, px: number, scale: number): string {
  const attrs = [
    `font_family="${escapeMarkup(safeFamily(data.fontFamily))}"`,
    `font_size="${Math.max(1, Math.round(px * 1024))}"`,
    `font_weight="${weightOf(data.fontWeight)}"`,
    `font_style="${data.fontStyle === 'italic' ? 'italic' : 'normal'}"`,
  ];
  if (data.letterSpacing) attrs.push(`letter_spacing="${Math.round(data.letterSpacing * scale * 1024)}"`);
  // CSS semantics: a multiple of the font size. Pango's factor form multiplies the font's own line
  // height (1.36 em for Noto Sans), so the absolute form (1024ths of a point = of a pixel here).
  if (data.lineHeight !== undefined) attrs.push(`line_height="${Math.max(1024, Math.round(data.lineHeight * px * 1024))}"`);
  return attrs.join(' ');
}

const STRUT = '<span fgalpha="1" overline="single">X</span>';

interface TextOptions {
  text: string;
  dpi: number;
  rgba: true;
  width?: number;
  align: 'left' | 'centre' | 'right';
  justify: boolean;
  wrap: 'word-char';
}

function textOptions(markup: string, data: TextLayerData, wrapWidth: number | undefined): TextOptions {
  const options: TextOptions = {
    text: markup,
    dpi: 72, // 1 pt = 1 px
    rgba: true,
    align: data.align === 'center' ? 'centre' : data.align === 'right' ? 'right' : 'left',
    justify: data.align === 'justify',
    wrap: 'word-char',
  };
  if (wrapWidth !== undefined) options.width = wrapWidth;
  return options;
}

const strutHeights = new Map<string, number>();

/** Height of the strut paragraph for these attributes: where the text's first line starts. */
async function strutHeight(attrs: string, data: TextLayerData, wrapWidth: number | undefined): Promise<number> {
  const key = `${attrs}|${data.align}|${wrapWidth ?? ''}`;
  const known = strutHeights.get(key);
  if (known !== undefined) return known;
  const markup = `<span ${attrs}>${STRUT}\n<span overline="single" foreground="#000000">X</span></span>`;
  const { data: px, info } = await sharp({ text: textOptions(markup, data, wrapWidth) }).raw().toBuffer({ resolveWithObject: true });
  let first = 0;
  search: for (let y = 0; y < info.height; y++) {
    for (let x = 0; x < info.width; x++) {
      if (px[(y * info.width + x) * 4 + 3]! > 0) {
        first = y;
        break search;
      }
    }
  }
  if (strutHeights.size > 1000) strutHeights.clear();
  strutHeights.set(key, first);
  return first;
}

/** Rasterises a text layer with matrix `m` (layer-local → working frame) inside `clip`. */
export async function rasterizeText(data: TextLayerData, m: Matrix, clip: Box): Promise<Raster | undefined> {
  useShippedFonts();
  const color = parseColor(data.color);
  if (data.text.trim() === '' || color.a === 0) return undefined;
  const scale = meanScale(m);
  if (!(scale > 0)) return undefined;
  const px = data.fontSize * scale;
  if (px < 0.5) return undefined;
  const attrs = spanAttributes(data, px, scale);
  const wrapWidth = data.boxWidth === undefined ? undefined : Math.max(1, Math.round(data.boxWidth * scale));
  const alpha = Math.max(1, Math.round((color.a / 255) * 65535));
  const markup = `<span ${attrs}>${STRUT}\n<span foreground="${hex6(color)}" fgalpha="${alpha}">${escapeMarkup(data.text)}</span></span>`;
  const [{ data: pixels, info }, top] = await Promise.all([
    sharp({ text: textOptions(markup, data, wrapWidth) }).raw().toBuffer({ resolveWithObject: true }),
    strutHeight(attrs, data, wrapWidth),
  ]);
  let left = 0;
  if (wrapWidth !== undefined && data.align === 'center') left = (wrapWidth - info.width) / 2;
  if (wrapWidth !== undefined && data.align === 'right') left = wrapWidth - info.width;
  // Raster pixel (x, y) is layout point (x + left, y - top) at `scale`; back to layer-local, then m.
  const toLocal = multiply(scaleMatrix(1 / scale), translateMatrix(Math.round(left), -top));
  return placePixels({ data: pixels, width: info.width, height: info.height }, multiply(m, toLocal), clip);
}
