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
  /**
   * The update is well-formed but would stay pending in the target document: it needs changes the
   * document does not have (yet). The update path decides whether that is an attack or a client
   * that moved nodes with edits still in transit (extensions/updates.ts).
   */
  readonly pending: boolean;

  constructor(message: string, options: { pending?: boolean } = {}) {
    super(message);
    this.pending = options.pending ?? false;
  }
}

/** One candidate update, as the main thread posts it to the worker (in a `GuardBatch`). */
export interface GuardJob {
  id: number;
  bytes: Uint8Array;
  /** The target document's state vector: refuse what would stay pending there. */
  stateVector?: Uint8Array | undefined;
  /** The target document's snapshot (`Y.encodeSnapshot`): answer whether the update adds anything. */
  snapshot?: Uint8Array | undefined;
}

/** What the main thread posts: every job that queued up while the worker was busy, in order. */
export interface GuardBatch {
  jobs: GuardJob[];
}

/** The worker's answer to one job. `cpuMicros`: the CPU time the job took, in µs. */
export type GuardVerdict =
  | { id: number; ok: true; contained: boolean | null; cpuMicros: number }
  | { id: number; ok: false; error: string; cpuMicros: number; pending?: boolean };

/** What the worker posts back: the verdicts of one batch, in order, once the batch is done. */
export interface GuardReply {
  verdicts: GuardVerdict[];
}

/**
 * Memory the worker writes and the main thread reads without a message: which job runs now and
 * the worker's CPU clock when it started it (µs, the clock `worker.cpuUsage()` reads). The worker
 * stores the clock first, then the id (`Atomics.store`), so a reader that sees the id sees its clock.
 */
export const RUNNING_ID = 0; // Int32 index
export const RUNNING_CPU = 1; // Float64 index (byte offset 8)
export const SHARED_BYTES = 16;

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
  /** When the main thread first knew this job was running (its batch was posted, or a check saw it). */
  startedAt: number | null;
}

const MiB = 1024 * 1024;

/**
 * The main thread's side. Messages are few: while the worker is busy, new jobs wait here and go
 * out together as the next batch once the current batch's verdicts arrive (one message each way
 * per batch, not three per update); an idle worker gets a job at once. The CPU budget of the job
 * running now is watched through shared memory (which job, and the worker's CPU clock when it
 * started it), so no per-job "started" message is needed either.
 */
export class UpdateGuard {
  readonly #opts: Required<UpdateGuardOptions>;
  #worker: Worker | null = null;
  /** Jobs posted to the worker and not yet answered, in order. */
  #inFlight: Job[] = [];
  /** Jobs waiting for the next batch. */
  #outbox: Job[] = [];
  #shared = new SharedArrayBuffer(SHARED_BYTES);
  #nextId = 1;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  /** Updates refused so far (metrics and tests). */
  rejected = 0;
  /** Batches posted so far (tests, bench). */
  batches = 0;

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
      this.#outbox.push({ id, message, budgetMs: this.budgetFor(bytes.byteLength), resolve, reject, startedAt: null });
      if (this.#inFlight.length === 0) this.#post();
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#clearTimer();
    for (const job of [...this.#inFlight.splice(0), ...this.#outbox.splice(0)]) job.reject(new UpdateRejected('update guard closed'));
    const worker = this.#worker;
    this.#worker = null;
    await worker?.terminate();
  }

  /** Posts the outbox as one batch and watches its first job. */
  #post(): void {
    if (this.#outbox.length === 0) return;
    const worker = this.#ensureWorker();
    this.#inFlight = this.#outbox;
    this.#outbox = [];
    this.batches += 1;
    const head = this.#inFlight[0]!;
    head.startedAt = performance.now();
    worker.postMessage({ jobs: this.#inFlight.map((job) => job.message) } satisfies GuardBatch);
    this.#arm(worker, head.budgetMs);
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    const ids = new Int32Array(this.#shared);
    Atomics.store(ids, RUNNING_ID, 0);
    const worker = new Worker(new URL('./yjs-guard-worker.ts', import.meta.url), {
      workerData: { shared: this.#shared },
      resourceLimits: { maxOldGenerationSizeMb: this.#opts.maxHeapMb, maxYoungGenerationSizeMb: 32 },
    });
    worker.unref();
    worker.on('message', (msg: GuardReply) => this.#onReply(worker, msg));
    worker.on('error', (error) => this.#fail(worker, `the update broke the decoder: ${error.message}`));
    worker.on('exit', () => this.#fail(worker, 'the decoder exited'));
    this.#worker = worker;
    return worker;
  }

  #onReply(worker: Worker, msg: GuardReply): void {
    if (worker !== this.#worker) return;
    this.#clearTimer();
    for (const verdict of msg.verdicts) {
      const job = this.#inFlight[0];
      if (!job || job.id !== verdict.id) continue;
      this.#inFlight.shift();
      const cpuMs = verdict.cpuMicros / 1000;
      if (verdict.ok && cpuMs <= job.budgetMs) job.resolve({ contained: verdict.contained, cpuMs });
      else {
        this.rejected += 1;
        job.reject(
          new UpdateRejected(
            verdict.ok ? `decoding took ${cpuMs.toFixed(0)} ms of CPU, over its ${job.budgetMs.toFixed(0)} ms budget` : `Yjs refused the update: ${verdict.error}`,
            { pending: !verdict.ok && verdict.pending === true },
          ),
        );
      }
    }
    if (this.#inFlight.length === 0) this.#post();
  }

  /** The job running in the worker now, and the worker's CPU clock (ms) when it started it. */
  #running(): { job: Job; cpuAtStart: number } | null {
    const id = Atomics.load(new Int32Array(this.#shared), RUNNING_ID);
    const job = this.#inFlight.find((j) => j.id === id);
    if (!job) return null;
    return { job, cpuAtStart: new Float64Array(this.#shared)[RUNNING_CPU]! / 1000 };
  }

  /**
   * Checks the running job's CPU time after `delayMs`: a thread cannot use more CPU than wall time,
   * so a budget cannot be spent before then. Over it: the worker is stopped and that job refused.
   * Under it (the machine is busy, or an earlier job of the batch ran first): check again later,
   * until the wall-clock cap.
   */
  #arm(worker: Worker, delayMs: number): void {
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (worker !== this.#worker || this.#inFlight.length === 0) return;
      void this.#cpuOf(worker).then((cpuMs) => {
        if (worker !== this.#worker || this.#inFlight.length === 0) return; // answered meanwhile
        const running = this.#running();
        if (!running) {
          // Between jobs, or the batch is done and its reply is on its way.
          this.#arm(worker, 5);
          return;
        }
        const { job, cpuAtStart } = running;
        job.startedAt ??= performance.now();
        const used = cpuMs === null ? 0 : cpuMs - cpuAtStart;
        const wallMs = performance.now() - job.startedAt;
        if (used > job.budgetMs) {
          this.#fail(worker, `decoding took more than its ${job.budgetMs.toFixed(0)} ms CPU budget`, job);
        } else if (wallMs > Math.max(this.#opts.minWallMs, this.#opts.wallFactor * job.budgetMs)) {
          this.#fail(worker, `decoding took longer than ${wallMs.toFixed(0)} ms of wall-clock time`, job);
        } else {
          this.#arm(worker, Math.max(5, job.budgetMs - used));
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

  /**
   * The running job (or `culprit`) is refused; the worker is replaced and every other job not yet
   * answered (earlier ones of the batch whose verdicts died with the worker included) is checked
   * again by the new one.
   */
  #fail(worker: Worker, reason: string, culprit: Job | null = this.#running()?.job ?? this.#inFlight[0] ?? null): void {
    if (worker !== this.#worker) return;
    this.#worker = null;
    void worker.terminate();
    this.#clearTimer();
    if (culprit) {
      this.rejected += 1;
      culprit.reject(new UpdateRejected(reason));
    }
    this.#outbox = [...this.#inFlight.filter((job) => job !== culprit), ...this.#outbox];
    this.#inFlight = [];
    for (const job of this.#outbox) job.startedAt = null;
    if (!this.#closed) this.#post();
  }
}
