/**
 * The one way an edit goes through the server. Read this file top to bottom to follow an update
 * from a client's socket to its acknowledgement:
 *
 *   1. socket → frame checks (transport/hooks.ts: envelope, content, rate limit; a bad frame closes
 *      the socket with its registry code)
 *   2. Hocuspocus queues the frame on the attachment's ordered message queue and calls the
 *      `beforeSync` hook of this extension (`UpdatePath.beforeSync`) for every Yjs update and
 *      SyncStep2:
 *      a. size limit (MAX_DOCUMENT_BYTES),
 *      b. the guard: decoded first in a worker with a CPU budget (yjs#687, server/yjs-guard.ts),
 *      c. applied once, here, to the document, with Hocuspocus's own `ConnectionTransactionOrigin`,
 *         then the payload Hocuspocus reads next is blanked in place to the empty update `[0, 0]`,
 *         so Hocuspocus's own `readUpdate` decodes two bytes instead of the update a second time.
 *   3. The apply's transaction emits the document's `update` event, synchronously, in which
 *      - `UpdatePath` appends the update to the durable log (persistence/update-log.ts, group
 *        commit), from the listener `afterLoadDocument` installs;
 *      - Hocuspocus broadcasts it to every connection and runs `onChange` (Redis fan-out).
 *   4. Hocuspocus then sends the acknowledgement (a SyncStatus message). It passes through the
 *      socket's `AckGate` (below), which holds it until the log has committed everything appended
 *      before it: the acknowledgement is released by the commit — `AckGate.send`.
 *
 * Every change to a loaded document reaches the log through that one listener, whatever made it:
 * a client, a restore (a direct connection's `LocalTransactionOrigin`), the server. The one
 * exception is a change relayed from another node (`RedisTransactionOrigin`): the node that
 * accepted it logged it.
 *
 * Only the acknowledgement waits for the commit, not the connection's queue: awaiting the commit
 * in `beforeSync` would hold back the client's later edits (and their broadcast) for as long as
 * the database is unreachable.
 *
 * Hocuspocus internals this relies on (checked against @hocuspocus/server 4.7.0, pinned exactly in
 * package.json; the README lists them):
 *   - `beforeSync`'s `payload` is a view into the frame `readUpdate`/`readSyncStep2` decode next
 *     (`IncomingMessage.peekVarUint8Array`), so blanking it in place is what Hocuspocus applies;
 *   - Yjs ignores bytes after a complete update, so `[0, 0, …]` applies as the empty update;
 *   - exactly one SyncStatus follows each update or SyncStep2 of a connection, on that
 *     connection's send, after `beforeSync` resolved;
 *   - `Connection.send` writes to the `WebSocketLike` it was given (our `PeerSocket`).
 */
import {
  isTransactionOrigin,
  type afterLoadDocumentPayload,
  type beforeSyncPayload,
  type Connection,
  type ConnectionTransactionOrigin,
  type Document,
  type Extension,
} from '@hocuspocus/server';
import * as Y from 'yjs';
import type { Logger } from 'pino';
import type { UpdateLog } from '../../persistence/update-log.ts';
import { AppError } from '../../shared/errors.ts';
import { PeerSocket, refuseDocument } from '../transport/hooks.ts';
import { UpdateRejected, type UpdateGuard } from '../yjs-guard.ts';
import { INLINE_GUARD_MAX_BYTES, inlineSafe } from '../yjs-precheck.ts';
import { rejectConnection } from './limits.ts';

const SYNC_STEP_2 = 1;
const SYNC_UPDATE = 2;
/** Hocuspocus MessageType.SyncStatus. */
const SYNC_STATUS = 8;

export interface UpdatePathOptions {
  log: UpdateLog;
  guard: UpdateGuard;
  maxDocumentBytes: number;
  logger: Logger;
  /**
   * How long an update set aside before the handshake (see `UpdatePath.beforeSync`) waits for the
   * client's SyncStep2 before the document is refused `invalid_update` (UPDATE_HANDSHAKE_GRACE_MS). Default 10 s.
   */
  handshakeGraceMs?: number;
  /**
   * Read-write updates up to this many bytes that `inlineSafe` proves harmless skip the guard's
   * worker (UPDATE_GUARD_INLINE_BYTES); 0: every update goes to the worker.
   */
  inlineMaxBytes?: number;
}

const isEmptyUpdate = (payload: Uint8Array) => payload.byteLength === 2 && payload[0] === 0 && payload[1] === 0;

/**
 * Makes a read-only connection's SyncStep2 cheap for Hocuspocus to answer, in place. Hocuspocus
 * answers it with `Y.snapshotContainsUpdate(Y.snapshot(document), update)` on the event loop:
 * decoding a viewer's untrusted bytes there is what let a 3.9 MB delete set stall the server.
 * The guard worker has already answered that question (`contained`), so the payload's first
 * bytes are overwritten with a tiny update that has the same answer, and Hocuspocus decodes only
 * that: `[0, 0]` (nothing) for contained; otherwise a deletion of clock 0 of a one-byte clientID
 * the document does not know, which no document contains.
 * If the connection became read-write in between (a role change racing this hook), what gets
 * applied is that harmless replacement, never the unguarded original.
 */
function answerInPlace(payload: Uint8Array, contained: boolean, document: Document): boolean {
  if (contained) {
    payload.set([0, 0]);
    return true;
  }
  const known = Y.decodeStateVector(Y.encodeStateVector(document));
  let client = 0;
  while (client < 128 && known.has(client)) client++;
  // A valid update that adds anything is at least 6 bytes (a one-range delete set).
  if (client === 128 || payload.byteLength < 6) return false;
  payload.set([0, 1, client, 1, 0, 1]);
  return true;
}

export class UpdatePath implements Extension {
  extensionName = 'updates';
  /** Before every other `beforeSync`: nothing unchecked reaches another hook or the document. */
  priority = 500;
  readonly #opts: UpdatePathOptions;
  /** Updates checked inline, without the worker (metrics). */
  inlineChecked = 0;
  /** Updates set aside for a moving client's handshake (metrics; the guard counted them as refused). */
  setAside = 0;
  /** Estimated size of each loaded document: its state at load plus every accepted update. */
  readonly #sizes = new WeakMap<Document, number>();
  /** Connections whose client's handshake SyncStep2 has been applied. */
  readonly #handshaken = new WeakSet<Connection>();
  /** Connections with updates set aside, waiting for that SyncStep2 (`#setAside`). */
  readonly #graceTimers = new Map<Connection, NodeJS.Timeout>();

  readonly #inlineMaxBytes: number;

  constructor(options: UpdatePathOptions) {
    this.#opts = options;
    this.#inlineMaxBytes = options.inlineMaxBytes ?? INLINE_GUARD_MAX_BYTES;
  }

  /** Step 3's listener: every change of the document from now on is appended to the log. */
  afterLoadDocument({ document, documentName }: afterLoadDocumentPayload): Promise<void> {
    this.#sizes.set(document, Y.encodeStateAsUpdate(document).byteLength);
    const { log, logger } = this.#opts;
    document.on('update', (update: Uint8Array, origin: unknown) => {
      if (isTransactionOrigin(origin) && origin.source === 'redis') return;
      try {
        log.append(documentName, update);
      } catch (error) {
        // Only after shutdown began. Throwing here would abort the Yjs transaction's other listeners.
        logger.error({ err: error, session: documentName }, 'update arrived after the log closed');
      }
    });
    return Promise.resolve();
  }

  /** Step 2: limits, guard, apply once. */
  async beforeSync({ type, payload, connection, document, documentName }: beforeSyncPayload): Promise<void> {
    if (type !== SYNC_UPDATE && type !== SYNC_STEP_2) return;
    const { logger, guard } = this.#opts;
    const readOnly = connection.readOnly;
    if (readOnly && type === SYNC_UPDATE) {
      // Hocuspocus answers SyncStatus(false) without reading it; blank it anyway, so a role
      // change racing this hook can never apply bytes nobody checked.
      if (payload.byteLength >= 2) payload.set([0, 0]);
      return;
    }
    // A viewer's handshake SyncStep2 is the empty update: contained in anything, nothing to decode.
    if (readOnly && isEmptyUpdate(payload)) return;
    const size = (this.#sizes.get(document) ?? 0) + payload.byteLength;
    if (!readOnly && size > this.#opts.maxDocumentBytes) {
      logger.warn({ session: documentName, size }, 'refused an update: document too large');
      throw rejectConnection(connection, 'document_too_large');
    }
    // Small, ordinary, non-pending updates skip the worker (server/yjs-precheck.ts).
    let contained: boolean | null = null;
    if (!readOnly && this.#inlineMaxBytes > 0 && inlineSafe(payload, document, this.#inlineMaxBytes)) this.inlineChecked += 1;
    else {
      try {
        ({ contained } = await guard.check(payload, {
          stateVector: Y.encodeStateVector(document),
          ...(readOnly ? { snapshot: Y.encodeSnapshot(Y.snapshot(document)) } : {}),
        }));
      } catch (error) {
        if (!(error instanceof UpdateRejected)) throw error;
        if (error.pending && type === SYNC_UPDATE && !readOnly && this.#setAside(connection, documentName)) {
          payload.set([0, 0]);
          return;
        }
        logger.warn({ session: documentName, reason: error.message, bytes: payload.byteLength, readOnly }, 'refused an update');
        throw rejectConnection(connection, 'invalid_update', error.message);
      }
    }
    if (readOnly) {
      if (!answerInPlace(payload, contained === true, document)) throw rejectConnection(connection, 'invalid_update');
      return;
    }
    if (isEmptyUpdate(payload)) {
      if (type === SYNC_STEP_2) this.#handshakeDone(connection);
      return;
    }
    this.#sizes.set(document, size);
    // The one apply. Its `update` event appends to the log and broadcasts (step 3).
    const origin: ConnectionTransactionOrigin = { source: 'connection', connection };
    try {
      Y.applyUpdate(document, payload, origin);
    } catch (error) {
      // Yjs refuses while it reads the structs, before it integrates anything (e.g. an embed that
      // is not JSON): a clean refusal, not Hocuspocus's reset with a stack trace.
      const reason = error instanceof Error ? error.message : String(error);
      logger.warn({ session: documentName, reason, bytes: payload.byteLength }, 'refused an update Yjs could not read');
      throw rejectConnection(connection, 'invalid_update', `Yjs refused the update: ${reason}`);
    }
    // What Hocuspocus reads next is now the empty update: it integrates nothing a second time.
    payload.set([0, 0]);
    if (type === SYNC_STEP_2) this.#handshakeDone(connection);
  }

  /**
   * A client that moves to this node while editing (its node stopped or died) may send an update
   * that builds on its own last edits before this node has them: they are still in transit through
   * Redis, or were lost with the old node. Yjs would keep such an update pending; the guard refuses
   * pending updates, so the provider would see its document refused and its edits lost.
   *
   * Before the client's handshake SyncStep2, such an update is set aside instead: it is dropped
   * (Hocuspocus applies the empty update) and its acknowledgement is held on the socket. Nothing
   * is lost: the server answered the client's SyncStep1 with its own SyncStep1 before it read this
   * update, so the client's SyncStep2 reply carries everything this node lacked then — the update
   * and what it builds on. Once that SyncStep2 is applied, the held acknowledgements go through
   * the commit gate behind it. A client that never sends it keeps its update unacknowledged and is
   * refused `invalid_update` after `handshakeGraceMs`. After the handshake a pending update is
   * refused at once, as before: an honest client can no longer produce one.
   *
   * Returns false when the update cannot be set aside (the handshake is over, or the socket is not ours).
   */
  #setAside(connection: Connection, documentName: string): boolean {
    if (this.#handshaken.has(connection)) return false;
    const socket = connection.webSocket;
    if (!(socket instanceof PeerSocket)) return false;
    socket.holdAcks(connection.messageAddress);
    this.setAside += 1;
    if (!this.#graceTimers.has(connection)) {
      const timer = setTimeout(() => {
        this.#graceTimers.delete(connection);
        // Handshake done, or the socket gone (its held acknowledgements went with it).
        if (this.#handshaken.has(connection) || socket.readyState !== 1) return;
        this.#opts.logger.warn({ session: documentName }, 'refused a connection: updates set aside, no handshake SyncStep2 followed');
        try {
          refuseDocument(connection, 'invalid_update', 'the update depends on changes the document does not have, and the client never sent them');
          connection.close({ code: new AppError('invalid_update').closeCode, reason: 'invalid_update' });
        } catch (error) {
          // The connection closed meanwhile: nothing left to refuse.
          this.#opts.logger.debug({ err: error, session: documentName }, 'set-aside refusal after close');
        }
      }, this.#opts.handshakeGraceMs ?? 10_000);
      timer.unref();
      this.#graceTimers.set(connection, timer);
    }
    return true;
  }

  /** The client's handshake SyncStep2 has been applied: release what was held behind it. */
  #handshakeDone(connection: Connection): void {
    this.#handshaken.add(connection);
    const timer = this.#graceTimers.get(connection);
    if (!timer) return;
    clearTimeout(timer);
    this.#graceTimers.delete(connection);
    const socket = connection.webSocket;
    if (socket instanceof PeerSocket) socket.releaseAcksAfterNext(connection.messageAddress);
  }
}

/** Reads a varUint at `offset`; returns [value, next offset], or null past the end. */
function readVarUint(frame: Uint8Array, offset: number): [number, number] | null {
  let value = 0;
  let shift = 0;
  for (let i = offset; i < frame.length && shift < 35; i++) {
    const byte = frame[i]!;
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [value, i + 1];
    shift += 7;
  }
  return null;
}

/**
 * True for a Hocuspocus SyncStatus frame, `<varString address> <varUint 8> <bool>`, read without
 * decoding the address: two varUints, no allocation. Every frame a socket sends passes this test.
 */
export function isSyncStatusFrame(frame: Uint8Array): boolean {
  const length = readVarUint(frame, 0);
  if (!length) return false;
  const type = readVarUint(frame, length[1] + length[0]);
  return type !== null && type[0] === SYNC_STATUS;
}

/**
 * Step 4: a SyncStatus (which the socket recognises with `isSyncStatusFrame`) goes out only once the log has committed every update appended
 * before it was sent, which includes the update it acknowledges (appended in step 3, before
 * Hocuspocus sends it). Acknowledgements leave in the order they were sent; every other message
 * goes out at once. While PostgreSQL is unreachable, acknowledgements wait and nothing else does.
 *
 * No pairing of an acknowledgement with "its" update is needed: "everything appended before now is
 * committed" covers it whatever else the hooks did in between. One gate serves every socket of the
 * node (commits are in ticket order, so one chain releases them in order) and costs a connection
 * nothing.
 */
export class AckGate {
  readonly #durable: () => Promise<void>;
  readonly #onWait: ((seconds: number) => void) | undefined;
  #tail: Promise<void> = Promise.resolve();
  #waiting = 0;

  /**
   * `durable`: resolves once everything appended so far is committed (`UpdateLog.flushed`).
   * `onWait`: how long each acknowledgement was held, in seconds (metrics).
   */
  constructor(durable: () => Promise<void>, onWait?: (seconds: number) => void) {
    this.#durable = durable;
    this.#onWait = onWait;
  }

  /** Acknowledgements held now (tests, metrics). */
  get waiting(): number {
    return this.#waiting;
  }

  /** Runs `release` (which sends one SyncStatus) once everything appended until now is committed. */
  hold(release: () => void): void {
    const committed = this.#durable();
    const held = performance.now();
    this.#waiting += 1;
    this.#tail = this.#tail
      .then(() => committed)
      .then(() => {
        this.#waiting -= 1;
        this.#onWait?.((performance.now() - held) / 1000);
        try {
          release();
        } catch {
          // The socket died meanwhile; the chain must go on for every other socket's acknowledgements.
        }
      });
  }
}
