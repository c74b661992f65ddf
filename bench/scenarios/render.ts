/**
 * The renderer benchmark's canvas and measurement: a 1920 × 1080 canvas of 20 layers — every
 * layer type, mixed blend modes, filters, two adjustment layers — over in-memory JPEG originals,
 * rendered in-process by renderCanvas (and through the RenderPool for its overhead).
 */
import sharp from 'sharp';
import type { BlendMode, Canvas, Filter, Layer } from '../../shared/canvas.ts';
import type { ImageSource, RenderOptions } from '../../renderer/types.ts';
import { renderCanvas } from '../../renderer/index.ts';
import { summarize, type Summary } from '../lib/stats.ts';

type M = [number, number, number, number, number, number];
const rot = (deg: number, x: number, y: number, s = 1): M => {
  const t = (deg * Math.PI) / 180;
  return [s * Math.cos(t), s * Math.sin(t), -s * Math.sin(t), s * Math.cos(t), x, y];
};

function base(order: string, blendMode: BlendMode, transform: M, extra: { opacity?: number; filters?: Filter[] } = {}) {
  return { name: order, order, visible: true, opacity: extra.opacity ?? 1, blendMode, locked: false, transform, filters: extra.filters ?? [] };
}

/** A photo-like JPEG: smooth gradients plus detail, so decode and resampling do real work. */
async function photo(width: number, height: number, seed: number): Promise<Buffer> {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      px[i] = (x * 255) / width;
      px[i + 1] = (y * 255) / height;
      px[i + 2] = 128 + 100 * Math.sin((x + seed * 37) / 23) * Math.cos((y - seed * 11) / 17);
    }
  }
  return sharp(px, { raw: { width, height, channels: 3 } }).jpeg({ quality: 85 }).toBuffer();
}

export async function benchSources(): Promise<{ images: ImageSource; bytes: number }> {
  const originals = new Map<string, Buffer>([
    ['img_bg', await photo(2040, 1356, 1)],
    ['img_a', await photo(400, 300, 2)],
    ['img_b', await photo(400, 300, 3)],
    ['img_c', await photo(400, 300, 4)],
  ]);
  const bytes = [...originals.values()].reduce((n, b) => n + b.length, 0);
  return { images: async (id) => originals.get(id), bytes };
}

/** The 20 layers: 6 images, 4 shapes, 3 drawings, 4 texts, 1 filtered shape, 2 adjustments. */
export function benchCanvas(): Canvas {
  const L: Record<string, Layer> = {
    bg: { type: 'image', ...base('a00', 'normal', [0.9412, 0, 0, 0.7965, 0, 0]), data: { imageId: 'img_bg' } },
    i1: { type: 'image', ...base('a01', 'normal', rot(12, 120, 80)), data: { imageId: 'img_a' } },
    i2: { type: 'image', ...base('a02', 'multiply', rot(-8, 600, 120), { opacity: 0.9 }), data: { imageId: 'img_b' } },
    i3: { type: 'image', ...base('a03', 'screen', rot(20, 1100, 60)), data: { imageId: 'img_c', flipX: true } },
    i4: { type: 'image', ...base('a04', 'luminosity', rot(-15, 1450, 500), { opacity: 0.8 }), data: { imageId: 'img_a', crop: { x: 50, y: 20, width: 300, height: 250 } } },
    i5: { type: 'image', ...base('a05', 'overlay', rot(5, 300, 600, 1.2)), data: { imageId: 'img_b' } },
    s1: { type: 'shape', ...base('a06', 'normal', [1, 0, 0, 1, 900, 650]), data: { shape: 'rectangle', width: 400, height: 250, fill: '#3366ffcc', stroke: '#000000', strokeWidth: 6, cornerRadius: 24 } },
    s2: { type: 'shape', ...base('a07', 'hue', rot(30, 1500, 150)), data: { shape: 'ellipse', width: 350, height: 200, fill: '#ff3300', stroke: null, strokeWidth: 0 } },
    s3: { type: 'shape', ...base('a08', 'soft-light', [1, 0, 0, 1, 0, 0]), data: { shape: 'polygon', width: 0, height: 0, fill: '#ffee00', stroke: '#886600', strokeWidth: 3, points: [100, 900, 500, 800, 650, 1050, 200, 1070] } },
    s4: { type: 'shape', ...base('a09', 'normal', [2, 0, 0, 2, 1650, 800]), data: { shape: 'path', width: 100, height: 100, fill: '#00aa66', stroke: '#ffffff', strokeWidth: 2, path: 'M50 0 L61 35 L98 35 L68 57 L79 91 L50 70 L21 91 L32 57 L2 35 L39 35 Z' } },
    d1: { type: 'drawing', ...base('a10', 'normal', [1, 0, 0, 1, 0, 0]), data: { strokes: [
      { tool: 'pen', color: '#111111', width: 4, points: Array.from({ length: 400 }, (_, k) => (k % 2 === 0 ? 100 + k * 4 : 400 + 120 * Math.sin(k / 20))) },
      { tool: 'eraser', color: '#000000', width: 20, points: [500, 300, 700, 500] },
    ] } },
    d2: { type: 'drawing', ...base('a11', 'multiply', [1, 0, 0, 1, 0, 0]), data: { strokes: [
      { tool: 'marker', color: '#ffcc00', width: 30, points: [800, 200, 1300, 260, 1800, 220] },
      { tool: 'marker', color: '#00ccff', width: 30, points: [820, 300, 1700, 350] },
    ] } },
    d3: { type: 'drawing', ...base('a12', 'normal', [1, 0, 0, 1, 0, 0]), data: { strokes: [
      { tool: 'brush', color: '#cc0066', width: 18, points: [1200, 900, 1400, 820, 1600, 950, 1850, 870] },
    ] } },
    t1: { type: 'text', ...base('a13', 'normal', [1, 0, 0, 1, 80, 40]), data: { text: 'ImageFlow Collab — render benchmark', fontFamily: 'Noto Sans', fontSize: 56, fontWeight: 'bold', color: '#ffffff', align: 'left' } },
    t2: { type: 'text', ...base('a14', 'normal', [1, 0, 0, 1, 80, 140]), data: { text: 'A paragraph of body text that wraps inside its box, justified, with a little letter spacing and a line height of 1.4, the way a caption would be set on a poster.', fontFamily: 'Noto Sans', fontSize: 22, color: '#f0f0f0', align: 'justify', boxWidth: 600, lineHeight: 1.4, letterSpacing: 0.3 } },
    t3: { type: 'text', ...base('a15', 'difference', rot(-10, 1000, 900)), data: { text: '你好，世界 · こんにちは · 안녕하세요', fontFamily: 'Noto Sans', fontSize: 40, color: '#ffffff', align: 'center', boxWidth: 700 } },
    t4: { type: 'text', ...base('a16', 'normal', [1, 0, 0, 1, 1400, 40]), data: { text: 'Centred italic', fontFamily: 'serif', fontSize: 36, fontStyle: 'italic', color: '#202020', align: 'center', boxWidth: 400 } },
    f1: { type: 'shape', ...base('a17', 'normal', [1, 0, 0, 1, 1500, 600], { filters: [{ type: 'drop-shadow', offsetX: 8, offsetY: 8, blur: 12, color: '#00000099' }, { type: 'saturate', amount: 1.5 }] }), data: { shape: 'rectangle', width: 250, height: 160, fill: '#ff8844', stroke: null, strokeWidth: 0, cornerRadius: 12 } },
    a1: { type: 'adjustment', ...base('a18', 'normal', [1, 0, 0, 1, 0, 0], { opacity: 0.8 }), data: { adjustment: 'hue-saturation', hue: 15, saturation: 0.2, lightness: 0 } },
    a2: { type: 'adjustment', ...base('a19', 'normal', [1, 0, 0, 1, 0, 0]), data: { adjustment: 'curves', channel: 'rgb', points: [[0, 10], [128, 120], [255, 250]] } },
  };
  return { meta: { width: 1920, height: 1080, background: '#ffffff', imageId: 'img_bg', baseVersionId: null }, layers: L };
}

export interface RenderRun {
  label: string;
  options: RenderOptions;
  /** Wall time per render, ms. */
  summary: Summary;
  /** Process CPU time per render (this thread + libvips threads), ms. */
  cpu: Summary;
  bytes: number;
}

/** Renders `runs` times after `warmup` renders, sequentially; wall time per render in ms. */
export async function measureRender(
  label: string,
  canvas: Canvas,
  images: ImageSource,
  options: RenderOptions,
  runs: number,
  warmup: number,
  render: typeof renderCanvas = renderCanvas,
): Promise<RenderRun> {
  let bytes = 0;
  for (let i = 0; i < warmup; i++) await render(canvas, images, options);
  const samples: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const r = await render(canvas, images, options);
    const c = process.cpuUsage(c0);
    samples.push(performance.now() - t0);
    cpu.push((c.user + c.system) / 1000);
    bytes = r.data.length;
  }
  return { label, options, summary: summarize(samples), cpu: summarize(cpu), bytes };
}
