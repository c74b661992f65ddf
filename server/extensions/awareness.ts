/**
 * Awareness that cannot be spoofed. Awareness updates carry client-chosen clientIDs, so stock
 * Hocuspocus lets any client overwrite (or, by disconnecting, remove) another's presence
 * (STACK-NOTES). Here each clientID belongs to the connection that first used it, until that
 * connection closes; states for clientIDs owned by another connection are dropped, and every state
 * is rebuilt from the contract's fields with `user.id` = the token's subject and `user.color` = the
 * participant's cursor colour. Read-only connections keep their presence (who, where, what is
 * selected): that is all a state can carry.
 */
import type { beforeHandleAwarenessPayload, Connection, Document, Extension } from '@hocuspocus/server';
import { sanitizeAwareness } from '../../shared/presence.ts';
import type { ConnectionContext } from './auth.ts';

export class AwarenessGuardExtension implements Extension {
  extensionName = 'awareness-guard';
  /** Per document: clientID → the connection that owns it. */
  readonly #owners = new WeakMap<Document, Map<number, Connection>>();

  beforeHandleAwareness({ states, connection, document, context, transactionOrigin }: beforeHandleAwarenessPayload): Promise<void> {
    let owners = this.#owners.get(document);
    if (!connection) {
      // Updates that did not come from a client socket (server-side, or relayed by another node)
      // pass as they are, except that another node never overwrites the state of a client
      // connected here: that can only be a forgery made on that node (or a client whose old
      // connection here has not closed yet, which then sees its relayed cursor after the close).
      const origin = transactionOrigin as { source?: string } | null | undefined;
      if (owners && origin?.source === 'redis') for (const clientId of [...states.keys()]) if (owners.has(clientId)) states.delete(clientId);
      return Promise.resolve();
    }
    const identity = context as ConnectionContext | undefined;
    if (!owners) {
      owners = new Map();
      this.#owners.set(document, owners);
    }
    for (const [clientId, state] of [...states]) {
      const owner = owners.get(clientId);
      if (owner && owner !== connection) {
        states.delete(clientId);
        continue;
      }
      const clean = identity
        ? sanitizeAwareness(state, { userId: identity.userId, name: identity.displayName, color: identity.cursorColor })
        : null;
      if (!clean) {
        states.delete(clientId);
        continue;
      }
      if (!owner) this.#claim(owners, clientId, connection, document);
      states.set(clientId, clean as unknown as Record<string, unknown>);
    }
    return Promise.resolve();
  }

  #claim(owners: Map<number, Connection>, clientId: number, connection: Connection, document: Document): void {
    owners.set(clientId, connection);
    // Hocuspocus removes a closing connection's states by the clientIDs it saw *added* through that
    // connection. A client that moves here from a killed node keeps its clientID, whose state is
    // already known (relayed through Redis), so its first update counts as an update and the
    // clientID would never be removed when it leaves: a 30 s ghost everywhere. Register it here.
    document.getClients(connection).add(clientId);
    connection.onClose(() => {
      if (owners.get(clientId) === connection) owners.delete(clientId);
    });
  }
}
