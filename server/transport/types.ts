import type { Hooks } from 'crossws';

export type TransportName = 'node' | 'uws';

/** What a transport serves: web-standard HTTP handlers and the WebSocket hooks, on one port. */
export interface TransportHandlers {
  fetch: (request: Request) => Response | Promise<Response>;
  /** Built per transport: uWS needs message bytes copied, node does not. */
  socketHooks: (options: { copyMessages: boolean }) => Partial<Hooks>;
  /** WebSocket paths served: exact paths, or prefixes ending in `/` (uWS: `prefix*`). Others get 404. */
  wsPaths: readonly string[];
  maxMessageBytes: number;
  /** Bytes one socket may be owed before it is closed (uWS: its native `maxBackpressure`). */
  maxBufferedBytes: number;
  maxBodyBytes: number;
}

export interface Listening {
  readonly transport: TransportName;
  readonly port: number;
  /** Stops accepting, closes open sockets, resolves when the listener is gone. */
  close(): Promise<void>;
}

/** True when `path` is one of `wsPaths` (exact) or under one ending in `/`. */
export function isWsPath(wsPaths: readonly string[], path: string): boolean {
  return wsPaths.some((p) => (p.endsWith('/') ? path.startsWith(p) && path.length > p.length : path === p));
}
