/**
 * Keeps every open connection's access true to the database, on every node.
 *
 * At connect, server/extensions/auth.ts decides a connection's role with `resolveRole`. After
 * that, access changes in the database (a participant removed, demoted or promoted, the session
 * ended, expired or deleted, the user deactivated, the login session revoked), made by any node or
 * by hand. This watch re-decides, with the same `resolveRole`, the access of exactly the open
 * connections a change names and applies the answer:
 *
 * - refused: the connection is made read-only and closed with the refusal's close code and code
 *   as reason (`participant_removed` 4403, `session_ended`/`session_expired` 4410,
 *   `session_not_found` 4404, `unknown_user`/`login_session_invalid` 4401);
 * - a different role: `readOnly` flips in place (demotion stops writes at once, promotion allows
 *   them, no reconnect).
 *
 * Changes arrive from the access feed (PostgreSQL LISTEN, server/auth/access-feed.ts). A feed that
 * was away re-checks every connection when it listens again (`recheckAll`); and whatever happens to
 * the feed, no connection is served longer than `recheckMs` without a fresh check: a periodic sweep
 * re-checks those checked longer than half of it ago, and a connection whose check cannot be
 * decided (database unreachable) past `recheckMs` is closed with `not_ready` (1013; it reconnects
 * and is decided afresh).
 *
 * Session expiry: each check learns how long the session (and the token's login session, `sid`)
 * has left by the database's clock, which becomes a local deadline per connection. One timer per
 * session fires at the earliest deadline of its connections and closes those whose deadline has
 * passed (`session_expired`, or `login_session_invalid` for a login session that ran out); the auth
 * extension also refuses any message or save that arrives after the deadline, so an event loop
 * late to fire the timer does not let an edit through.
 *
 * A connection that authenticated while a change was on its way (read its role before the change
 * committed, registered after the notification was handled) is re-checked when it registers: the
 * watch counts changes (`epoch`), and a connection whose epoch at authentication is not the current
 * one is checked at once.
 */
import type { Connection } from '@hocuspocus/server';
import type { Logger } from 'pino';
import { AppError } from '../../shared/errors.ts';
import { CloseCode } from '../../shared/protocol.ts';
import { deadlineFrom, type AccessSource } from './access-cache.ts';
import type { AccessChange } from '../../persistence/repositories/access-changes.ts';
import { resolveRole, type Role } from './access.ts';
import type { Claims } from './tokens.ts';
import type { AccessChangedMessage } from '../../shared/protocol.ts';

/** What the watch needs in a connection's context (the auth extension's context extends it). */
export interface AccessContext {
  userId: string;
  role: Role;
  claims: Claims;
  /** Local time (ms) at which the session expires, from the database's clock at the last check. */
  sessionDeadline: number;
  /** Local time (ms) at which the token's login session (`sid`) expires; null without one. */
  loginDeadline: number | null;
  /** The watch's `epoch` when this connection's access was read at authentication. */
  accessEpoch: number;
}

export interface CloseEvent {
  code: number;
  reason: string;
}

export const SESSION_EXPIRED: CloseEvent = { code: CloseCode.SessionGone, reason: 'session_expired' };
export const LOGIN_EXPIRED: CloseEvent = { code: CloseCode.Unauthorized, reason: 'login_session_invalid' };
export const TOKEN_EXPIRED: CloseEvent = { code: CloseCode.Unauthorized, reason: 'token_expired' };

/**
 * The close event for a connection whose session, login session or token (its `exp`, on this
 * machine's clock as when it was verified) has run out at `now`, else null.
 */
export function deadlineEvent(context: AccessContext, now = Date.now()): CloseEvent | null {
  if (context.sessionDeadline <= now) return SESSION_EXPIRED;
  if (context.loginDeadline !== null && context.loginDeadline <= now) return LOGIN_EXPIRED;
  if (context.claims.exp * 1000 <= now) return TOKEN_EXPIRED;
  return null;
}

/**
 * The earliest of a connection's deadlines. The token's is one of them, so a connection needs no
 * timer of its own for it: one timer per session serves every deadline (a per-connection timer of
 * a unique duration also made Node keep a timer list per connection).
 */
const earliestDeadline = (context: AccessContext) => Math.min(context.sessionDeadline, context.loginDeadline ?? Infinity, context.claims.exp * 1000);

interface Watched {
  connection: Connection;
  sessionId: string;
  context: AccessContext;
  /** Local time (ms) of the last decided check. */
  checkedAt: number;
  /** Stamp of the latest check started; an older check's answer is dropped. */
  seq: number;
}

type Outcome =
  | { kind: 'allowed'; role: Role; expiresInMs: number; loginExpiresInMs: number | null }
  | { kind: 'refused'; event: CloseEvent }
  | { kind: 'undecided'; error: unknown };

/** setTimeout's maximum; a later deadline is re-armed when it fires. */
const MAX_TIMER_MS = 2_147_483_647;

/** The close event for a refusal at re-check: not being a participant any more is a removal. */
export function closeEventFor(error: AppError): CloseEvent {
  if (error.code === 'forbidden') return { code: CloseCode.Forbidden, reason: 'participant_removed' };
  return { code: error.closeCode, reason: error.code };
}

export interface AccessWatchOptions {
  /** Where re-checks read: the database itself, never a cache (`AccessSources.fresh`). */
  source: AccessSource;
  logger: Logger;
  /** Longest a connection is served without a fresh check, in ms (ACCESS_RECHECK_MS). */
  recheckMs: number;
  /** Checks run at once during a sweep (each is one or two small queries). */
  concurrency?: number;
}

/**
 * Gives an open connection a new role in place: read-only or read-write at once, and the client
 * told with a stateless `{"type":"access","canEdit"}` (its provider learnt its scope only at
 * authentication, so a page can say "read-only", or let edits through again, without a
 * reconnect). The one place a role changes, whether the change came from this node's HTTP API or
 * through the feed. Returns whether anything changed.
 */
export function setConnectionRole(connection: Connection, context: { role: Role }, role: Role): boolean {
  if (context.role === role) return false;
  context.role = role;
  connection.readOnly = role === 'viewer';
  try {
    connection.sendStateless(JSON.stringify({ type: 'access', canEdit: role !== 'viewer' } satisfies AccessChangedMessage));
  } catch {
    // the socket is closing: the client learns its access when it authenticates again
  }
  return true;
}

export class AccessWatch {
  readonly #opts: AccessWatchOptions;
  readonly #watched = new Map<Connection, Watched>();
  readonly #bySession = new Map<string, Set<Watched>>();
  readonly #expiry = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  #sweepTimer: NodeJS.Timeout | undefined;
  #epoch = 0;
  #closed = false;
  #sweeping = false;
  /** Connections closed or flipped by a re-check (metrics). */
  applied = 0;
  /** Re-checks answered by the database, allowed or refused (metrics). */
  checks = 0;

  constructor(options: AccessWatchOptions) {
    this.#opts = options;
  }

  /** Counts access changes and resyncs seen; see the header. */
  get epoch(): number {
    return this.#epoch;
  }

  get size(): number {
    return this.#watched.size;
  }

  start(): void {
    const every = Math.max(250, Math.floor(this.#opts.recheckMs / 2));
    this.#sweepTimer = setInterval(() => void this.#sweep(every), every);
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#sweepTimer);
    for (const { timer } of this.#expiry.values()) clearTimeout(timer);
    this.#expiry.clear();
    this.#watched.clear();
    this.#bySession.clear();
  }

  /** Starts watching a connection that has just been authenticated. */
  watch(connection: Connection, sessionId: string, context: AccessContext): void {
    if (this.#closed) return;
    const watched: Watched = { connection, sessionId, context, checkedAt: Date.now(), seq: 0 };
    this.#watched.set(connection, watched);
    let set = this.#bySession.get(sessionId);
    if (!set) this.#bySession.set(sessionId, (set = new Set()));
    set.add(watched);
    this.#armExpiry(sessionId, { added: earliestDeadline(context) });
    // A change arrived between reading this connection's access and now: read it again.
    if (context.accessEpoch !== this.#epoch) void this.#recheck([watched], 'changed during authentication');
  }

  unwatch(connection: Connection): void {
    const watched = this.#watched.get(connection);
    if (!watched) return;
    this.#watched.delete(connection);
    const set = this.#bySession.get(watched.sessionId);
    set?.delete(watched);
    if (set?.size === 0) this.#bySession.delete(watched.sessionId);
    this.#armExpiry(watched.sessionId, { removed: true });
  }

  /** A change from the feed: re-check exactly the connections it names. */
  onChange(change: AccessChange): Promise<void> {
    // Who may see an image decides no connection's role: only the access cache holds it.
    if (change.kind === 'image' || change.kind === 'follow') return Promise.resolve();
    this.#epoch += 1;
    const affected: Watched[] = [];
    switch (change.kind) {
      case 'participant':
        for (const w of this.#bySession.get(change.sessionId) ?? []) if (w.context.userId === change.userId) affected.push(w);
        break;
      case 'session':
        affected.push(...(this.#bySession.get(change.sessionId) ?? []));
        break;
      case 'user':
        for (const w of this.#watched.values()) if (w.context.userId === change.userId) affected.push(w);
        break;
      case 'login':
        for (const w of this.#watched.values()) {
          if (w.context.userId === change.userId && w.context.claims.sid === change.loginSessionId) affected.push(w);
        }
        break;
    }
    return this.#recheck(affected, change.kind);
  }

  /** Re-checks every connection (the feed is back after a gap). */
  recheckAll(reason: string): Promise<void> {
    this.#epoch += 1;
    return this.#recheck([...this.#watched.values()], reason);
  }

  /** Re-checks one connection now (before a save); resolves once its answer is applied. */
  recheckConnection(connection: Connection): Promise<void> {
    const watched = this.#watched.get(connection);
    return watched ? this.#recheck([watched], 'save') : Promise.resolve();
  }

  /**
   * Closes the connection if its session or login session has run out (`session_expired`,
   * `login_session_invalid`); returns the close event, or null while both last.
   */
  enforceDeadline(connection: Connection, context: AccessContext): CloseEvent | null {
    const event = deadlineEvent(context);
    if (!event) return null;
    const watched = this.#watched.get(connection);
    if (watched) this.#refuse(watched, event);
    else {
      connection.readOnly = true;
      connection.close(event);
    }
    return event;
  }

  // -------------------------------------------------------------------------------------------

  async #sweep(olderThanMs: number): Promise<void> {
    // One sweep at a time: with a slow database a sweep may outlast the interval.
    if (this.#sweeping) return;
    this.#sweeping = true;
    try {
      const now = Date.now();
      const due = [...this.#watched.values()].filter((w) => now - w.checkedAt >= olderThanMs);
      if (due.length > 0) await this.#recheck(due, 'periodic');
    } catch (error) {
      this.#opts.logger.error({ err: error }, 'access sweep failed');
    } finally {
      this.#sweeping = false;
    }
  }

  /** Re-decides the given connections, one query per (session, user, login session). */
  async #recheck(list: Watched[], reason: string): Promise<void> {
    if (list.length === 0) return;
    const groups = new Map<string, Watched[]>();
    for (const w of list) {
      w.seq += 1;
      const key = `${w.sessionId}\0${w.context.userId}\0${w.context.claims.sid ?? ''}`;
      const group = groups.get(key);
      if (group) group.push(w);
      else groups.set(key, [w]);
    }
    const queue = [...groups.values()];
    const worker = async () => {
      for (let group = queue.shift(); group; group = queue.shift()) {
        const stamps = group.map((w) => w.seq);
        const startedAt = Date.now();
        const outcome = await this.#evaluate(group[0]!.context.claims, group[0]!.sessionId);
        const answeredAt = Date.now();
        if (outcome.kind !== 'undecided') this.checks += 1;
        group.forEach((w, i) => {
          // Closed meanwhile, or a newer check started (its answer is the one that counts).
          if (this.#watched.get(w.connection) !== w || w.seq !== stamps[i]) return;
          this.#apply(w, outcome, { startedAt, answeredAt }, reason);
        });
      }
    };
    const workers = Math.min(queue.length, this.#opts.concurrency ?? 4);
    await Promise.all(Array.from({ length: workers }, worker));
  }

  async #evaluate(claims: Claims, sessionId: string): Promise<Outcome> {
    if (claims.exp * 1000 <= Date.now()) return { kind: 'refused', event: TOKEN_EXPIRED };
    try {
      const { role, session, loginExpiresInMs } = await resolveRole(this.#opts.source, claims, sessionId);
      return { kind: 'allowed', role, expiresInMs: session.expires_in_ms, loginExpiresInMs };
    } catch (error) {
      if (error instanceof AppError) return { kind: 'refused', event: closeEventFor(error) };
      return { kind: 'undecided', error };
    }
  }

  /**
   * `at.startedAt`: when the check began (what it can vouch for since); `at.answeredAt`: when its
   * answer came, which the times left it carries count from (access-cache.ts `deadlineFrom`).
   */
  #apply(w: Watched, outcome: Outcome, at: { startedAt: number; answeredAt: number }, reason: string): void {
    const { logger, recheckMs } = this.#opts;
    switch (outcome.kind) {
      case 'allowed': {
        w.checkedAt = at.startedAt;
        w.context.sessionDeadline = deadlineFrom(outcome.expiresInMs, at.answeredAt);
        w.context.loginDeadline = outcome.loginExpiresInMs === null ? null : deadlineFrom(outcome.loginExpiresInMs, at.answeredAt);
        if (outcome.role !== w.context.role) {
          logger.info({ session: w.sessionId, user: w.context.userId, from: w.context.role, to: outcome.role, why: reason }, 'access changed on an open connection');
          setConnectionRole(w.connection, w.context, outcome.role);
          this.applied += 1;
        }
        const expired = deadlineEvent(w.context);
        if (expired) this.#refuse(w, expired);
        else this.#armExpiry(w.sessionId);
        return;
      }
      case 'refused':
        logger.info({ session: w.sessionId, user: w.context.userId, reason: outcome.event.reason, why: reason }, 'access withdrawn from an open connection');
        this.#refuse(w, outcome.event);
        return;
      case 'undecided':
        if (Date.now() - w.checkedAt <= recheckMs) {
          logger.warn({ err: outcome.error, session: w.sessionId, why: reason }, 'access re-check could not be decided; trying again later');
          return;
        }
        logger.warn({ err: outcome.error, session: w.sessionId }, 'access not re-checked for too long; closing the connection');
        this.#refuse(w, { code: 1013, reason: 'not_ready' });
        return;
    }
  }

  #refuse(w: Watched, event: CloseEvent): void {
    // Read-only first: a message of this connection already being handled writes nothing.
    w.connection.readOnly = true;
    this.unwatch(w.connection);
    w.connection.close(event);
    this.applied += 1;
  }

  /**
   * One timer per session, at the earliest deadline of its connections here. `change` says what
   * moved when it is one connection added or removed, so a session's connections arriving and
   * leaving one by one cost O(1) each here, not a pass over all of them: an added deadline later
   * than the timer's changes nothing, an earlier one becomes the timer's; a removal leaves the
   * timer as it is (it may then fire early: `#expire` refuses only connections past their
   * deadline and arms the next one).
   */
  #armExpiry(sessionId: string, change?: { added: number } | { removed: true }): void {
    const set = this.#bySession.get(sessionId);
    const existing = this.#expiry.get(sessionId);
    if (!set || set.size === 0 || this.#closed) {
      if (existing) clearTimeout(existing.timer);
      this.#expiry.delete(sessionId);
      return;
    }
    if (existing && change && ('removed' in change || change.added >= existing.at)) return;
    let at = Infinity;
    if (existing && change && 'added' in change) at = change.added;
    else for (const w of set) at = Math.min(at, earliestDeadline(w.context));
    if (existing?.at === at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => this.#expire(sessionId), Math.min(Math.max(0, at - Date.now()), MAX_TIMER_MS));
    this.#expiry.set(sessionId, { at, timer });
  }

  #expire(sessionId: string): void {
    this.#expiry.delete(sessionId);
    const now = Date.now();
    for (const w of [...(this.#bySession.get(sessionId) ?? [])]) {
      const event = deadlineEvent(w.context, now);
      if (event) this.#refuse(w, event);
    }
    this.#armExpiry(sessionId);
  }
}
