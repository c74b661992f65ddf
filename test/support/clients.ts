/** Real HocuspocusProvider clients, and polling with a deadline (tests never sleep a fixed time). */
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import * as Y from 'yjs';

export async function waitFor<T>(
  probe: () => T | Promise<T>,
  { timeout = 10_000, interval = 20, what = 'condition' }: { timeout?: number; interval?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeout;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${String(last)})`);
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

export interface Client {
  provider: HocuspocusProvider;
  doc: Y.Doc;
  synced: Promise<void>;
  /** Resolves with the refusal reason if authentication fails. */
  refused: Promise<string>;
  destroy(): void;
}

export function connectClient(
  wsUrl: string,
  name: string,
  token: string,
  register: (fn: () => Promise<void>) => void,
): Client {
  const doc = new Y.Doc();
  const websocketProvider = new HocuspocusProviderWebsocket({ url: wsUrl, maxAttempts: 0 });
  let onSynced!: () => void;
  let onRefused!: (reason: string) => void;
  const synced = new Promise<void>((resolve) => (onSynced = resolve));
  const refused = new Promise<string>((resolve) => (onRefused = resolve));
  const provider = new HocuspocusProvider({
    websocketProvider,
    name,
    document: doc,
    token,
    onSynced: () => onSynced(),
    onAuthenticationFailed: ({ reason }) => onRefused(reason),
  });
  provider.attach();
  const destroy = () => {
    provider.destroy();
    websocketProvider.destroy();
    doc.destroy();
  };
  register(async () => destroy());
  return { provider, doc, synced, refused, destroy };
}

/** Resolves once the server has acknowledged every change this client made. */
export function acknowledged(client: Pick<Client, 'provider'>, timeout = 10_000): Promise<boolean> {
  return waitFor(() => !client.provider.hasUnsyncedChanges, { timeout, what: 'server acknowledgement' });
}
