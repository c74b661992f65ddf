/**
 * renderCanvas: a canvas state (shared/canvas.ts) + a reader of image bytes → an encoded image.
 * Pure: no database, no HTTP, no globals beyond the shipped-fonts fontconfig file. Everything is
 * rendered directly at the output's resolution (a thumbnail never composites full-size pixels):
 * the output box defines a "working frame", every layer's matrix is pre-multiplied by the map
 * canvas → frame, and each layer is rasterised only over its bounding box inside the frame.
 *
 * Per-pixel JavaScript runs here (non-native blend modes, adjustment layers, some filters): call
 * it through renderer/pool.ts from a server's main thread, never directly.
 */
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { z } from 'zod';
import { canvasSchema, describeIssue, canvasIssues, type Canvas, type Layer } from '../shared/canvas.ts';
import { AppError } from '../shared/errors.ts';
import { layersInOrder } from '../shared/layers.ts';
import { adjust, adjustmentStep, applyAdjustments, type AdjustmentStep } from './adjust.ts';
import { SEPARABLE, blendAdjusted, blendInto } from './blend.ts';
import { parseColor } from '../shared/color.ts';
import { applyFilters, filterMargin } from './filters.ts';
import { seedOf } from '../shared/color.ts';
import { useShippedFonts } from './fonts.ts';
import { grow, meanScale, multiply, transformedBox, intersect, union, type Box, type Matrix } from './geometry.ts';
import { rasterizeImage } from './image.ts';
import { cropRaster, padRaster, rasterBox, type Raster } from './raster.ts';
import { bytesHash, cachedLayer, keepLayer, layerKey } from './layer-cache.ts';
import { rasterizeText } from './text.ts';
import type { Fit, ImageSource, OutputFormat, RenderCanvas, RenderOptions, RenderResult } from './types.ts';
import { rasterizeDrawing, rasterizeVector, shapeSvg } from './vector.ts';

export type { Fit, ImageFile, ImageSource, OutputFormat, RenderCanvas, RenderOptions, RenderResult } from './types.ts';

useShippedFonts();

/** What one render may cost; beyond these the render is refused with `render_too_large` (413). */
export const RENDER_LIMITS = {
  /** Output pixels (width × height after dpr): 25 MP, e.g. 5000 × 5000. */
  maxOutputPixels: 25_000_000,
  /** Longest output side (WebP's own maximum). */
  maxOutputSide: 16_383,
  /** Stroke and polygon points over all layers. */
  maxVectorPoints: 2_000_000,
  /** Characters of text and SVG path data over all layers. */
  maxTextChars: 1_000_000,
} as const;

const CONTENT_TYPES: Record<OutputFormat, string> = {
  png: 'image/png',
  webp: 'image/webp',
  jpeg: 'image/jpeg',
  avif: 'image/avif',
};

const side = z.number().int().min(1).max(RENDER_LIMITS.maxOutputSide);
export const renderOptionsSchema = z.strictObject({
  width: side.optional(),
  height: side.optional(),
  fit: z.enum(['contain', 'cover', 'fill', 'inside', 'outside']).optional(),
  dpr: z.number().min(1).max(4).optional(),
  format: z.enum(['png', 'webp', 'jpeg', 'avif']).optional(),
  quality: z.number().int().min(1).max(100).optional(),
  region: z
    .strictObject({
      left: z.number().int().min(0),
      top: z.number().int().min(0),
      width: z.number().int().min(1),
      height: z.number().int().min(1),
    })
    .optional(),
});

/** Where the canvas lands in the output: the canvas → frame matrix, the frame and the content box. */
export interface OutputGeometry {
  width: number;
  height: number;
  matrix: Matrix;
  /** The part of the frame the canvas region covers (the rest, with fit=contain, is transparent). */
  content: Box;
}

export function outputGeometry(canvas: Canvas, options: RenderOptions): OutputGeometry {
  const parsed = renderOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new AppError('invalid_render_options', `render option ${issue.path.join('.') || '(options)'}: ${issue.message}`);
  }
  const o = parsed.data;
  const full: Box = { left: 0, top: 0, width: canvas.meta.width, height: canvas.meta.height };
  const region = o.region ? intersect(o.region, full) : full;
  if (!region) throw new AppError('invalid_render_options', 'render option region: lies outside the canvas');
  const dpr = o.dpr ?? 1;
  const bw = o.width === undefined ? undefined : Math.round(o.width * dpr);
  const bh = o.height === undefined ? undefined : Math.round(o.height * dpr);
  let sx: number, sy: number, width: number, height: number;
  let tx = 0, ty = 0;
  if (bw === undefined && bh === undefined) {
    sx = sy = dpr;
    width = Math.round(region.width * dpr);
    height = Math.round(region.height * dpr);
  } else if (bw === undefined || bh === undefined) {
    sx = sy = bw !== undefined ? bw / region.width : bh! / region.height;
    width = bw ?? Math.max(1, Math.round(region.width * sx));
    height = bh ?? Math.max(1, Math.round(region.height * sy));
  } else {
    const fit: Fit = o.fit ?? 'inside';
    const kx = bw / region.width;
    const ky = bh / region.height;
    if (fit === 'fill') {
      [sx, sy, width, height] = [kx, ky, bw, bh];
    } else if (fit === 'inside' || fit === 'outside') {
      sx = sy = fit === 'inside' ? Math.min(kx, ky) : Math.max(kx, ky);
      width = Math.max(1, Math.round(region.width * sx));
      height = Math.max(1, Math.round(region.height * sy));
    } else {
      sx = sy = fit === 'contain' ? Math.min(kx, ky) : Math.max(kx, ky);
      [width, height] = [bw, bh];
      // contain: centred with transparent bands; cover: centred and cut.
      tx = Math.round((bw - region.width * sx) / 2);
      ty = Math.round((bh - region.height * sy) / 2);
    }
  }
  if (width * height > RENDER_LIMITS.maxOutputPixels || width > RENDER_LIMITS.maxOutputSide || height > RENDER_LIMITS.maxOutputSide) {
    throw new AppError(
      'render_too_large',
      `The output would be ${width} × ${height} pixels; at most ${RENDER_LIMITS.maxOutputPixels} pixels and ${RENDER_LIMITS.maxOutputSide} per side are rendered.`,
    );
  }
  const matrix: Matrix = [sx, 0, 0, sy, tx - sx * region.left, ty - sy * region.top];
  const frame: Box = { left: 0, top: 0, width, height };
  const content = intersect(transformedBox(matrix, region.left, region.top, region.left + region.width, region.top + region.height), frame) ?? frame;
  return { width, height, matrix, content };
}

/**
 * Where a render's CPU goes, per stage (ms of process CPU time: this thread plus libvips'
 * threads, so it holds on a busy machine where wall time does not); set by the benchmark for
 * sequential renders, off (undefined) otherwise.
 */
let profile: Record<string, number> | undefined;
export function profileRenders(target: Record<string, number> | undefined): void {
  profile = target;
}
async function timed<T>(stage: string, work: () => Promise<T> | T): Promise<T> {
  if (!profile) return work();
  const c0 = process.cpuUsage();
  try {
    return await work();
  } finally {
    const c = process.cpuUsage(c0);
    profile[stage] = (profile[stage] ?? 0) + (c.user + c.system) / 1000;
  }
}

function checkCost(layers: Array<[string, Layer]>): void {
  let points = 0;
  let chars = 0;
  for (const [, layer] of layers) {
    if (layer.type === 'drawing') for (const s of layer.data.strokes) points += s.points.length / 2;
    if (layer.type === 'shape') {
      points += (layer.data.points?.length ?? 0) / 2;
      chars += layer.data.path?.length ?? 0;
    }
    if (layer.type === 'text') chars += layer.data.text.length;
  }
  if (points > RENDER_LIMITS.maxVectorPoints || chars > RENDER_LIMITS.maxTextChars) {
    throw new AppError(
      'render_too_large',
      `The canvas has ${points} vector points and ${chars} characters of text and path data; at most ${RENDER_LIMITS.maxVectorPoints} and ${RENDER_LIMITS.maxTextChars} are rendered.`,
    );
  }
}

function opaque(frame: Buffer): boolean {
  for (let i = 3; i < frame.length; i += 4) if (frame[i] !== 255) return false;
  return true;
}

function fillBox(buf: Buffer, frameWidth: number, box: Box, color: { r: number; g: number; b: number; a: number }): void {
  if (color.a === 0) return;
  const px = Buffer.from([color.r, color.g, color.b, color.a]);
  for (let y = box.top; y < box.top + box.height; y++) {
    const start = (y * frameWidth + box.left) * 4;
    buf.fill(px, start, start + box.width * 4);
  }
}

/** A layer's raster; undefined when nothing of it shows; null when an image's bytes do not decode. */
async function rasterizeLayer(layer: Exclude<Layer, { type: 'adjustment' }>, m: Matrix, clip: Box, bytes: Uint8Array | undefined): Promise<Raster | undefined | null> {
  switch (layer.type) {
    case 'image':
      return bytes ? rasterizeImage(bytes, layer.data, m, clip) : null;
    case 'text':
      return rasterizeText(layer.data, m, clip);
    case 'shape': {
      const piece = shapeSvg(layer.data);
      return piece ? rasterizeVector(piece, m, clip) : undefined;
    }
    case 'drawing':
      return rasterizeDrawing(layer.data, m, clip);
  }
}

/**
 * Layers rasterised ahead of the one being composited (their libvips work — decode, resample,
 * librsvg, Pango — runs in libuv's threads while this thread blends, and their JavaScript —
 * bilinear placement, filters — runs while this thread would otherwise wait for a layer below).
 * Bounded by memory: as many layers ahead as `LOOKAHEAD_BYTES` holds if every raster were the size
 * of the frame, never fewer than `LOOKAHEAD_MIN`; and by `LOOKAHEAD_MAX`, because libuv's thread
 * pool (4 threads) is process-wide: the main thread's fs and zlib work queues behind whatever a
 * render has started. Measured against three ahead (what this was), alternating in one process on
 * the loaded machine, cold bench canvas: 8 ahead full PNG 0.85–1.02× the wall and 0.88–0.99× the
 * CPU over three runs, 320-px thumbnail 0.96× the wall, the same CPU; 16–20 ahead not clearly
 * better (README "Speed"), not worth queueing twice as much in the shared pool.
 */
const LOOKAHEAD_BYTES = 128 * 1024 * 1024;
const LOOKAHEAD_MIN = 3;
const LOOKAHEAD_MAX = 8;

/** Bumped when a rasteriser's output changes, so rasters kept by an older build are not reused. */
const RASTER_VERSION = 1;

interface LayerContext {
  frameMatrix: Matrix;
  content: Box;
  scale: number;
  imageBytes: Map<string, Promise<Uint8Array | undefined>>;
  imageHashes: Map<string, string>;
  missing: Set<string>;
}

/** A layer's raster, filtered and cut to the content box: from the layer cache, or made now. */
async function prepareLayer(id: string, layer: Exclude<Layer, { type: 'adjustment' }>, ctx: LayerContext): Promise<Raster | undefined> {
  const { content, scale } = ctx;
  const m = multiply(ctx.frameMatrix, layer.transform);
  const margin = filterMargin(layer.filters, scale);
  const clip = grow(content, margin);
  let bytes: Uint8Array | undefined;
  let source: string | undefined;
  if (layer.type === 'image') {
    const imageId = layer.data.imageId;
    bytes = await ctx.imageBytes.get(imageId);
    if (!bytes || bytes.byteLength === 0) {
      ctx.missing.add(imageId);
      return undefined;
    }
    source = ctx.imageHashes.get(imageId);
    if (source === undefined) ctx.imageHashes.set(imageId, (source = bytesHash(bytes)));
  }
  const filtered = layer.filters.length > 0;
  const key = layerKey([RASTER_VERSION, layer.type, layer.data, source ?? null, m, clip, content, filtered ? [layer.filters, scale, seedOf(id)] : null]);
  const hit = cachedLayer(key);
  if (hit) return hit.raster;
  const raster = await timed(`rasterise ${layer.type}`, () => rasterizeLayer(layer, m, clip, bytes));
  if (raster === null) {
    ctx.missing.add((layer.data as { imageId: string }).imageId);
    return undefined;
  }
  let out = raster;
  if (out && filtered) {
    const unfiltered = out;
    out = await timed('filters', () => applyFilters(padRaster(unfiltered, margin), layer.filters, scale, seedOf(id)));
  }
  // Nothing is drawn outside the canvas (or the region): the bands of fit=contain stay empty.
  const visible = out ? cropRaster(out, content) : undefined;
  keepLayer(key, visible);
  return visible;
}

/**
 * Frames kept for this thread's next render. A 1080p frame is 8 MB of external memory; a fresh
 * one per render made V8 run a full mark-compact on almost every render ("GC in old space
 * requested", up to 47 ms of pause seen on the bench canvas) and left encoding and adjustments
 * paying for it. A frame goes back here once its render has encoded; the next render of a size
 * up to the spare's takes it (a view of its first bytes) and clears it.
 */
const spareFrames: Buffer[] = [];
const SPARE_FRAMES = 2;
/** Larger frames (over 4K × 2K) are not kept: rare, and their memory is better returned. */
const SPARE_FRAME_BYTES = 32 * 1024 * 1024;
function takeFrame(bytes: number): { frame: Buffer; whole: Buffer } {
  let best = -1;
  for (let i = 0; i < spareFrames.length; i++) {
    const f = spareFrames[i]!;
    if (f.length >= bytes && f.length <= 2 * bytes && (best < 0 || f.length < spareFrames[best]!.length)) best = i;
  }
  if (best < 0) {
    const whole = Buffer.alloc(bytes);
    return { frame: whole, whole };
  }
  const whole = spareFrames.splice(best, 1)[0]!;
  const frame = whole.subarray(0, bytes);
  frame.fill(0);
  return { frame, whole };
}
function giveFrame(whole: Buffer): void {
  if (whole.length > SPARE_FRAME_BYTES) return;
  spareFrames.push(whole);
  if (spareFrames.length > SPARE_FRAMES) spareFrames.shift();
}

export const renderCanvas: RenderCanvas = async (input: Canvas, images: ImageSource, options: RenderOptions = {}): Promise<RenderResult> => {
  const parsed = canvasSchema.safeParse(input);
  if (!parsed.success) {
    const issues = canvasIssues(parsed.error);
    throw new AppError('invalid_canvas', issues.slice(0, 3).map(describeIssue).join('; '));
  }
  const canvas = parsed.data;
  const geometry = outputGeometry(canvas, options);
  const { width, height, matrix: frameMatrix, content } = geometry;
  const format: OutputFormat = options.format ?? 'png';
  const layers = layersInOrder(canvas.layers).filter(([, l]) => l.visible && l.opacity > 0);
  checkCost(layers);

  // Each distinct image is read once, all in parallel; a failing read is a missing image.
  const imageBytes = new Map<string, Promise<Uint8Array | undefined>>();
  const missing = new Set<string>();
  for (const [, layer] of layers) {
    if (layer.type !== 'image' || imageBytes.has(layer.data.imageId)) continue;
    const id = layer.data.imageId;
    imageBytes.set(
      id,
      images(id)
        .then((got) => (got === undefined || got instanceof Uint8Array ? got : readFile(got.file)))
        .catch(() => undefined),
    );
  }

  // The frame: raw RGBA (not premultiplied), composited in place layer by layer, each only over
  // its own box. (Runs of normal layers in one libvips composite() measured slower: every layer
  // with another mode forces the whole frame out of libvips and back.)
  const { frame: base, whole } = takeFrame(width * height * 4);
  try {
    const background = parseColor(canvas.meta.background);
    fillBox(base, width, geometry.content, background);
    // Compositing never lowers an opaque backdrop's alpha (source-over: αo = αs + 1·(1 − αs) = 1;
    // adjustments keep alpha), so an opaque background over the whole frame stays opaque: no scan.
    const surelyOpaque = background.a === 255 && content.left === 0 && content.top === 0 && content.width === width && content.height === height;
    const raw = { width, height, channels: 4 as const };

    const scale = meanScale(frameMatrix);
    const frame: Box = { left: 0, top: 0, width, height };
    // Where the frame has pixels (alpha > 0) so far: adjustments leave the rest alone, so they run
    // over this box only.
    let painted: Box | undefined = background.a > 0 ? content : undefined;
    const ctx: LayerContext = { frameMatrix, content, scale, imageBytes, imageHashes: new Map(), missing };
    // Sequential while profiling, so each stage's CPU time is its own.
    const lookahead = profile ? 0 : Math.min(LOOKAHEAD_MAX, Math.max(LOOKAHEAD_MIN, Math.floor(LOOKAHEAD_BYTES / (width * height * 4))));
    const prepared = new Map<number, Promise<Raster | undefined>>();
    const start = (i: number) => {
      if (i >= layers.length || prepared.has(i)) return;
      const [lid, l] = layers[i]!;
      if (l.type === 'adjustment') return;
      const p = prepareLayer(lid, l, ctx);
      p.catch(() => {}); // awaited in order below; a render that failed earlier drops it
      prepared.set(i, p);
    };
    for (let index = 0; index < layers.length; index++) {
      const [id, layer] = layers[index]!;
      for (let k = index; k <= index + lookahead; k++) start(k);
      if (layer.type === 'adjustment') {
        await timed('adjustment layers', async () => {
          // Consecutive adjustment layers without filters run as one pass (renderer/adjust.ts).
          const steps: AdjustmentStep[] = [];
          for (let j = index; j < layers.length; j++) {
            const next = layers[j]![1];
            const step = next.type === 'adjustment' && next.filters.length === 0 ? adjustmentStep(next.data, next.opacity, next.blendMode, (mode) => SEPARABLE[mode]) : undefined;
            if (!step) break;
            steps.push(step);
          }
          if (steps.length > 0) {
            if (painted) applyAdjustments(base, width, painted, steps);
            index += steps.length - 1;
            return;
          }
          let adjusted = adjust(base, layer.data);
          if (layer.filters.length > 0) {
            adjusted = (await applyFilters({ data: adjusted, width, height, left: 0, top: 0 }, layer.filters, scale, seedOf(id))).data;
          }
          blendAdjusted(base, adjusted, layer.opacity, layer.blendMode);
        });
        continue;
      }
      const placed = await prepared.get(index);
      prepared.delete(index);
      if (!placed) continue;
      // libvips' own blend modes deviate from the W3C formulas wherever the source is translucent
      // (measured up to 107/255 off, even over an opaque backdrop; libvips#4614): all in JS.
      await timed(`blend ${layer.blendMode === 'normal' ? 'normal' : 'other modes'}`, () => blendInto(base, width, height, placed, layer.blendMode, layer.opacity));
      painted = union(painted, intersect(rasterBox(placed), frame));
    }

    let out = sharp(base, { raw, limitInputPixels: false });
    const quality = options.quality;
    switch (format) {
      // Encoder settings chosen for live renders (bench/RESULTS.md): zlib level 1 without adaptive
      // filtering is 40-52 ms of CPU and 4.5 MB for the bench frame against 274 ms and 2.0 MB at
      // level 6 with adaptive filtering (README "Speed": every setting measured); WebP effort 2
      // is 114 ms against 533 ms at the default 4 (+4 % bytes). An opaque frame is written as RGB.
      case 'png':
        if (surelyOpaque || opaque(base)) out = out.removeAlpha();
        out = out.png({ compressionLevel: 1, adaptiveFiltering: false });
        break;
      case 'webp':
        out = out.webp({ quality: quality ?? 82, effort: 2 });
        break;
      case 'jpeg': {
        // An opaque frame only loses its alpha (the same pixels as flattening it: 19 -> 13 ms).
        if (surelyOpaque || opaque(base)) out = out.removeAlpha();
        else out = out.flatten({ background: background.a === 255 ? { r: background.r, g: background.g, b: background.b } : '#ffffff' });
        out = out.jpeg({ quality: quality ?? 85 });
        break;
      }
      case 'avif':
        out = out.avif({ quality: quality ?? 55, effort: 2 });
        break;
    }
    const data = await timed(`encode ${format}`, () => out.toBuffer());
    return { data, format, width, height, contentType: CONTENT_TYPES[format], missingImages: [...missing].sort() };
  } finally {
    // sharp has finished reading the frame (or never will): the next render may have it.
    giveFrame(whole);
  }
};
