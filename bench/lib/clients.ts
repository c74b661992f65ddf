/**
 * HocuspocusProvider clients for the bench (Node 24's global WebSocket), one socket each, and the
 * two waits the scenarios need: synced, and "the server acknowledged everything" — both bounded.
 */
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import * as Y from 'yjs';

export interface BenchClient {
  readonly provider: HocuspocusProvider;
  readonly doc: Y.Doc;
  destroy(): void;
}

/** Rejects after `ms` with a message naming what was awaited. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * One attempt by default: a bench client never reconnects behind the measurement's back. The
 * roll and storm scenarios measure reconnects: `reconnect` keeps the provider's own defaults
 * (unbounded attempts, 1 s doubling with jitter up to 30 s), as a browser's client has them.
 */
export function connect(wsUrl: string, name: string, token: string, options: { reconnect?: boolean } = {}): BenchClient {
  const doc = new Y.Doc();
  const websocketProvider = new HocuspocusProviderWebsocket({ url: wsUrl, ...(options.reconnect ? {} : { maxAttempts: 1 }) });
  const provider = new HocuspocusProvider({ websocketProvider, name, document: doc, token });
  provider.attach();
  let destroyed = false;
  return {
    provider,
    doc,
    destroy: () => {
      if (destroyed) return;
      destroyed = true;
      provider.destroy();
      websocketProvider.destroy();
      doc.destroy();
    },
  };
}

/** Resolves when the provider has no unacknowledged changes (checked now, then on each change). */
export function allAcknowledged(provider: HocuspocusProvider): Promise<void> {
  if (provider.isSynced && !provider.hasUnsyncedChanges) return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (provider.isSynced && !provider.hasUnsyncedChanges) {
        provider.off('unsyncedChanges', check);
        provider.off('synced', check);
        resolve();
      }
    };
    provider.on('unsyncedChanges', check);
    provider.on('synced', check);
  });
}

/** Connects and waits until the initial sync is done and acknowledged. */
export async function connectSynced(wsUrl: string, name: string, token: string, timeoutMs = 15_000, reconnect = false): Promise<BenchClient> {
  const client = connect(wsUrl, name, token, { reconnect });
  const refused = new Promise<never>((_, reject) => {
    client.provider.on('authenticationFailed', ({ reason }: { reason: string }) =>
      reject(new Error(`authentication failed for ${name}: ${reason}`)),
    );
  });
  try {
    await withTimeout(Promise.race([allAcknowledged(client.provider), refused]), timeoutMs, `sync of ${name}`);
  } catch (error) {
    client.destroy();
    throw error;
  }
  return client;
}

/** Connects `count` clients `concurrency` at a time; every one synced on return. */
export async function connectMany(
  wsUrl: string,
  names: readonly string[],
  token: string,
  concurrency = 20,
): Promise<BenchClient[]> {
  const clients: BenchClient[] = [];
  try {
    for (let i = 0; i < names.length; i += concurrency) {
      const batch = names.slice(i, i + concurrency).map((name) => connectSynced(wsUrl, name, token));
      const settled = await Promise.allSettled(batch);
      for (const s of settled) if (s.status === 'fulfilled') clients.push(s.value);
      const failed = settled.find((s) => s.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
    }
  } catch (error) {
    for (const c of clients) c.destroy();
    throw error;
  }
  return clients;
}
