/**
 * Limits on what one socket may hold. Each breach refuses the offending *document* on its socket
 * (see `refuseDocument`) with a code from the error registry, and leaves the socket's other
 * documents and everyone else alone: more than MAX_DOCUMENTS_PER_SOCKET attachments on one socket,
 * or more than MAX_ATTACHMENTS_PER_DOCUMENT of one document. (Malformed frames and unknown message
 * types are refused earlier, in the transport hooks, by closing the socket; the limits on updates
 * themselves — guard, document size — are steps of the update path, server/extensions/updates.ts.)
 */
import type { connectedPayload, Connection, Extension, onAuthenticatePayload } from '@hocuspocus/server';
import { AppError, type ErrorCode } from '../../shared/errors.ts';
import { refuseDocument } from '../transport/hooks.ts';

export interface LimitsOptions {
  /** Attachments (document connections, whatever their address) one socket may hold. */
  maxDocumentsPerSocket: number;
  /** Attachments of one document one socket may hold (`name`, `name\0a`, `name\0b`, …). */
  maxAttachmentsPerDocument: number;
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

export class LimitsExtension implements Extension {
  extensionName = 'limits';
  priority = 500;
  readonly #opts: LimitsOptions;
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
}
