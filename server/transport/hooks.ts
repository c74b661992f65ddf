/**
 * The WebSocket side shared by both transports: crossws hooks that hand each socket to the
 * transport-free Hocuspocus core, through a `WebSocketLike` built on crossws's `peer.send` /
 * `peer.close` (the uws adapter's `peer.websocket` has neither — STACK-NOTES).
 */
import type { Hooks, Peer } from 'crossws';
import type { Hocuspocus, WebSocketLike } from '@hocuspocus/server';
import type { Logger } from 'pino';

const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/**
 * A socket as Hocuspocus sees it. Sends and closes after the socket closed are ignored (uWS throws
 * on a closed socket); `readyState` follows our own view of the socket.
 */
export class PeerSocket implements WebSocketLike {
  readyState = OPEN;
  readonly #peer: Peer;

  constructor(peer: Peer) {
    this.#peer = peer;
  }

  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    if (this.readyState !== OPEN) return;
    this.#peer.send(data);
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
  }
}

type ClientConnection = ReturnType<Hocuspocus['handleConnection']>;

interface Attached {
  socket: PeerSocket;
  connection: ClientConnection;
}

export interface SocketHooksOptions {
  hocuspocus: Hocuspocus;
  logger: Logger;
  /**
   * True when the transport reuses the message buffer after the callback returns (uWS neuters
   * it): the bytes are copied before Hocuspocus queues them.
   */
  copyMessages: boolean;
}

export function createSocketHooks({ hocuspocus, logger, copyMessages }: SocketHooksOptions): Partial<Hooks> {
  const attached = new WeakMap<Peer, Attached>();
  return {
    open(peer) {
      const socket = new PeerSocket(peer);
      const connection = hocuspocus.handleConnection(socket, peer.request as Request);
      attached.set(peer, { socket, connection });
    },
    message(peer, message) {
      const entry = attached.get(peer);
      if (!entry) return;
      const view = message.uint8Array();
      entry.connection.handleMessage(copyMessages ? view.slice() : view);
    },
    close(peer, event) {
      const entry = attached.get(peer);
      if (!entry) return;
      entry.socket.markClosed();
      attached.delete(peer);
      entry.connection.handleClose({ code: event.code ?? 1005, reason: event.reason ?? '' });
    },
    error(peer, error) {
      logger.warn({ err: error, peer: peer.id }, 'websocket error');
    },
  };
}
