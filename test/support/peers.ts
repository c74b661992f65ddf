/**
 * Long-lived HocuspocusProvider peers for the tests with several nodes: a peer may move to another
 * node keeping its Y.Doc (and so its clientID), records why the server closed its document and
 * the stateless messages it got, and can vanish without an awareness goodbye.
 */
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import * as Y from 'yjs';
import { waitFor } from './clients.ts';

export interface Peer {
  doc: Y.Doc;
  provider: HocuspocusProvider;
  /** The reason of the server's first close of this document, once it came. */
  closed: () => string | undefined;
  /** Messages received as stateless (parsed JSON, else the raw string). */
  stateless: unknown[];
  destroy(): void;
  /** Leave as a closed tab or a lost network does: the socket closes with no awareness goodbye. */
  vanish(): void;
}

/** A provider on `wsUrl` for `name`, on `doc` (pass a peer's doc to reconnect it elsewhere). */
export function attachPeer(wsUrl: string, name: string, token: string, register: (fn: () => Promise<void>) => void, doc = new Y.Doc()): Peer {
  const websocketProvider = new HocuspocusProviderWebsocket({ url: wsUrl, maxAttempts: 0 });
  let reason: string | undefined;
  const stateless: unknown[] = [];
  const provider = new HocuspocusProvider({
    websocketProvider,
    name,
    document: doc,
    token,
    onClose: ({ event }) => (reason ??= event.reason),
    onStateless: ({ payload }) => {
      try {
        stateless.push(JSON.parse(payload));
      } catch {
        stateless.push(payload);
      }
    },
  });
  provider.attach();
  let destroyed = false;
  const destroy = () => {
    if (destroyed) return;
    destroyed = true;
    provider.destroy();
    websocketProvider.destroy();
  };
  register(async () => destroy());
  const vanish = () => {
    websocketProvider.webSocket?.close();
    destroy(); // its awareness removal finds the socket closed and is not sent
  };
  return { doc, provider, closed: () => reason, stateless, destroy, vanish };
}

/** Resolves once the peer's provider has synced its document. */
export const peerSynced = (p: Peer) =>
  waitFor(() => p.provider.isSynced, { timeout: 15_000, what: 'sync' }).catch((error: unknown) => {
    // Why, as far as the client can tell: a refusal, the socket's state, whether it authenticated.
    const socket = p.provider.configuration.websocketProvider;
    throw new Error(
      `${String(error)}; document closed: ${p.closed() ?? 'no'}; stateless: ${JSON.stringify(p.stateless)}; ` +
        `authenticated: ${p.provider.isAuthenticated}; socket status: ${socket.status}; unsynced changes: ${p.provider.unsyncedChanges}`,
    );
  });
