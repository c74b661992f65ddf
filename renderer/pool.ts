/**
 * A small worker_threads pool that runs renderCanvas off the calling thread, so the per-pixel
 * JavaScript of a render (non-native blend modes, adjustments, filters) never blocks the event
 * loop that serves WebSockets. Bounded: `size` workers, at most `maxQueue` renders waiting, each
 * render stopped after `timeoutMs` (the worker is terminated and replaced) with `render_timeout`.
 *
 * Image bytes stay on the caller's side: a worker asks for an image id, the pool calls the
 * caller's ImageSource (which did the access check) and posts the bytes back.
 *
 * Written by hand rather than with piscina/tinypool: those cannot call back into the main thread
 * mid-task (the ImageSource), and the whole pool is ~150 lines.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Canvas } from '../shared/canvas.ts';
import { AppError, type ErrorCode } from '../shared/errors.ts';
import { useShippedFonts } from './fonts.ts';
import { DEFAULT_LAYER_CACHE_BYTES } from './layer-cache.ts';
import type { ImageFile, ImageSource, RenderOptions, RenderResult } from './types.ts';
import type { MediaThreadPolicy } from '../media/thread-priority.ts';

export interface RenderPoolOptions {
  /** Worker threads (default: cores − 1, at least 1, at most 4). */
  size?: number;
  /** Renders waiting for a worker before new ones are refused with `render_busy` (default 32). */
  maxQueue?: number;
  /** Per-render limit from the moment a worker takes it (default 30 s). */
  timeoutMs?: number;
  /** V8 heap limit per worker in MB (default 512); sharp's pixel memory is outside it. */
  maxHeapMb?: number;
  /** Bytes of rasterised layers each worker keeps between renders (renderer/layer-cache.ts; default 64 MiB, 0 = off). */
  layerCacheBytes?: number;
  /** Nice value each render thread lowers itself to (media/thread-priority.ts); 0: unchanged. */
  threadNice?: number;
  /** `idle`: each render thread also puts itself under SCHED_IDLE (media/thread-priority.ts). */
  threadPolicy?: MediaThreadPolicy;
}

/** What each worker is started with. */
export interface PoolWorkerData {
  layerCacheBytes: number;
  threadNice: number;
  threadPolicy: MediaThreadPolicy;
}

/** Messages between the pool and a worker (renderer/pool-worker.ts). */
export type ToWorker =
  | { type: 'render'; id: number; canvas: Canvas; options: RenderOptions }
  | { type: 'image'; id: number; request: number; bytes: Uint8Array | ImageFile | undefined };
export type FromWorker =
  | { type: 'image'; id: number; request: number; imageId: string }
  | { type: 'done'; id: number; result: RenderResult }
  | { type: 'error'; id: number; code: ErrorCode | undefined; message: string };

interface Task {
  id: number;
  canvas: Canvas;
  options: RenderOptions;
  images: ImageSource;
  resolve: (r: RenderResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  task: Task | undefined;
  timer: NodeJS.Timeout | undefined;
}

export class RenderPool {
  readonly size: number;
  private readonly maxQueue: number;
  private readonly timeoutMs: number;
  private readonly maxHeapMb: number;
  private readonly layerCacheBytes: number;
  private readonly threadNice: number;
  private readonly threadPolicy: MediaThreadPolicy;
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private closed = false;

  constructor(options: RenderPoolOptions = {}) {
    useShippedFonts(); // in this (main) thread, before any worker renders text
    this.size = options.size ?? Math.max(1, Math.min(4, availableParallelism() - 1));
    this.maxQueue = options.maxQueue ?? 32;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxHeapMb = options.maxHeapMb ?? 512;
    this.layerCacheBytes = options.layerCacheBytes ?? DEFAULT_LAYER_CACHE_BYTES;
    this.threadNice = options.threadNice ?? 0;
    this.threadPolicy = options.threadPolicy ?? 'nice';
    for (let i = 0; i < this.size; i++) this.slots.push(this.spawn());
  }

  /** Renders off-thread; same contract as renderCanvas, plus `render_busy` / `render_timeout`. */
  render(canvas: Canvas, images: ImageSource, options: RenderOptions = {}): Promise<RenderResult> {
    if (this.closed) return Promise.reject(new AppError('not_ready', 'The render pool is closed.'));
    const busy = this.slots.every((s) => s.task !== undefined);
    if (busy && this.queue.length >= this.maxQueue) return Promise.reject(new AppError('render_busy'));
    return new Promise<RenderResult>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, canvas, options, images, resolve, reject });
      this.dispatch();
    });
  }

  /** Renders waiting plus running. */
  get pending(): number {
    return this.queue.length + this.slots.filter((s) => s.task !== undefined).length;
  }

  /** Refuses new renders, fails queued and running ones, stops the workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const task of this.queue.splice(0)) task.reject(new AppError('not_ready', 'The render pool closed.'));
    await Promise.all(
      this.slots.map(async (slot) => {
        if (slot.timer) clearTimeout(slot.timer);
        slot.task?.reject(new AppError('not_ready', 'The render pool closed.'));
        slot.task = undefined;
        await slot.worker.terminate();
      }),
    );
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./pool-worker.ts', import.meta.url), {
      resourceLimits: { maxOldGenerationSizeMb: this.maxHeapMb },
      workerData: { layerCacheBytes: this.layerCacheBytes, threadNice: this.threadNice, threadPolicy: this.threadPolicy } satisfies PoolWorkerData,
    });
    const slot: Slot = { worker, task: undefined, timer: undefined };
    worker.on('message', (msg: FromWorker) => this.onMessage(slot, msg));
    worker.on('error', (err) => this.onExit(slot, err));
    worker.on('exit', (code) => this.onExit(slot, new Error(`render worker exited with code ${code}`)));
    worker.unref();
    return slot;
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.task || this.queue.length === 0) continue;
      const task = this.queue.shift()!;
      slot.task = task;
      slot.timer = setTimeout(() => this.onTimeout(slot), this.timeoutMs);
      const msg: ToWorker = { type: 'render', id: task.id, canvas: task.canvas, options: task.options };
      slot.worker.postMessage(msg);
    }
  }

  private finish(slot: Slot): Task | undefined {
    const task = slot.task;
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = undefined;
    slot.task = undefined;
    return task;
  }

  private onMessage(slot: Slot, msg: FromWorker): void {
    const task = slot.task;
    if (!task || task.id !== msg.id) return; // a late message from a render already given up on
    if (msg.type === 'image') {
      void task.images(msg.imageId).then(
        (bytes) => this.sendImage(slot, task.id, msg.request, bytes),
        () => this.sendImage(slot, task.id, msg.request, undefined),
      );
      return;
    }
    this.finish(slot);
    if (msg.type === 'done') {
      task.resolve({ ...msg.result, data: Buffer.from(msg.result.data.buffer, msg.result.data.byteOffset, msg.result.data.byteLength) });
    } else {
      task.reject(msg.code ? new AppError(msg.code, msg.message) : new Error(msg.message));
    }
    this.dispatch();
  }

  private sendImage(slot: Slot, id: number, request: number, bytes: Uint8Array | ImageFile | undefined): void {
    if (slot.task?.id !== id) return;
    const msg: ToWorker = { type: 'image', id, request, bytes };
    slot.worker.postMessage(msg);
  }

  private replace(slot: Slot): void {
    const index = this.slots.indexOf(slot);
    if (index < 0) return;
    slot.worker.removeAllListeners();
    void slot.worker.terminate();
    if (!this.closed) this.slots[index] = this.spawn();
    else this.slots.splice(index, 1);
  }

  private onTimeout(slot: Slot): void {
    const task = this.finish(slot);
    task?.reject(new AppError('render_timeout', `The render took longer than ${this.timeoutMs} ms and was stopped.`));
    this.replace(slot);
    this.dispatch();
  }

  private onExit(slot: Slot, err: Error): void {
    if (this.closed || !this.slots.includes(slot)) return;
    const task = this.finish(slot);
    task?.reject(new AppError('internal', `The render worker failed: ${err.name}: ${err.message}`));
    this.replace(slot);
    this.dispatch();
  }
}
