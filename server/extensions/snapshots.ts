/**
 * Versions of the live documents: saving (HTTP, the `saveVersion` stateless message, autosave)
 * and restoring. The database side is server/versions.ts; this is the Hocuspocus side.
 *
 * - Saving reads the canvas from the loaded document (or, when no client has it open on this
 *   node, from the durable update log), validates it, and records a version. Saves of one
 *   document are serialized on this node; across nodes the database locks order them.
 * - `versionSaved` goes to every connection of the document after any save.
 * - Autosave: `quietMs` after the last change of a document (each change restarts the wait; 0
 *   disables it), and when the session's last participant leaves (the last connection on this
 *   node, with nobody connected on another node: presence's `node_presence` rows). Only when
 *   something changed: each document counts its changes, and a save remembers the count it saw; an
 *   autosave then also compares the canvas with the session's head version inside the snapshot
 *   transaction and records nothing when the content is the same (a change and its undo, edits
 *   outside the canvas, or another node that already saved it). The actor of an autosave is the
 *   last user who changed the document (else the session's owner).
 * - Restore writes the version's canvas into the document through a Hocuspocus direct connection
 *   as ordinary Yjs changes (the fewest: `applyCanvas`), so every client receives them and the
 *   update path appends them to the update log like any edit (extensions/updates.ts); it waits for
 *   the log to commit them, then records a `restore` version.
 *
 * No hook here ever throws: an exception in an update listener or onStateless would be an unhandled
 * rejection (docs/STACK-NOTES.md). Failures are logged, or answered to the asking connection.
 */
import {
  isTransactionOrigin,
  type Connection,
  type Document,
  type Extension,
  type Hocuspocus,
  type afterLoadDocumentPayload,
  type afterUnloadDocumentPayload,
  type onConfigurePayload,
  type onDisconnectPayload,
  type onStatelessPayload,
} from '@hocuspocus/server';
import type { Logger } from 'pino';
import * as Y from 'yjs';
import { applyCanvas, canvasSchema, readCanvas } from '../../shared/canvas.ts';
import { AppError } from '../../shared/errors.ts';
import { saveVersionMessage, type VersionsServerMessage } from '../../shared/versions.ts';
import type { Database } from '../../persistence/db.ts';
import type { UpdateLog } from '../../persistence/update-log.ts';
import { getSession } from '../../persistence/repositories/sessions.ts';
import type { VersionMetaRow } from '../../persistence/repositories/versions.ts';
import type { SaveLimit } from '../save-limit.ts';
import { recordVersion, sameContent, validateCanvas, versionJson, versionToRestore, type RecordVersionInput } from '../versions.ts';

/** What the HTTP routes need from the live side. */
export interface VersionService {
  /** Snapshots the session now. The caller has checked that `userId` may edit it. */
  saveVersion(input: { sessionId: string; userId: string; description: string | null }): Promise<VersionMetaRow>;
  /**
   * Counts one manual save or restore of `userId` in `sessionId` against RATE_LIMIT_VERSION_SAVES;
   * throws `RateLimitedError` (429 `rate_limited`, with the seconds to wait) past it.
   */
  limitSave(userId: string, sessionId: string): Promise<void>;
  /** Makes `versionId`'s canvas the live document and records a `restore` version. */
  restoreVersion(input: { sessionId: string; userId: string; versionId: string; description: string | null }): Promise<VersionMetaRow>;
  /** The live canvas as it is now (unvalidated): the document on this node, else the update log. */
  liveCanvas(sessionId: string): Promise<unknown>;
}

interface DocState {
  /** Changes seen (the document's update events) since the document was loaded on this node. */
  changes: number;
  /** `changes` as read by the last successful save (or 0 at load). Dirty = changes !== savedAt. */
  savedAt: number;
  lastEditor: string | null;
  timer: NodeJS.Timeout | null;
  /**
   * The canvas as it was when the document loaded on this node. A session with no version yet has
   * no head to compare an autosave with; this stands in for it, so a visit whose changes leave the
   * canvas as it found it (a value set to itself, edits outside the canvas) records nothing.
   */
  loaded: unknown;
}

/** The context of the direct connection a restore writes through (hooks see it). */
interface RestoreContext {
  userId: string;
  restore: { versionId: string };
}

export class SnapshotExtension implements Extension, VersionService {
  extensionName = 'snapshots';
  readonly #db: Database;
  readonly #log: UpdateLog;
  readonly #logger: Logger;
  readonly #quietMs: number;
  readonly #onLeave: boolean;
  #hocuspocus: Hocuspocus | null = null;
  readonly #docs = new Map<string, DocState>();
  /** Per document: the tail of its chain of saves on this node. */
  readonly #queues = new Map<string, Promise<unknown>>();

  readonly #onlineElsewhere: (sessionId: string) => Promise<boolean>;
  readonly #saveLimit: SaveLimit | undefined;

  /**
   * `onlineElsewhere`: is someone still connected to the session on another node (presence)? The
   * last connection leaving *this* node then saves nothing: the session's last participant has not
   * left, and the node where they are saves when they do. Absent: a single node.
   */
  constructor(deps: {
    db: Database;
    log: UpdateLog;
    logger: Logger;
    quietMs: number;
    /** Autosave when the session's last participant leaves (AUTOSAVE_ON_LEAVE); default true. */
    onLeave?: boolean;
    onlineElsewhere?: (sessionId: string) => Promise<boolean>;
    /** Manual saves and restores per user and session; absent: unlimited. Autosaves never count. */
    saveLimit?: SaveLimit;
  }) {
    this.#db = deps.db;
    this.#log = deps.log;
    this.#logger = deps.logger;
    this.#quietMs = deps.quietMs;
    this.#onLeave = deps.onLeave ?? true;
    this.#onlineElsewhere = deps.onlineElsewhere ?? (() => Promise.resolve(false));
    this.#saveLimit = deps.saveLimit;
  }

  onConfigure({ instance }: onConfigurePayload): Promise<void> {
    this.#hocuspocus = instance;
    return Promise.resolve();
  }

  /**
   * Counts the document's changes from its own `update` event, synchronously, like the update
   * log's listener (extensions/updates.ts): when a transaction returns, both have seen it.
   */
  afterLoadDocument({ documentName, document }: afterLoadDocumentPayload): Promise<void> {
    const state = this.#state(documentName);
    try {
      state.loaded = readCanvas(document);
    } catch (error) {
      this.#logger.warn({ err: error, session: documentName }, 'snapshots: could not read the loaded canvas');
    }
    document.on('update', (_update: Uint8Array, origin: unknown) => {
      try {
        this.#changed(documentName, origin);
      } catch (error) {
        this.#logger.error({ err: error, session: documentName }, 'snapshots: counting a change failed');
      }
    });
    return Promise.resolve();
  }

  #changed(documentName: string, origin: unknown): void {
    const state = this.#state(documentName);
    state.changes += 1;
    // The editor: a client's connection, or whoever a direct connection (a restore) acts for.
    const context: unknown = isTransactionOrigin(origin)
      ? origin.source === 'connection'
        ? origin.connection.context
        : origin.source === 'local'
          ? origin.context
          : undefined
      : undefined;
    const userId = (context as { userId?: unknown } | undefined)?.userId;
    if (typeof userId === 'string') state.lastEditor = userId;
    this.#schedule(documentName, state);
  }

  async onDisconnect({ document, documentName }: onDisconnectPayload): Promise<void> {
    // The last connection left: save what changed now instead of after the quiet period.
    if (document.getConnectionsCount() > 0) return;
    const state = this.#docs.get(documentName);
    if (!state) return;
    this.#clearTimer(state);
    let elsewhere = false;
    try {
      elsewhere = await this.#onlineElsewhere(documentName);
    } catch (error) {
      this.#logger.warn({ err: error, session: documentName }, 'could not tell whether the session is open on another node; saving');
    }
    if (elsewhere) {
      this.#logger.debug({ session: documentName }, 'last connection on this node left; participants remain on another node: no autosave');
      return;
    }
    if (!this.#onLeave) return; // AUTOSAVE_ON_LEAVE=false
    await this.#autosave(documentName, 'last participant left');
  }

  afterUnloadDocument({ documentName }: afterUnloadDocumentPayload): Promise<void> {
    const state = this.#docs.get(documentName);
    if (state) this.#clearTimer(state);
    this.#docs.delete(documentName);
    return Promise.resolve();
  }

  onDestroy(): Promise<void> {
    for (const state of this.#docs.values()) this.#clearTimer(state);
    this.#docs.clear();
    return Promise.resolve();
  }

  async onStateless({ payload, connection, documentName }: onStatelessPayload): Promise<void> {
    let message: unknown;
    try {
      message = JSON.parse(payload);
    } catch {
      return; // not JSON: not ours
    }
    if ((message as { type?: unknown } | null)?.type !== 'saveVersion') return;
    const rawId = (message as { requestId?: unknown }).requestId;
    const requestId = typeof rawId === 'string' && rawId.length <= 100 ? rawId : undefined;
    try {
      const parsed = saveVersionMessage.safeParse(message);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new AppError('invalid_body', `${issue.path.join('.') || 'message'}: ${issue.message}`);
      }
      const userId = (connection.context as { userId?: unknown } | undefined)?.userId;
      if (connection.readOnly || typeof userId !== 'string') {
        throw new AppError('forbidden', 'A read-only connection cannot save versions.');
      }
      // Answered to this connection only: `{"type":"error","code":"rate_limited","requestId"}`.
      await this.limitSave(userId, documentName);
      await this.#save({ sessionId: documentName, userId, description: parsed.data.description ?? null, kind: 'manual' }, requestId);
    } catch (error) {
      this.#replyError(connection, documentName, error, requestId);
    }
  }

  // -------------------------------------------------------------------------------------------
  // VersionService
  // -------------------------------------------------------------------------------------------

  async limitSave(userId: string, sessionId: string): Promise<void> {
    await this.#saveLimit?.take(userId, sessionId);
  }

  async saveVersion(input: { sessionId: string; userId: string; description: string | null }): Promise<VersionMetaRow> {
    const version = await this.#save({ ...input, kind: 'manual' });
    return version!;
  }

  async restoreVersion(input: { sessionId: string; userId: string; versionId: string; description: string | null }): Promise<VersionMetaRow> {
    const hocuspocus = this.#requireHocuspocus();
    const session = await getSession(this.#db, input.sessionId);
    if (!session) throw new AppError('session_not_found');
    const target = await versionToRestore(this.#db, session, input.userId, input.versionId);
    // The restored document says which version it now continues from.
    const canvas = { ...target.canvas, meta: { ...target.canvas.meta, baseVersionId: target.row.version_id } };

    const context: RestoreContext = { userId: input.userId, restore: { versionId: target.row.version_id } };
    // Opening loads the document if no client has it open here; closing stores and unloads it then.
    const connection = await hocuspocus.openDirectConnection(input.sessionId, context);
    try {
      return await this.#serialize(input.sessionId, async () => {
        // The transaction's `update` event has appended the change to the log and counted it by
        // the time `transact` returns (the listeners are synchronous): flushing now covers it.
        await connection.transact((document) => {
          applyCanvas(document, canvas);
        });
        const state = this.#state(input.sessionId);
        const seenChanges = state.changes;
        await this.#log.flushed();
        const recorded = await recordVersion(this.#db, {
          sessionId: input.sessionId,
          userId: input.userId,
          canvas,
          description: input.description ?? `Restored from version ${target.row.version_number}`,
          kind: 'restore',
          restoredFromVersionId: target.row.version_id,
        });
        this.#afterSave(input.sessionId, seenChanges, recorded!.version);
        return recorded!.version;
      });
    } finally {
      await connection.disconnect();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Internals
  // -------------------------------------------------------------------------------------------

  #requireHocuspocus(): Hocuspocus {
    if (!this.#hocuspocus) throw new Error('SnapshotExtension used before Hocuspocus configured it');
    return this.#hocuspocus;
  }

  #state(documentName: string): DocState {
    let state = this.#docs.get(documentName);
    if (!state) {
      state = { changes: 0, savedAt: 0, lastEditor: null, timer: null, loaded: undefined };
      this.#docs.set(documentName, state);
    }
    return state;
  }

  #schedule(documentName: string, state: DocState): void {
    if (this.#quietMs <= 0) return;
    this.#clearTimer(state);
    state.timer = setTimeout(() => {
      state.timer = null;
      if (!this.#hocuspocus?.documents.has(documentName)) {
        this.#docs.delete(documentName); // unloaded meanwhile: its last leave already saved it
        return;
      }
      void this.#autosave(documentName, 'quiet period');
    }, this.#quietMs);
    state.timer.unref();
  }

  #clearTimer(state: DocState): void {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  /** Runs `fn` after every earlier save of this document on this node has finished. */
  #serialize<T>(documentName: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#queues.get(documentName) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.#queues.set(documentName, tail);
    void tail.then(() => {
      if (this.#queues.get(documentName) === tail) this.#queues.delete(documentName);
    });
    return run;
  }

  async liveCanvas(sessionId: string): Promise<unknown> {
    return (await this.#readLive(sessionId)).raw;
  }

  /**
   * Reads the live canvas: from the document loaded on this node, else from the update log.
   * Returns the change count the read corresponds to and the last editor at that moment (null
   * when read from the log).
   */
  async #readLive(sessionId: string): Promise<{ raw: unknown; changes: number | null; lastEditor: string | null }> {
    const hocuspocus = this.#requireHocuspocus();
    let document: Document | undefined = hocuspocus.documents.get(sessionId);
    if (!document) {
      const loading = hocuspocus.loadingDocuments.get(sessionId);
      if (loading) document = await loading.catch(() => undefined);
    }
    if (document && !document.isDestroyed) {
      // Synchronous: the canvas, the change count and the last editor describe the same moment.
      const state = this.#docs.get(sessionId);
      return { raw: readCanvas(document), changes: state?.changes ?? null, lastEditor: state?.lastEditor ?? null };
    }
    await this.#log.flushed();
    const loaded = await this.#log.load(sessionId);
    const doc = new Y.Doc();
    try {
      if (loaded.rows > 0) Y.applyUpdate(doc, loaded.state);
      return { raw: readCanvas(doc), changes: null, lastEditor: null };
    } finally {
      doc.destroy();
    }
  }

  /**
   * A manual save or an autosave; null when an autosave found nothing to record. A null `userId`
   * (autosave) means the last user who changed the document as read (else the session's owner).
   */
  #save(input: Omit<RecordVersionInput, 'canvas'>, requestId?: string): Promise<VersionMetaRow | null> {
    return this.#serialize(input.sessionId, async () => {
      const live = await this.#readLive(input.sessionId);
      const canvas = validateCanvas(live.raw);
      const recorded = await recordVersion(this.#db, { ...input, userId: input.userId ?? live.lastEditor, canvas });
      if (!recorded) {
        if (live.changes !== null) this.#markSaved(input.sessionId, live.changes);
        return null;
      }
      this.#afterSave(input.sessionId, live.changes, recorded.version, requestId);
      return recorded.version;
    });
  }

  #markSaved(sessionId: string, changes: number): void {
    const state = this.#docs.get(sessionId);
    if (state && changes > state.savedAt) state.savedAt = changes;
  }

  #afterSave(sessionId: string, changes: number | null, version: VersionMetaRow, requestId?: string): void {
    if (changes !== null) this.#markSaved(sessionId, changes);
    const document = this.#hocuspocus?.documents.get(sessionId);
    if (!document) return;
    const message: VersionsServerMessage = { type: 'versionSaved', version: versionJson(version), ...(requestId ? { requestId } : {}) };
    document.broadcastStateless(JSON.stringify(message));
  }

  async #autosave(sessionId: string, reason: string): Promise<void> {
    const state = this.#docs.get(sessionId);
    if (!state || state.changes === state.savedAt) return;
    try {
      // No version yet (nothing to compare with in the snapshot transaction): compare with the
      // canvas as loaded here. Unchanged means no change by a person happened on this node.
      const seen = state.changes;
      const document = this.#hocuspocus?.documents.get(sessionId);
      if (document && state.loaded !== undefined && (await getSession(this.#db, sessionId))?.head_version_id === null) {
        const parsed = canvasSchema.safeParse(readCanvas(document));
        if (parsed.success && sameContent(state.loaded, parsed.data)) {
          this.#markSaved(sessionId, seen);
          this.#logger.debug({ session: sessionId, reason }, 'autosave skipped: the canvas is as loaded');
          return;
        }
      }
      const version = await this.#save({
        sessionId,
        userId: null,
        description: null,
        kind: 'autosave',
        onlyIfChanged: true,
      });
      if (version) this.#logger.debug({ session: sessionId, version: version.version_id, reason }, 'autosaved a version');
    } catch (error) {
      if (error instanceof AppError && error.code === 'invalid_canvas') {
        this.#logger.warn({ session: sessionId, reason, problem: error.message }, 'autosave skipped: invalid canvas');
      } else if (error instanceof AppError && error.code === 'session_not_found') {
        this.#logger.debug({ session: sessionId }, 'autosave skipped: the session is gone');
      } else {
        this.#logger.error({ err: error, session: sessionId, reason }, 'autosave failed; will retry after the next change');
      }
    }
  }

  #replyError(connection: Connection, documentName: string, error: unknown, requestId?: string): void {
    const appError = error instanceof AppError ? error : new AppError('internal');
    if (!(error instanceof AppError)) this.#logger.error({ err: error, session: documentName }, 'saveVersion failed');
    const message: VersionsServerMessage = {
      type: 'error',
      code: appError.code,
      message: appError.message,
      ...(requestId ? { requestId } : {}),
    };
    try {
      connection.sendStateless(JSON.stringify(message));
    } catch (sendError) {
      this.#logger.debug({ err: sendError, session: documentName }, 'could not answer a saveVersion (connection closed)');
    }
  }
}
