/**
 * The node transport: `node:http` for HTTP (through @hono/node-server's bridge to web-standard
 * handlers) and crossws's node adapter (the `ws` library) for WebSockets.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import crossws from 'crossws/adapters/node';
import { isWsPath, type Listening, type TransportHandlers } from './types.ts';

export async function listenNode(handlers: TransportHandlers, host: string, port: number): Promise<Listening> {
  const ws = crossws({
    hooks: handlers.socketHooks({ copyMessages: false }),
    serverOptions: { maxPayload: handlers.maxMessageBytes },
  });
  const server = createServer(getRequestListener(handlers.fetch));
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (!isWsPath(handlers.wsPaths, path)) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    ws.handleUpgrade(req, socket, head).catch(() => socket.destroy());
  });
  // Keep-alive sockets would hold `close()` open for their idle timeout.
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actualPort = (server.address() as AddressInfo).port;

  let stopped: Promise<void> | undefined;
  /** `server.close()` stops the listener at once but calls back only when every connection ended. */
  let ended: Promise<void> | undefined;
  const stopAccepting = () =>
    (stopped ??= new Promise<void>((resolve) => {
      ended = new Promise<void>((done) => server.close(() => done()));
      // Node ≥ 19 closes idle keep-alive connections in close(); busy ones end after their response.
      server.closeIdleConnections();
      resolve();
    }));
  return {
    transport: 'node',
    port: actualPort,
    stopAccepting,
    close: async ({ code, reason }) => {
      await stopAccepting();
      await ws.close(code, reason);
      server.closeAllConnections();
      await ended;
    },
  };
}
