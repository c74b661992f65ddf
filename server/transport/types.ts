import type { Hooks } from 'crossws';

export type TransportName = 'node' | 'uws';

/** What a transport serves: web-standard HTTP handlers and the WebSocket hooks, on one port. */
export interface TransportHandlers {
  fetch: (request: Request) => Response | Promise<Response>;
  /**
   * Built per transport: uWS needs message bytes copied, node does not; uWS offers its app-level
   * `publish` (native pub/sub, transport/publish.ts).
   */
  socketHooks: (options: { copyMessages: boolean; publish?: (topic: string, frame: Uint8Array) => void }) => Partial<Hooks>;
  /** WebSocket paths served: exact paths, or prefixes ending in `/` (uWS: `prefix*`). Others get 404. */
  wsPaths: readonly string[];
  maxMessageBytes: number;
  /** Bytes one socket may be owed before it is closed (uWS: its native `maxBackpressure`). */
  maxBufferedBytes: number;
  maxBodyBytes: number;
}

/** How the server closes the WebSockets still open when it stops. */
export interface SocketClose {
  code: number;
  reason: string;
}

export interface Listening {
  readonly transport: TransportName;
  readonly port: number;
  /**
   * Closes the listening socket: new connections are refused by the kernel, open ones (WebSockets,
   * HTTP requests in flight) carry on; idle keep-alive HTTP connections are closed. Resolves once
   * the port is released. Safe to call twice.
   */
  stopAccepting(): Promise<void>;
  /** Stops accepting, closes the open sockets with `close`, resolves when every connection is gone. */
  close(close: SocketClose): Promise<void>;
}

/** True when `path` is one of `wsPaths` (exact) or under one ending in `/`. */
export function isWsPath(wsPaths: readonly string[], path: string): boolean {
  return wsPaths.some((p) => (p.endsWith('/') ? path.startsWith(p) && path.length > p.length : path === p));
}
