/** Close codes the server uses on WebSockets, named once (Hocuspocus's own plus ours). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  MessageTooBig: 1009,
  InternalError: 1011,
  ResetConnection: 4205,
  Unauthorized: 4401,
  Forbidden: 4403,
  SessionNotFound: 4404,
  SessionGone: 4410,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** The WebSocket path of the Hocuspocus protocol. */
export const COLLAB_PATH = '/collab';
