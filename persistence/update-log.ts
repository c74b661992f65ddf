/**
 * The durable Yjs update log with group commit.
 *
 * Invariants:
 * - Only updates that Yjs has already applied are appended (a log that keeps an update before Yjs
 *   accepted it can be poisoned: `Y.mergeUpdates` spins on some rejected updates — docs/STACK-NOTES.md).
 * - `flushed()` resolves only once every update appended before the call is committed. The
 *   server holds a client's acknowledgement behind it, so "acknowledged" means "in PostgreSQL".
 * - While batches are being written, new updates queue up and go out together in the next batch:
 *   one INSERT per round trip, however many clients are typing. Up to `writers` batches are in
 *   flight at once (default 1), each on its own pooled connection: a batch waits for a free
 *   writer, not for the commit before it, and PostgreSQL flushes the WAL of commits that arrive
 *   together once. `flushed()` still means "everything appended before is committed": the durable
 *   mark only moves past a batch once every batch before it has committed too.
 * - A row appended `lazy` (a change relayed from another node, whose own node logs it too) starts
 *   no commit of its own: it goes with the next batch something else starts — an ordinary row, a
 *   `flushed()` waiting for it (every acknowledgement of this node), shutdown — or after
 *   `lazyMs` at the latest. So it is never left out of a commit an acknowledgement waits for.
 * - A failed write keeps its updates queued and retries with capped exponential backoff; nothing
 *   is dropped (except rows whose session no longer exists, which are logged and discarded).
 * - The log never stores a whole document over existing rows: loading appends nothing, and
 *   compaction rebuilds its snapshot from the rows themselves, so a failed load or an empty
 *   in-memory document can never overwrite good state (Hocuspocus #382).
 */
import * as Y from 'yjs';
import type { Database } from './db.ts';
import { mergeInline, type Merge } from './merge.ts';
import {
  appendSnapshot,
  appendUpdates,
  countUpdates,
  deleteSeqs,
  loadLog,
  lockDocument,
  recordCompaction,
  type AppendRow,
} from './repositories/documents.ts';

export interface UpdateLogOptions {
  nodeId: string;
  /** Largest number of rows in one INSERT. */
  maxBatchRows?: number;
  /** Batches written at once (UPDATE_LOG_WRITERS); 1 on the embedded database (one connection). */
  writers?: number;
  /**
   * How long a row may wait for others before a free writer takes it (UPDATE_LOG_GATHER_MS), in
   * ms; 0 = at once. A row that already waited that long behind a busy writer goes with the next
   * free one without waiting more, so this bounds the extra acknowledgement latency it costs.
   */
  gatherMs?: number;
  /**
   * Longest a `lazy` row waits for a batch it can go with (ms). Default 1,000.
   */
  lazyMs?: number;
  /** Backoff bounds for failed writes, in ms. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /**
   * How compaction merges a document's rows into one state (persistence/merge.ts): the server
   * passes a worker thread's, so the event loop is not held; default on the calling thread.
   */
  merge?: Merge;
  onError?: (error: unknown, context: string) => void;
  /** Called after each successful group commit (metrics). */
  onCommit?: (rows: number, seconds: number) => void;
}

interface Pending extends AppendRow {
  ticket: number;
  /** performance.now() when it was appended (the gather window counts from the oldest row). */
  at: number;
  lazy: boolean;
}

/** A batch being written: its rows, in ticket order. */
interface Batch {
  rows: Pending[];
}

interface Waiter {
  ticket: number;
  resolve: () => void;
}

export interface LoadedDocument {
  /** The merged state of every row, ready for `Y.applyUpdate`. */
  state: Uint8Array;
  rows: number;
  bytes: number;
}

/** A numeric option, checked: a finite number not below `min` (a programming error otherwise). */
function atLeast(name: string, value: number, min: number): number {
  if (!Number.isFinite(value) || value < min) throw new RangeError(`UpdateLog option ${name} must be a finite number >= ${min}, got ${value}`);
  return value;
}

export class UpdateLog {
  readonly #db: Database;
  readonly #opts: Required<Omit<UpdateLogOptions, 'onError' | 'onCommit'>> & Pick<UpdateLogOptions, 'onError' | 'onCommit'>;
  #pending: Pending[] = [];
  #waiters: Waiter[] = [];
  #issued = 0;
  #durable = 0;
  /** Batches being written (or retried), oldest first. */
  readonly #inFlight: Batch[] = [];
  readonly #retryWakes = new Set<() => void>();
  #failures = 0;
  #closed = false;
  #closing = false;
  /** The compaction running now (or resolved): the next one starts after it. */
  #compacting: Promise<void> = Promise.resolve();
  /** Fires when the oldest pending row's gather window ends, or when lazy rows alone have waited `lazyMs` (`#kickIn`). */
  #kickTimer: NodeJS.Timeout | undefined;
  #kickAt = 0;
  /** Pending rows that are not lazy: while there is one, a batch is due. */
  #eager = 0;
  /** Updates appended per document since its last load or compaction: the compaction trigger. */
  readonly #sinceCompaction = new Map<string, number>();

  constructor(db: Database, options: UpdateLogOptions) {
    this.#db = db;
    // Each default is applied per field, so an option passed as `undefined` (a config value left
    // out) gets its default instead of overwriting it: a spread would make `gatherMs: undefined`
    // a NaN wait, a timer re-arming forever and nothing ever committed.
    this.#opts = {
      ...options,
      maxBatchRows: atLeast('maxBatchRows', options.maxBatchRows ?? 500, 1),
      writers: atLeast('writers', options.writers ?? 1, 1),
      gatherMs: atLeast('gatherMs', options.gatherMs ?? 0, 0),
      lazyMs: atLeast('lazyMs', options.lazyMs ?? 1_000, 0),
      retryMinMs: atLeast('retryMinMs', options.retryMinMs ?? 50, 0),
      retryMaxMs: atLeast('retryMaxMs', options.retryMaxMs ?? 5_000, 0),
      merge: options.merge ?? mergeInline,
    };
  }

  /** False while writes are failing (retrying); `/readyz` reports it. */
  get healthy(): boolean {
    return this.#failures === 0;
  }

  /** Number of updates accepted but not yet committed. */
  get backlog(): number {
    let writing = 0;
    for (const batch of this.#inFlight) writing += batch.rows.length;
    return this.#pending.length + writing;
  }

  updatesSinceCompaction(sessionId: string): number {
    return this.#sinceCompaction.get(sessionId) ?? 0;
  }

  /**
   * Queues one update Yjs has applied; returns at once. Pair with `flushed()` to wait for it.
   * `lazy`: the row starts no commit of its own (see the header).
   */
  append(sessionId: string, payload: Uint8Array, options?: { lazy?: boolean }): void {
    if (this.#closed) throw new Error('update log is closed');
    const lazy = options?.lazy === true;
    this.#pending.push({ sessionId, payload, ticket: ++this.#issued, at: lazy || this.#opts.gatherMs > 0 ? performance.now() : 0, lazy });
    if (!lazy) this.#eager += 1;
    this.#sinceCompaction.set(sessionId, (this.#sinceCompaction.get(sessionId) ?? 0) + 1);
    this.#kick();
  }

  /** Resolves once every update appended before this call is committed. */
  flushed(): Promise<void> {
    const ticket = this.#issued;
    if (this.#durable >= ticket) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.#waiters.push({ ticket, resolve }));
    // Lazy rows waiting for a batch: this waiter is the reason to start one.
    if (this.#pending.length > 0 && this.#eager === 0) this.#kick();
    return done;
  }

  /** Reads and merges a document's rows. Throws if the database cannot be read: never "empty". */
  async load(sessionId: string): Promise<LoadedDocument> {
    const doc = new Y.Doc();
    try {
      const { rows, bytes } = await this.loadInto(doc, sessionId);
      return { state: rows === 0 ? new Uint8Array(0) : Y.encodeStateAsUpdate(doc), rows, bytes };
    } finally {
      doc.destroy();
    }
  }

  /**
   * Applies a document's rows to `doc` in one transaction (the server loads straight into the
   * Hocuspocus document: no merged copy to encode and decode again). Throws if the database cannot
   * be read: never "empty".
   */
  async loadInto(doc: Y.Doc, sessionId: string): Promise<{ rows: number; bytes: number }> {
    const rows = await loadLog(this.#db, sessionId);
    this.#sinceCompaction.set(sessionId, rows.filter((r) => r.kind === 'update').length);
    if (rows.length > 0) {
      doc.transact(() => {
        for (const row of rows) Y.applyUpdate(doc, row.payload);
      });
    }
    return { rows: rows.length, bytes: rows.reduce((n, r) => n + r.payload.byteLength, 0) };
  }

  /**
   * Replaces a document's rows by one snapshot row built from exactly those rows, under a
   * per-document advisory lock so two nodes never compact one document at once. Rows appended
   * meanwhile are not touched. Returns the number of rows merged.
   *
   * `minUpdates`: compact only if the document still has at least that many update rows once the
   * lock is held. Every node logs every change it holds, so the nodes serving one session pass
   * COMPACT_AFTER_UPDATES together; the first compacts, and the others, finding the rows already
   * merged, skip instead of reading, merging and writing the whole snapshot again.
   */
  async compact(sessionId: string, options: { minUpdates?: number } = {}): Promise<number> {
    // One compaction at a time per node: documents edited together pass COMPACT_AFTER_UPDATES
    // together, and Hocuspocus's store debounce then fires for all of them at once; run side by
    // side, their reads, merges and deletes took the cores from the event loops (bench
    // cross-node: cursor moves coalesced behind 150 ms stalls).
    const turn = this.#compacting.then(() => this.#compactNow(sessionId, options.minUpdates ?? 0));
    this.#compacting = turn.then(
      () => undefined,
      () => undefined,
    );
    return turn;
  }

  async #compactNow(sessionId: string, minUpdates: number): Promise<number> {
    // `skipped`: another node compacted first; this node counts from the update rows it left.
    const { merged, skipped } = await this.#db.transaction(async (tx): Promise<{ merged: number; skipped?: number }> => {
      await lockDocument(tx, sessionId);
      if (minUpdates > 0) {
        const updates = await countUpdates(tx, sessionId);
        if (updates < minUpdates) return { merged: 0, skipped: updates };
      }
      const rows = await loadLog(tx, sessionId);
      if (rows.length <= 1) return { merged: 0 };
      const state = await this.#opts.merge(rows.map((r) => r.payload));
      const seq = await appendSnapshot(tx, sessionId, state, this.#opts.nodeId);
      await deleteSeqs(tx, sessionId, rows.map((r) => r.seq));
      await recordCompaction(tx, sessionId, seq, state.byteLength);
      return { merged: rows.length };
    });
    if (merged > 0) this.#sinceCompaction.set(sessionId, 0);
    else if (skipped !== undefined) this.#sinceCompaction.set(sessionId, skipped);
    return merged;
  }

  /** Appends a whole initial state as the document's first row (a new session's seed). */
  async seed(sessionId: string, state: Uint8Array): Promise<void> {
    await appendSnapshot(this.#db, sessionId, state, this.#opts.nodeId);
  }

  forget(sessionId: string): void {
    this.#sinceCompaction.delete(sessionId);
  }

  /** Writes everything queued (retrying as long as it takes), then refuses new appends. */
  async close(): Promise<void> {
    // Nothing more will come to gather with: what waits goes out now.
    this.#closing = true;
    this.#kick();
    await this.flushed();
    this.#closed = true;
  }

  /** Skips pending retries' backoff (tests and shutdown use it to retry at once). */
  retryNow(): void {
    for (const wake of [...this.#retryWakes]) wake();
  }

  /** Starts batches while writers are free and rows wait (past their gather window, if any). */
  #kick(): void {
    const writers = Math.max(1, this.#opts.writers);
    while (this.#pending.length > 0 && this.#inFlight.length < writers) {
      if (!this.#due() || this.#gathering()) return;
      const batch: Batch = { rows: this.#pending.splice(0, this.#opts.maxBatchRows) };
      for (const row of batch.rows) if (!row.lazy) this.#eager -= 1;
      this.#inFlight.push(batch);
      void this.#run(batch);
    }
  }

  /**
   * True when the pending rows need a batch now: one is not lazy, a `flushed()` waits for one,
   * the log is closing, a batch is full, or the oldest has waited `lazyMs`. Otherwise (lazy rows
   * only) the end of that wait is armed to kick again.
   */
  #due(): boolean {
    if (this.#eager > 0 || this.#closing || this.#pending.length >= this.#opts.maxBatchRows) return true;
    const last = this.#waiters[this.#waiters.length - 1];
    if (last !== undefined && last.ticket >= this.#pending[0]!.ticket) return true;
    const wait = this.#pending[0]!.at + this.#opts.lazyMs - performance.now();
    if (wait <= 0) return true;
    this.#kickIn(wait);
    return false;
  }

  /**
   * True while the oldest pending row is inside its gather window and the batch is not full; then
   * the window's end is armed to kick again.
   */
  #gathering(): boolean {
    const gatherMs = this.#opts.gatherMs;
    if (gatherMs <= 0 || this.#closing || this.#pending.length >= this.#opts.maxBatchRows) return false;
    const wait = this.#pending[0]!.at + gatherMs - performance.now();
    if (wait <= 0) return false;
    this.#kickIn(wait);
    return true;
  }

  /** Kicks again in `wait` ms, unless a kick is armed to come sooner. */
  #kickIn(wait: number): void {
    const at = performance.now() + wait;
    if (this.#kickTimer && this.#kickAt <= at) return;
    clearTimeout(this.#kickTimer);
    this.#kickAt = at;
    this.#kickTimer = setTimeout(() => {
      this.#kickTimer = undefined;
      this.#kick();
    }, wait);
  }

  /** Writes one batch, retrying with backoff until it is in; then moves the durable mark. */
  async #run(batch: Batch): Promise<void> {
    for (;;) {
      const started = performance.now();
      try {
        await this.#write(batch.rows);
        this.#failures = 0;
        this.#opts.onCommit?.(batch.rows.length, (performance.now() - started) / 1000);
        break;
      } catch (error) {
        this.#failures += 1;
        this.#opts.onError?.(error, `writing ${batch.rows.length} updates (attempt ${this.#failures})`);
        await this.#backoff();
      }
    }
    this.#inFlight.splice(this.#inFlight.indexOf(batch), 1);
    // Durable: everything before the oldest batch still in flight, or before the oldest queued row.
    const oldest = this.#inFlight[0]?.rows[0]?.ticket ?? this.#pending[0]?.ticket ?? this.#issued + 1;
    if (oldest - 1 > this.#durable) this.#durable = oldest - 1;
    this.#releaseWaiters();
    this.#kick();
  }

  async #write(batch: Pending[]): Promise<void> {
    try {
      await appendUpdates(this.#db, batch, this.#opts.nodeId);
    } catch (error) {
      // 23503 = foreign_key_violation: a session in the batch was deleted. Write row by row so
      // the other sessions' updates land, and drop the orphans (there is nothing to attach them to).
      if ((error as { code?: string }).code !== '23503') throw error;
      for (const row of batch) {
        try {
          await appendUpdates(this.#db, [row], this.#opts.nodeId);
        } catch (rowError) {
          if ((rowError as { code?: string }).code !== '23503') throw rowError;
          this.#opts.onError?.(rowError, `dropping an update for deleted session ${row.sessionId}`);
        }
      }
    }
  }

  #backoff(): Promise<void> {
    const delay = Math.min(this.#opts.retryMaxMs, this.#opts.retryMinMs * 2 ** Math.min(this.#failures - 1, 16));
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#retryWakes.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, delay);
      this.#retryWakes.add(wake);
    });
  }

  #releaseWaiters(): void {
    const durable = this.#durable;
    const still: Waiter[] = [];
    for (const waiter of this.#waiters) {
      if (waiter.ticket <= durable) waiter.resolve();
      else still.push(waiter);
    }
    this.#waiters = still;
  }
}
