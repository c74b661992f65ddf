/**
 * What the `roll` and `storm` scenarios share: several of our nodes on one bench database and the
 * real Redis (one key prefix per run), each a child process named so that a restarted process
 * takes its predecessor's place behind the /readyz-polling balancer (test/support/balancer.ts);
 * clients that reconnect as a browser's would and count every refusal they see; and the check
 * against the PostgreSQL update log that no acknowledged edit is missing.
 */
import { randomBytes } from 'node:crypto';
import * as Y from 'yjs';
import { connectCanvas, type CanvasClient } from '../../client/index.ts';
import { startBalancer, type Balancer } from '../../test/support/balancer.ts';
import { uwsLauncher } from '../../test/support/uws-runtime.ts';
import type { ServerChild } from './child.ts';
import { connect, type BenchClient } from './clients.ts';
import type { BenchDatabase } from './database.ts';
import { deleteKeysWithPrefix, openRedis, REDIS_URL, type RedisConnection } from './redis.ts';
import { oursEnv, oursTarget, stockTarget, type Target } from './targets.ts';

/** One named node: its target (same NODE_ID and data directory on every start) and its current process. */
export interface FleetNode {
  readonly name: string;
  readonly target: Target;
  child: ServerChild | undefined;
}

export interface Fleet {
  readonly prefix: string;
  readonly balancer: Balancer;
  readonly nodes: FleetNode[];
  readonly redis: RedisConnection;
  /** Starts (or starts again) node `i` and puts it behind the balancer once started (`behind`). */
  start(i: number, behind?: boolean): Promise<ServerChild>;
  /** Resolves once the balancer's last /readyz check of node `i` passed (bounded). */
  healthy(i: number, timeoutMs?: number): Promise<number>;
  /** Kills every process, closes the balancer, deletes the run's Redis keys. */
  close(): Promise<void>;
}

const fleets = new Set<Fleet>();

/** For the harness's watchdog and signals: kill every fleet's processes, delete their Redis keys. */
export async function abortFleets(): Promise<void> {
  for (const fleet of [...fleets]) await fleet.close().catch(() => {});
}

/** Polls `done()` every 20 ms until it holds (resolves with the ms waited) or `timeoutMs` passes (throws, naming `what`). */
export async function until(done: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!(await done())) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return performance.now() - t0;
}

/**
 * `count` nodes of ours on the node transport. Presence heartbeats and anti-entropy rounds are
 * shortened (as in test/rolling-restart.test.ts) so a drained node's leftovers would show within
 * the run; DRAIN_DELAY_MS lets the balancer see /readyz 503 before the listener closes.
 * BENCH_OURS_ENV overrides these.
 */
export async function startFleet(db: BenchDatabase, count: number, env: Record<string, string> = {}, system: 'ours' | 'stock' = 'ours'): Promise<Fleet> {
  const run = randomBytes(4).toString('hex');
  const prefix = `bench-fleet-${run}`;
  const teardowns: Array<() => Promise<void>> = [];
  // Stock Hocuspocus has no /readyz: its HTTP answer at / (200 while it listens) is all a balancer can check.
  const balancer = await startBalancer({ intervalMs: 50, healthPath: system === 'stock' ? '/' : '/readyz', register: (fn) => void teardowns.unshift(fn) });
  // BENCH_FLEET_TRANSPORT=uws: our nodes on the uWebSockets.js transport (where it can start).
  const transport = process.env.BENCH_FLEET_TRANSPORT === 'uws' ? 'uws' : 'node';
  let launcher: readonly string[] = [];
  if (transport === 'uws') {
    const uws = uwsLauncher();
    if (!uws.ok) throw new Error(`BENCH_FLEET_TRANSPORT=uws: ${uws.reason}`);
    launcher = uws.prefix;
  }
  const redis = await openRedis();
  const nodes: FleetNode[] = Array.from({ length: count }, (_, i) => {
    const name = `node-${i}`;
    if (system === 'stock') {
      // bench/stock-server.ts with @hocuspocus/extension-redis, as the cross-node bench runs it.
      const target = stockTarget(db, { id: `stock-${name}`, label: `stock ${name}`, env: { REDIS_URL, REDIS_PREFIX: prefix, NAME: `bench-${run}-${name}` } });
      return { name, target, child: undefined };
    }
    const target = oursTarget(db, transport, launcher, {
      id: `ours-${name}`,
      label: `ours ${name}`,
      env: {
        REDIS_URL,
        REDIS_PREFIX: prefix,
        NODE_ID: `bench-${run}-${name}`,
        REDIS_SYNC_INTERVAL_MS: '500',
        PRESENCE_HEARTBEAT_MS: '1000',
        DRAIN_DELAY_MS: '300',
        AUTOSAVE_QUIET_MS: '0',
        AUTOSAVE_ON_LEAVE: 'false',
        // A lever's A/B (e.g. BENCH_OURS_ENV="DRAIN_DELAY_MS=0") wins over the defaults above.
        ...oursEnv(),
        ...env,
      },
    });
    return { name, target, child: undefined };
  });
  const fleet: Fleet = {
    prefix,
    balancer,
    nodes,
    redis,
    start: async (i, behind = true) => {
      const node = nodes[i]!;
      const child = await node.target.start();
      node.child = child;
      if (behind) balancer.set(node.name, child.port);
      return child;
    },
    healthy: (i, timeoutMs = 20_000) => until(() => balancer.healthy(nodes[i]!.name), timeoutMs, `${nodes[i]!.name} healthy behind the balancer`),
    close: async () => {
      fleets.delete(fleet);
      for (const n of nodes) await n.child?.kill9();
      for (const fn of teardowns) await fn();
      await deleteKeysWithPrefix(redis, prefix).catch(() => 0);
      redis.disconnect();
      for (const n of nodes) n.target.cleanup();
    },
  };
  fleets.add(fleet);
  return fleet;
}

/** What one client saw of the server's refusals and its connection, and which of its edits are acknowledged. */
export interface Watch {
  /** Closes seen, by `code reason` ("1012 shutting_down", "1006 " …). */
  closes: Map<string, number>;
  /** Refusals: authentication failures (by reason), close reasons other than shutting_down, stateless errors (by code). */
  refusals: Map<string, number>;
  /** The last edit sequence number sent. */
  written: number;
  /** Every edit up to this sequence number is acknowledged (the provider's unsynced count fell to 0 after it). */
  acked: number;
  /** Each time the connection closed: [when it closed, when the provider was synced again (0: not yet)], in the clock of `now`. */
  outages: Array<[number, number]>;
}

export function newWatch(): Watch {
  return { closes: new Map(), refusals: new Map(), written: -1, acked: -1, outages: [] };
}

const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

/** Adds `from`'s counts into `into`. */
export function mergeCounts(into: Map<string, number>, from: Iterable<[string, number]>): Map<string, number> {
  for (const [k, v] of from) into.set(k, (into.get(k) ?? 0) + v);
  return into;
}

export function formatCounts(m: Map<string, number> | Record<string, number>): string {
  const entries = m instanceof Map ? [...m] : Object.entries(m);
  return entries.length === 0 ? 'none' : entries.sort().map(([k, v]) => `${k.trim() || '(no reason)'}: ${v}`).join(', ');
}

/** Milliseconds since the epoch with sub-millisecond resolution: one clock for the bench and its load generators. */
export const epochNow = (): number => performance.timeOrigin + performance.now();

type Provider = BenchClient['provider'];

/**
 * Watches a provider: closes (and the outage until the next `synced`), refusals, and the
 * acknowledgement of its edits. An edit counts as acknowledged once the provider's unsynced count
 * falls to 0 after it was made: the server acknowledges an update only after its PostgreSQL
 * commit, and a reconnect's handshake resets the count to 1 until the client's SyncStep2 (which
 * carries whatever the server lacks) is acknowledged. `refusals`: count authentication failures,
 * stateless errors and close reasons other than `shutting_down` (the typed client reports those
 * itself, as errors).
 */
export function attachWatch(provider: Provider, watch: Watch, refusals: boolean, now: () => number = epochNow): void {
  if (refusals) provider.on('authenticationFailed', ({ reason }: { reason: string }) => bump(watch.refusals, `authentication ${reason}`));
  if (refusals) provider.on('stateless', ({ payload }: { payload: string }) => {
    try {
      const m = JSON.parse(payload) as { type?: string; code?: string };
      if (m.type === 'error') bump(watch.refusals, `stateless ${m.code ?? '?'}`);
    } catch {
      // not JSON: not an error message of ours
    }
  });
  provider.on('close', ({ event }: { event: { code: number; reason: string } }) => {
    bump(watch.closes, `${event.code} ${event.reason ?? ''}`);
    if (refusals && event.reason && event.reason !== 'shutting_down') bump(watch.refusals, `close ${event.reason}`);
    const last = watch.outages.at(-1);
    // A failed reconnect attempt closes again: the same outage goes on.
    if (!last || last[1] !== 0) watch.outages.push([now(), 0]);
  });
  provider.on('synced', () => {
    const last = watch.outages.at(-1);
    if (last && last[1] === 0) last[1] = now();
  });
  provider.on('unsyncedChanges', ({ number }: { number: number }) => {
    if (number === 0 && provider.isSynced) watch.acked = watch.written;
  });
}

/**
 * A client that reconnects for ever (the provider's defaults: 1 s, doubling with jitter, at most
 * 30 s) — a plain HocuspocusProvider, or our typed client (`typed`, which re-announces its
 * awareness after a reconnect) — watched (attachWatch).
 */
export interface WatchedClient {
  readonly doc: Y.Doc;
  readonly provider: Provider;
  readonly watch: Watch;
  /** Sets `key` in the edits map and counts it as written. */
  edit(key: string, value: number): void;
  setCursor(x: number, y: number): void;
  destroy(): void;
}

export const EDITS_MAP = 'fleet';

export function watchedClient(wsUrl: string, name: string, token: string, kind: 'plain' | 'typed', now: () => number = epochNow): WatchedClient {
  const watch = newWatch();
  let provider: Provider;
  let doc: Y.Doc;
  let destroy: () => void;
  let typed: CanvasClient | undefined;
  if (kind === 'typed') {
    typed = connectCanvas({ url: wsUrl, sessionId: name, token, WebSocketPolyfill: WebSocket });
    provider = typed.provider;
    doc = typed.doc;
    destroy = () => typed!.destroy();
    // Close reasons, refusals and stateless errors, as the typed client names them.
    typed.on('error', (e) => bump(watch.refusals, `${e.source} ${e.code}`));
  } else {
    const c = connect(wsUrl, name, token, { reconnect: true });
    provider = c.provider;
    doc = c.doc;
    destroy = c.destroy;
  }
  attachWatch(provider, watch, !typed, now);
  const map = doc.getMap<number>(EDITS_MAP);
  return {
    doc,
    provider,
    watch,
    edit: (key, value) => {
      watch.written += 1;
      map.set(key, value);
    },
    setCursor: (x, y) => (typed ? typed.setCursor({ x, y }) : provider.setAwarenessField('cursor', { x, y })),
    destroy,
  };
}

/**
 * Awareness claims (server/redis/claims.ts: `<prefix>:aw:{<session>}`, clientID → `user|node|released
 * at`) that name a node which is not alive in that session (not subscribed to its node channel,
 * server/redis/liveness.ts): what a drain should have released, or a sweep should have; and
 * how many claims name a node at all (the clients' own, on live nodes).
 */
export async function staleClaims(fleet: Fleet, sessions: readonly string[]): Promise<{ stale: number; inUse: number }> {
  let stale = 0;
  let inUse = 0;
  for (const session of sessions) {
    const claims = await fleet.redis.hgetall(`${fleet.prefix}:aw:{${session}}`);
    for (const value of Object.values(claims)) {
      const node = value.split('|')[1];
      if (!node) continue;
      inUse += 1;
      const reply = (await fleet.redis.call('PUBSUB', 'NUMSUB', `${fleet.prefix}:node:{${session}}:${node}`)) as [string, number];
      if (Number(reply[1]) === 0) stale += 1;
    }
  }
  return { stale, inUse };
}

/** The document as stock's extension-database stored it: one row of the whole state per document. */
export async function stockStoredDocument(db: BenchDatabase, name: string): Promise<Y.Doc> {
  const { rows } = await db.pool.query<{ data: Buffer }>('SELECT data FROM stock_documents WHERE name = $1', [name]);
  const doc = new Y.Doc();
  if (rows[0]) Y.applyUpdate(doc, new Uint8Array(rows[0].data));
  return doc;
}

/** The document as the update log holds it (every row of the session, merged in order). */
export async function loggedDocument(db: BenchDatabase, sessionId: string): Promise<Y.Doc> {
  const { rows } = await db.pool.query<{ payload: Buffer }>('SELECT payload FROM document_updates WHERE session_id = $1 ORDER BY seq', [sessionId]);
  const doc = new Y.Doc();
  Y.transact(doc, () => {
    for (const row of rows) Y.applyUpdate(doc, new Uint8Array(row.payload));
  });
  return doc;
}

/** Canonical JSON of the edits map (keys sorted: a Y.Map iterates in local insertion order). */
export function content(doc: Y.Doc): string {
  return JSON.stringify(Object.entries(doc.getMap(EDITS_MAP).toJSON()).sort(([a], [b]) => (a < b ? -1 : 1)));
}
