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

  return {
    transport: 'node',
    port: actualPort,
    close: () =>
      new Promise<void>((resolve) => {
        void ws.close(1001, 'server shutting down').finally(() => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
      }),
  };
}
