/** Close codes the server uses on WebSockets, named once (Hocuspocus's own plus ours). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  MessageTooBig: 1009,
  InternalError: 1011,
  /**
   * RFC 6455's "Service Restart": the node is draining (SIGTERM). Every client we know reconnects
   * on it — HocuspocusProvider on any code, y-websocket on anything outside 4400–4499 — and the
   * typed client does not report it as an error.
   */
  ServiceRestart: 1012,
  ResetConnection: 4205,
  /** A refused document's content, for y-websocket clients (4400–4499 are final there). */
  InvalidUpdate: 4400,
  Unauthorized: 4401,
  Forbidden: 4403,
  SessionNotFound: 4404,
  SessionGone: 4410,
  DocumentTooLarge: 4413,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** The WebSocket path of the Hocuspocus protocol. */
export const COLLAB_PATH = '/collab';

/**
 * The stateless message the server sends a document before refusing it (HocuspocusProvider's
 * `onStateless({ payload })`): `{"type":"error","code":"<registry code>","message":"…"}`.
 */
export interface StatelessError {
  type: 'error';
  code: string;
  message: string;
  detail?: string;
}

export function statelessError(code: string, message: string, detail?: string): string {
  const body: StatelessError = { type: 'error', code, message, ...(detail ? { detail } : {}) };
  return JSON.stringify(body);
}

/**
 * Stateless, server → one connection: its access changed while it stayed open (the session's
 * owner promoted or demoted it, on any node). The server enforces the new role already; this tells
 * the client, whose provider learnt its scope only at authentication.
 */
export interface AccessChangedMessage {
  type: 'access';
  canEdit: boolean;
}
