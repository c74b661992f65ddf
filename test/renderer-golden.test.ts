/**
 * Golden images: one canvas per layer type (and one of everything), rendered and compared per
 * pixel with the PNGs committed in test/golden/. Regenerate after an intended change with
 *   UPDATE_GOLDEN=1 node_modules/.bin/vitest run test/renderer-golden.test.ts
 * and look at the diff before committing. Tolerance: the fonts, libvips, librsvg and Pango are
 * pinned (renderer/fonts/, sharp's prebuilt libvips), so renders match exactly here; a few
 * levels of difference on a few pixels are allowed for other CPUs' SIMD paths.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Canvas } from '../shared/canvas.ts';
import { renderCanvas } from '../renderer/index.ts';
import { at, canvasOf, decode, layer, pixel, rect, testPhoto } from './support/render.ts';

const GOLDEN = join(import.meta.dirname, 'golden');
const update = process.env.UPDATE_GOLDEN === '1';
let photo: Buffer;
const source = async (id: string) => (id === 'img_photo' ? new Uint8Array(photo) : undefined);
beforeAll(async () => {
  photo = await testPhoto(64, 48, true);
});

const text = (t: string, extra: Record<string, unknown> = {}) => ({
  type: 'text' as const,
  data: { text: t, fontFamily: 'Noto Sans', fontSize: 16, color: '#1a1a1a', align: 'left' as const, ...extra },
});

const canvases: Record<string, () => Canvas> = {
  image: () =>
    canvasOf(160, 100, {
      a: layer({ type: 'image', data: { imageId: 'img_photo' } }, { transform: at(4, 4) }),
      b: layer({ type: 'image', data: { imageId: 'img_photo', crop: { x: 16, y: 8, width: 32, height: 32 }, flipX: true } }, { order: 'a1', transform: [1.2, 0.5, -0.5, 1.2, 100, 10] }),
      c: layer({ type: 'image', data: { imageId: 'img_photo', flipY: true } }, { order: 'a2', transform: [0.5, 0, 0, 0.5, 10, 60], opacity: 0.7 }),
    }, '#f0f0f0'),
  drawing: () =>
    canvasOf(160, 100, {
      d: layer({ type: 'drawing', data: { strokes: [
        { tool: 'pen', color: '#0050c8', width: 5, points: [10, 20, 50, 10, 90, 30, 150, 15] },
        { tool: 'brush', color: '#c80050', width: 12, points: [10, 50, 60, 40, 150, 55] },
        { tool: 'marker', color: '#f0c000', width: 14, points: [10, 80, 150, 70] },
        { tool: 'marker', color: '#00a050', width: 14, points: [20, 90, 140, 60] },
        { tool: 'eraser', color: '#000000', width: 8, points: [80, 0, 80, 100] },
        { tool: 'eraser', color: '#000000', width: 8, opacity: 0.5, points: [120, 0, 120, 100] },
        { tool: 'pen', color: '#202020', width: 3, points: [5, 95] },
      ] } }),
    }, '#ffffff'),
  text: () =>
    canvasOf(320, 240, {
      a: layer(text('Left aligned text that wraps inside its box.', { boxWidth: 140 }), { transform: at(8, 8) }),
      b: layer(text('Centred, bold', { boxWidth: 140, align: 'center', fontWeight: 'bold' }), { order: 'a1', transform: at(170, 8) }),
      c: layer(text('Right, italic 600', { boxWidth: 140, align: 'right', fontStyle: 'italic', fontWeight: 600 }), { order: 'a2', transform: at(170, 40) }),
      d: layer(text('Justified text fills every line of its box except the last one.', { boxWidth: 140, align: 'justify', lineHeight: 1.4, letterSpacing: 0.5 }), { order: 'a3', transform: at(8, 70) }),
      e: layer(text('你好，世界 こんにちは 안녕하세요', { fontSize: 18, color: '#b00000' }), { order: 'a4', transform: at(8, 172) }),
      f: layer(text('שלום עולם · مرحبا بالعالم · नमस्ते · สวัสดี', { fontSize: 16, color: '#0040a0' }), { order: 'a5', transform: at(8, 205) }),
      g: layer(text('Rotated serif', { fontFamily: 'serif', fontSize: 20, color: '#006040' }), { order: 'a6', transform: [0.94, -0.34, 0.34, 0.94, 175, 140] }),
      h: layer(text('Translucent', { fontSize: 28, color: '#ff000080' }), { order: 'a7', transform: at(165, 70) }),
    }, '#ffffff'),
  shape: () =>
    canvasOf(200, 120, {
      r: layer({ type: 'shape', data: { shape: 'rectangle', width: 60, height: 40, fill: '#e04040', stroke: '#202020', strokeWidth: 3, cornerRadius: 10 } }, { transform: at(10, 10) }),
      e: layer({ type: 'shape', data: { shape: 'ellipse', width: 60, height: 40, fill: '#4060e0', stroke: '#ffffff', strokeWidth: 2 } }, { order: 'a1', transform: [0.87, 0.5, -0.5, 0.87, 100, 5] }),
      l: layer({ type: 'shape', data: { shape: 'line', width: 70, height: 30, fill: null, stroke: '#10a010', strokeWidth: 4 } }, { order: 'a2', transform: at(10, 70) }),
      p: layer({ type: 'shape', data: { shape: 'polygon', width: 0, height: 0, fill: '#f0a00080', stroke: '#804000', strokeWidth: 2, points: [100, 60, 190, 70, 170, 115, 110, 100] } }, { order: 'a3' }),
      s: layer({ type: 'shape', data: { shape: 'path', width: 40, height: 40, fill: '#a000a0', stroke: null, strokeWidth: 0, path: 'M20 0 C 40 0 40 40 20 40 C 0 40 0 0 20 0 Z M20 10 L30 30 L10 30 Z' } }, { order: 'a4', transform: at(150, 10) }),
    }, '#fafafa'),
  adjustment: () =>
    canvasOf(160, 100, {
      a: layer({ type: 'image', data: { imageId: 'img_photo' } }, { transform: [2.5, 0, 0, 2, 0, 0] }),
      b: layer(rect(40, 40, '#ff0000'), { order: 'a1', transform: at(100, 40) }),
      h: layer({ type: 'adjustment', data: { adjustment: 'hue-saturation', hue: 120, saturation: 0.2, lightness: 0 } }, { order: 'a2' }),
      c: layer({ type: 'adjustment', data: { adjustment: 'curves', channel: 'rgb', points: [[0, 20], [128, 100], [255, 240]] } }, { order: 'a3', opacity: 0.6 }),
      top: layer(rect(30, 30, '#00ff00'), { order: 'a4', transform: at(10, 60) }),
    }, '#ffffff'),
  everything: () =>
    canvasOf(240, 160, {
      img: layer({ type: 'image', data: { imageId: 'img_photo' } }, { transform: [3.75, 0, 0, 3.3, 0, 0], filters: [{ type: 'blur', radius: 1 }] }),
      sh: layer(rect(80, 50, '#3060ff', { cornerRadius: 8 }), { order: 'a1', transform: at(20, 20), blendMode: 'multiply', filters: [{ type: 'drop-shadow', offsetX: 4, offsetY: 4, blur: 6, color: '#00000080' }] }),
      el: layer({ type: 'shape', data: { shape: 'ellipse', width: 90, height: 60, fill: '#ffcc00', stroke: null, strokeWidth: 0 } }, { order: 'a2', transform: at(120, 30), blendMode: 'luminosity', opacity: 0.8 }),
      dr: layer({ type: 'drawing', data: { strokes: [{ tool: 'pen', color: '#ffffff', width: 4, points: [10, 140, 80, 100, 150, 130, 230, 90] }] } }, { order: 'a3', blendMode: 'screen' }),
      tx: layer(text('Everything, 全部', { fontSize: 20, color: '#ffffff', fontWeight: 700 }), { order: 'a4', transform: at(20, 110), blendMode: 'difference' }),
      px: layer(rect(50, 30, '#ff00ff'), { order: 'a5', transform: at(180, 120), filters: [{ type: 'noise', amount: 0.4 }, { type: 'pixelate', size: 4 }], blendMode: 'hue' }),
      adj: layer({ type: 'adjustment', data: { adjustment: 'vibrance', vibrance: 0.5 } }, { order: 'a6' }),
    }, '#000000'),
};

describe('golden renders', () => {
  for (const [name, make] of Object.entries(canvases)) {
    it(`${name} matches test/golden/${name}.png`, async () => {
      const r = await renderCanvas(make(), source);
      const file = join(GOLDEN, `${name}.png`);
      if (update || !existsSync(file)) {
        if (!update) throw new Error(`no golden ${file}: run with UPDATE_GOLDEN=1 to create it`);
        mkdirSync(GOLDEN, { recursive: true });
        writeFileSync(file, await sharp(r.data).png({ compressionLevel: 9 }).toBuffer());
      }
      const got = await decode(r.data);
      const want = await decode(readFileSync(file));
      expect([got.width, got.height]).toEqual([want.width, want.height]);
      let max = 0;
      let off = 0;
      for (let i = 0; i < got.data.length; i++) {
        const d = Math.abs(got.data[i]! - want.data[i]!);
        max = Math.max(max, d);
        if (d > 2) off++;
      }
      expect(off / got.data.length, `${name}: share of values more than 2 apart (max ${max})`).toBeLessThanOrEqual(0.001);
      expect(max).toBeLessThanOrEqual(32);
    });
  }
});

describe('text placement', () => {
  function inkBox(p: Awaited<ReturnType<typeof decode>>) {
    let x0 = Infinity, y0 = Infinity, x1 = -1, y1 = -1;
    for (let y = 0; y < p.height; y++) for (let x = 0; x < p.width; x++) {
      if (pixel(p, x, y)[3] > 64) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
    }
    return { x0, y0, x1, y1 };
  }

  it('puts the text box at the layer origin and aligns within boxWidth', async () => {
    const one = (align: 'left' | 'center' | 'right') =>
      renderCanvas(canvasOf(300, 80, { t: layer(text('Hxxxx', { fontSize: 40, align, boxWidth: 200 }), { transform: at(50, 20) }) }), source).then((r) => decode(r.data));
    const [left, center, right] = await Promise.all([one('left'), one('center'), one('right')]);
    const l = inkBox(left), c = inkBox(center), r = inkBox(right);
    // Noto Sans: line top → cap top is (ascender 1.069 − cap height 0.714) em ≈ 14 px at 40 px.
    expect(Math.abs(l.y0 - (20 + 14))).toBeLessThanOrEqual(2);
    expect(Math.abs(l.x0 - 50)).toBeLessThanOrEqual(5); // H's side bearing
    expect(Math.abs((c.x0 + c.x1) / 2 - 150)).toBeLessThanOrEqual(3);
    expect(Math.abs(r.x1 - 250)).toBeLessThanOrEqual(5);
    expect(c.y0).toBe(l.y0);
    expect(r.y0).toBe(l.y0);
  });

  it('scales text with the output (a thumbnail keeps the layout)', async () => {
    const canvas = canvasOf(400, 200, { t: layer(text('Scaled text', { fontSize: 40 }), { transform: at(40, 40) }) });
    const full = inkBox(await decode((await renderCanvas(canvas, source)).data));
    const half = inkBox(await decode((await renderCanvas(canvas, source, { width: 200 })).data));
    expect(Math.abs(half.x0 - full.x0 / 2)).toBeLessThanOrEqual(2);
    expect(Math.abs(half.y0 - full.y0 / 2)).toBeLessThanOrEqual(2);
    expect(Math.abs(half.x1 - full.x1 / 2)).toBeLessThanOrEqual(3);
  });
});
