/**
 * The pieces of media/ that need no server: the bounded job queue, the byte-bounded LRU, URL
 * parameters → variant spec (and its ETag), the palette, the byte limit while streaming, and
 * ingest's pixel work in a media thread against the same in process.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { AppError } from '../shared/errors.ts';
import { byteLimit } from '../media/ingest.ts';
import { ByteLru } from '../media/lru.ts';
import { PixelThreads } from '../media/pixel-threads.ts';
import { dominantColours, processPixels } from '../media/pixels.ts';
import { JobQueue } from '../media/sharp.ts';
import { parseVariant, standardSpec, variantEtag, variantKey } from '../media/variants.ts';
import { photoJpeg } from './support/images.ts';

const original = { mime: 'image/jpeg', hasAlpha: false, keepExif: false };

describe('JobQueue', () => {
  it('runs at most `limit` jobs, queues at most `queueLimit`, refuses the rest, in FIFO order', async () => {
    const queue = new JobQueue(2, 2);
    const gates: Array<() => void> = [];
    const started: number[] = [];
    const job = (i: number) => () =>
      new Promise<number>((resolve) => {
        started.push(i);
        gates[i] = () => resolve(i);
      });
    const runs = [0, 1, 2, 3].map((i) => queue.run(job(i)));
    expect(await queue.run(job(4))).toBeUndefined(); // 2 running + 2 waiting: full
    await Promise.resolve();
    expect(started).toEqual([0, 1]);
    expect([queue.running, queue.queued]).toEqual([2, 2]);
    gates[1]!();
    await expect(runs[1]).resolves.toEqual({ value: 1 });
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual([0, 1, 2]);
    gates[0]!();
    gates[2]!();
    await new Promise((resolve) => setImmediate(resolve));
    gates[3]!();
    expect(await Promise.all(runs)).toEqual([0, 1, 2, 3].map((value) => ({ value })));
    expect([queue.running, queue.queued]).toEqual([0, 0]);
  });

  it('frees the slot when a job throws', async () => {
    const queue = new JobQueue(1, 0);
    await expect(queue.run(async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await queue.run(async () => 7)).toEqual({ value: 7 });
  });
});

describe('ByteLru', () => {
  it('keeps at most maxBytes, drops the least recently used first, skips entries too large', () => {
    const lru = new ByteLru(10, 4);
    lru.set('a', new Uint8Array(4));
    lru.set('b', new Uint8Array(4));
    expect(lru.get('a')).toBeDefined(); // a is now the most recent
    lru.set('c', new Uint8Array(4)); // 12 > 10: drop b
    expect(lru.get('b')).toBeUndefined();
    expect(lru.get('a')).toBeDefined();
    expect(lru.get('c')).toBeDefined();
    lru.set('big', new Uint8Array(5));
    expect(lru.get('big')).toBeUndefined();
    expect(lru.bytes).toBe(8);
    expect(new ByteLru(0).fits(1)).toBe(false);
  });
});

describe('variant parameters', () => {
  it('normalises: defaults, dpr applied, the same request the same key and strong ETag', () => {
    const a = parseVariant({ width: '256', dpr: '2' }, original);
    expect(a).toEqual({ width: 512, height: undefined, fit: 'inside', format: 'jpeg', quality: 80, keepExif: false });
    const b = parseVariant({ width: '512', fit: 'inside', format: 'jpeg', quality: '80', uid: 'usr_x', sig: 'abc' }, original);
    expect(variantKey('ab'.repeat(32), a)).toBe(variantKey('ab'.repeat(32), b));
    expect(variantEtag('ab'.repeat(32), a)).toMatch(/^"[0-9a-f]{32}"$/);
    expect(variantEtag('cd'.repeat(32), a)).not.toBe(variantEtag('ab'.repeat(32), a));
    expect(parseVariant({}, { mime: 'image/heic', hasAlpha: true, keepExif: false }).format).toBe('png');
    expect(parseVariant({ format: 'auto' }, original, 'image/webp,*/*').format).toBe('webp');
    expect(parseVariant({ format: 'auto' }, original, 'text/html').format).toBe('jpeg');
    // The standard thumbnails are exactly what /file computes for their signed parameters.
    const small = standardSpec('small', original);
    expect(parseVariant({ width: '256', height: '256', fit: 'inside', format: 'jpeg' }, original)).toEqual(small);
  });

  it('refuses bad values with invalid_image_parameters', () => {
    for (const bad of [{ width: '0' }, { height: '5000' }, { fit: 'stretch' }, { format: 'gif' }, { quality: '0' }, { dpr: '0.5' }, { width: '3000', dpr: '2' }, { width: '1e3x' }]) {
      expect(() => parseVariant(bad, original), JSON.stringify(bad)).toThrow(AppError);
      try {
        parseVariant(bad, original);
      } catch (error) {
        expect((error as AppError).code).toBe('invalid_image_parameters');
      }
    }
  });
});

describe('palette', () => {
  it('finds the dominant colours with their shares, skipping transparent pixels', () => {
    const px = new Uint8Array(100 * 4);
    for (let i = 0; i < 100; i++) {
      const [r, g, b, a] = i < 60 ? [250, 10, 10, 255] : i < 90 ? [10, 10, 250, 255] : [0, 255, 0, 0];
      px.set([r, g, b, a], i * 4);
    }
    const colours = dominantColours(px, 4);
    expect(colours).toEqual([
      { color: '#fa0a0a', share: 0.667 },
      { color: '#0a0afa', share: 0.333 },
    ]);
  });
});

describe('byteLimit', () => {
  it('fails with image_too_large past the limit and passes everything up to it', async () => {
    const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
    await pipeline(Readable.from([Buffer.alloc(50), Buffer.alloc(50)]), byteLimit(100), sink());
    await expect(pipeline(Readable.from([Buffer.alloc(50), Buffer.alloc(51)]), byteLimit(100), sink())).rejects.toMatchObject({ code: 'image_too_large' });
  });
});

describe('PixelThreads (ingest step 3 in a media thread)', () => {
  it('makes the same variants and palette as in process, and a corrupt file the same AppError', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pixels-'));
    const threads = new PixelThreads({ threads: 1, nice: 0, policy: 'nice' });
    try {
      const photo = join(dir, 'photo.jpg');
      writeFileSync(photo, await photoJpeg(1200, 800));
      const job = { path: photo, mime: 'image/jpeg', hasAlpha: false, limits: { maxPixels: 50_000_000, timeoutMs: 20_000 }, keepExif: false };
      const inThread = await threads.process(job);
      const inProcess = await processPixels(job);
      expect(threads.threads).toBe(1);
      for (const name of ['large', 'medium', 'small'] as const) {
        expect(Buffer.compare(Buffer.from(inThread.variants[name]), Buffer.from(inProcess.variants[name])), name).toBe(0);
      }
      expect(inThread.palette).toEqual(inProcess.palette);
      // Truncated: the header parses, the pixels do not.
      const truncated = join(dir, 'truncated.jpg');
      const whole = await photoJpeg(1200, 800);
      writeFileSync(truncated, whole.subarray(0, Math.floor(whole.length / 2)));
      const failed = await threads.process({ ...job, path: truncated }).catch((error: unknown) => error);
      expect(failed).toBeInstanceOf(AppError);
      expect((failed as AppError).code).toBe('image_corrupt');
      await expect(processPixels({ ...job, path: truncated })).rejects.toMatchObject({ code: 'image_corrupt' });
    } finally {
      await threads.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
