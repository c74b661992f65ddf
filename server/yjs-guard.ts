/**
 * Keeps hostile Yjs updates off the event loop (yjs#687: crafted updates of a few dozen bytes can
 * make Yjs decoders spin for seconds or exhaust the heap; no release fixes it). Every update from
 * a client is first decoded and applied to an empty document in a worker thread with a CPU budget
 * and a heap cap. An update that errors, overruns its budget or kills the worker is refused (the
 * worker is replaced); only updates that passed are applied to the real document.
 *
 * The budget is CPU time of the worker thread, not wall-clock time, and it grows with the update's
 * size: `budgetMs + budgetMsPerMiB × MiB`. Honest content costs Yjs time in proportion to its
 * bytes (10,000 text layers, 3.9 MB: ~190 ms of CPU here), a yjs#687 bomb costs far more than its
 * bytes; and on a busy machine wall-clock time says how loaded the machine is, not how hostile the
 * update (the same 10,000 layers took 1.3 s of wall time with the CPU shared). A generous
 * wall-clock cap remains for a worker starved of CPU altogether.
 *
 * Jobs are answered in order by one worker; a job's budget starts when the worker starts it, so a
 * bomb delays the jobs behind it by at most its budget, never the event loop.
 */
import { Worker } from 'node:worker_threads';

export class UpdateRejected extends Error {
  override name = 'UpdateRejected';
}

/** What the main thread posts to the worker. */
export interface GuardJob {
  id: number;
  bytes: Uint8Array;
  /** The target document's state vector: refuse what would stay pending there. */
  stateVector?: Uint8Array | undefined;
  /** The target document's snapshot (`Y.encodeSnapshot`): answer whether the update adds anything. */
  snapshot?: Uint8Array | undefined;
}

/** What the worker posts back. */
export type GuardReply =
  | { ready: true }
  /** `cpuMicros`: the worker thread's CPU time when it started the job (the clock `worker.cpuUsage()` reads). */
  | { id: number; started: true; cpuMicros: number }
  | { id: number; ok: true; contained: boolean | null; cpuMicros: number }
  | { id: number; ok: false; error: string; cpuMicros: number };

export interface CheckOptions {
  /** The document's state vector (`Y.encodeStateVector`): an update needing state it lacks is refused. */
  stateVector?: Uint8Array;
  /** The document's snapshot (`Y.encodeSnapshot(Y.snapshot(doc))`): the verdict says if the update is contained in it. */
  snapshot?: Uint8Array;
}

export interface Verdict {
  /** With a snapshot: true when the update adds nothing to it. Otherwise null. */
  contained: boolean | null;
  /** CPU time the worker spent on it, in ms. */
  cpuMs: number;
}

export interface UpdateGuardOptions {
  /** CPU time any update may take to decode, in ms. */
  budgetMs: number;
  /** Further CPU time per MiB of update, in ms. */
  budgetMsPerMiB?: number;
  /** Heap cap of the worker, in MiB. */
  maxHeapMb?: number;
  /** Wall-clock cap of one job, as a multiple of its CPU budget (at least `minWallMs`). */
  wallFactor?: number;
  minWallMs?: number;
}

interface Job {
  id: number;
  message: GuardJob;
  budgetMs: number;
  resolve: (verdict: Verdict) => void;
  reject: (error: Error) => void;
  startedAt: number | null;
  /** The worker's CPU time when it started this job, in ms. */
  cpuAtStart: number;
}

const MiB = 1024 * 1024;

export class UpdateGuard {
  readonly #opts: Required<UpdateGuardOptions>;
  #worker: Worker | null = null;
  readonly #queue: Job[] = [];
  #nextId = 1;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  /** Updates refused so far (metrics and tests). */
  rejected = 0;

  constructor(options: UpdateGuardOptions) {
    this.#opts = { budgetMsPerMiB: 0, maxHeapMb: 128, wallFactor: 20, minWallMs: 5_000, ...options };
  }

  /** The CPU budget of an update of `bytes` bytes, in ms. */
  budgetFor(bytes: number): number {
    return this.#opts.budgetMs + (this.#opts.budgetMsPerMiB * bytes) / MiB;
  }

  /** Resolves if Yjs accepts `bytes` within its budget; rejects with `UpdateRejected` otherwise. */
  check(bytes: Uint8Array, options: CheckOptions = {}): Promise<Verdict> {
    if (this.#closed) return Promise.reject(new UpdateRejected('update guard is closed'));
    return new Promise<Verdict>((resolve, reject) => {
      const id = this.#nextId++;
      const message: GuardJob = { id, bytes, stateVector: options.stateVector, snapshot: options.snapshot };
      const job: Job = { id, message, budgetMs: this.budgetFor(bytes.byteLength), resolve, reject, startedAt: null, cpuAtStart: 0 };
      this.#queue.push(job);
      this.#ensureWorker().postMessage(message);
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#clearTimer();
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
    worker.on('message', (msg: GuardReply) => this.#onMessage(worker, msg));
    worker.on('error', (error) => this.#fail(worker, `the update broke the decoder: ${error.message}`));
    worker.on('exit', () => this.#fail(worker, 'the decoder exited'));
    this.#worker = worker;
    return worker;
  }

  #onMessage(worker: Worker, msg: GuardReply): void {
    if (worker !== this.#worker || 'ready' in msg) return;
    const job = this.#queue[0];
    if (!job || job.id !== msg.id) return;
    if ('started' in msg) {
      job.startedAt = performance.now();
      job.cpuAtStart = msg.cpuMicros / 1000;
      this.#arm(worker, job, job.budgetMs);
      return;
    }
    this.#queue.shift();
    this.#clearTimer();
    const cpuMs = msg.cpuMicros / 1000;
    if (msg.ok && cpuMs <= job.budgetMs) job.resolve({ contained: msg.contained, cpuMs });
    else {
      this.rejected += 1;
      job.reject(
        new UpdateRejected(msg.ok ? `decoding took ${cpuMs.toFixed(0)} ms of CPU, over its ${job.budgetMs.toFixed(0)} ms budget` : `Yjs refused the update: ${msg.error}`),
      );
    }
  }

  /**
   * Checks the head job's CPU time after `delayMs`: a thread cannot use more CPU than wall time,
   * so the budget cannot be spent before then. Over it: the worker is stopped. Under it (the
   * machine is busy and the worker got less than all of that time): check again later, until
   * the wall-clock cap.
   */
  #arm(worker: Worker, job: Job, delayMs: number): void {
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (worker !== this.#worker || this.#queue[0] !== job) return;
      const wallMs = performance.now() - (job.startedAt ?? 0);
      void this.#cpuOf(worker).then((cpuMs) => {
        if (worker !== this.#worker || this.#queue[0] !== job) return; // answered meanwhile
        if (cpuMs !== null && cpuMs - job.cpuAtStart > job.budgetMs) {
          this.#fail(worker, `decoding took more than its ${job.budgetMs.toFixed(0)} ms CPU budget`);
        } else if (wallMs > Math.max(this.#opts.minWallMs, this.#opts.wallFactor * job.budgetMs)) {
          this.#fail(worker, `decoding took longer than ${wallMs.toFixed(0)} ms of wall-clock time`);
        } else {
          const used = cpuMs === null ? 0 : cpuMs - job.cpuAtStart;
          this.#arm(worker, job, Math.max(5, job.budgetMs - used));
        }
      });
    }, delayMs);
    this.#timer.unref();
  }

  async #cpuOf(worker: Worker): Promise<number | null> {
    try {
      const { user, system } = await worker.cpuUsage();
      return (user + system) / 1000;
    } catch {
      return null; // the worker is gone: its exit handler refuses the job
    }
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** The head job is the culprit: refuse it, replace the worker, resubmit the rest. */
  #fail(worker: Worker, reason: string): void {
    if (worker !== this.#worker) return;
    this.#worker = null;
    void worker.terminate();
    this.#clearTimer();
    const culprit = this.#queue.shift();
    if (culprit) {
      this.rejected += 1;
      culprit.reject(new UpdateRejected(reason));
    }
    if (this.#closed || this.#queue.length === 0) return;
    const fresh = this.#ensureWorker();
    for (const job of this.#queue) {
      job.startedAt = null;
      fresh.postMessage(job.message);
    }
  }
}
