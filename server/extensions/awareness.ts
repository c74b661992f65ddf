/**
 * Awareness that cannot be spoofed. Awareness updates carry client-chosen clientIDs, so stock
 * Hocuspocus lets any client overwrite (or, by disconnecting, remove) another's presence
 * (docs/STACK-NOTES.md). Here each clientID belongs to the connection that first used it, until that
 * connection closes; states for clientIDs owned by another connection are dropped, and every state
 * is rebuilt from the contract's fields with `user.id` = the token's subject and `user.color` = the
 * participant's cursor colour. Read-only connections keep their presence (who, where, what is
 * selected): that is all a state can carry.
 *
 * With several nodes, the first use of a clientID is also claimed cluster-wide (`AwarenessClaims`,
 * over Redis), so a client on another node cannot use it either, and a relayed update never
 * overwrites the state of a client connected here.
 */
import type { beforeHandleAwarenessPayload, Connection, Document, Extension } from '@hocuspocus/server';
import { sanitizeAwareness } from '../../shared/presence.ts';
import type { ConnectionContext } from './auth.ts';

/** Who may use an awareness clientID across nodes (implemented over Redis by RedisSyncExtension). */
export interface AwarenessClaims {
  /** False when a connection on another live node already uses `clientId` in this document. */
  claim(documentName: string, clientId: number): Promise<boolean>;
  /** The connection that used `clientId` here has closed. */
  release(documentName: string, clientId: number): void;
}

export class AwarenessGuardExtension implements Extension {
  extensionName = 'awareness-guard';
  /** Per document: clientID → the connection that owns it. */
  readonly #owners = new WeakMap<Document, Map<number, Connection>>();
  readonly #claims: AwarenessClaims | undefined;

  /** `claims`: the cluster-wide registry when several nodes serve one session; absent on one node. */
  constructor(claims?: AwarenessClaims) {
    this.#claims = claims;
  }

  async beforeHandleAwareness({ states, connection, document, documentName, context, transactionOrigin }: beforeHandleAwarenessPayload): Promise<void> {
    let owners = this.#owners.get(document);
    if (!connection) {
      // Updates that did not come from a client socket (server-side, or relayed by another node)
      // pass as they are, except that another node never overwrites the state of a client
      // connected here: that can only be a forgery made on that node (or a client whose old
      // connection here has not closed yet, which then sees its relayed cursor after the close).
      const origin = transactionOrigin as { source?: string } | null | undefined;
      if (owners && origin?.source === 'redis') for (const clientId of [...states.keys()]) if (owners.has(clientId)) states.delete(clientId);
      return;
    }
    const identity = context as ConnectionContext | undefined;
    if (!owners) {
      owners = new Map();
      this.#owners.set(document, owners);
    }
    for (const [clientId, state] of [...states]) {
      if (!(await this.#mayUse(owners, clientId, connection, documentName))) {
        states.delete(clientId);
        continue;
      }
      const clean = identity
        ? sanitizeAwareness(state, { userId: identity.userId, name: identity.displayName, color: identity.cursorColor })
        : null;
      if (!clean) {
        states.delete(clientId);
        // Not used here after all: a cluster-wide claim just taken for it must not linger.
        if (!owners.has(clientId)) this.#claims?.release(documentName, clientId);
        continue;
      }
      if (!owners.has(clientId)) this.#claim(owners, clientId, connection, document, documentName);
      states.set(clientId, clean as unknown as Record<string, unknown>);
    }
  }

  /** Is `clientId` this connection's, or free here and (with claims) on every other live node? */
  async #mayUse(owners: Map<number, Connection>, clientId: number, connection: Connection, documentName: string): Promise<boolean> {
    const owner = owners.get(clientId);
    if (owner) return owner === connection;
    if (!this.#claims) return true;
    const free = await this.#claims.claim(documentName, clientId);
    // Another message (of this connection or another) may have claimed it here meanwhile.
    const now = owners.get(clientId);
    if (now) return now === connection;
    return free;
  }

  #claim(owners: Map<number, Connection>, clientId: number, connection: Connection, document: Document, documentName: string): void {
    owners.set(clientId, connection);
    // Hocuspocus removes a closing connection's states by the clientIDs it saw *added* through that
    // connection. A client that moves here from a killed node keeps its clientID, whose state is
    // already known (relayed through Redis), so its first update counts as an update and the
    // clientID would never be removed when it leaves: a 30 s ghost everywhere. Register it here.
    document.getClients(connection).add(clientId);
    connection.onClose(() => {
      if (owners.get(clientId) !== connection) return;
      owners.delete(clientId);
      this.#claims?.release(documentName, clientId);
    });
  }
}
