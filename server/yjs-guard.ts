/**
 * Keeps hostile Yjs updates off the event loop (yjs#687: crafted updates of a few dozen bytes can
 * make Yjs decoders spin for seconds or exhaust the heap; no release fixes it). Every update from
 * a client is first decoded and applied to an empty document in a worker thread with a time
 * budget and a heap cap. An update that errors, overruns the budget or kills the worker is refused
 * (the worker is replaced); only updates that passed are applied to the real document.
 *
 * Jobs are answered in order by one worker; the budget of a job starts when it reaches the head
 * of the queue, so a bomb delays the jobs behind it by at most the budget, never the event loop.
 */
import { Worker } from 'node:worker_threads';

export class UpdateRejected extends Error {
  override name = 'UpdateRejected';
}

interface Job {
  id: number;
  bytes: Uint8Array;
  resolve: () => void;
  reject: (error: Error) => void;
}

export interface UpdateGuardOptions {
  /** Longest a single update may take to decode in the worker, in ms. */
  budgetMs: number;
  /** Heap cap of the worker, in MiB. */
  maxHeapMb?: number;
}

export class UpdateGuard {
  readonly #opts: Required<UpdateGuardOptions>;
  #worker: Worker | null = null;
  #ready = false;
  readonly #queue: Job[] = [];
  #nextId = 1;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  /** Updates refused so far (metrics and tests). */
  rejected = 0;

  constructor(options: UpdateGuardOptions) {
    this.#opts = { maxHeapMb: 128, ...options };
  }

  /** Resolves if Yjs accepts `bytes` within the budget; rejects with `UpdateRejected` otherwise. */
  check(bytes: Uint8Array): Promise<void> {
    if (this.#closed) return Promise.reject(new UpdateRejected('update guard is closed'));
    return new Promise<void>((resolve, reject) => {
      const job: Job = { id: this.#nextId++, bytes, resolve, reject };
      this.#queue.push(job);
      this.#ensureWorker().postMessage({ id: job.id, bytes });
      if (this.#queue.length === 1) this.#armHead();
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    for (const job of this.#queue.splice(0)) job.reject(new UpdateRejected('update guard closed'));
    const worker = this.#worker;
    this.#worker = null;
    await worker?.terminate();
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(new URL('./yjs-guard-worker.ts', import.meta.url), {
      resourceLimits: { maxOldGenerationSizeMb: this.#opts.maxHeapMb, maxYoungGenerationSizeMb: 32 },
    });
    worker.unref();
    this.#ready = false;
    worker.on('message', (msg: { id: number; ok: boolean; error?: string; ready?: boolean }) => {
      if (msg.ready) {
        if (worker !== this.#worker) return;
        this.#ready = true;
        if (this.#queue.length > 0) this.#armHead();
        return;
      }
      this.#answer(worker, msg);
    });
    worker.on('error', (error) => this.#fail(worker, `the update broke the decoder: ${error.message}`));
    worker.on('exit', () => this.#fail(worker, 'the decoder exited'));
    this.#worker = worker;
    return worker;
  }

  #answer(worker: Worker, msg: { id: number; ok: boolean; error?: string }): void {
    if (worker !== this.#worker) return;
    const job = this.#queue[0];
    if (!job || job.id !== msg.id) return;
    this.#queue.shift();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (msg.ok) job.resolve();
    else {
      this.rejected += 1;
      job.reject(new UpdateRejected(`Yjs refused the update: ${msg.error ?? 'unknown error'}`));
    }
    if (this.#queue.length > 0) this.#armHead();
  }

  #armHead(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (!this.#ready) return; // armed when the worker says it is ready
    const worker = this.#worker;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (worker) this.#fail(worker, `decoding took longer than ${this.#opts.budgetMs} ms`);
    }, this.#opts.budgetMs);
    this.#timer.unref();
  }

  /** The head job is the culprit: refuse it, replace the worker, resubmit the rest. */
  #fail(worker: Worker, reason: string): void {
    if (worker !== this.#worker) return;
    this.#worker = null;
    void worker.terminate();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const culprit = this.#queue.shift();
    if (culprit) {
      this.rejected += 1;
      culprit.reject(new UpdateRejected(reason));
    }
    if (this.#closed || this.#queue.length === 0) return;
    const fresh = this.#ensureWorker();
    for (const job of this.#queue) fresh.postMessage({ id: job.id, bytes: job.bytes });
    this.#armHead();
  }
}
