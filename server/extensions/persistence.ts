/**
 * The document's load path and its debounced store, over the durable update log: the pair
 * `@hocuspocus/extension-database` calls `fetch` and `store` (README, dependency table: why we do
 * not use that extension). Every change itself reaches the log on the update path
 * (server/extensions/updates.ts), not here.
 *
 * - Load: the log's rows applied to the document in one transaction (`UpdateLog.loadInto`). A database that cannot be read refuses the
 *   connection; it never yields an empty document that could later be stored over the real one.
 * - Store (Hocuspocus's debounced `onStoreDocument`, and on unload): waits for the log's commit and
 *   compacts the document's rows into one snapshot row once they have grown past
 *   COMPACT_AFTER_UPDATES. The snapshot is rebuilt from the rows themselves, never from the
 *   in-memory document.
 */
import type { Extension, onLoadDocumentPayload, onStoreDocumentPayload, afterUnloadDocumentPayload } from '@hocuspocus/server';
import type { Logger } from 'pino';
import type { UpdateLog } from '../../persistence/update-log.ts';

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
      // Before the update path's listener exists (afterLoadDocument): the rows are not logged again.
      loaded = await this.#log.loadInto(document, documentName);
    } catch (error) {
      // Hocuspocus does not destroy a document whose load failed (#1156): its awareness timer
      // would leak. Nothing was broadcast or stored from it.
      document.destroy();
      this.#logger.error({ err: error, session: documentName }, 'loading the document failed; connection refused');
      throw error;
    }
    if (loaded.rows === 0) this.#logger.warn({ session: documentName }, 'document has no stored state; starting empty');
  }

  async onStoreDocument({ documentName }: onStoreDocumentPayload): Promise<void> {
    await this.#log.flushed();
    if (this.#log.updatesSinceCompaction(documentName) < this.#compactAfter) return;
    try {
      // Another node serving the session may have compacted it meanwhile: then this one skips.
      const merged = await this.#log.compact(documentName, { minUpdates: this.#compactAfter });
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
