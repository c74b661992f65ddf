/**
 * The WebSocket side shared by both transports: crossws hooks that hand each socket to the
 * transport-free Hocuspocus core, through a `WebSocketLike` built on crossws's `peer.send` /
 * `peer.close` (the uws adapter's `peer.websocket` has neither — docs/STACK-NOTES.md).
 */
import type { Hooks, Peer } from 'crossws';
import type { Connection, Hocuspocus, WebSocketLike } from '@hocuspocus/server';
import * as decoding from 'lib0/decoding';
import type { Logger } from 'pino';
import * as Y from 'yjs';
import { isId } from '../../shared/ids.ts';
import { AppError, type ErrorCode } from '../../shared/errors.ts';
import { statelessError } from '../../shared/protocol.ts';
import { isSyncStatusFrame, type AckGate } from '../extensions/updates.ts';
import type { Subscriber, Subscription } from './publish.ts';
import { authFrame, fromHocuspocus, toHocuspocus, YJS_PREFIX, yjsDocumentName } from './y-websocket.ts';

const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/**
 * A socket as Hocuspocus sees it. Sends and closes after the socket closed are ignored (uWS throws
 * on a closed socket); `readyState` follows our own view of the socket.
 */
export class PeerSocket implements WebSocketLike, Subscriber {
  readyState = OPEN;
  readonly #peer: Peer;
  /** For a `/yjs/<id>` socket: its document, whose frames are re-addressed both ways. */
  readonly yjsDocument: string | null;
  /**
   * Document addresses refused on this socket (see `refuseDocument`): their frames are dropped
   * until the client authenticates the address again. Made at the first refusal: most sockets
   * never have one, and an idle connection's memory is a target.
   */
  #refused: Set<string> | null = null;

  refuse(address: string): void {
    (this.#refused ??= new Set()).add(address);
  }

  isRefused(address: string): boolean {
    return this.#refused?.has(address) ?? false;
  }

  /** The client authenticates a refused address again: its frames go through from now on. */
  unrefuse(address: string): void {
    this.#refused?.delete(address);
  }

  readonly #limits: SocketLimits;
  #terminateTimer: NodeJS.Timeout | null = null;
  /** `reportTooSlow` has logged this socket already. */
  #reported = false;

  constructor(peer: Peer, yjsDocument: string | null = null, limits: SocketLimits = { maxBufferedBytes: Infinity }) {
    this.#peer = peer;
    this.yjsDocument = yjsDocument;
    this.#limits = limits;
  }

  /**
   * Per document address: acknowledgements held back until the client's handshake SyncStep2 on
   * that address has been applied (`holdAcks`, extensions/updates.ts: an update set aside). Made
   * when first needed, like `#refused`.
   */
  #heldAcks: Map<string, { frames: Uint8Array[]; releaseAfterNext: boolean }> | null = null;

  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    if (this.readyState !== OPEN) return;
    if (!(data instanceof Uint8Array) || !isSyncStatusFrame(data)) {
      this.#write(data);
      return;
    }
    if (this.#heldAcks !== null && this.#heldAcks.size > 0) {
      const address = decoding.readVarString(decoding.createDecoder(data));
      const held = this.#heldAcks.get(address);
      if (held) {
        held.frames.push(data);
        if (!held.releaseAfterNext) return;
        this.#heldAcks.delete(address);
        for (const frame of held.frames) this.#acknowledge(frame);
        return;
      }
    }
    this.#acknowledge(data);
  }

  /** Acknowledgements wait for their commit (extensions/updates.ts, step 4); all else goes at once. */
  #acknowledge(frame: Uint8Array): void {
    const acks = this.#limits.acks;
    if (acks) acks.hold(() => this.#write(frame));
    else this.#write(frame);
  }

  /**
   * From now on, this address's acknowledgements wait here, in order, until `releaseAcksAfterNext`:
   * the update they acknowledge was set aside, and is durable only once the handshake SyncStep2
   * that carries it again has been applied.
   */
  holdAcks(address: string): void {
    this.#heldAcks ??= new Map();
    if (!this.#heldAcks.has(address)) this.#heldAcks.set(address, { frames: [], releaseAfterNext: false });
  }

  /**
   * The next acknowledgement of `address` (the handshake SyncStep2's, which Hocuspocus sends right
   * after applying it) releases it and every one held before it, through the commit gate.
   */
  releaseAcksAfterNext(address: string): void {
    const held = this.#heldAcks?.get(address);
    if (held) held.releaseAfterNext = true;
  }


  #write(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    if (this.readyState !== OPEN) return;
    this.#corkTurn();
    if (this.yjsDocument === null) this.#peer.send(data);
    else {
      const out = fromHocuspocus(data as Uint8Array);
      if (!out) return;
      if ('close' in out) {
        this.close(out.close.code, out.close.reason);
        return;
      }
      this.#peer.send(out.send);
    }
    // Corked, the turn's bytes all count as owed until the tick sends them: checked then.
    if (!this.#corked) this.#checkBackpressure();
  }

  /**
   * On the node transport, what this socket is sent in one turn of the event loop (a reply and
   * the messages the same hooks send after it: the authentication answer, the sync steps, the
   * awareness states of a new connection) leaves in one `writev` instead of one system call
   * each: the TCP socket under `ws` is corked at the turn's first send and uncorked once the
   * turn's ticks and promise continuations have run (`process.nextTick`, which Node runs after
   * the microtasks queued before it). `ws` corks around each frame itself, which nests. Nothing
   * waits for an I/O event: the bytes leave before the event loop polls again. On uWS there is
   * no such socket (`null`), and nothing changes.
   *
   * Only in the first `CORKED_TURNS` turns a socket is sent anything, its handshake: after it a socket is sent
   * about one broadcast per turn, and a cork with its tick per delivery cost more than it saved
   * (the fan-out's CPU per delivery rose in an A/B).
   */
  #corkTurn(): void {
    if (this.#corked || this.#corkedTurns >= CORKED_TURNS) return;
    this.#corkedTurns += 1;
    const socket = (this.#tcp ??= tcpSocketOf(this.#peer) ?? false);
    if (socket === false || socket.destroyed) return;
    socket.cork();
    this.#corked = true;
    process.nextTick(PeerSocket.uncork, this, socket);
  }

  /** `#corkTurn`'s socket, found at the first send: false where there is none (uWS). */
  #tcp: CorkableSocket | false | undefined;
  #corked = false;
  /** Turns `#corkTurn` has corked so far (it stops at CORKED_TURNS). */
  #corkedTurns = 0;

  /** @internal `#corkTurn`'s tick. */
  static uncork(socket: PeerSocket, tcp: CorkableSocket): void {
    socket.#corked = false;
    tcp.uncork();
    if (socket.readyState === OPEN) socket.#checkBackpressure();
  }

  /**
   * Bounds what this socket may owe its client. A client that does not read (a paused or stalled
   * socket; pings alone keep it alive) would otherwise make the server buffer every broadcast
   * and sync reply for it without end — on the node transport `ws` queues without limit. Past
   * `maxBufferedBytes` the socket is closed `client_too_slow` (the client resyncs when it
   * reconnects, losing nothing acknowledged), and terminated after a short grace if it does not
   * read the close either, which frees what it was owed. uWS enforces the same bound natively
   * (`maxBackpressure` + `closeOnBackpressureLimit`); this check backs it up.
   */
  #checkBackpressure(): void {
    const buffered = this.#peer.bufferedAmount ?? 0;
    if (buffered <= this.#limits.maxBufferedBytes) return;
    this.#tooSlow(buffered);
  }

  #tooSlow(buffered: number): void {
    this.#limits.onTooSlow?.(buffered);
    this.#cut();
  }

  /** Closes `client_too_slow`, and terminates after a grace if the client does not read the close. */
  #cut(): void {
    this.close(new AppError('client_too_slow').closeCode, 'client_too_slow');
    this.#terminateTimer = setTimeout(() => {
      this.#terminateTimer = null;
      if (this.readyState === CLOSED) return;
      try {
        this.#peer.terminate();
      } catch {
        // already gone
      }
    }, TERMINATE_GRACE_MS);
    this.#terminateTimer.unref();
  }

  /**
   * On a transport with native pub/sub (`limits.publish`): subscribes this socket to the topic of a
   * document address, for `publishBroadcasts` (transport/publish.ts). Null otherwise.
   */
  subscribe(address: string): Subscription | null {
    const publish = this.#limits.publish;
    if (!publish || this.readyState !== OPEN) return null;
    const yjs = this.yjsDocument !== null;
    const topic = `${yjs ? 'y' : 'h'}\u0000${address}`;
    this.#peer.subscribe(topic);
    return { topic, yjs, publish };
  }

  /**
   * Publishes `frame` to `topic`'s subscribers other than this socket (uWS `WebSocket.publish`
   * leaves the publishing socket out): the broadcast of an update this socket's client sent
   * (transport/publish.ts). False when this socket cannot (no native pub/sub, or closed): the
   * caller then publishes to all.
   */
  publishToOthers(topic: string, frame: Uint8Array): boolean {
    if (!this.#limits.publish || this.readyState !== OPEN) return false;
    try {
      this.#peer.publish(topic, frame);
      return true;
    } catch {
      return false; // closed under us: uWS refuses a closed socket's publish
    }
  }

  unsubscribe(topic: string): void {
    if (this.readyState === CLOSED) return; // uWS dropped a closed socket's subscriptions itself
    try {
      this.#peer.unsubscribe(topic);
    } catch {
      // closed meanwhile: nothing left to unsubscribe
    }
  }

  /**
   * uWS dropped a published frame for this socket (over `maxBackpressure`): as `#checkBackpressure`,
   * in two steps (transport/uws.ts says why): the report at once (once: uWS calls back for every
   * frame it drops), the close later.
   */
  reportTooSlow(): void {
    if (this.readyState !== OPEN || this.#reported) return;
    this.#reported = true;
    this.#limits.onTooSlow?.(this.#peer.bufferedAmount ?? 0);
  }

  closeTooSlow(): void {
    if (this.readyState === OPEN) this.#cut();
  }

  close(code?: number, reason?: string): void {
    if (this.readyState !== OPEN) return;
    this.readyState = CLOSING;
    try {
      this.#peer.close(code, reason);
    } catch {
      // The socket died between our check and the call: it is closed either way.
      this.readyState = CLOSED;
    }
  }

  markClosed(): void {
    this.readyState = CLOSED;
    if (this.#terminateTimer) clearTimeout(this.#terminateTimer);
    this.#terminateTimer = null;
  }
}

interface CorkableSocket {
  readonly destroyed: boolean;
  cork(): void;
  uncork(): void;
}

/**
 * The TCP socket under a crossws node peer (`peer._internal.ws._socket`, the bundled `ws`
 * WebSocket's; crossws 0.4, ws 8), or null (uWS, or another crossws inside).
 */
function tcpSocketOf(peer: Peer): CorkableSocket | null {
  const ws = (peer as unknown as { _internal?: { ws?: { _socket?: Partial<CorkableSocket> } } })._internal?.ws;
  const socket = ws?._socket;
  return socket && typeof socket.cork === 'function' && typeof socket.uncork === 'function' ? (socket as CorkableSocket) : null;
}

/**
 * In how many of a socket's first turns with sends `#corkTurn` corks: a provider's handshake
 * (authenticated, the two sync steps, awareness, the acknowledgement of its SyncStep2) takes two
 * to four.
 */
const CORKED_TURNS = 8;

export interface SocketLimits {
  /** Bytes the server may have queued for one socket before it closes it `client_too_slow`. */
  maxBufferedBytes: number;
  onTooSlow?: (buffered: number) => void;
  /** Holds acknowledgements until their commit; absent: they go out as Hocuspocus sends them. */
  acks?: AckGate;
  /** The transport's app-level publish, where it has native pub/sub (transport/publish.ts). */
  publish?: (topic: string, frame: Uint8Array) => void;
}

/** How long a socket closed for not reading gets to read the close before it is cut. */
const TERMINATE_GRACE_MS = 2_000;

type ClientConnection = ReturnType<Hocuspocus['handleConnection']>;

/**
 * Refuses one document of a socket, telling the client why in a way that ends its resend loop:
 * a stateless message `{"type":"error","code","message"}` to that document, then (by the caller
 * throwing from a Hocuspocus hook) Hocuspocus's Close message for that document only. The socket
 * stays open, because @hocuspocus/provider reconnects after every socket close whatever its code
 * (HocuspocusProviderWebsocket.onClose) and would resend the refused edit each time; a closed
 * document it does not reopen until the socket itself reconnects. Further frames the client sends
 * to that document are dropped here (not queued by Hocuspocus as a new, unauthenticated document,
 * which would end in 4205) until it authenticates it again. y-websocket clients get the registry
 * close code on their socket instead (the bridge turns the Close message into a socket close).
 */
export function refuseDocument(connection: Connection, code: ErrorCode, detail?: string): void {
  connection.sendStateless(statelessError(code, new AppError(code).message, detail));
  const socket = connection.webSocket;
  if (socket instanceof PeerSocket) socket.refuse(connection.messageAddress);
}

interface Attached {
  socket: PeerSocket;
  connection: ClientConnection;
  bucket: TokenBucket;
  authTimer: NodeJS.Timeout;
}

/**
 * A per-socket rate limit on messages and bytes: refills continuously at the configured rate and
 * holds up to two seconds' worth, so typing bursts pass and floods do not.
 */
export class TokenBucket {
  #messages: number;
  #bytes: number;
  #at: number;
  readonly #rate: { messages: number; bytes: number };

  constructor(rate: { messages: number; bytes: number }, now = performance.now()) {
    this.#rate = rate;
    this.#messages = rate.messages * 2;
    this.#bytes = rate.bytes * 2;
    this.#at = now;
  }

  /** Takes one message of `size` bytes; false when either budget is exhausted. */
  take(size: number, now = performance.now()): boolean {
    const elapsed = (now - this.#at) / 1000;
    this.#at = now;
    this.#messages = Math.min(this.#rate.messages * 2, this.#messages + elapsed * this.#rate.messages) - 1;
    this.#bytes = Math.min(this.#rate.bytes * 2, this.#bytes + elapsed * this.#rate.bytes) - size;
    return this.#messages >= 0 && this.#bytes >= 0;
  }
}

/** Message types a client may send: Sync, Awareness, Auth, QueryAwareness, SyncReply, Stateless, Close. */
const CLIENT_MESSAGE_TYPES = new Set([0, 1, 2, 3, 4, 5, 7]);

/**
 * Checks a frame's envelope (document name, message type) before Hocuspocus sees it, so a
 * truncated or foreign frame gets a precise close code instead of Hocuspocus's generic 4401, and
 * the server-internal BroadcastStateless opcode (6) never comes from a client.
 */
export function frameProblem(frame: Uint8Array): 'malformed_message' | 'unknown_message_type' | null {
  const envelope = readEnvelope(frame);
  return 'problem' in envelope ? envelope.problem : null;
}

const SYNC = 0;
const AWARENESS = 1;
const AUTH = 2;
const SYNC_REPLY = 4;
const STATELESS = 5;

/**
 * Checks the content of a frame whose envelope is valid, as far as Hocuspocus would read it
 * before any hook runs: the sync subtype (0–2) and a complete payload (a SyncStep1's state
 * vector decodes), an awareness update's entries and JSON states, a stateless or auth message's
 * strings (valid UTF-8). Otherwise Hocuspocus throws inside its message handling, prints the stack
 * to stderr and closes the document with "Reset Connection". The Yjs content of an update or
 * SyncStep2 is the update guard's to check (in its worker), not this one's.
 * Returns a description of the problem, or null.
 */
export function contentProblem(frame: Uint8Array): string | null {
  const d = decoding.createDecoder(frame);
  try {
    decoding.readVarString(d);
    const type = decoding.readVarUint(d);
    switch (type) {
      case SYNC:
      case SYNC_REPLY: {
        const subtype = decoding.readVarUint(d);
        if (subtype > 2) return `unknown sync message type ${subtype}`;
        const payload = decoding.readVarUint8Array(d);
        if (subtype === 0) Y.decodeStateVector(payload);
        return null;
      }
      case AWARENESS: {
        const update = decoding.createDecoder(decoding.readVarUint8Array(d));
        const entries = decoding.readVarUint(update);
        for (let i = 0; i < entries; i++) {
          decoding.readVarUint(update); // clientID
          decoding.readVarUint(update); // clock
          JSON.parse(decoding.readVarString(update)) as unknown;
        }
        return null;
      }
      case AUTH: {
        decoding.readVarUint(d);
        decoding.readVarString(d);
        if (decoding.hasContent(d)) decoding.readVarString(d); // provider version
        return null;
      }
      case STATELESS:
        decoding.readVarString(d);
        return null;
      default:
        return null; // QueryAwareness, Close: nothing more is read
    }
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/**
 * At most `perSecond` log lines per second from one source; the lines dropped meanwhile are
 * counted in the next one (`suppressed`), so a flood of bad frames cannot flood the log.
 */
export class LogLimiter {
  #windowStart = 0;
  #inWindow = 0;
  #suppressed = 0;
  readonly perSecond: number;
  constructor(perSecond = 10) {
    this.perSecond = perSecond;
  }

  /** Calls `write` with the number of lines suppressed before it, or counts the line as suppressed. */
  take(write: (suppressed: number) => void, now = Date.now()): void {
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#inWindow = 0;
    }
    if (this.#inWindow >= this.perSecond) {
      this.#suppressed += 1;
      return;
    }
    this.#inWindow += 1;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    write(suppressed);
  }
}

/** A frame's document address and message type, or what is wrong with them. */
export function readEnvelope(frame: Uint8Array): { address: string; type: number } | { problem: 'malformed_message' | 'unknown_message_type' } {
  let address: string;
  let type: number;
  try {
    const decoder = decoding.createDecoder(frame);
    address = decoding.readVarString(decoder);
    type = decoding.readVarUint(decoder);
  } catch {
    return { problem: 'malformed_message' };
  }
  return CLIENT_MESSAGE_TYPES.has(type) ? { address, type } : { problem: 'unknown_message_type' };
}

export interface SocketHooksOptions {
  hocuspocus: Hocuspocus;
  logger: Logger;
  /**
   * True when the transport reuses the message buffer after the callback returns (uWS neuters
   * it): the bytes are copied before Hocuspocus queues them.
   */
  copyMessages: boolean;
  rateLimit: { messages: number; bytes: number };
  /** A socket that has authenticated no document after this long is closed (4408). */
  authTimeoutMs: number;
  /** Bytes one socket may be owed (queued, not yet taken by its client) before it is closed. */
  maxBufferedBytes: number;
  isAuthenticated: (request: Request) => boolean;
  /** The node's acknowledgement gate (extensions/updates.ts). */
  acks?: AckGate;
  /** The transport's app-level publish, where it has native pub/sub (transport/publish.ts). */
  publish?: (topic: string, frame: Uint8Array) => void;
}

/** Each open socket's `PeerSocket`, for transport callbacks crossws does not pass on (uWS `dropped`). */
const sockets = new WeakMap<Peer, PeerSocket>();

/** The `PeerSocket` of an open crossws peer. */
export function socketOf(peer: Peer): PeerSocket | undefined {
  return sockets.get(peer);
}

export function createSocketHooks(options: SocketHooksOptions): Partial<Hooks> {
  const { hocuspocus, logger, copyMessages } = options;
  const attached = new WeakMap<Peer, Attached>();
  const badFrames = new LogLimiter();
  return {
    /** A `/yjs/<id>` path must name a valid session id: anything else is refused before the upgrade. */
    upgrade(request) {
      const { pathname } = new URL(request.url);
      if (!pathname.startsWith(YJS_PREFIX)) return;
      const name = yjsDocumentName(pathname);
      if (name === null || !isId(name)) {
        const error = new AppError('session_not_found');
        throw new Response(JSON.stringify(error.toJSON()), { status: error.status, headers: { 'content-type': 'application/json' } });
      }
    },
    open(peer) {
      const request = peer.request as Request;
      const url = new URL(request.url);
      const yjsDocument = yjsDocumentName(url.pathname);
      const socket = new PeerSocket(peer, yjsDocument, {
        ...(options.acks ? { acks: options.acks } : {}),
        ...(options.publish ? { publish: options.publish } : {}),
        maxBufferedBytes: options.maxBufferedBytes,
        onTooSlow: (buffered) => logger.warn({ peer: peer.id, buffered, code: 'client_too_slow' }, 'socket does not read what it is sent: closing it'),
      });
      const connection = hocuspocus.handleConnection(socket, request);
      if (yjsDocument !== null) connection.handleMessage(authFrame(yjsDocument, url.searchParams.get('token') ?? ''));
      const authTimer = setTimeout(() => {
        if (!options.isAuthenticated(request)) socket.close(4408, 'authentication_timeout');
      }, options.authTimeoutMs);
      attached.set(peer, { socket, connection, bucket: new TokenBucket(options.rateLimit), authTimer });
      sockets.set(peer, socket);
    },
    message(peer, message) {
      const entry = attached.get(peer);
      if (!entry || entry.socket.readyState !== 1) return;
      const raw = message.uint8Array();
      // y-websocket frames get their document name; that copies, so uWS's buffer reuse is moot.
      const view = entry.socket.yjsDocument === null ? raw : toHocuspocus(entry.socket.yjsDocument, raw);
      if (!entry.bucket.take(view.byteLength)) {
        logger.warn({ peer: peer.id }, 'rate limit exceeded: closing socket');
        entry.socket.close(1008, 'rate_limited');
        return;
      }
      const envelope = readEnvelope(view);
      const detail = 'problem' in envelope ? undefined : contentProblem(view);
      if ('problem' in envelope || detail !== null) {
        const code = 'problem' in envelope ? envelope.problem : 'malformed_message';
        badFrames.take((suppressed) =>
          logger.warn({ peer: peer.id, code, detail, bytes: view.byteLength, suppressed }, 'refused a frame: closing socket'),
        );
        entry.socket.close(new AppError(code).closeCode, code);
        return;
      }
      if (entry.socket.isRefused(envelope.address)) {
        if (envelope.type !== AUTH) {
          // Still traffic from a live client: keep Hocuspocus's idle timeout from firing.
          entry.connection.lastMessageReceivedAt = Date.now();
          return;
        }
        entry.socket.unrefuse(envelope.address);
      }
      entry.connection.handleMessage(copyMessages && view === raw ? view.slice() : view);
    },
    close(peer, event) {
      const entry = attached.get(peer);
      if (!entry) return;
      clearTimeout(entry.authTimer);
      entry.socket.markClosed();
      attached.delete(peer);
      sockets.delete(peer);
      entry.connection.handleClose({ code: event.code ?? 1005, reason: event.reason ?? '' });
    },
    error(peer, error) {
      logger.warn({ err: error, peer: peer.id }, 'websocket error');
    },
  };
}
