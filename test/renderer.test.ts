/**
 * The renderer (renderer/index.ts) and its worker pool (renderer/pool.ts): geometry, every layer
 * type, output options, limits and errors. Blend modes, filters and adjustments against the W3C
 * reference compositor are in test/renderer-oracle.test.ts; golden images in renderer-golden.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { AppError } from '../shared/errors.ts';
import { renderCanvas, RENDER_LIMITS } from '../renderer/index.ts';
import { RenderPool } from '../renderer/pool.ts';
import { DIRECT_BLUR_SIGMA, MAX_FILTER_MARGIN, filterMargin } from '../renderer/filters.ts';
import { DEFAULT_LAYER_CACHE_BYTES, layerCacheStats, setLayerCacheBytes } from '../renderer/layer-cache.ts';
import { pathBounds } from '../renderer/vector.ts';
import { at, canvasOf, decode, layer, pixel, rect, testPhoto } from './support/render.ts';

const noImages = async () => undefined;

async function rendered(...args: Parameters<typeof renderCanvas>) {
  const result = await renderCanvas(...args);
  return { result, pixels: await decode(result.data) };
}

describe('renderCanvas', () => {
  it('paints a red rectangle red at its pixels and nowhere else', async () => {
    const canvas = canvasOf(100, 80, { r: layer(rect(30, 20, '#ff0000'), { transform: at(40, 30) }) }, '#ffffff');
    const { result, pixels } = await rendered(canvas, noImages);
    expect([result.width, result.height, result.format, result.contentType]).toEqual([100, 80, 'png', 'image/png']);
    expect(pixel(pixels, 40, 30)).toEqual([255, 0, 0, 255]);
    expect(pixel(pixels, 69, 49)).toEqual([255, 0, 0, 255]);
    expect(pixel(pixels, 55, 40)).toEqual([255, 0, 0, 255]);
    expect(pixel(pixels, 39, 30)).toEqual([255, 255, 255, 255]);
    expect(pixel(pixels, 70, 40)).toEqual([255, 255, 255, 255]);
    expect(pixel(pixels, 55, 50)).toEqual([255, 255, 255, 255]);
    expect(pixel(pixels, 5, 5)).toEqual([255, 255, 255, 255]);
  });

  it('stacks layers by order ascending, ties by id, skips invisible ones and applies opacity', async () => {
    const canvas = canvasOf(60, 20, {
      // order a1 above a0; equal orders: the larger id is on top
      z2: layer(rect(20, 20, '#0000ff'), { order: 'a0', transform: at(0, 0) }),
      z1: layer(rect(20, 20, '#00ff00'), { order: 'a1', transform: at(0, 0) }),
      b: layer(rect(20, 20, '#ff0000'), { order: 'a5', transform: at(20, 0) }),
      c: layer(rect(20, 20, '#00ff00'), { order: 'a5', transform: at(20, 0) }),
      hidden: layer(rect(60, 20, '#000000'), { order: 'z', visible: false }),
      half: layer(rect(20, 20, '#ff0000'), { order: 'a2', opacity: 0.5, transform: at(40, 0) }),
    }, '#ffffff');
    const { pixels } = await rendered(canvas, noImages);
    expect(pixel(pixels, 10, 10)).toEqual([0, 255, 0, 255]);
    expect(pixel(pixels, 30, 10)).toEqual([0, 255, 0, 255]); // id "c" > "b"
    const half = pixel(pixels, 50, 10);
    expect(half[0]).toBe(255);
    expect(Math.abs(half[1] - 128)).toBeLessThanOrEqual(2);
    expect(Math.abs(half[2] - 128)).toBeLessThanOrEqual(2);
  });

  it('renders an image layer with crop, flip and a transform, and a missing image as empty', async () => {
    const photo = await testPhoto(64, 48);
    const source = async (id: string) => (id === 'img_a' ? new Uint8Array(photo) : undefined);
    const canvas = canvasOf(100, 60, {
      a: layer({ type: 'image', data: { imageId: 'img_a', crop: { x: 32, y: 0, width: 32, height: 48 }, flipX: true } }, { transform: at(10, 5) }),
      gone: layer({ type: 'image', data: { imageId: 'img_gone' } }, { order: 'a1', transform: at(50, 0) }),
    });
    const { result, pixels } = await rendered(canvas, source);
    expect(result.missingImages).toEqual(['img_gone']);
    const original = await decode(await sharp(photo).png().toBuffer());
    // flipped crop: canvas x = 10 + k shows original column 63 - k
    for (const [k, y] of [[0, 0], [5, 10], [31, 47]] as const) {
      expect(pixel(pixels, 10 + k, 5 + y)).toEqual(pixel(original, 63 - k, y));
    }
    expect(pixel(pixels, 70, 20)).toEqual([0, 0, 0, 0]); // the missing image: transparent
    expect(pixel(pixels, 5, 5)).toEqual([0, 0, 0, 0]);
  });

  it('treats an ImageSource that throws, or bytes that are not an image, as a missing image', async () => {
    const canvas = canvasOf(20, 20, {
      a: layer({ type: 'image', data: { imageId: 'img_throws' } }),
      b: layer({ type: 'image', data: { imageId: 'img_junk' } }, { order: 'a1' }),
      r: layer(rect(5, 5, '#ff0000'), { order: 'a2' }),
    });
    const source = async (id: string) => {
      if (id === 'img_throws') throw new Error('storage is down');
      return new TextEncoder().encode('not an image at all');
    };
    const { result, pixels } = await rendered(canvas, source);
    expect(result.missingImages).toEqual(['img_junk', 'img_throws']);
    expect(pixel(pixels, 2, 2)).toEqual([255, 0, 0, 255]);
    expect(pixel(pixels, 10, 10)).toEqual([0, 0, 0, 0]);
  });

  it('renders every shape kind and drawing tool inside its bounds', async () => {
    const canvas = canvasOf(200, 100, {
      e: layer({ type: 'shape', data: { shape: 'ellipse', width: 40, height: 20, fill: '#0000ff', stroke: null, strokeWidth: 0 } }, { transform: at(10, 10) }),
      l: layer({ type: 'shape', data: { shape: 'line', width: 40, height: 0, fill: null, stroke: '#00ff00', strokeWidth: 4 } }, { order: 'a1', transform: at(60, 20) }),
      p: layer({ type: 'shape', data: { shape: 'polygon', width: 0, height: 0, fill: '#ff0000', stroke: null, strokeWidth: 0, points: [110, 10, 150, 10, 110, 50] } }, { order: 'a2' }),
      s: layer({ type: 'shape', data: { shape: 'path', width: 30, height: 30, fill: '#ff00ff', stroke: null, strokeWidth: 0, path: 'M0 0 H30 V30 H0 Z' } }, { order: 'a3', transform: at(160, 10) }),
      d: layer({ type: 'drawing', data: { strokes: [
        { tool: 'pen', color: '#000000', width: 6, points: [10, 70, 190, 70] },
        { tool: 'eraser', color: '#000000', width: 10, points: [100, 60, 100, 80] },
      ] } }, { order: 'a4' }),
    }, '#ffffff');
    const { pixels } = await rendered(canvas, noImages);
    expect(pixel(pixels, 30, 20)).toEqual([0, 0, 255, 255]);
    expect(pixel(pixels, 11, 11)).toEqual([255, 255, 255, 255]); // outside the ellipse, inside its box
    expect(pixel(pixels, 80, 20)).toEqual([0, 255, 0, 255]);
    expect(pixel(pixels, 115, 15)).toEqual([255, 0, 0, 255]);
    expect(pixel(pixels, 148, 48)).toEqual([255, 255, 255, 255]); // beyond the hypotenuse
    expect(pixel(pixels, 175, 25)).toEqual([255, 0, 255, 255]);
    expect(pixel(pixels, 50, 70)).toEqual([0, 0, 0, 255]);
    expect(pixel(pixels, 100, 70)).toEqual([255, 255, 255, 255]); // erased
  });

  it('renders text the same pixels every time, with the shipped fonts only', async () => {
    const text = (fontFamily: string) =>
      canvasOf(300, 120, {
        t: layer({ type: 'text', data: { text: 'Grüße, 你好, 안녕, שלום', fontFamily, fontSize: 24, color: '#000000', align: 'left', boxWidth: 280 } }, { transform: at(10, 10) }),
      }, '#ffffff');
    // Both renders rasterise the text (the layer cache would hand the second the first's pixels).
    setLayerCacheBytes(0);
    let a: Awaited<ReturnType<typeof rendered>>, b: typeof a;
    try {
      a = await rendered(text('Noto Sans'), noImages);
      b = await rendered(text('Noto Sans'), noImages);
    } finally {
      setLayerCacheBytes(DEFAULT_LAYER_CACHE_BYTES);
    }
    expect(a.pixels.data.equals(b.pixels.data)).toBe(true);
    let ink = 0;
    let outside = 0;
    for (let y = 0; y < 120; y++) {
      for (let x = 0; x < 300; x++) {
        const dark = pixel(a.pixels, x, y)[0] < 128;
        if (dark) ink++;
        if (dark && (x < 10 || y < 10 || x > 292)) outside++;
      }
    }
    expect(ink).toBeGreaterThan(300);
    expect(outside).toBe(0);
    // DejaVu Sans is installed on this machine but not shipped: it must not be used.
    const system = await rendered(text('DejaVu Sans'), noImages);
    expect(system.pixels.data.equals(a.pixels.data)).toBe(true);
  });

  it('keeps rasterised layers by content: a repeat renders the same bytes, a withheld or changed image is never taken from it', async () => {
    const red = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#ff0000' } }).png().toBuffer();
    const blue = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#0000ff' } }).png().toBuffer();
    const canvas = canvasOf(64, 32, {
      i: layer({ type: 'image', data: { imageId: 'img_x' } }, { transform: [1.5, 0.2, -0.2, 1.5, 4, 2], opacity: 0.7 }),
      t: layer({ type: 'text', data: { text: 'cache', fontFamily: 'Noto Sans', fontSize: 12, color: '#000', align: 'left' } }, { order: 'a1', transform: at(30, 8), blendMode: 'multiply' }),
    }, '#ffffff');
    const only = (bytes: Buffer | undefined) => async (id: string) => (id === 'img_x' && bytes ? new Uint8Array(bytes) : undefined);
    setLayerCacheBytes(0);
    let uncached: Buffer;
    try {
      uncached = (await renderCanvas(canvas, only(red))).data;
    } finally {
      setLayerCacheBytes(DEFAULT_LAYER_CACHE_BYTES);
    }
    const first = await renderCanvas(canvas, only(red));
    const kept = layerCacheStats();
    expect(kept.entries).toBe(2);
    const again = await renderCanvas(canvas, only(red));
    expect(layerCacheStats()).toEqual(kept); // both layers came from the cache
    expect(Buffer.compare(first.data, uncached)).toBe(0);
    expect(Buffer.compare(again.data, uncached)).toBe(0);
    // The source withholds the image now (access withdrawn): it is missing, not served from memory.
    const withheld = await rendered(canvas, only(undefined));
    expect(withheld.result.missingImages).toEqual(['img_x']);
    expect(pixel(withheld.pixels, 12, 14)).toEqual([255, 255, 255, 255]);
    // Other bytes under the same id are other pixels.
    const changed = await rendered(canvas, only(blue));
    const [r, , b] = pixel(changed.pixels, 12, 14);
    expect(b).toBeGreaterThan(150);
    expect(r).toBeLessThan(120);
    // Bounded: with room for nothing, nothing is kept.
    setLayerCacheBytes(0);
    try {
      await renderCanvas(canvas, only(red));
      expect(layerCacheStats().entries).toBe(0);
    } finally {
      setLayerCacheBytes(DEFAULT_LAYER_CACHE_BYTES);
    }
  });

  it('rasterises a path over its own bounds, read from the path data', async () => {
    expect(pathBounds('M50 0 L61 35 L98 35 L68 57 L79 91 L50 70 Z')).toEqual([50, 0, 98, 91]);
    expect(pathBounds('m10 10 l5 5 5 5 h-20 v-30 z')).toEqual([0, -10, 20, 20]); // relative, implicit line-tos
    expect(pathBounds('M0 0 Q 10 20 20 0 T 40 0')).toEqual([0, -20, 40, 20]); // T reflects the control point
    expect(pathBounds('M0 0 A 1 1 0 0 1 10 0')).toEqual([-10, -10, 10, 10]); // radii scaled up to span the arc
    expect(pathBounds('M0,0a10 10 0 1010 0')).toEqual([-20, -20, 20, 20]); // flags written without separators
    expect(pathBounds('10 10')).toBeUndefined();
    expect(pathBounds('M 0 0 L')).toBeUndefined();
    // A small path on a large canvas: its raster is its box, not the frame (kept bytes show it).
    const star = 'M50 0 L61 35 L98 35 L68 57 L79 91 L50 70 L21 91 L32 57 L2 35 L39 35 Z';
    const canvas = canvasOf(1000, 1000, { s: layer({ type: 'shape', data: { shape: 'path', width: 100, height: 100, fill: '#00aa66', stroke: '#000000', strokeWidth: 2, path: star } }, { transform: at(400, 400) }) }, '#ffffff');
    setLayerCacheBytes(DEFAULT_LAYER_CACHE_BYTES);
    const { pixels } = await rendered(canvas, noImages);
    expect(layerCacheStats().bytes).toBeLessThan(200 * 200 * 4);
    expect(pixel(pixels, 450, 450)).toEqual([0, 170, 102, 255]);
    expect(pixel(pixels, 300, 300)).toEqual([255, 255, 255, 255]);
  });

  it('sizes the output by width, height, fit and dpr, and renders a region', async () => {
    const canvas = canvasOf(400, 200, { r: layer(rect(200, 200, '#ff0000')) }, '#0000ff');
    const size = async (options: Parameters<typeof renderCanvas>[2]) => {
      const r = await renderCanvas(canvas, noImages, options);
      return [r.width, r.height];
    };
    expect(await size({ width: 100 })).toEqual([100, 50]);
    expect(await size({ height: 100 })).toEqual([200, 100]);
    expect(await size({ width: 100, height: 100, fit: 'inside' })).toEqual([100, 50]);
    expect(await size({ width: 100, height: 100, fit: 'outside' })).toEqual([200, 100]);
    expect(await size({ width: 100, height: 100, fit: 'contain' })).toEqual([100, 100]);
    expect(await size({ width: 100, height: 100, fit: 'cover' })).toEqual([100, 100]);
    expect(await size({ width: 100, height: 100, fit: 'fill' })).toEqual([100, 100]);
    expect(await size({ width: 100, dpr: 2 })).toEqual([200, 100]);
    expect(await size({ region: { left: 150, top: 0, width: 100, height: 100 } })).toEqual([100, 100]);

    const contain = await rendered(canvas, noImages, { width: 100, height: 100, fit: 'contain' });
    expect(pixel(contain.pixels, 50, 10)).toEqual([0, 0, 0, 0]); // the band above
    expect(pixel(contain.pixels, 10, 50)).toEqual([255, 0, 0, 255]);
    expect(pixel(contain.pixels, 90, 50)).toEqual([0, 0, 255, 255]);
    const cover = await rendered(canvas, noImages, { width: 100, height: 100, fit: 'cover' });
    expect(pixel(cover.pixels, 5, 50)).toEqual([255, 0, 0, 255]); // x 100..300 of the canvas
    expect(pixel(cover.pixels, 95, 50)).toEqual([0, 0, 255, 255]);
    const region = await rendered(canvas, noImages, { region: { left: 150, top: 0, width: 100, height: 100 } });
    expect(pixel(region.pixels, 49, 50)).toEqual([255, 0, 0, 255]);
    expect(pixel(region.pixels, 50, 50)).toEqual([0, 0, 255, 255]);
  });

  it('encodes png, webp, jpeg and avif', async () => {
    const canvas = canvasOf(64, 64, { r: layer(rect(32, 32, '#ff0000')) }, '#ffffff');
    for (const [format, contentType] of [['png', 'image/png'], ['webp', 'image/webp'], ['jpeg', 'image/jpeg'], ['avif', 'image/avif']] as const) {
      const r = await renderCanvas(canvas, noImages, { format, quality: 80 });
      expect(r.contentType).toBe(contentType);
      const meta = await sharp(r.data).metadata();
      expect(meta.format === 'heif' ? 'avif' : meta.format).toBe(format);
      const px = await decode(r.data);
      const red = pixel(px, 10, 10);
      expect(red[0]).toBeGreaterThan(200);
      expect(red[1]).toBeLessThan(60);
    }
  });

  it('starts every render from a clear frame, also when a frame is reused or renders overlap', async () => {
    // renderer/index.ts keeps finished frames for the next render (takeFrame/giveFrame): a frame
    // left as the last render painted it would show through a transparent canvas.
    const allZero = (px: Awaited<ReturnType<typeof decode>>) => px.data.every((v) => v === 0);
    await renderCanvas(canvasOf(64, 64, {}, '#ff0000'), noImages);
    expect(allZero((await rendered(canvasOf(64, 64, {}), noImages)).pixels)).toBe(true);
    await renderCanvas(canvasOf(64, 64, {}, '#ff0000'), noImages);
    // a smaller frame: a view of the spare's first bytes
    const smaller = await rendered(canvasOf(60, 40, {}), noImages);
    expect([smaller.result.width, smaller.result.height]).toEqual([60, 40]);
    expect(allZero(smaller.pixels)).toBe(true);
    const [red, blue] = await Promise.all([
      rendered(canvasOf(64, 64, {}, '#ff0000'), noImages),
      rendered(canvasOf(64, 64, { b: layer(rect(8, 8, '#0000ff'), { transform: at(0, 0) }) }), noImages),
    ]);
    expect(pixel(red.pixels, 63, 63)).toEqual([255, 0, 0, 255]);
    expect(pixel(blue.pixels, 2, 2)).toEqual([0, 0, 255, 255]);
    expect(pixel(blue.pixels, 30, 30)).toEqual([0, 0, 0, 0]);
    // JPEG: an opaque frame loses its alpha, a translucent one is flattened on white
    const jpeg = await decode((await renderCanvas(canvasOf(64, 64, { b: layer(rect(8, 8, '#0000ff'), { transform: at(0, 0) }) }), noImages, { format: 'jpeg' })).data);
    expect(pixel(jpeg, 40, 40).slice(0, 3).every((v) => v > 250)).toBe(true);
  });

  it('refuses outputs over the pixel limit (413) and bad options (400), and invalid canvases', async () => {
    const canvas = canvasOf(100_000, 100_000, {});
    const error = await renderCanvas(canvas, noImages).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe('render_too_large');
    expect((error as AppError).status).toBe(413);
    const fine = await renderCanvas(canvas, noImages, { width: 100 });
    expect([fine.width, fine.height]).toEqual([100, 100]);
    for (const options of [{ width: 0 }, { dpr: 9 }, { quality: 101 }, { format: 'gif' }, { region: { left: 0, top: 0, width: 0, height: 1 } }]) {
      const e = await renderCanvas(canvasOf(10, 10, {}), noImages, options as never).catch((x: unknown) => x);
      expect((e as AppError).code).toBe('invalid_render_options');
      expect((e as AppError).status).toBe(400);
    }
    const region = await renderCanvas(canvasOf(10, 10, {}), noImages, { region: { left: 20, top: 0, width: 5, height: 5 } }).catch((x: unknown) => x);
    expect((region as AppError).code).toBe('invalid_render_options');
    const bad = await renderCanvas({ meta: { width: 10 } } as never, noImages).catch((x: unknown) => x);
    expect((bad as AppError).code).toBe('invalid_canvas');
    const points = Array.from({ length: 100_000 }, (_, i) => i % 50);
    const heavy = canvasOf(10, 10, Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`d${i}`, layer({ type: 'drawing', data: { strokes: [{ tool: 'pen', color: '#000', width: 1, points }] } })])));
    const tooMany = await renderCanvas(heavy, noImages).catch((x: unknown) => x);
    expect((tooMany as AppError).code).toBe('render_too_large');
    expect(RENDER_LIMITS.maxVectorPoints).toBeLessThan(50 * 50_000);
  });
});

describe('RenderPool', () => {
  const pool = new RenderPool({ size: 1, timeoutMs: 20_000 });
  afterAll(() => pool.close());

  it('renders in a worker thread the same bytes as in-process, reading images through the caller', async () => {
    const photo = await testPhoto(32, 32);
    const asked: string[] = [];
    const source = async (id: string) => {
      asked.push(id);
      return id === 'img_a' ? new Uint8Array(photo) : undefined;
    };
    const canvas = canvasOf(80, 60, {
      a: layer({ type: 'image', data: { imageId: 'img_a' } }, { transform: [0.9, 0.3, -0.3, 0.9, 20, 5] }),
      b: layer({ type: 'image', data: { imageId: 'img_b' } }, { order: 'a1' }),
      t: layer({ type: 'text', data: { text: 'pool', fontFamily: 'Noto Sans', fontSize: 14, color: '#00f', align: 'left' } }, { order: 'a2', blendMode: 'luminosity' }),
    }, '#eeeeee');
    const direct = await renderCanvas(canvas, source);
    const viaPool = await pool.render(canvas, source);
    expect(asked.sort()).toEqual(['img_a', 'img_a', 'img_b', 'img_b']);
    expect(viaPool.missingImages).toEqual(['img_b']);
    expect(Buffer.compare(viaPool.data, direct.data)).toBe(0);
  });

  it('reads an image given as a file in the worker, the same pixels as its bytes; a file that is gone is a missing image', async () => {
    const photo = await testPhoto(40, 30);
    const dir = mkdtempSync(join(tmpdir(), 'render-file-'));
    const file = join(dir, 'original');
    writeFileSync(file, photo);
    try {
      const canvas = canvasOf(60, 40, {
        a: layer({ type: 'image', data: { imageId: 'img_a' } }, { transform: at(5, 5) }),
        b: layer({ type: 'image', data: { imageId: 'img_b' } }, { order: 'a1', transform: at(30, 0) }),
      }, '#ffffff');
      const fromBytes = await pool.render(canvas, async (id) => (id === 'img_a' ? new Uint8Array(photo) : undefined));
      const fromFile = await pool.render(canvas, async (id) => ({ file: id === 'img_a' ? file : join(dir, 'gone') }));
      expect(fromFile.missingImages).toEqual(['img_b']);
      expect(Buffer.compare(fromFile.data, fromBytes.data)).toBe(0);
      const inProcess = await renderCanvas(canvas, async (id) => ({ file: id === 'img_a' ? file : join(dir, 'gone') }));
      expect(Buffer.compare(inProcess.data, fromBytes.data)).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the calling thread free while a heavy render runs', async () => {
    // Full-frame per-pixel JavaScript (adjustments, a non-separable blend) on a 2000 × 2000 frame:
    // in-process it holds the event loop for seconds at a time; through the pool the loop keeps
    // turning (setImmediate runs once per loop iteration; the longest gap between turns is kept).
    const canvas = canvasOf(2000, 2000, {
      r: layer(rect(2000, 2000, '#336699')),
      h: layer(rect(1800, 1800, '#ff8800'), { order: 'a1', blendMode: 'saturation', transform: at(100, 100) }),
      a: layer({ type: 'adjustment', data: { adjustment: 'vibrance', vibrance: 0.5 } }, { order: 'a2' }),
      b: layer({ type: 'adjustment', data: { adjustment: 'hue-saturation', hue: 30, saturation: 0.1, lightness: 0.1 } }, { order: 'a3', blendMode: 'color' }),
    });
    let turns = 0;
    let done = false;
    let last = performance.now();
    let longest = 0;
    const spin = () => {
      turns++;
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
      if (!done) setImmediate(spin);
    };
    setImmediate(spin);
    const started = performance.now();
    const result = await pool.render(canvas, noImages, { format: 'jpeg' });
    const elapsed = performance.now() - started;
    done = true;
    expect(result.width).toBe(2000);
    console.log(`render ${elapsed.toFixed(0)} ms, ${turns} loop turns, longest gap ${longest.toFixed(0)} ms`);
    // Measured on the loaded 2-core machine: through the pool the longest gap was 263 ms of an
    // 11 s render; the same render in-process held the loop for 4.8 s at once.
    expect(longest).toBeLessThan(Math.max(1_000, elapsed / 4));
    expect(turns).toBeGreaterThan(elapsed / 10);
  });

  it('passes typed errors through', async () => {
    const e = await pool.render(canvasOf(10, 10, {}), noImages, { width: 99_999 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AppError);
    expect((e as AppError).code).toBe('invalid_render_options');
  });

  it('stops a render over its time limit with render_timeout and keeps serving', async () => {
    const slow = new RenderPool({ size: 1, timeoutMs: 50 });
    try {
      // A full-frame blur of a 4000 × 4000 output takes seconds; 50 ms is far below that.
      const canvas = canvasOf(4000, 4000, { r: layer(rect(4000, 4000, '#ff0000'), { filters: [{ type: 'blur', radius: 200 }, { type: 'pixelate', size: 3 }] }) });
      const e = await slow.render(canvas, noImages).catch((x: unknown) => x);
      expect((e as AppError).code).toBe('render_timeout');
      expect((e as AppError).status).toBe(503);
    } finally {
      await slow.close();
    }
    const ok = await pool.render(canvasOf(10, 10, { r: layer(rect(5, 5, '#ff0000')) }), noImages);
    expect(ok.width).toBe(10);
  });

  it('refuses with render_busy when its queue is full', async () => {
    const tiny = new RenderPool({ size: 1, maxQueue: 0, timeoutMs: 20_000 });
    try {
      const canvas = canvasOf(200, 200, { r: layer(rect(100, 100, '#ff0000')) });
      const first = tiny.render(canvas, noImages);
      const second = await tiny.render(canvas, noImages).catch((x: unknown) => x);
      expect((second as AppError).code).toBe('render_busy');
      expect((await first).width).toBe(200);
    } finally {
      await tiny.close();
    }
  });
});

describe('hostile filters stay bounded', () => {
  it('renders the largest blurs the schema allows quickly (shrunk, blurred, enlarged) with a bounded margin', async () => {
    const canvas = canvasOf(1500, 1000, {
      r: layer(rect(600, 400, '#ff0000'), { transform: at(450, 300), filters: [{ type: 'blur', radius: 1000 }, { type: 'drop-shadow', offsetX: 1000, offsetY: -1000, blur: 1000, color: '#000000' }] }),
      w: layer(rect(200, 200, '#0000ff'), { order: 'a1', transform: at(650, 400), filters: [{ type: 'blur', radius: 30 }] }),
    }, '#ffffff');
    const started = performance.now();
    const { pixels } = await rendered(canvas, noImages);
    // Generous: a direct σ = 1000 Gaussian over this raster would take minutes.
    expect(performance.now() - started).toBeLessThan(30_000);
    // The σ = 1000 red rectangle is spread thin: a faint pink wash, even far from where it was.
    const far = pixel(pixels, 100, 900);
    expect(far[0]).toBe(255);
    expect(far[1]).toBeLessThan(254);
    expect(far[1]).toBeGreaterThan(200);
    expect(pixel(pixels, 750, 500)[2]).toBeGreaterThan(200); // the blue square, lightly blurred
    expect(filterMargin([{ type: 'blur', radius: 1000 }], 1)).toBe(MAX_FILTER_MARGIN);
  });

  it('matches a direct Gaussian within 6/255 just above the shrink threshold (σ 12 vs 12.5 alone differ by ~2)', async () => {
    const make = (radius: number) => canvasOf(200, 200, { r: layer(rect(80, 80, '#ff0000'), { transform: at(60, 60), filters: [{ type: 'blur', radius }] }) }, '#ffffff');
    const direct = await rendered(make(DIRECT_BLUR_SIGMA), noImages);
    const shrunk = await rendered(make(DIRECT_BLUR_SIGMA + 0.5), noImages);
    let max = 0;
    for (let i = 0; i < direct.pixels.data.length; i++) max = Math.max(max, Math.abs(direct.pixels.data[i]! - shrunk.pixels.data[i]!));
    expect(max).toBeLessThanOrEqual(6);
  });
});
