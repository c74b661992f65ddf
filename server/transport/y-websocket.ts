/**
 * The plain y-websocket protocol (`ws://HOST:PORT/yjs/<sessionId>?token=<jwt>`, y-websocket's
 * WebsocketProvider) on the same Hocuspocus documents. y-websocket frames are Hocuspocus frames
 * without the leading document name, so the bridge only re-addresses them:
 * - incoming: the socket's document name is prefixed; an Auth frame with the query's token is
 *   injected first, so the same onAuthenticate rules apply;
 * - outgoing: the name is stripped; Hocuspocus-only messages (auth acks, sync status, stateless)
 *   are dropped, SyncReply becomes Sync, and a refusal or a server-side close closes the socket with
 *   the registry's close code and the error code as reason; a viewer's change answered "not
 *   applied" closes it 4403 `read_only`.
 */
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { errors } from '../../shared/errors.ts';
import { CloseCode } from '../../shared/protocol.ts';

export const YJS_PREFIX = '/yjs/';

const Sync = 0;
const Awareness = 1;
const Auth = 2;
const QueryAwareness = 3;
const SyncReply = 4;
const Close = 7;
const SyncStatus = 8;
const PermissionDenied = 1;

/** The session id of a `/yjs/<id>` path, or null. */
export function yjsDocumentName(pathname: string): string | null {
  if (!pathname.startsWith(YJS_PREFIX)) return null;
  try {
    const name = decodeURIComponent(pathname.slice(YJS_PREFIX.length));
    return name.length > 0 && !name.includes('/') ? name : null;
  } catch {
    return null;
  }
}

/** A y-websocket frame addressed to `documentName`, as Hocuspocus expects it. */
export function toHocuspocus(documentName: string, frame: Uint8Array): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarString(e, documentName);
  encoding.writeUint8Array(e, frame);
  return encoding.toUint8Array(e);
}

export function authFrame(documentName: string, token: string): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarString(e, documentName);
  encoding.writeVarUint(e, Auth);
  encoding.writeVarUint(e, 0); // AuthMessageType.Token
  encoding.writeVarString(e, token);
  return encoding.toUint8Array(e);
}

function closeCodeFor(reason: string): number {
  const entry = (errors as Record<string, { closeCode?: number }>)[reason];
  return entry?.closeCode ?? CloseCode.Forbidden;
}

export type Outgoing = { send: Uint8Array } | { close: { code: number; reason: string } } | null;

/** Translates one outgoing Hocuspocus frame for a y-websocket client. */
export function fromHocuspocus(frame: Uint8Array): Outgoing {
  const d = decoding.createDecoder(frame);
  decoding.readVarString(d);
  const type = decoding.readVarUint(d);
  const rest = frame.subarray(d.pos);
  const withType = (t: number) => {
    const e = encoding.createEncoder();
    encoding.writeVarUint(e, t);
    encoding.writeUint8Array(e, rest);
    return { send: encoding.toUint8Array(e) };
  };
  switch (type) {
    case Sync:
    case SyncReply:
      return withType(Sync);
    case Awareness:
      return withType(Awareness);
    case QueryAwareness:
      return withType(QueryAwareness);
    case Auth: {
      if (decoding.readVarUint(d) !== PermissionDenied) return null;
      const reason = decoding.readVarString(d);
      return { close: { code: closeCodeFor(reason), reason } };
    }
    case Close: {
      const reason = decoding.readVarString(d);
      return { close: { code: closeCodeFor(reason), reason } };
    }
    case SyncStatus:
      // "Not applied" only ever answers a read-only connection's change. y-websocket has no
      // channel for that, so a viewer that edits is closed with 4403 `read_only`: y-websocket 3
      // treats 4400–4499 as final (its `closed` event, no reconnect), so it is told once, not
      // looped. Its handshake (nothing to send) is answered "applied" and passes.
      if (decoding.readVarUint(d) !== 0) return null;
      return { close: { code: closeCodeFor('read_only'), reason: 'read_only' } };
    default:
      return null; // Stateless: Hocuspocus-only
  }
}
