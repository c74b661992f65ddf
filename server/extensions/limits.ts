/**
 * Limits against bad input at the message level. Each breach refuses the offending *document* on
 * its socket (see `refuseDocument`) with a code from the error registry, and leaves the socket's
 * other documents and everyone else alone. (Malformed frames and unknown message types are
 * refused earlier, in the transport hooks, by closing the socket.)
 * - Every Yjs update and SyncStep2 from every connection, read-write or read-only, is decoded
 *   first in the UpdateGuard worker (yjs#687) with a CPU budget that grows with its size, checked
 *   before the bytes touch the shared document — except a read-only connection's plain update,
 *   which Hocuspocus never applies and which is refused unread;
 * - documents growing past MAX_DOCUMENT_BYTES;
 * - more than MAX_DOCUMENTS_PER_SOCKET attachments on one socket, or more than
 *   MAX_ATTACHMENTS_PER_DOCUMENT of one document.
 * Runs before the persistence extension (higher priority), so nothing refused is ever stored.
 */
import type {
  afterLoadDocumentPayload,
  beforeSyncPayload,
  connectedPayload,
  Connection,
  Document,
  Extension,
  onAuthenticatePayload,
} from '@hocuspocus/server';
import * as Y from 'yjs';
import type { Logger } from 'pino';
import { AppError, type ErrorCode } from '../../shared/errors.ts';
import { refuseDocument } from '../transport/hooks.ts';
import { UpdateRejected, type UpdateGuard } from '../yjs-guard.ts';

const SYNC_STEP_2 = 1;
const SYNC_UPDATE = 2;

export interface LimitsOptions {
  guard: UpdateGuard;
  maxDocumentBytes: number;
  /** Attachments (document connections, whatever their address) one socket may hold. */
  maxDocumentsPerSocket: number;
  /** Attachments of one document one socket may hold (`name`, `name\0a`, `name\0b`, …). */
  maxAttachmentsPerDocument: number;
  logger: Logger;
}

interface SocketSlots {
  /** One entry per authenticated attachment (Hocuspocus's per-address `connectionConfig`). */
  held: Set<object>;
  /** Attachments per document name. */
  perDocument: Map<string, number>;
}

/** What Hocuspocus's `onAuthenticate` rejection needs: `reason` goes to the client. */
function refusal(code: ErrorCode) {
  return { reason: code, code: new AppError(code).closeCode };
}

/**
 * Refuses `connection`'s document with `code` (see `refuseDocument`); returns what the hook
 * throws, so Hocuspocus drops the message instead of applying it and closes that document.
 */
export function rejectConnection(connection: Connection, code: ErrorCode, detail?: string) {
  refuseDocument(connection, code, detail);
  const error = new AppError(code);
  return { code: error.closeCode, reason: code };
}

/**
 * Makes a read-only connection's SyncStep2 cheap for Hocuspocus to answer, in place. Hocuspocus
 * answers it with `Y.snapshotContainsUpdate(Y.snapshot(document), update)` on the event loop:
 * decoding a viewer's untrusted bytes there is what let a 3.9 MB delete set stall the server.
 * The guard worker has already answered that question (`contained`), so the payload's first
 * bytes are overwritten with a tiny update that has the same answer, and Hocuspocus decodes only
 * that (it ignores trailing bytes): `[0, 0]` (nothing) for contained; otherwise a deletion of
 * clock 0 of a one-byte clientID the document does not know, which no document contains. The
 * payload is a view into the frame Hocuspocus reads next (lib0 `readVarUint8Array`).
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

const isEmptyUpdate = (payload: Uint8Array) => payload.byteLength === 2 && payload[0] === 0 && payload[1] === 0;

export class LimitsExtension implements Extension {
  extensionName = 'limits';
  priority = 500;
  readonly #opts: LimitsOptions;
  /** Estimated size of each loaded document: its state at load plus every accepted update. */
  readonly #sizes = new WeakMap<Document, number>();
  /** What each socket holds (keyed by its upgrade request, one per socket). */
  readonly #perSocket = new WeakMap<Request, SocketSlots>();

  constructor(options: LimitsOptions) {
    this.#opts = options;
  }

  /**
   * Counts an attachment against its socket when it is authenticated, not when it is connected:
   * Hocuspocus answers "authenticated" before it loads the document, so a client may ask for the
   * next one before the previous is connected. Runs after the auth extension (lower priority), so
   * a refused token takes no slot.
   *
   * What is counted is each attachment, not each document name: a client addresses a document as
   * `name` or `name\0suffix`, and every address is its own Hocuspocus connection (its own copy of
   * every broadcast). An attachment is identified by its `connectionConfig`, which Hocuspocus
   * creates once per address and authentication attempt. A socket holds at most
   * `maxDocumentsPerSocket` attachments, and at most `maxAttachmentsPerDocument` of one document.
   * A document whose load then fails keeps its slot until the socket closes.
   */
  onAuthenticate({ request, documentName, connectionConfig }: onAuthenticatePayload): Promise<void> {
    let slots = this.#perSocket.get(request);
    if (!slots) {
      slots = { held: new Set(), perDocument: new Map() };
      this.#perSocket.set(request, slots);
    }
    if (slots.held.has(connectionConfig)) return Promise.resolve();
    const ofDocument = slots.perDocument.get(documentName) ?? 0;
    if (slots.held.size >= this.#opts.maxDocumentsPerSocket) return Promise.reject(refusal('too_many_documents'));
    if (ofDocument >= this.#opts.maxAttachmentsPerDocument) return Promise.reject(refusal('too_many_attachments'));
    slots.held.add(connectionConfig);
    slots.perDocument.set(documentName, ofDocument + 1);
    return Promise.resolve();
  }

  /** The slot taken at authentication is given back when that attachment's connection closes. */
  connected({ request, documentName, connection, connectionConfig }: connectedPayload): Promise<void> {
    const slots = this.#perSocket.get(request);
    connection.onClose(() => {
      if (!slots?.held.delete(connectionConfig)) return;
      const left = (slots.perDocument.get(documentName) ?? 1) - 1;
      if (left > 0) slots.perDocument.set(documentName, left);
      else slots.perDocument.delete(documentName);
    });
    return Promise.resolve();
  }

  afterLoadDocument({ document }: afterLoadDocumentPayload): Promise<void> {
    this.#sizes.set(document, Y.encodeStateAsUpdate(document).byteLength);
    return Promise.resolve();
  }

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
    let contained: boolean | null;
    try {
      ({ contained } = await guard.check(payload, {
        stateVector: Y.encodeStateVector(document),
        ...(readOnly ? { snapshot: Y.encodeSnapshot(Y.snapshot(document)) } : {}),
      }));
    } catch (error) {
      if (!(error instanceof UpdateRejected)) throw error;
      logger.warn({ session: documentName, reason: error.message, bytes: payload.byteLength, readOnly }, 'refused an update');
      throw rejectConnection(connection, 'invalid_update', error.message);
    }
    if (readOnly) {
      if (!answerInPlace(payload, contained === true, document)) throw rejectConnection(connection, 'invalid_update');
      return;
    }
    this.#sizes.set(document, size);
  }
}
