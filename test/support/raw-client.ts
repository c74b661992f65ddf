/**
 * A raw WebSocket speaking the Hocuspocus protocol byte by byte (the `ws` library), for sending
 * what a well-behaved provider never would.
 */
import * as encoding from 'lib0/encoding';
import * as decoding from 'lib0/decoding';
import WebSocket from 'ws';

export const MessageType = { Sync: 0, Awareness: 1, Auth: 2, QueryAwareness: 3, SyncReply: 4, Stateless: 5, BroadcastStateless: 6, Close: 7, SyncStatus: 8 } as const;

export function frame(documentName: string, type: number, write: (e: encoding.Encoder) => void = () => {}): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarString(e, documentName);
  encoding.writeVarUint(e, type);
  write(e);
  return encoding.toUint8Array(e);
}

export const authFrame = (doc: string, token: string) =>
  frame(doc, MessageType.Auth, (e) => {
    encoding.writeVarUint(e, 0);
    encoding.writeVarString(e, token);
  });

/** A y-protocols sync message: 0 = step 1 (state vector), 1 = step 2, 2 = update. */
export const syncFrame = (doc: string, syncType: number, payload: Uint8Array) =>
  frame(doc, MessageType.Sync, (e) => {
    encoding.writeVarUint(e, syncType);
    encoding.writeVarUint8Array(e, payload);
  });

export const awarenessFrame = (doc: string, update: Uint8Array) =>
  frame(doc, MessageType.Awareness, (e) => encoding.writeVarUint8Array(e, update));

export interface RawClient {
  ws: WebSocket;
  opened: Promise<void>;
  closed: Promise<{ code: number; reason: string }>;
  /** Resolves with the next reply to an Auth frame for address `doc`: 'authenticated' or the denial reason. */
  authReply(doc: string): Promise<string>;
  send(bytes: Uint8Array): void;
  /** Resolves when a message of that type (e.g. Sync) has arrived for `doc`. */
  received(doc: string, type: number): Promise<void>;
  /** Every message received, decoded as far as its type (`body`: the bytes after the type). */
  readonly log: ReadonlyArray<{ doc: string; type: number; body: Uint8Array }>;
  /**
   * Resolves with the document's refusal: the stateless error the server sent (parsed JSON) and
   * the reason of its Close message for that document.
   */
  refusal(doc: string): Promise<{ error: { type: string; code: string; message: string }; closeReason: string }>;
}

export function rawClient(url: string, register: (fn: () => Promise<void>) => void): RawClient {
  const ws = new WebSocket(url);
  const replies = new Map<string, (reason: string) => void>();
  const early = new Map<string, string>();
  const seen = new Set<string>();
  const seenWaiters = new Map<string, () => void>();
  const log: Array<{ doc: string; type: number; body: Uint8Array }> = [];
  const logWaiters = new Set<() => void>();
  ws.on('message', (data: Buffer) => {
    try {
      const d = decoding.createDecoder(new Uint8Array(data));
      const address = decoding.readVarString(d);
      const doc = address.split('\0')[0]!;
      const type = decoding.readVarUint(d);
      log.push({ doc, type, body: new Uint8Array(data).subarray(d.pos) });
      for (const waiter of logWaiters) waiter();
      seen.add(`${doc}:${type}`);
      seenWaiters.get(`${doc}:${type}`)?.();
      if (type !== MessageType.Auth) return;
      const sub = decoding.readVarUint(d);
      if (sub !== 1 && sub !== 2) return; // 1 = permission denied + reason, 2 = authenticated
      const answer = sub === 2 ? 'authenticated' : decoding.readVarString(d);
      // Keyed by the full address (`name` or `name\0suffix`): the server answers on the one used.
      const waiter = replies.get(address);
      replies.delete(address);
      if (waiter) waiter(answer);
      else early.set(address, answer);
    } catch {
      // not an auth reply we can read: ignore
    }
  });
  ws.on('error', () => {});
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('close', () => reject(new Error('closed before open')));
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })),
  );
  register(async () => {
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.terminate();
  });
  return {
    ws,
    opened,
    closed,
    authReply: (doc) => {
      const known = early.get(doc);
      early.delete(doc);
      if (known) return Promise.resolve(known);
      return new Promise((resolve) => replies.set(doc, resolve));
    },
    send: (bytes) => ws.send(bytes),
    log,
    refusal: (doc) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const stateless = log.find((m) => m.doc === doc && m.type === MessageType.Stateless);
          const close = log.find((m) => m.doc === doc && m.type === MessageType.Close);
          if (!stateless || !close) return;
          logWaiters.delete(check);
          try {
            const error = JSON.parse(decoding.readVarString(decoding.createDecoder(stateless.body))) as { type: string; code: string; message: string };
            resolve({ error, closeReason: decoding.readVarString(decoding.createDecoder(close.body)) });
          } catch (cause) {
            reject(cause instanceof Error ? cause : new Error(String(cause)));
          }
        };
        logWaiters.add(check);
        check();
      }),
    received: (doc, type) =>
      seen.has(`${doc}:${type}`) ? Promise.resolve() : new Promise((resolve) => seenWaiters.set(`${doc}:${type}`, resolve)),
  };
}
