/**
 * Authentication and authorization of WebSocket documents. Runs before any document is created,
 * so a name that is not an active, unexpired session the user may join is refused without
 * loading anything. Refusals reach the provider as `onAuthenticationFailed({ reason })`, where
 * `reason` is the stable error code (`session_not_found`, `unauthorized`, …).
 *
 * Access is enforced for the life of the connection too: when the token expires the connection
 * is closed (4401 `token_expired`; the provider reconnects with a fresh token if it has one);
 * `applyAccessChange()` acts on this node's connections of a user at once when this node's HTTP API
 * removes them or changes their rights; and the AccessWatch (server/auth/access-watch.ts) applies
 * every change made anywhere (other nodes, SQL) and the session's expiry. Past the session's
 * deadline no message is handled and no `saveVersion` runs; a `saveVersion` first re-checks
 * access in the database.
 */
import type {
  beforeHandleMessagePayload,
  connectedPayload,
  Extension,
  Hocuspocus,
  onAuthenticatePayload,
  onStatelessPayload,
} from '@hocuspocus/server';
import { AppError } from '../../shared/errors.ts';
import { isId } from '../../shared/ids.ts';
import { colorFor } from '../../shared/presence.ts';
import { CloseCode } from '../../shared/protocol.ts';
import type { Logger } from 'pino';
import { deadlineFrom, type AccessSource } from '../auth/access-cache.ts';
import { resolveRole, type Role } from '../auth/access.ts';
import { setConnectionRole, type AccessContext, type AccessWatch, type CloseEvent } from '../auth/access-watch.ts';
import type { TokenService } from '../auth/tokens.ts';

export interface ConnectionContext extends AccessContext {
  userId: string;
  displayName: string;
  role: Role;
  cursorColor: string;
}

/** What Hocuspocus's `onAuthenticate` rejection needs: `reason` goes to the client. */
function refusal(error: AppError) {
  return { reason: error.code, code: error.closeCode };
}

export class AuthExtension implements Extension {
  extensionName = 'auth';
  priority = 1000;
  /** The access cache (server/auth/access-cache.ts): no database round trip for a known answer. */
  readonly #access: AccessSource;
  readonly #tokens: TokenService;
  /** Requests (one per socket) that authenticated at least one document. */
  readonly authenticated = new WeakSet<Request>();

  readonly #logger: Logger | undefined;
  /** Every deadline of a connection (session, login session, token) and every access change. */
  readonly #watch: AccessWatch;

  constructor(access: AccessSource, tokens: TokenService, watch: AccessWatch, logger?: Logger) {
    this.#access = access;
    this.#tokens = tokens;
    this.#watch = watch;
    this.#logger = logger;
  }

  async onAuthenticate({ token, documentName, connectionConfig, request }: onAuthenticatePayload): Promise<ConnectionContext> {
    try {
      const claims = await this.#tokens.verify(token);
      if (!isId(documentName)) throw new AppError('session_not_found');
      // Read before the access: a change notified while the query runs makes `connected` re-check.
      const accessEpoch = this.#watch.epoch;
      const { role, session, user, loginExpiresInMs } = await resolveRole(this.#access, claims, documentName);
      connectionConfig.readOnly = role === 'viewer';
      this.authenticated.add(request);
      return {
        userId: claims.sub,
        displayName: user.display_name,
        role,
        cursorColor: session.cursor_color ?? colorFor(claims.sub),
        claims,
        // Times left as of the answer (server/auth/access-cache.ts `deadlineFrom`).
        sessionDeadline: deadlineFrom(session.expires_in_ms),
        loginDeadline: loginExpiresInMs === null ? null : deadlineFrom(loginExpiresInMs),
        accessEpoch,
      };
    } catch (error) {
      // Thrown as a plain object on purpose: Hocuspocus logs thrown Errors' messages to the console.
      // Anything but a decision (the database unreachable, mostly) is `not_ready`: retry later,
      // never a definitive answer about the session or the user.
      if (error instanceof AppError) throw refusal(error);
      this.#logger?.error({ err: error, session: documentName }, 'authentication could not be decided');
      throw refusal(new AppError('not_ready'));
    }
  }

  /** The watch closes it at its deadlines (the token's `exp` among them: `deadlineEvent`) and on access changes. */
  connected({ connection, context, documentName }: connectedPayload<ConnectionContext>): Promise<void> {
    this.#watch.watch(connection, documentName, context);
    connection.onClose(() => this.#watch.unwatch(connection));
    return Promise.resolve();
  }

  /** Past the session's deadline nothing more is handled (the expiry timer may fire late). */
  beforeHandleMessage({ connection, context }: beforeHandleMessagePayload): Promise<void> {
    const ctx = context as ConnectionContext | undefined;
    const expired = ctx?.claims ? this.#expire(connection, ctx) : null;
    // Hocuspocus closes the connection with this code and reason and drops the message.
    return expired ? Promise.reject(expired) : Promise.resolve();
  }

  /**
   * Stateless messages: none after the session's (or login session's) deadline, and a
   * `saveVersion` re-checks access in the database first (a removal or demotion whose notification
   * is still on its way, or missed, must not record a version). Runs before the snapshot extension
   * (priority); a refusal closes the connection, or leaves it read-only, which the snapshot
   * extension answers with `forbidden`.
   */
  async onStateless({ connection, payload }: onStatelessPayload): Promise<void> {
    const ctx = connection.context as ConnectionContext | undefined;
    if (!ctx?.claims) return;
    const expired = this.#expire(connection, ctx);
    // A rejection without a message stops the later onStateless hooks silently (Hocuspocus).
    if (expired) throw { reason: expired.reason };
    if (!payload.includes('saveVersion')) return;
    let type: unknown;
    try {
      type = (JSON.parse(payload) as { type?: unknown } | null)?.type;
    } catch {
      return;
    }
    if (type !== 'saveVersion') return;
    await this.#watch.recheckConnection(connection);
    if (!connection.document.hasConnection(connection)) throw { reason: 'access withdrawn' };
  }

  /** Closes the connection if its session, login session or token has run out; returns the close event. */
  #expire(connection: beforeHandleMessagePayload['connection'], context: ConnectionContext): CloseEvent | null {
    return this.#watch.enforceDeadline(connection, context);
  }
}

/**
 * Applies a change of one user's access to their open connections to one session on this node:
 * `null` closes them (removed; 4403 with the reason), a role flips read-only in place, so an
 * editor demoted to viewer stops writing at once without reconnecting.
 */
export function applyAccessChange(
  hocuspocus: Hocuspocus,
  sessionId: string,
  userId: string,
  role: Role | null,
  reason = 'participant_removed',
): number {
  const document = hocuspocus.documents.get(sessionId);
  if (!document) return 0;
  let touched = 0;
  for (const connection of [...document.getConnections()]) {
    const context = connection.context as ConnectionContext | undefined;
    if (context?.userId !== userId) continue;
    touched += 1;
    if (role === null) {
      connection.close({ code: CloseCode.Forbidden, reason });
    } else {
      setConnectionRole(connection, context, role);
    }
  }
  return touched;
}
