/**
 * Awareness that cannot be spoofed. Awareness updates carry client-chosen clientIDs, so stock
 * Hocuspocus lets any client overwrite (or, by disconnecting, remove) another's presence, announce
 * thousands of clientIDs in one message, and call itself anything (docs/STACK-NOTES.md). Here:
 *
 * - **A clientID is bound to a user**, by the first connection that uses it, and stays bound to
 *   that user after the connection closes (released, not forgotten): another user's states for it
 *   are dropped, so nobody can take over the clientID of someone who disconnected for a moment and
 *   suppress their cursor when they come back. While a connection uses a clientID, no other
 *   connection may, not even one of the same user: y-websocket clients send back every state they
 *   receive, which must not move a clientID to them. Released bindings are forgotten after an
 *   hour, and a user keeps at most `maxClientsPerConnection` released bindings per document (the
 *   oldest go first), so the table stays bounded however often someone reconnects.
 * - **At most `maxClientsPerConnection` clientIDs per connection** (a provider uses one). A message
 *   that would go past it is dropped whole and the connection is closed with reason
 *   `too_many_awareness_clients`: only a forged message can do that, and closing removes whatever
 *   it had announced, so neither the others nor later joiners ever receive the extra states.
 * - **Every state is rebuilt** from the contract's fields (`cursor`, `selection`), with the whole
 *   `user` from the server: `id` = the token's subject, `name` = `users.display_name`, `color` =
 *   the participant's cursor colour. Read-only connections keep their presence: that is all a
 *   state can carry.
 *
 * With several nodes the binding is also cluster-wide (`AwarenessClaims`, over Redis: clientID →
 * user and the node using it now), so a user on another node cannot use the clientID either, and a
 * relayed update never overwrites the state of a client connected here.
 */
import { isTransactionOrigin, type beforeHandleAwarenessPayload, type Connection, type Document, type Extension } from '@hocuspocus/server';
import type { Logger } from 'pino';
import { AppError } from '../../shared/errors.ts';
import { sanitizeAwareness } from '../../shared/presence.ts';
import type { ConnectionContext } from './auth.ts';

/** How long a released clientID stays bound to its user (here and in the Redis claim hash). */
export const RELEASED_BINDING_TTL_MS = 3_600_000;

/** Who may use an awareness clientID across nodes (implemented over Redis by RedisSyncExtension). */
export interface AwarenessClaims {
  /** False when `clientId` is bound to another user in this document (claimed on any node). */
  claim(documentName: string, clientId: number, userId: string): Promise<boolean>;
  /** The connection that used `clientId` here has closed; the clientID stays bound to its user. */
  release(documentName: string, clientId: number): void;
}

export interface AwarenessGuardOptions {
  /** The cluster-wide registry when several nodes serve one session; absent on one node. */
  claims?: AwarenessClaims | undefined;
  /** ClientIDs one connection may use over its life (MAX_AWARENESS_CLIENTS_PER_CONNECTION). */
  maxClientsPerConnection: number;
  logger?: Logger;
}

interface Binding {
  userId: string;
  /** The connection using the clientID now; null once it closed (the binding stays with the user). */
  connection: Connection | null;
  /** When `connection` became null (ms), for forgetting old released bindings. */
  releasedAt: number;
}

/**
 * Hocuspocus 4.7 decodes each inbound awareness message into a scratch `Awareness`, whose
 * constructor gives the scratch its own local state `{}` (clock 0) under a random clientID, and
 * re-encodes *every* state of the scratch, so each message carries one extra clientID. Applied, it
 * is a no-op (clock 0 never beats an unknown client's 0), but here it would count against the cap
 * and bind a clientID to the sender. It is the first entry of the map (inserted before the update
 * is applied; a message cannot name the scratch's random clientID), so it is dropped here.
 */
function dropScratchState(states: Map<number, unknown>): void {
  const first = states.entries().next();
  if (first.done) return;
  const [clientId, state] = first.value;
  if (state !== null && typeof state === 'object' && Object.keys(state).length === 0) states.delete(clientId);
}

export class AwarenessGuardExtension implements Extension {
  extensionName = 'awareness-guard';
  /** Per document name (outlives an unload, so a binding holds while nobody is connected): clientID → binding. */
  readonly #bindings = new Map<string, Map<number, Binding>>();
  /** Per connection: the clientIDs it has used (counted against the cap; released when it closes). */
  readonly #used = new WeakMap<Connection, Set<number>>();
  readonly #claims: AwarenessClaims | undefined;
  readonly #max: number;
  readonly #sweep: NodeJS.Timeout;
  readonly #logger: Logger | undefined;
  /** Connections closed for announcing too many clientIDs (metrics). */
  overflows = 0;

  constructor(options: AwarenessGuardOptions) {
    this.#claims = options.claims;
    this.#max = options.maxClientsPerConnection;
    this.#logger = options.logger;
    this.#sweep = setInterval(() => this.#forgetOld(Date.now()), 60_000);
    this.#sweep.unref();
  }

  onDestroy(): Promise<void> {
    clearInterval(this.#sweep);
    return Promise.resolve();
  }

  async beforeHandleAwareness({ states, connection, document, documentName, context, transactionOrigin }: beforeHandleAwarenessPayload): Promise<void> {
    dropScratchState(states);
    const bindings = this.#bindings.get(documentName);
    if (!connection) {
      // Updates that did not come from a client socket (server-side, or relayed by another node)
      // pass as they are, except that another node never overwrites the state of a client
      // connected here: that can only be a forgery made on that node (or a client whose old
      // connection here has not closed yet, which then sees its relayed cursor after the close).
      if (bindings && isTransactionOrigin(transactionOrigin) && transactionOrigin.source === 'redis') {
        for (const clientId of [...states.keys()]) if (bindings.get(clientId)?.connection) states.delete(clientId);
      }
      return;
    }
    const identity = context as ConnectionContext | undefined;
    // A message processed after its connection closed would add states nobody removes.
    if (!identity || !document.hasConnection(connection)) {
      states.clear();
      return;
    }
    const identityFields = { userId: identity.userId, name: identity.displayName, color: identity.cursorColor };
    let used = this.#used.get(connection);
    if (!used) this.#used.set(connection, (used = new Set()));
    for (const [clientId, state] of [...states]) {
      // Cheap checks first: nothing dropped here costs a Redis round trip.
      const clean = sanitizeAwareness(state, identityFields);
      if (!clean || this.#takenFrom(documentName, clientId, identity.userId, connection)) {
        states.delete(clientId);
        continue;
      }
      if (!used.has(clientId)) {
        if (used.size >= this.#max) {
          this.#overflow(connection, states, documentName, identity.userId);
          return;
        }
        if (!(await this.#mayClaim(documentName, clientId, identity.userId, connection))) {
          states.delete(clientId);
          continue;
        }
        this.#bind(documentName, clientId, identity.userId, connection, document, used);
      }
      states.set(clientId, clean as unknown as Record<string, unknown>);
    }
  }

  /** Is `clientId` bound to another user, or in use by another connection, in this document here? */
  #takenFrom(documentName: string, clientId: number, userId: string, connection: Connection): boolean {
    const binding = this.#bindings.get(documentName)?.get(clientId);
    if (!binding) return false;
    return binding.userId !== userId || (binding.connection !== null && binding.connection !== connection);
  }

  /** With claims: is `clientId` free or this user's on every node? Re-checked here after the wait. */
  async #mayClaim(documentName: string, clientId: number, userId: string, connection: Connection): Promise<boolean> {
    if (!this.#claims) return true;
    const free = await this.#claims.claim(documentName, clientId, userId);
    // Another connection may have bound it here meanwhile, or this one closed during the wait.
    return free && !this.#takenFrom(documentName, clientId, userId, connection) && connection.document.hasConnection(connection);
  }

  #bind(documentName: string, clientId: number, userId: string, connection: Connection, document: Document, used: Set<number>): void {
    let bindings = this.#bindings.get(documentName);
    if (!bindings) this.#bindings.set(documentName, (bindings = new Map()));
    bindings.set(clientId, { userId, connection, releasedAt: 0 });
    used.add(clientId);
    // Hocuspocus removes a closing connection's states by the clientIDs it saw *added* through that
    // connection. A client that moves here from another node keeps its clientID, whose state is already known, so its first update
    // counts as an update and the clientID would never be removed when it leaves: a 30 s ghost
    // everywhere. Register it here.
    document.getClients(connection).add(clientId);
    if (used.size === 1) connection.onClose(() => this.#release(documentName, connection, used, userId));
  }

  /** The connection closed: its clientIDs stay bound to its user, released. */
  #release(documentName: string, connection: Connection, used: Set<number>, userId: string): void {
    const bindings = this.#bindings.get(documentName);
    if (!bindings) return;
    const now = Date.now();
    for (const clientId of used) {
      const binding = bindings.get(clientId);
      if (binding?.connection !== connection) continue;
      binding.connection = null;
      binding.releasedAt = now;
      this.#claims?.release(documentName, clientId);
    }
    // A user keeps at most `max` released bindings per document: the oldest are forgotten.
    const released = [...bindings].filter(([, b]) => b.userId === userId && b.connection === null).sort(([, a], [, b]) => a.releasedAt - b.releasedAt);
    for (const [clientId] of released.slice(0, Math.max(0, released.length - this.#max))) bindings.delete(clientId);
  }

  #overflow(connection: Connection, states: Map<number, unknown>, documentName: string, userId: string): void {
    // Nothing of this message is applied; closing removes what the connection announced before.
    states.clear();
    this.overflows += 1;
    this.#logger?.warn({ session: documentName, user: userId, max: this.#max }, 'awareness: too many clientIDs on one connection; closed it');
    const error = new AppError('too_many_awareness_clients');
    connection.close({ code: error.closeCode, reason: error.code });
  }

  /** Forgets released bindings older than RELEASED_BINDING_TTL_MS. */
  #forgetOld(now: number): void {
    for (const [name, bindings] of this.#bindings) {
      for (const [clientId, b] of bindings) if (b.connection === null && now - b.releasedAt > RELEASED_BINDING_TTL_MS) bindings.delete(clientId);
      if (bindings.size === 0) this.#bindings.delete(name);
    }
  }
}
