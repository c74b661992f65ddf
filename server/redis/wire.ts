/**
 * The messages nodes send each other through Redis (server/redis/fanout.ts), as a discriminated
 * union with a pure encoder and decoder (lib0 varints, like the Yjs protocols). Every message starts with the format version
 * and its type, then the sending node's identifier and the document's name, so a node can drop its
 * own messages (Redis delivers them to the publisher too) and a message never depends on the channel
 * it came by. A message of another format version or type, or a truncated one, is refused with a
 * `WireError` (a node of a newer version may share the channels during a rolling upgrade).
 */
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';

export const WIRE_VERSION = 1;

/** Anti-entropy: the sender's state vector and delete-set digest; peers that hold more answer with a diff. */
export interface StateMessage {
  type: 'state';
  sender: string;
  document: string;
  stateVector: Uint8Array;
  deleteSetDigest: string;
}

/** Awareness states removed because a connection on the sender closed (Hocuspocus re-encodes removals away). */
export interface AwarenessRemovedMessage {
  type: 'awareness-removed';
  sender: string;
  document: string;
  clientIds: number[];
}

/**
 * A live update or awareness change that also carries the sender's anti-entropy announcement (what
 * a `state` message holds): a node that publishes live traffic of a document announces its state
 * on the next such message instead of in a message of its own, so under traffic the live path is
 * one PUBLISH per edit or cursor move and nothing else (server/extensions/redis-sync.ts
 * `#round`). Receivers apply the bytes as an `update` / `awareness`, then answer the state as a
 * `state` message's. Types of their own, so a node of the previous version refuses them whole (an
 * unknown type) rather than misreading them: it then lacks that one change until its own next
 * announcement is answered.
 */
export interface WithStateMessage {
  type: 'update-with-state' | 'awareness-with-state';
  sender: string;
  document: string;
  bytes: Uint8Array;
  stateVector: Uint8Array;
  deleteSetDigest: string;
}

/**
 * Bytes for a document: `update` = a Yjs update one of the sender's clients made (the live path,
 * on the document's channel); `diff` = what the addressee lacked, answering its `state` or `hello`
 * (on the addressee's own channel only: hocuspocus#1151); `awareness` = a y-protocols awareness
 * update (the sender's clients' changes on the document's channel, or every state it holds in
 * answer to a `hello`).
 */
export interface BytesMessage {
  type: 'update' | 'diff' | 'awareness';
  sender: string;
  document: string;
  bytes: Uint8Array;
}

/** A node has just subscribed the document: every peer answers with a `diff` (even empty) and its awareness. */
export interface HelloMessage {
  type: 'hello';
  sender: string;
  document: string;
  stateVector: Uint8Array;
}

/** A stateless payload broadcast to the document's connections on every node (e.g. `versionSaved`). */
export interface StatelessMessage {
  type: 'stateless';
  sender: string;
  document: string;
  payload: string;
}

export type SyncMessage = StateMessage | AwarenessRemovedMessage | BytesMessage | WithStateMessage | HelloMessage | StatelessMessage;

const TYPES = { state: 0, 'awareness-removed': 1, update: 2, diff: 3, awareness: 4, hello: 5, stateless: 6, 'update-with-state': 7, 'awareness-with-state': 8 } as const satisfies Record<SyncMessage['type'], number>;

export class WireError extends Error {
  override name = 'WireError';
}

export function encodeMessage(message: SyncMessage): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, WIRE_VERSION);
  encoding.writeVarUint(e, TYPES[message.type]);
  encoding.writeVarString(e, message.sender);
  encoding.writeVarString(e, message.document);
  switch (message.type) {
    case 'state':
      encoding.writeVarUint8Array(e, message.stateVector);
      encoding.writeVarString(e, message.deleteSetDigest);
      break;
    case 'awareness-removed':
      encoding.writeVarUint(e, message.clientIds.length);
      for (const id of message.clientIds) encoding.writeVarUint(e, id);
      break;
    case 'update':
    case 'diff':
    case 'awareness':
      encoding.writeVarUint8Array(e, message.bytes);
      break;
    case 'update-with-state':
    case 'awareness-with-state':
      encoding.writeVarUint8Array(e, message.bytes);
      encoding.writeVarUint8Array(e, message.stateVector);
      encoding.writeVarString(e, message.deleteSetDigest);
      break;
    case 'hello':
      encoding.writeVarUint8Array(e, message.stateVector);
      break;
    case 'stateless':
      encoding.writeVarString(e, message.payload);
      break;
  }
  return encoding.toUint8Array(e);
}

/** Decodes one message; throws `WireError` on anything else. */
export function decodeMessage(bytes: Uint8Array): SyncMessage {
  const d = decoding.createDecoder(bytes);
  try {
    const version = decoding.readVarUint(d);
    if (version !== WIRE_VERSION) throw new WireError(`unknown wire format version ${version}`);
    const type = decoding.readVarUint(d);
    const sender = decoding.readVarString(d);
    const document = decoding.readVarString(d);
    let message: SyncMessage;
    switch (type) {
      case TYPES.state:
        message = { type: 'state', sender, document, stateVector: decoding.readVarUint8Array(d), deleteSetDigest: decoding.readVarString(d) };
        break;
      case TYPES['awareness-removed']: {
        const count = decoding.readVarUint(d);
        // Each id takes at least one byte: a count beyond what is left is a corrupt message.
        if (count > bytes.length - d.pos) throw new WireError(`awareness-removed claims ${count} ids in ${bytes.length - d.pos} bytes`);
        const clientIds: number[] = [];
        for (let i = 0; i < count; i++) clientIds.push(decoding.readVarUint(d));
        message = { type: 'awareness-removed', sender, document, clientIds };
        break;
      }
      case TYPES.update:
        message = { type: 'update', sender, document, bytes: decoding.readVarUint8Array(d) };
        break;
      case TYPES.diff:
        message = { type: 'diff', sender, document, bytes: decoding.readVarUint8Array(d) };
        break;
      case TYPES.awareness:
        message = { type: 'awareness', sender, document, bytes: decoding.readVarUint8Array(d) };
        break;
      case TYPES['update-with-state']:
      case TYPES['awareness-with-state']:
        message = {
          type: type === TYPES['update-with-state'] ? 'update-with-state' : 'awareness-with-state',
          sender,
          document,
          bytes: decoding.readVarUint8Array(d),
          stateVector: decoding.readVarUint8Array(d),
          deleteSetDigest: decoding.readVarString(d),
        };
        break;
      case TYPES.hello:
        message = { type: 'hello', sender, document, stateVector: decoding.readVarUint8Array(d) };
        break;
      case TYPES.stateless:
        message = { type: 'stateless', sender, document, payload: decoding.readVarString(d) };
        break;
      default:
        throw new WireError(`unknown message type ${type}`);
    }
    if (d.pos !== bytes.length) throw new WireError(`${bytes.length - d.pos} bytes after the message`);
    return message;
  } catch (error) {
    if (error instanceof WireError) throw error;
    // lib0 throws plain Errors ("Unexpected end of array") on truncated input.
    throw new WireError(`malformed message: ${error instanceof Error ? error.message : String(error)}`);
  }
}
