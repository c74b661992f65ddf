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
import * as Y from 'yjs';
import type { Logger } from 'pino';
import type { UpdateLog } from '../../persistence/update-log.ts';

const SYNC_STEP_2 = 1;
const SYNC_UPDATE = 2;

export class PersistenceExtension implements Extension {
  extensionName = 'persistence';
  readonly #log: UpdateLog;
  readonly #logger: Logger;
  readonly #compactAfter: number;

  constructor(log: UpdateLog, logger: Logger, options: { compactAfterUpdates: number }) {
    this.#log = log;
    this.#logger = logger;
    this.#compactAfter = options.compactAfterUpdates;
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
    if ((type !== SYNC_UPDATE && type !== SYNC_STEP_2) || connection.readOnly) return;
    // Throws on a malformed update: Hocuspocus closes that connection only.
    Y.applyUpdate(document, payload, { source: 'connection', connection });
    await this.#log.flushed();
  }

  onChange({ update, documentName, transactionOrigin }: onChangePayload): Promise<void> {
    // Updates relayed from other nodes are stored by the node that accepted them.
    const source = (transactionOrigin as { source?: string } | null)?.source;
    if (source === 'redis') return Promise.resolve();
    try {
      this.#log.append(documentName, update);
    } catch (error) {
      // Only after shutdown began; an error thrown from onChange would end the process.
      this.#logger.error({ err: error, session: documentName }, 'update arrived after the log closed');
    }
    return Promise.resolve();
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
