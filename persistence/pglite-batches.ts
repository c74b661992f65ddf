/**
 * Workaround for pglite-socket 0.2.x running every connection on PGlite's one backend session
 * message by message: its queue keeps a connection's messages together only while a transaction
 * is open, not for an extended-protocol batch (Parse/Bind/Describe/Execute … Sync), whose unnamed
 * statement and portal live until ReadyForQuery. Two connections' batches then interleave and one
 * runs the other's statement or finds no portal (`portal "" does not exist`, `bind message
 * supplies 1 parameters, but prepared statement … requires 3`, or silently wrong rows):
 * electric-sql/pglite#1046, fix proposed in electric-sql/pglite#977. Measured here: 1 of 40
 * `POST /api/sessions` answered 500 under load with four at a time.
 *
 * `keepBatchesTogether` replaces the queue's scheduler with the same one plus that rule: once a
 * connection's Parse, Bind, Describe, Execute, Close or Flush has run, only that connection's
 * messages run until its Sync (or until it disconnects).
 */

/** The shape of pglite-socket's internal QueryQueueManager this relies on (checked at run time). */
interface QueuedMessage {
  handlerId: number;
  message: Uint8Array;
  timestamp: number;
  onData: (data: Uint8Array) => void;
  resolve: (bytes: number) => void;
  reject: (error: unknown) => void;
}
interface QueryQueue {
  queue: QueuedMessage[];
  processing: boolean;
  lastHandlerId: number | null;
  db: {
    isInTransaction(): boolean;
    runExclusive<T>(fn: () => Promise<T>): Promise<T>;
    execProtocolRawStream(message: Uint8Array, options: { onRawData: (data: Uint8Array) => void }): Promise<unknown>;
  };
  processQueue(): Promise<void>;
  clearQueueForHandler(handlerId: number): void;
}

/** Extended-protocol messages that leave state for the next one: P, B, D, E, C, H. */
const BATCH_MESSAGES = new Set([0x50, 0x42, 0x44, 0x45, 0x43, 0x48]);
const SYNC = 0x53;

function isQueryQueue(value: unknown): value is QueryQueue {
  const q = value as Partial<QueryQueue> | null;
  return (
    !!q &&
    Array.isArray(q.queue) &&
    typeof q.processQueue === 'function' &&
    typeof q.clearQueueForHandler === 'function' &&
    typeof q.db?.isInTransaction === 'function' &&
    typeof q.db.runExclusive === 'function' &&
    typeof q.db.execProtocolRawStream === 'function'
  );
}

/** Makes a PGLiteSocketServer run each connection's extended-protocol batch as a unit. */
export function keepBatchesTogether(server: object): void {
  const q = (server as { queryQueue?: unknown }).queryQueue;
  if (!isQueryQueue(q)) {
    throw new Error('pglite-socket changed: its query queue is not the one persistence/pglite-batches.ts patches (electric-sql/pglite#1046)');
  }
  /** The connection whose batch is open (its last message was a batch message, not yet Sync). */
  let batchOwner: number | null = null;

  q.processQueue = async function processQueue(this: QueryQueue): Promise<void> {
    if (this.processing || this.queue.length === 0) return;
    this.processing = true;
    try {
      while (this.queue.length > 0) {
        const owner = batchOwner ?? (this.db.isInTransaction() ? this.lastHandlerId : null);
        const index = owner === null ? 0 : this.queue.findIndex((m) => m.handlerId === owner);
        if (index === -1) break; // the owner's next message has not arrived yet: its enqueue resumes
        const [item] = this.queue.splice(index, 1);
        if (!item) break;
        const type = item.message[0] ?? 0;
        let bytes = 0;
        try {
          await this.db.runExclusive(() =>
            this.db.execProtocolRawStream(item.message, {
              onRawData: (data) => {
                bytes += data.length;
                item.onData(data);
              },
            }),
          );
        } catch (error) {
          if (batchOwner === item.handlerId) batchOwner = null;
          item.reject(error);
          continue; // unlike 0.2.17, one failure does not stop the queue for everyone (#1046)
        }
        if (type === SYNC) batchOwner = null;
        else if (BATCH_MESSAGES.has(type)) batchOwner = item.handlerId;
        this.lastHandlerId = item.handlerId;
        item.resolve(bytes);
      }
    } finally {
      this.processing = false;
    }
  };

  const clear = q.clearQueueForHandler.bind(q);
  q.clearQueueForHandler = (handlerId: number) => {
    clear(handlerId);
    if (batchOwner === handlerId) {
      batchOwner = null;
      void q.processQueue();
    }
  };
}
