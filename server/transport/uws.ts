/**
 * The uWebSockets.js transport: one uWS app serves WebSockets through crossws's uws adapter and
 * HTTP through a small bridge to the same web-standard handlers the node transport uses.
 *
 * uWS defaults that lose data are overridden (docs/STACK-NOTES.md): `maxPayloadLength` (16 KiB default,
 * too small for an initial sync) and `maxBackpressure` (64 KiB, over which sends are dropped
 * silently; here MAX_BUFFERED_BYTES) — a socket too slow to drain its backlog is closed instead,
 * and resyncs on reconnect.
 */
import { createRequire } from 'node:module';
import type * as UWS from 'uWebSockets.js';
import crossws from 'crossws/adapters/uws';
import type { Peer } from 'crossws';
import { socketOf } from './hooks.ts';
import type { Listening, TransportHandlers } from './types.ts';

type UwsModule = typeof UWS;

/** Loads uWebSockets.js, or returns the reason it cannot load on this machine. */
export function loadUws(): { uws: UwsModule } | { error: string } {
  try {
    const require = createRequire(import.meta.url);
    return { uws: require('uWebSockets.js') as UwsModule };
  } catch (error) {
    const message = error instanceof Error ? error.message.split('\n')[0]! : String(error);
    // Its binaries need glibc >= 2.38 (docs/STACK-NOTES.md); its own message names Node versions instead.
    const glibc = glibcVersion();
    // uWS's own message (which names Node versions and links a platform list) is left out then.
    if (glibc && compareVersions(glibc, UWS_MIN_GLIBC) < 0) return { error: `it needs glibc >= ${UWS_MIN_GLIBC}, this machine has ${glibc}` };
    return { error: message.length > 160 ? `${message.slice(0, 157)}...` : message };
  }
}

/** The oldest glibc uWebSockets.js's binaries load on. */
export const UWS_MIN_GLIBC = '2.38';

/** The C library's version at run time, where it is glibc. */
export function glibcVersion(): string | undefined {
  const header = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header;
  return header?.glibcVersionRuntime;
}

/** Dotted numeric versions: negative, 0 or positive as `a` is older, equal or newer than `b`. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

export async function listenUws(uws: UwsModule, handlers: TransportHandlers, host: string, port: number): Promise<Listening> {
  const app = uws.App();
  const ws = crossws({
    hooks: handlers.socketHooks({ copyMessages: true, publish: (topic, frame) => app.publish(topic, frame, true) }),
    uws: {
      maxPayloadLength: handlers.maxMessageBytes,
      maxBackpressure: handlers.maxBufferedBytes,
      closeOnBackpressureLimit: true,
      idleTimeout: 120,
      sendPingsAutomatically: true,
      // A published frame uWS would not buffer (over maxBackpressure): reported client_too_slow now,
      // closed on the next turn. Not closed from inside this callback: uWS calls it while draining
      // the topic tree, and closing frees the socket's subscriber under that loop (the process died
      // without a message when it did). uWS itself usually has closed the socket by then
      // (`closeOnBackpressureLimit`): the client sees 1006, as when the JavaScript check cuts it.
      dropped: (socket) => {
        const peer = (socket.getUserData() as { peer?: Peer }).peer;
        const target = peer ? socketOf(peer) : undefined;
        if (!target) return;
        target.reportTooSlow();
        setImmediate(() => target.closeTooSlow());
      },
    },
  });
  for (const path of handlers.wsPaths) app.ws(path.endsWith('/') ? `${path}*` : path, ws.websocket);
  app.any('/*', (res, req) => serveHttp(handlers, host, res, req));

  const token = await new Promise<UWS.us_listen_socket>((resolve, reject) => {
    app.listen(host, port, (listenSocket) => {
      if (listenSocket) resolve(listenSocket);
      else reject(new Error(`uWebSockets.js could not listen on ${host}:${port}`));
    });
  });
  const actualPort = uws.us_socket_local_port(token as unknown as UWS.us_socket);
  let listenerClosed = false;

  return {
    transport: 'uws',
    port: actualPort,
    stopAccepting: () => {
      if (!listenerClosed) {
        listenerClosed = true;
        uws.us_listen_socket_close(token);
      }
      return Promise.resolve();
    },
    close: async ({ code, reason }) => {
      if (!listenerClosed) {
        listenerClosed = true;
        uws.us_listen_socket_close(token);
      }
      await ws.close(code, reason);
      app.close();
    },
  };
}

/** Buffers the request body (refusing more than `maxBodyBytes`), calls `fetch`, writes the answer. */
function serveHttp(handlers: TransportHandlers, host: string, res: UWS.HttpResponse, req: UWS.HttpRequest): void {
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  // HttpRequest is only valid until this callback returns: copy what we need now.
  const method = req.getMethod().toUpperCase();
  const query = req.getQuery();
  const url = `http://${req.getHeader('host') || host}${req.getUrl()}${query ? `?${query}` : ''}`;
  const headers = new Headers();
  req.forEach((key, value) => headers.append(key, value));

  const respond = async (body: Uint8Array<ArrayBuffer> | undefined) => {
    let response: Response;
    try {
      response = await handlers.fetch(new Request(url, { method, headers, body }));
    } catch {
      response = new Response(JSON.stringify({ error: { code: 'internal', message: 'An unexpected error occurred.' } }), {
        status: 500,
        headers: { 'content-type': 'application/json' },
      });
    }
    const payload = new Uint8Array(await response.arrayBuffer());
    if (aborted) return;
    res.cork(() => {
      res.writeStatus(`${response.status} ${response.statusText || ''}`.trim());
      response.headers.forEach((value, key) => {
        if (key !== 'content-length') res.writeHeader(key, value);
      });
      res.end(payload);
    });
  };

  if (method === 'GET' || method === 'HEAD') {
    void respond(undefined);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  res.onData((chunk, isLast) => {
    if (aborted) return;
    size += chunk.byteLength;
    if (size > handlers.maxBodyBytes) {
      aborted = true;
      res.cork(() => {
        res.writeStatus('413 Payload Too Large').writeHeader('content-type', 'application/json');
        res.end(JSON.stringify({ error: { code: 'payload_too_large', message: 'The request body is larger than the configured maximum.' } }), true);
      });
      return;
    }
    // uWS reuses `chunk` after this callback: copy it.
    chunks.push(Buffer.from(chunk.slice(0)));
    if (isLast) void respond(new Uint8Array(Buffer.concat(chunks)));
  });
}
