/**
 * Merging a document's log rows into one state, for compaction (`UpdateLog.compact`).
 *
 * Compaction applies every row of a document to a fresh Y.Doc and encodes it. That is CPU work in
 * proportion to the document's history: on the event loop it stalled every client of the node —
 * ten documents compacting together after an editing burst (each had passed
 * COMPACT_AFTER_UPDATES; Hocuspocus's store debounce fires for all of them at once) held the loop
 * for over 100 ms, so cursor moves of one client were coalesced and delivered late (bench
 * cross-node: cursor p99 112-160 ms with compaction, 19 ms without). `MergeWorker` does it in one
 * worker thread instead, one job after another; `mergeInline` is the same on the calling thread
 * (the embedded database's tests, tools).
 *
 * The rows are ones Yjs already applied (the log's invariant), so applying them cannot spin; a
 * worker that fails or exits only fails that compaction, whose rows all stay.
 */
import { Worker } from 'node:worker_threads';
import * as Y from 'yjs';

export type Merge = (payloads: readonly Uint8Array[]) => Promise<Uint8Array>;

/** The message to the worker: every row's bytes back to back, and each row's length. */
export interface MergeJob {
  id: number;
  bytes: ArrayBuffer;
  lengths: number[];
}

export type MergeReply = { id: number; state: ArrayBuffer } | { id: number; error: string };

/** Applies the rows to a fresh document on this thread and encodes it. */
export const mergeInline: Merge = (payloads) => {
  const doc = new Y.Doc();
  try {
    doc.transact(() => {
      for (const payload of payloads) Y.applyUpdate(doc, payload);
    });
    return Promise.resolve(Y.encodeStateAsUpdate(doc));
  } finally {
    doc.destroy();
  }
};

interface Pending {
  resolve: (state: Uint8Array) => void;
  reject: (error: Error) => void;
}

/** One worker thread, started on first use, merging jobs in order. */
export class MergeWorker {
  #worker: Worker | null = null;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #closed = false;
  /** Jobs merged in the worker (tests, metrics). */
  merged = 0;

  readonly merge: Merge = (payloads) => {
    if (this.#closed) return Promise.reject(new Error('merge worker closed'));
    let total = 0;
    for (const p of payloads) total += p.byteLength;
    // One copy into a buffer of its own, transferred: row buffers may be views into pg's shared
    // slabs, which must neither be detached nor cloned whole.
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const p of payloads) {
      bytes.set(p, at);
      at += p.byteLength;
    }
    const id = ++this.#nextId;
    return new Promise<Uint8Array>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      const job: MergeJob = { id, bytes: bytes.buffer, lengths: payloads.map((p) => p.byteLength) };
      this.#ensure().postMessage(job, [bytes.buffer]);
    });
  };

  async close(): Promise<void> {
    this.#closed = true;
    const worker = this.#worker;
    this.#worker = null;
    this.#failAll(new Error('merge worker closed'));
    await worker?.terminate();
  }

  #ensure(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(new URL('./merge-worker.ts', import.meta.url));
    // It never keeps the process alive: a pending compaction only saves space.
    worker.unref();
    worker.on('message', (reply: MergeReply) => {
      const pending = this.#pending.get(reply.id);
      if (!pending) return;
      this.#pending.delete(reply.id);
      if ('error' in reply) pending.reject(new Error(`merging the log failed: ${reply.error}`));
      else {
        this.merged += 1;
        pending.resolve(new Uint8Array(reply.state));
      }
    });
    const gone = (why: string) => {
      if (this.#worker !== worker) return;
      this.#worker = null;
      this.#failAll(new Error(why));
    };
    worker.on('error', (error) => gone(`merge worker failed: ${error.message}`));
    worker.on('exit', (code) => gone(`merge worker exited (${code})`));
    this.#worker = worker;
    return worker;
  }

  #failAll(error: Error): void {
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
  }
}
