/**
 * The one registry of stable error codes. HTTP errors answer
 * `{ "error": { "code", "message" } }` with `status`; WebSocket refusals carry `closeCode`
 * (Hocuspocus's 4401/4403) and the code as the reason. The README's table is generated from
 * this object and a test keeps the two in step.
 */
export const errors = {
  bad_request: { status: 400, message: 'The request is malformed.' },
  invalid_body: { status: 400, message: 'The request body does not match the expected shape.' },
  invalid_json: { status: 400, message: 'The request body is not valid JSON.' },
  unauthorized: { status: 401, closeCode: 4401, message: 'A valid, unexpired access token is required.' },
  token_expired: { status: 401, closeCode: 4401, message: 'The access token has expired.' },
  login_session_invalid: { status: 401, closeCode: 4401, message: 'The login session named by the token does not exist or has expired.' },
  unknown_user: { status: 401, closeCode: 4401, message: 'The token names a user that does not exist or is deactivated.' },
  forbidden: { status: 403, closeCode: 4403, message: 'You do not have access to this resource.' },
  read_only: { status: 403, closeCode: 4403, message: 'This connection may only read: its changes are not applied.' },
  not_session_owner: { status: 403, closeCode: 4403, message: 'Only the owner of the session may do this.' },
  invalid_signature: { status: 403, message: 'The signed URL is malformed or its signature does not match.' },
  signature_expired: { status: 403, message: 'The signed URL has expired.' },
  image_not_found: { status: 404, message: 'No image with that id is visible to you.' },
  version_not_found: { status: 404, message: 'No version with that id exists for this image.' },
  version_image_mismatch: { status: 409, message: 'That version belongs to another image than this session.' },
  branch_taken: { status: 409, message: 'That branch of the image belongs to another user; a fork works on a branch of its own.' },
  invalid_canvas: { status: 422, message: 'The canvas does not match the schema; nothing was saved.' },
  user_not_found: { status: 404, message: 'No active user with that id exists.' },
  owner_not_removable: { status: 409, message: 'The owner of a session cannot be removed from it; end the session instead.' },
  participant_not_found: { status: 404, message: 'That user is not a participant of this session.' },
  session_not_found: { status: 404, closeCode: 4404, message: 'No edit session with that id exists.' },
  session_ended: { status: 410, closeCode: 4410, message: 'The edit session has ended.' },
  session_expired: { status: 410, closeCode: 4410, message: 'The edit session has expired.' },
  not_found: { status: 404, message: 'There is nothing at this path.' },
  method_not_allowed: { status: 405, message: 'This path does not accept that method.' },
  payload_too_large: { status: 413, closeCode: 1009, message: 'The message or body is larger than the configured maximum.' },
  invalid_update: { status: 400, closeCode: 4400, message: 'Yjs refused the update, it needs state the document lacks, or decoding it took more CPU time than its size allows.' },
  malformed_message: { status: 400, closeCode: 1007, message: 'The message is truncated or not in the Hocuspocus protocol.' },
  unknown_message_type: { status: 400, closeCode: 1003, message: 'The message type is not part of the protocol.' },
  document_too_large: { status: 413, closeCode: 4413, message: 'The document would grow past the configured maximum.' },
  too_many_documents: { status: 429, closeCode: 4429, message: 'This connection has too many documents open.' },
  too_many_attachments: { status: 429, closeCode: 4429, message: 'This connection has attached this document too many times.' },
  too_many_awareness_clients: { status: 429, closeCode: 1008, message: 'This connection announced more awareness clientIDs than allowed.' },
  client_too_slow: { status: 429, closeCode: 1008, message: 'The connection did not read what it was sent fast enough; reconnect to resync.' },
  rate_limited: { status: 429, closeCode: 1008, message: 'Too many messages or bytes in too short a time.' },
  authentication_timeout: { status: 401, closeCode: 4408, message: 'The connection did not authenticate in time.' },
  not_ready: { status: 503, closeCode: 1013, message: 'The server cannot serve this right now; a dependency is unavailable.' },
  shutting_down: { status: 503, closeCode: 1012, message: 'This node is restarting: reconnect, and the load balancer sends you to another node.' },
  invalid_render_options: { status: 400, message: 'The render parameters (size, fit, format, quality, region) are not valid.' },
  render_too_large: { status: 413, message: 'The render would exceed the output pixel or canvas complexity limits.' },
  render_timeout: { status: 503, message: 'The render took longer than allowed and was stopped.' },
  render_busy: { status: 503, message: 'Too many renders are queued; try again shortly.' },
  not_an_image: { status: 415, message: 'The bytes are not an image.' },
  image_type_not_accepted: { status: 415, message: 'This image format is not accepted: JPEG, PNG, WebP, AVIF, HEIC, GIF (first frame) and TIFF are.' },
  image_too_large: { status: 413, message: 'The image is larger than the configured maximum number of bytes.' },
  image_too_many_pixels: { status: 413, message: 'The image has more pixels than the configured maximum.' },
  image_corrupt: { status: 422, message: 'The image is truncated or corrupt.' },
  image_multiframe: { status: 422, message: 'The image has more than one frame or page; one is expected.' },
  image_busy: { status: 503, message: 'Too many images are being processed; retry shortly.' },
  image_timeout: { status: 503, message: 'Processing the image took longer than allowed.' },
  invalid_image_parameters: { status: 400, message: 'The width, height, fit, format, quality or dpr parameter is invalid.' },
  image_file_missing: { status: 404, message: 'The image has no stored file to serve.' },
  upload_not_found: { status: 404, message: 'No pending upload with that id is yours.' },
  upload_expired: { status: 410, message: 'The upload has expired.' },
  upload_incomplete: { status: 409, message: 'The upload has not received its bytes yet.' },
  upload_size_mismatch: { status: 422, message: 'The uploaded bytes do not match the announced file size.' },
  internal: { status: 500, message: 'An unexpected error occurred; it has been logged.' },
} as const satisfies Record<string, { status: number; message: string; closeCode?: number }>;

export type ErrorCode = keyof typeof errors;

/** An error that knows its stable code. Throw it anywhere; the HTTP layer and auth hooks render it. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, message?: string) {
    super(message ?? errors[code].message);
    this.name = 'AppError';
    this.code = code;
    this.status = errors[code].status;
  }

  /** The WebSocket close code for this error (4401/4403/4404/4410…); 4403 where none is set. */
  get closeCode(): number {
    const entry = errors[this.code] as { closeCode?: number };
    return entry.closeCode ?? 4403;
  }

  toJSON() {
    return { error: { code: this.code, message: this.message } };
  }
}
