/**
 * A tiny TCP load balancer in front of several server processes, as a real one (HAProxy, nginx,
 * a cloud LB) behaves for rolling restarts: it polls each backend's `/readyz` and routes each new
 * TCP connection (HTTP or WebSocket) round-robin to the backends whose last check answered 200; a
 * backend that refuses the connection is marked down and the next one is tried (the client's
 * bytes wait until a backend accepted). Backends are named, so a restarted node (a new port) takes
 * its predecessor's place: `set(name, port)` makes it unchecked, and it gets traffic only once a
 * check passed. Used by the rolling-restart tests and the bench's `roll` scenario.
 */
import { request } from 'node:http';
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';

interface Backend {
  port: number;
  healthy: boolean;
  /** `/readyz` answered 503 `draining` at least once for this port. */
  sawDraining: boolean;
  /** Connections routed to it (this port). */
  routed: number;
}

export interface Balancer {
  readonly port: number;
  /** `ws://127.0.0.1:<port>/collab` */
  readonly wsUrl: string;
  readonly httpUrl: string;
  /** Puts `port` behind `name` (replacing the port it had), unchecked; `undefined` removes it. */
  set(name: string, port: number | undefined): void;
  /** Whether `name`'s last check passed. */
  healthy(name: string): boolean;
  /** Whether `name` (its current port) ever answered `/readyz` with 503 `draining`. */
  sawDraining(name: string): boolean;
  /** Connections routed to `name` (its current port). */
  routed(name: string): number;
  /** Backend connections that failed (refused, reset before connecting): each one retried elsewhere. */
  readonly connectFailures: number;
  /** Client connections no backend took. */
  readonly dropped: number;
  close(): Promise<void>;
}

export interface BalancerOptions {
  /** How often each backend's `/readyz` is polled, ms. */
  intervalMs?: number;
  /** The path checked (default `/readyz`; the bench's stock Hocuspocus, which has none, is checked at `/`). */
  healthPath?: string;
  register: (teardown: () => Promise<void>) => void;
}

/** One `/readyz` check: 200 → healthy; its JSON `status` when there is one. */
function check(port: number, timeoutMs: number, path: string): Promise<{ ok: boolean; status?: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        let status: string | undefined;
        try {
          status = (JSON.parse(body) as { status?: string }).status;
        } catch {
          // not JSON: only the status code counts
        }
        resolve({ ok: res.statusCode === 200, ...(status ? { status } : {}) });
      });
      res.on('error', () => resolve({ ok: false }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ ok: false }));
    req.end();
  });
}

export async function startBalancer(options: BalancerOptions): Promise<Balancer> {
  const intervalMs = options.intervalMs ?? 100;
  const backends = new Map<string, Backend>();
  const open = new Set<Socket>();
  let next = 0;
  let connectFailures = 0;
  let dropped = 0;
  let closed = false;

  const track = (socket: Socket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    socket.on('error', () => {});
  };

  const pick = (tried: Set<Backend>): Backend | undefined => {
    const candidates = [...backends.values()].filter((b) => b.healthy && !tried.has(b));
    if (candidates.length === 0) return undefined;
    next = (next + 1) % candidates.length;
    return candidates[next];
  };

  const route = (client: Socket, tried: Set<Backend>) => {
    const backend = pick(tried);
    if (!backend || client.destroyed) {
      dropped += 1;
      client.destroy();
      return;
    }
    tried.add(backend);
    const upstream = createConnection({ host: '127.0.0.1', port: backend.port });
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      backend.routed += 1;
      track(upstream);
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.once('close', end);
      upstream.once('close', end);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.once('error', () => {
      if (connected) return;
      connectFailures += 1;
      backend.healthy = false; // as a load balancer does after a refused connection
      route(client, tried);
    });
  };

  const server = createServer({ pauseOnConnect: true }, (client) => {
    track(client);
    route(client, new Set());
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

  // One check per backend at a time; the next round starts `intervalMs` after the last ended.
  const poll = async (name: string, backend: Backend) => {
    while (!closed && backends.get(name) === backend) {
      const result = await check(backend.port, 1_000, options.healthPath ?? '/readyz');
      if (backends.get(name) !== backend) return;
      backend.healthy = result.ok;
      if (result.status === 'draining') backend.sawDraining = true;
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  };

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      closed = true;
      for (const socket of open) socket.destroy();
      server.close(() => resolve());
    }));
  options.register(close);

  return {
    port,
    wsUrl: `ws://127.0.0.1:${port}/collab`,
    httpUrl: `http://127.0.0.1:${port}`,
    set(name, backendPort) {
      if (backendPort === undefined) {
        backends.delete(name);
        return;
      }
      const backend: Backend = { port: backendPort, healthy: false, sawDraining: false, routed: 0 };
      backends.set(name, backend);
      void poll(name, backend);
    },
    healthy: (name) => backends.get(name)?.healthy === true,
    sawDraining: (name) => backends.get(name)?.sawDraining === true,
    routed: (name) => backends.get(name)?.routed ?? 0,
    get connectFailures() {
      return connectFailures;
    },
    get dropped() {
      return dropped;
    },
    close,
  };
}
