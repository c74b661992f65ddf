/**
 * Draws a canvas (shared/canvas.ts) with the browser's Canvas 2D, with the same meaning as the
 * server's renderer (renderer/): layers bottom to top by `order` (ties by id), each drawn in its
 * own coordinate system (`transform` = the 2-D affine matrix), composited with its opacity and
 * blend mode — Canvas 2D's `globalCompositeOperation` implements all 16 W3C blend modes — and its
 * filters (CSS filters where Canvas 2D has them; noise and pixelate by hand). Adjustment layers
 * recolour everything below them, with the renderer's own functions (shared/color.ts).
 *
 * The page's drawing and the server's render of one version are compared per pixel in
 * test/editor.test.ts.
 */
import type { Canvas, Filter, Layer } from '../shared/canvas.ts';
import { layersInOrder } from '../shared/layers.ts';
import { addNoisePixels, adjustPixels, parseColor, seedOf } from '../shared/color.ts';

/** An image layer's pixels, by images.image_id (undefined: not loaded, or not visible to this user). */
export type ImageLookup = (imageId: string) => CanvasImageSource | undefined;

type Ctx = CanvasRenderingContext2D;

const BLEND: Record<Layer['blendMode'], GlobalCompositeOperation> = {
  normal: 'source-over',
  multiply: 'multiply',
  screen: 'screen',
  overlay: 'overlay',
  darken: 'darken',
  lighten: 'lighten',
  'color-dodge': 'color-dodge',
  'color-burn': 'color-burn',
  'hard-light': 'hard-light',
  'soft-light': 'soft-light',
  difference: 'difference',
  exclusion: 'exclusion',
  hue: 'hue',
  saturation: 'saturation',
  color: 'color',
  luminosity: 'luminosity',
};

function cssColor(value: string | null | undefined): string | undefined {
  if (!value || value === 'transparent') return undefined;
  const { r, g, b, a } = parseColor(value);
  return `rgba(${r},${g},${b},${a / 255})`;
}

/** The CSS filter string for the filters Canvas 2D has; pixelate and noise are applied by hand. */
function cssFilter(filters: readonly Filter[]): string {
  const out: string[] = [];
  for (const f of filters) {
    switch (f.type) {
      case 'blur':
        out.push(`blur(${f.radius}px)`);
        break;
      case 'brightness':
      case 'contrast':
      case 'saturate':
      case 'grayscale':
      case 'sepia':
      case 'invert':
        out.push(`${f.type}(${f.amount})`);
        break;
      case 'hue-rotate':
        out.push(`hue-rotate(${f.degrees}deg)`);
        break;
      case 'drop-shadow':
        // CSS's blur radius is 2σ, as the renderer's (σ = blur / 2).
        out.push(`drop-shadow(${f.offsetX}px ${f.offsetY}px ${f.blur}px ${cssColor(f.color) ?? 'transparent'})`);
        break;
      default:
        break;
    }
  }
  return out.length ? out.join(' ') : 'none';
}

function drawShape(ctx: Ctx, layer: Extract<Layer, { type: 'shape' }>): void {
  const d = layer.data;
  const path = new Path2D();
  switch (d.shape) {
    case 'rectangle': {
      const r = Math.min(d.cornerRadius ?? 0, d.width / 2, d.height / 2);
      if (r > 0) path.roundRect(0, 0, d.width, d.height, r);
      else path.rect(0, 0, d.width, d.height);
      break;
    }
    case 'ellipse':
      path.ellipse(d.width / 2, d.height / 2, d.width / 2, d.height / 2, 0, 0, Math.PI * 2);
      break;
    case 'line': {
      // From the first point to the second, or from (0, 0) to (width, height) — as the renderer.
      const p = d.points && d.points.length >= 4 ? d.points : [0, 0, d.width, d.height];
      path.moveTo(p[0]!, p[1]!);
      path.lineTo(p[2]!, p[3]!);
      break;
    }
    case 'polygon': {
      const p = d.points ?? [];
      for (let i = 0; i + 1 < p.length; i += 2) {
        if (i === 0) path.moveTo(p[0]!, p[1]!);
        else path.lineTo(p[i]!, p[i + 1]!);
      }
      path.closePath();
      break;
    }
    case 'path':
      path.addPath(new Path2D(d.path ?? ''));
      break;
  }
  const fill = cssColor(d.fill);
  if (fill && d.shape !== 'line') {
    ctx.fillStyle = fill;
    ctx.fill(path);
  }
  const stroke = cssColor(d.stroke);
  if (stroke && d.strokeWidth > 0) {
    ctx.strokeStyle = stroke;
    ctx.lineWidth = d.strokeWidth;
    ctx.lineJoin = 'miter';
    ctx.lineCap = 'butt';
    ctx.stroke(path);
  }
}

function drawStrokes(ctx: Ctx, layer: Extract<Layer, { type: 'drawing' }>): void {
  for (const s of layer.data.strokes) {
    const p = s.points;
    if (p.length < 2) continue;
    ctx.save();
    ctx.globalAlpha = s.opacity ?? (s.tool === 'marker' ? 0.5 : 1);
    ctx.globalCompositeOperation = s.tool === 'eraser' ? 'destination-out' : 'source-over';
    ctx.strokeStyle = cssColor(s.color) ?? 'black';
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = s.width;
    // The renderer's tools: pen round; marker a chisel (square caps, bevel joins, translucent);
    // brush round with a soft edge (Gaussian σ = width / 6); eraser removes the layer's earlier strokes.
    ctx.lineCap = s.tool === 'marker' ? 'square' : 'round';
    ctx.lineJoin = s.tool === 'marker' ? 'bevel' : 'round';
    if (s.tool === 'brush') ctx.filter = `blur(${s.width / 6}px)`;
    ctx.beginPath();
    if (p.length === 2) {
      if (s.tool === 'marker') ctx.rect(p[0]! - s.width / 2, p[1]! - s.width / 2, s.width, s.width);
      else ctx.arc(p[0]!, p[1]!, s.width / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.moveTo(p[0]!, p[1]!);
      for (let i = 2; i + 1 < p.length; i += 2) ctx.lineTo(p[i]!, p[i + 1]!);
      ctx.stroke();
    }
    ctx.restore();
  }
}

/**
 * Text laid out as the renderer's Pango does: lines split on \n, wrapped at `boxWidth` (words, then
 * characters), aligned in it; each line is the font's ascent + descent high, or `lineHeight` × the
 * font size (the difference shared above and below, as CSS half-leading), and `y` is each line's
 * baseline from the layer's top.
 */
/** The height of a text layer's lines (what layoutText places). */
export function textHeight(ctx: Ctx, d: Extract<Layer, { type: 'text' }>['data'], lines: number): number {
  const m = ctx.measureText('X');
  const natural = (m.fontBoundingBoxAscent || d.fontSize * 1.069) + (m.fontBoundingBoxDescent || d.fontSize * 0.293);
  return lines * (d.lineHeight !== undefined ? d.lineHeight * d.fontSize : natural);
}

export function layoutText(ctx: Ctx, d: Extract<Layer, { type: 'text' }>['data']): Array<{ text: string; x: number; y: number }> {
  const m = ctx.measureText('X');
  const ascent = m.fontBoundingBoxAscent || d.fontSize * 1.069;
  const descent = m.fontBoundingBoxDescent || d.fontSize * 0.293;
  const natural = ascent + descent;
  // CSS's meaning, as the renderer's: a multiple of the font size; absent = the font's own.
  const lineHeight = d.lineHeight !== undefined ? d.lineHeight * d.fontSize : natural;
  const lead = (lineHeight - natural) / 2;
  const lines: string[] = [];
  for (const paragraph of d.text.split('\n')) {
    if (d.boxWidth === undefined) {
      lines.push(paragraph);
      continue;
    }
    let line = '';
    for (const word of paragraph.split(/(\s+)/)) {
      const next = line + word;
      if (line && ctx.measureText(next).width > d.boxWidth) {
        lines.push(line.trimEnd());
        line = word.trimStart();
      } else line = next;
    }
    lines.push(line);
  }
  const box = d.boxWidth ?? Math.max(0, ...lines.map((l) => ctx.measureText(l).width));
  return lines.map((text, i) => {
    const w = ctx.measureText(text).width;
    const x = d.align === 'center' ? (box - w) / 2 : d.align === 'right' ? box - w : 0;
    return { text, x, y: i * lineHeight + lead + ascent };
  });
}

function drawText(ctx: Ctx, layer: Extract<Layer, { type: 'text' }>): void {
  const d = layer.data;
  ctx.font = `${d.fontStyle === 'italic' ? 'italic ' : ''}${d.fontWeight ?? 'normal'} ${d.fontSize}px "${d.fontFamily}", "Noto Sans", sans-serif`;
  ctx.fillStyle = cssColor(d.color) ?? 'transparent';
  ctx.textBaseline = 'alphabetic';
  if ('letterSpacing' in ctx && d.letterSpacing !== undefined) (ctx as Ctx & { letterSpacing: string }).letterSpacing = `${d.letterSpacing}px`;
  for (const line of layoutText(ctx, d)) ctx.fillText(line.text, line.x, line.y);
}

function drawImage(ctx: Ctx, layer: Extract<Layer, { type: 'image' }>, images: ImageLookup): void {
  const source = images(layer.data.imageId);
  if (!source) return;
  const natural = source as { width: number; height: number };
  const crop = layer.data.crop ?? { x: 0, y: 0, width: natural.width, height: natural.height };
  ctx.save();
  ctx.translate(layer.data.flipX ? crop.width : 0, layer.data.flipY ? crop.height : 0);
  ctx.scale(layer.data.flipX ? -1 : 1, layer.data.flipY ? -1 : 1);
  ctx.drawImage(source, crop.x, crop.y, crop.width, crop.height, 0, 0, crop.width, crop.height);
  ctx.restore();
}

function pixelate(ctx: Ctx, size: number): void {
  const { width, height } = ctx.canvas;
  const small = document.createElement('canvas');
  small.width = Math.max(1, Math.ceil(width / size));
  small.height = Math.max(1, Math.ceil(height / size));
  const s = small.getContext('2d')!;
  s.imageSmoothingEnabled = true;
  s.drawImage(ctx.canvas, 0, 0, small.width, small.height);
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, small.width * size, small.height * size);
  ctx.restore();
}

/** Draws one layer's content onto a fresh surface of the canvas's size (its own pixels only). */
function layerSurface(
  layerId: string,
  layer: Exclude<Layer, { type: 'adjustment' }>,
  width: number,
  height: number,
  images: ImageLookup,
  scale: number,
): HTMLCanvasElement {
  const surface = document.createElement('canvas');
  surface.width = width;
  surface.height = height;
  const ctx = surface.getContext('2d')!;
  const [a, b, c, d, e, f] = layer.transform;
  ctx.setTransform(a * scale, b * scale, c * scale, d * scale, e * scale, f * scale);
  if (layer.type === 'shape') drawShape(ctx, layer);
  else if (layer.type === 'drawing') drawStrokes(ctx, layer);
  else if (layer.type === 'text') drawText(ctx, layer);
  else drawImage(ctx, layer, images);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  const css = cssFilter(layer.filters);
  const byHand = layer.filters.filter((x) => x.type === 'pixelate' || x.type === 'noise' || x.type === 'sharpen');
  if (css === 'none' && byHand.length === 0) return surface;
  // Filters apply to the layer's own pixels, in the order given.
  let out = surface;
  if (css !== 'none') {
    out = document.createElement('canvas');
    out.width = width;
    out.height = height;
    const o = out.getContext('2d')!;
    o.filter = css;
    o.drawImage(surface, 0, 0);
  }
  const octx = out.getContext('2d')!;
  for (const x of byHand) {
    if (x.type === 'pixelate') pixelate(octx, Math.max(1, Math.round(x.size * scale)));
    else if (x.type === 'noise') {
      const img = octx.getImageData(0, 0, width, height);
      addNoisePixels(img.data, width, 0, 0, x.amount, seedOf(layerId));
      octx.putImageData(img, 0, 0);
    }
  }
  return out;
}

/**
 * Draws `canvas` onto `ctx` (whose canvas is `meta.width × scale` by `meta.height × scale`).
 * Returns the ids of image layers whose image was not available yet.
 */
export function drawCanvas(ctx: Ctx, canvas: Canvas, images: ImageLookup, scale = 1): string[] {
  const width = ctx.canvas.width;
  const height = ctx.canvas.height;
  const missing: string[] = [];
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.globalCompositeOperation = 'source-over';
  ctx.globalAlpha = 1;
  ctx.clearRect(0, 0, width, height);
  const background = cssColor(canvas.meta.background);
  if (background) {
    ctx.fillStyle = background;
    ctx.fillRect(0, 0, width, height);
  }
  for (const [layerId, layer] of layersInOrder(canvas.layers)) {
    if (!layer.visible || layer.opacity <= 0) continue;
    if (layer.type === 'adjustment') {
      // Everything below, recoloured, then mixed back with the layer's opacity and blend mode.
      const below = ctx.getImageData(0, 0, width, height);
      const adjusted = new ImageData(new Uint8ClampedArray(below.data), width, height);
      adjustPixels(adjusted.data, layer.data);
      const surface = document.createElement('canvas');
      surface.width = width;
      surface.height = height;
      surface.getContext('2d')!.putImageData(adjusted, 0, 0);
      ctx.globalAlpha = layer.opacity;
      ctx.globalCompositeOperation = BLEND[layer.blendMode];
      ctx.drawImage(surface, 0, 0);
      continue;
    }
    if (layer.type === 'image' && !images(layer.data.imageId)) missing.push(layer.data.imageId);
    const surface = layerSurface(layerId, layer, width, height, images, scale);
    ctx.globalAlpha = layer.opacity;
    ctx.globalCompositeOperation = BLEND[layer.blendMode];
    ctx.drawImage(surface, 0, 0);
  }
  ctx.restore();
  return missing;
}
