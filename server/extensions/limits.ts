/**
 * Limits against bad input at the message level. Each breach closes the offending socket with a
 * close code from the error registry (the reason is the error code) and leaves everyone else alone:
 * (Malformed frames and unknown message types are refused earlier, in the transport hooks.)
 * - updates Yjs refuses, or that take longer than the decode budget in the UpdateGuard worker
 *   (yjs#687) — checked before the update touches the shared document;
 * - documents growing past MAX_DOCUMENT_BYTES;
 * - more than MAX_DOCUMENTS_PER_SOCKET documents on one socket.
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
import { UpdateRejected, type UpdateGuard } from '../yjs-guard.ts';

const SYNC_STEP_2 = 1;
const SYNC_UPDATE = 2;

export interface LimitsOptions {
  guard: UpdateGuard;
  maxDocumentBytes: number;
  maxDocumentsPerSocket: number;
  logger: Logger;
}

/** Closes the socket under `connection` with the error's close code; returns what to throw. */
export function rejectConnection(connection: Connection, code: ErrorCode) {
  const error = new AppError(code);
  try {
    connection.webSocket.close(error.closeCode, code);
  } catch {
    // already closed: nothing more to do
  }
  return { code: error.closeCode, reason: code };
}

export class LimitsExtension implements Extension {
  extensionName = 'limits';
  priority = 500;
  readonly #opts: LimitsOptions;
  /** Estimated size of each loaded document: its state at load plus every accepted update. */
  readonly #sizes = new WeakMap<Document, number>();
  /** Documents open per socket (keyed by the socket's upgrade request). */
  readonly #perSocket = new WeakMap<Request, Set<string>>();

  constructor(options: LimitsOptions) {
    this.#opts = options;
  }

  /**
   * Counts a document against its socket when it is authenticated, not when it is connected:
   * Hocuspocus answers "authenticated" before it loads the document, so a client may ask for the
   * next one before the previous is connected. Runs after the auth extension (lower priority), so
   * a refused token takes no slot. A document whose load then fails keeps its slot until the socket
   * closes.
   */
  onAuthenticate({ request, documentName }: onAuthenticatePayload): Promise<void> {
    let open = this.#perSocket.get(request);
    if (!open) {
      open = new Set();
      this.#perSocket.set(request, open);
    }
    if (open.has(documentName)) return Promise.resolve();
    if (open.size >= this.#opts.maxDocumentsPerSocket) {
      return Promise.reject({ reason: 'too_many_documents', code: new AppError('too_many_documents').closeCode });
    }
    open.add(documentName);
    return Promise.resolve();
  }

  /** The slot taken at authentication is given back when the document's connection closes. */
  connected({ request, documentName, connection }: connectedPayload): Promise<void> {
    const open = this.#perSocket.get(request);
    connection.onClose(() => open?.delete(documentName));
    return Promise.resolve();
  }

  afterLoadDocument({ document }: afterLoadDocumentPayload): Promise<void> {
    this.#sizes.set(document, Y.encodeStateAsUpdate(document).byteLength);
    return Promise.resolve();
  }

  async beforeSync({ type, payload, connection, document, documentName }: beforeSyncPayload): Promise<void> {
    if ((type !== SYNC_UPDATE && type !== SYNC_STEP_2) || connection.readOnly) return;
    const size = (this.#sizes.get(document) ?? 0) + payload.byteLength;
    if (size > this.#opts.maxDocumentBytes) {
      this.#opts.logger.warn({ session: documentName, size }, 'refused an update: document too large');
      throw rejectConnection(connection, 'document_too_large');
    }
    try {
      await this.#opts.guard.check(payload);
    } catch (error) {
      if (!(error instanceof UpdateRejected)) throw error;
      this.#opts.logger.warn({ session: documentName, reason: error.message, bytes: payload.byteLength }, 'refused an update');
      throw rejectConnection(connection, 'invalid_update');
    }
    this.#sizes.set(document, size);
  }
}
