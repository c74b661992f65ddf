/**
 * A TCP proxy the test controls, to cut a server off from PostgreSQL without touching the shared
 * PostgreSQL server: `cut()` destroys every open connection and refuses new ones (they are
 * accepted and destroyed at once, so clients fail fast instead of timing out); `restore()` lets
 * new connections through again.
 */
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';

export interface TcpProxy {
  /** The loopback port the proxy listens on. */
  readonly port: number;
  /** Destroys all current connections and refuses (destroys immediately) new ones. */
  cut(): void;
  /** Accepts and forwards new connections again. */
  restore(): void;
  /** Stops listening and destroys every connection. Safe to call twice. */
  close(): Promise<void>;
}

export async function startProxy(
  targetHost: string,
  targetPort: number,
  register: (teardown: () => Promise<void>) => void,
): Promise<TcpProxy> {
  let refusing = false;
  const open = new Set<Socket>();
  const track = (socket: Socket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    // A reset peer emits 'error'; without a listener that would crash the test process.
    socket.on('error', () => {});
  };
  const destroyAll = () => {
    for (const socket of open) socket.destroy();
    open.clear();
  };

  const server = createServer((client) => {
    if (refusing) {
      client.on('error', () => {});
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: targetHost, port: targetPort });
    track(client);
    track(upstream);
    // Either side ending or failing ends the pair: a half-open proxied connection would look
    // like a hung database instead of a lost one.
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.once('close', end);
    upstream.once('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.on('error', () => {});

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      refusing = true;
      destroyAll();
      server.close(() => resolve());
    }));
  register(close);

  return {
    port,
    cut() {
      refusing = true;
      destroyAll();
    },
    restore() {
      refusing = false;
    },
    close,
  };
}
