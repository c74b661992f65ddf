/**
 * Loads documents from the durable update log and makes every acknowledgement durable.
 *
 * Hocuspocus acknowledges an update (SyncStatus) right after applying it in memory. Its
 * `beforeSync` hook is awaited before that, on the connection's ordered message queue: there we
 * apply the update ourselves (so only what Yjs accepts reaches the log), which appends it to the
 * log through `onChange`, and wait for the log's group commit. Hocuspocus then applies the same
 * update again (a no-op: every struct is already integrated) and acknowledges it — after commit.
 *
 * Stores are no longer the persistence mechanism; Hocuspocus's debounced `onStoreDocument` only
 * waits for the log and compacts it when it has grown.
 */
import type {
  beforeSyncPayload,
  Extension,
  onChangePayload,
  onLoadDocumentPayload,
  onStoreDocumentPayload,
  afterUnloadDocumentPayload,
} from '@hocuspocus/server';
import type { Connection } from '@hocuspocus/server';
import * as decoding from 'lib0/decoding';
import * as Y from 'yjs';
import type { Logger } from 'pino';
import type { UpdateLog } from '../../persistence/update-log.ts';

const MESSAGE_SYNC_STATUS = 8; // Hocuspocus MessageType.SyncStatus

/** True for a Hocuspocus SyncStatus message: <document address> <type 8> <saved>. */
function isSyncStatus(message: Uint8Array): boolean {
  try {
    const decoder = decoding.createDecoder(message);
    decoding.readVarString(decoder);
    return decoding.readVarUint(decoder) === MESSAGE_SYNC_STATUS;
  } catch {
    return false;
  }
}

const SYNC_STEP_2 = 1;
const SYNC_UPDATE = 2;

export class PersistenceExtension implements Extension {
  extensionName = 'persistence';
  readonly #log: UpdateLog;
  readonly #logger: Logger;
  readonly #compactAfter: number;
  readonly #ackHolds = new WeakMap<Connection, Promise<void>[]>();

  readonly #onAckWait: ((seconds: number) => void) | undefined;

  constructor(log: UpdateLog, logger: Logger, options: { compactAfterUpdates: number; onAckWait?: (seconds: number) => void }) {
    this.#log = log;
    this.#logger = logger;
    this.#compactAfter = options.compactAfterUpdates;
    this.#onAckWait = options.onAckWait;
  }

  async onLoadDocument({ document, documentName }: onLoadDocumentPayload): Promise<void> {
    // Throws when the database cannot be read: Hocuspocus then refuses the connection and
    // creates nothing, so no empty document can later be stored over the real one.
    let loaded;
    try {
      loaded = await this.#log.load(documentName);
    } catch (error) {
      // Hocuspocus does not destroy a document whose load failed (#1156): its awareness timer
      // would leak. Nothing was broadcast or stored from it.
      document.destroy();
      this.#logger.error({ err: error, session: documentName }, 'loading the document failed; connection refused');
      throw error;
    }
    if (loaded.rows === 0) this.#logger.warn({ session: documentName }, 'document has no stored state; starting empty');
    else Y.applyUpdate(document, loaded.state);
  }

  async beforeSync({ type, payload, connection, document }: beforeSyncPayload): Promise<void> {
    if (type !== SYNC_UPDATE && type !== SYNC_STEP_2) return;
    if (connection.readOnly) {
      this.#ackGate(connection).push(Promise.resolve()); // its SyncStatus(false) keeps its place
      return;
    }
    // Append what this update changes synchronously, from the document's own 'update' event:
    // Hocuspocus runs `onChange` in a later microtask, after `flushed()` below would already have
    // taken its ticket, and the acknowledgement would then not wait for this update's commit.
    const append = (update: Uint8Array) => this.#append(document.name, update);
    document.on('update', append);
    try {
      // Throws on a malformed update: Hocuspocus closes that connection only.
      Y.applyUpdate(document, payload, { source: 'connection', connection, logged: true });
    } finally {
      document.off('update', append);
    }
    // Do not await the commit here: Hocuspocus processes a connection's messages one at a time, so
    // awaiting would hold back this client's later edits (and their broadcast to everyone else)
    // for as long as the database is unreachable. Only the acknowledgement waits for the commit.
    const started = performance.now();
    this.#ackGate(connection).push(
      this.#log.flushed().then(() => this.#onAckWait?.((performance.now() - started) / 1000)),
    );
  }

  /**
   * Holds each SyncStatus (acknowledgement) sent to `connection` until the commit of the update
   * it acknowledges, keeping acknowledgements in order. Hocuspocus sends exactly one SyncStatus
   * right after each beforeSync of an update or SyncStep2, on the connection's ordered queue, so
   * the n-th hold belongs to the n-th SyncStatus; all other messages go out at once.
   */
  #ackGate(connection: Connection): Promise<void>[] {
    let holds = this.#ackHolds.get(connection);
    if (holds) return holds;
    const queue: Promise<void>[] = [];
    holds = queue;
    this.#ackHolds.set(connection, queue);
    const send = connection.send.bind(connection);
    let tail = Promise.resolve();
    connection.send = (message: Uint8Array) => {
      if (!isSyncStatus(message)) return send(message);
      const hold = queue.shift();
      tail = tail.then(() => hold).then(() => send(message));
    };
    return holds;
  }

  onChange({ update, documentName, transactionOrigin }: onChangePayload): Promise<void> {
    const origin = transactionOrigin as { source?: string; logged?: boolean } | null;
    // Updates relayed from other nodes are stored by the node that accepted them; updates from
    // clients were appended by beforeSync already.
    if (origin?.source === 'redis' || origin?.logged === true) return Promise.resolve();
    this.#append(documentName, update);
    return Promise.resolve();
  }

  #append(documentName: string, update: Uint8Array): void {
    try {
      this.#log.append(documentName, update);
    } catch (error) {
      // Only after shutdown began; an error thrown from onChange would end the process.
      this.#logger.error({ err: error, session: documentName }, 'update arrived after the log closed');
    }
  }

  async onStoreDocument({ documentName }: onStoreDocumentPayload): Promise<void> {
    await this.#log.flushed();
    if (this.#log.updatesSinceCompaction(documentName) < this.#compactAfter) return;
    try {
      const merged = await this.#log.compact(documentName);
      this.#logger.debug({ session: documentName, merged }, 'compacted update log');
    } catch (error) {
      // Compaction only saves space: the rows it would have merged are all still there.
      this.#logger.warn({ err: error, session: documentName }, 'compaction failed; will retry on a later store');
    }
  }

  afterUnloadDocument({ documentName }: afterUnloadDocumentPayload): Promise<void> {
    this.#log.forget(documentName);
    return Promise.resolve();
  }
}
