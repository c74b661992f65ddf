/**
 * A real Redis Cluster on loopback (test/support/redis-cluster.ts: 3 masters + 3 replicas) and
 * what the cross-node fan-out will build on there (issue 13 §2), measured against ioredis 6:
 *
 * - Sharded pub/sub across slots needs `Cluster({ shardedSubscribers: true })`: without it an
 *   `SSUBSCRIBE` to channels of several slots fails ("Too many Cluster redirections"); with it
 *   every `SPUBLISH` arrives, on `smessageBuffer`.
 * - A Lua script keyed on a session's key (hash tag `{<session>}`, server/redis/keys.ts) can ask
 *   `PUBSUB SHARDNUMSUB` about that session's channels: the liveness check of the claims works on
 *   a cluster unchanged, atomically with the claim.
 * - One session's traffic stays on its shard: N `SPUBLISH` on its channel raise
 *   `cmdstat_spublish` on the master that owns its slot by N, and on no other master.
 *
 * Then three real servers (child processes) on the cluster (`REDIS_CLUSTER_NODES`): seeded random
 * concurrent edits converge (seed printed; `CLUSTER_SEED=<n>` replays), presence crosses nodes,
 * a session's edits touch only its shard's master, and killing that master (its replica takes
 * over) loses no acknowledged edit and the nodes reconverge without new edits.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from 'ioredis';
import type pg from 'pg';
import * as Y from 'yjs';
import { acknowledged } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { attachPeer, peerSynced, type Peer } from './support/peers.ts';
import { mulberry32 } from './support/random.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';
import { RedisNames } from '../server/redis/keys.ts';
import { clusterAvailable, startRedisCluster, type RedisCluster } from './support/redis-cluster.ts';
import { waitFor } from './support/clients.ts';

const fns: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void fns.unshift(fn);
afterAll(async () => {
  for (const fn of fns) await fn();
});

const names = new RedisNames('cluster-test');
const sessions = Array.from({ length: 6 }, (_, i) => `ses_cluster_${i}`);

describe.skipIf(!clusterAvailable())('a real Redis Cluster (3 masters + 3 replicas on loopback)', () => {
  let cluster: RedisCluster;
  const open = (options: ConstructorParameters<typeof Cluster>[1] = {}) => {
    const client = new Cluster(cluster.seeds.split(',').map((s) => ({ host: '127.0.0.1', port: Number(s.split(':')[1]) })), options);
    register(async () => void client.disconnect());
    return client;
  };

  beforeAll(async () => {
    cluster = await startRedisCluster(register);
  }, 60_000);

  it('delivers SPUBLISH on channels of every slot to a Cluster with shardedSubscribers, and only with it', async () => {
    const plain = open({ clusterRetryStrategy: () => null, maxRedirections: 2 });
    plain.on('error', () => {});
    // Channels of their own: some of these subscriptions may succeed (those of the slots of the node it reached).
    const other = new RedisNames('cluster-plain');
    await expect(Promise.all(sessions.map((s) => plain.ssubscribe(other.document(s))))).rejects.toThrow(/redirections|MOVED|CROSSSLOT/i);

    const subscriber = open({ shardedSubscribers: true });
    const publisher = open();
    const got = new Set<string>();
    subscriber.on('smessageBuffer', (channel: Buffer, message: Buffer) => got.add(`${channel.toString()}=${message.toString()}`));
    for (const s of sessions) await subscriber.ssubscribe(names.document(s));
    for (const s of sessions) await publisher.spublish(names.document(s), s);
    await waitFor(() => got.size === sessions.length, { timeout: 5_000, what: 'every sharded message' });
    expect([...got].sort()).toEqual(sessions.map((s) => `${names.document(s)}=${s}`).sort());

    // The liveness check of the claims scripts, on the session's slot.
    for (const s of sessions) {
      const reply = (await publisher.eval(`return redis.call('PUBSUB', 'SHARDNUMSUB', ARGV[1])`, 1, names.claims(s), names.document(s))) as [string, number];
      expect(reply[1]).toBe(1);
    }
  }, 30_000);

  it("keeps one session's messages on its shard: SPUBLISH counts per master", async () => {
    const publisher = open();
    const masters = cluster.ports.filter((p) => cluster.cli(p, 'ROLE').startsWith('master'));
    expect(masters).toHaveLength(3);
    const slot = Number(cluster.cli(masters[0]!, 'CLUSTER', 'KEYSLOT', names.document(sessions[0]!)).trim());
    // The master whose slot ranges (CLUSTER NODES: fields 9…) hold the session's slot.
    const owner = cluster
      .cli(masters[0]!, 'CLUSTER', 'NODES')
      .split('\n')
      .map((line) => line.split(' '))
      .filter((f) => f[2]?.includes('master'))
      .find((f) => f.slice(8).some((range) => {
        const [from, to = from] = range.split('-').map(Number);
        return slot >= from! && slot <= to!;
      }))?.[1]
      ?.split(':')[1]
      ?.split('@')[0];
    expect(owner).toBeDefined();
    const spublishes = (p: number) => Number(/cmdstat_spublish:calls=(\d+)/.exec(cluster.cli(p, 'INFO', 'commandstats'))?.[1] ?? 0);
    const before = masters.map(spublishes);
    const N = 50;
    for (let i = 0; i < N; i++) await publisher.spublish(names.document(sessions[0]!), `m${i}`);
    const delta = masters.map((p, i) => spublishes(p) - before[i]!);
    console.log(`[redis-cluster] ${N} SPUBLISH on one session's channel, per master (ports ${masters.join(', ')}): ${delta.join(', ')}`);
    expect(delta[masters.indexOf(Number(owner))]).toBe(N);
    expect(delta.reduce((a, b) => a + b, 0)).toBe(N);
  }, 30_000);
});

const SEED = process.env.CLUSTER_SEED ? Number(process.env.CLUSTER_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`[redis-cluster] random seed ${SEED} (replay with CLUSTER_SEED=${SEED})`);

const content = (doc: Y.Doc) =>
  JSON.stringify({ map: Object.entries(doc.getMap('m').toJSON()).sort(([a], [b]) => (a < b ? -1 : 1)), text: doc.getText('t').toString() });

describe.skipIf(!clusterAvailable())('three nodes on a Redis Cluster (sharded pub/sub)', () => {
  let cluster: RedisCluster;
  let nodes: ServerProcess[];
  let pool: pg.Pool;
  let owner: { userId: string; token: string };
  const prefix = `imageflow-test-${randomBytes(4).toString('hex')}`;
  const attach = (wsUrl: string, name: string, doc?: Y.Doc): Peer => attachPeer(wsUrl, name, owner.token, register, doc);
  const converged = (peers: Peer[], timeout = 15_000) =>
    waitFor(() => peers.every((p) => content(p.doc) === content(peers[0]!.doc)), { timeout, what: 'convergence' });
  const newSession = async () => createSession(nodes[0]!.url, owner.token, await createImage(pool, owner.userId));
  const masters = () => cluster.ports.filter((p) => cluster.cli(p, 'ROLE').startsWith('master'));
  /** The port of the master that serves `key`'s slot now. */
  const masterOf = (key: string) => {
    const slot = Number(cluster.cli(masters()[0]!, 'CLUSTER', 'KEYSLOT', key).trim());
    const line = cluster
      .cli(masters()[0]!, 'CLUSTER', 'NODES')
      .split('\n')
      .map((l) => l.split(' '))
      .filter((f) => f[2]?.includes('master') && !f[2].includes('fail'))
      .find((f) => f.slice(8).some((range) => {
        const [from, to = from] = range.split('-').map(Number);
        return slot >= from! && slot <= to!;
      }));
    return Number(line?.[1]?.split(':')[1]?.split('@')[0]);
  };
  const spublishes = (p: number) => Number(/cmdstat_spublish:calls=(\d+)/.exec(cluster.cli(p, 'INFO', 'commandstats'))?.[1] ?? 0);
  const publishes = (p: number) => Number(/cmdstat_publish:calls=(\d+)/.exec(cluster.cli(p, 'INFO', 'commandstats'))?.[1] ?? 0);

  beforeAll(async () => {
    cluster = await startRedisCluster(register);
    const database = await createDatabase('rc');
    register(database.drop);
    const start = (i: number) =>
      startServerProcess({
        transport: 'node',
        databaseUrl: database.url,
        register,
        env: { REDIS_CLUSTER_NODES: cluster.seeds, REDIS_PREFIX: prefix, REDIS_SYNC_INTERVAL_MS: '500', PRESENCE_HEARTBEAT_MS: '500', NODE_ID: `node-${i}`, AUTOSAVE_QUIET_MS: '0' },
      });
    const first = await start(0);
    nodes = [first, ...(await Promise.all([start(1), start(2)]))];
    pool = openPool(database.url, register);
    owner = await createActor(pool, 'owner');
  }, 120_000);

  it("converges after seeded random concurrent edits on every node, and the session's messages stay on its shard", async () => {
    const session = await newSession();
    const peers = [0, 1, 2, 0, 1, 2].map((i) => attach(nodes[i]!.wsUrl, session));
    await Promise.all(peers.map(peerSynced));
    const home = masterOf(`${prefix}:doc:{${session}}`);
    const before = new Map(masters().map((p) => [p, { s: spublishes(p), p: publishes(p) }]));
    const rnd = mulberry32(SEED);
    let edits = 0;
    for (let round = 0; round < 15; round++) {
      for (const [i, peer] of peers.entries()) {
        const n = Math.floor(rnd() * 3);
        for (let e = 0; e < n; e++, edits++) {
          if (rnd() < 0.5) peer.doc.getMap('m').set(`k${Math.floor(rnd() * 10)}`, `${round}.${i}.${e}`);
          else peer.doc.getText('t').insert(Math.floor(rnd() * (peer.doc.getText('t').length + 1)), `${round}.${i}.${e} `);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, Math.floor(rnd() * 30)));
    }
    await Promise.all(peers.map((p) => acknowledged(p, 15_000)));
    await converged(peers);
    const delta = masters().map((p) => ({ port: p, spublish: spublishes(p) - (before.get(p)?.s ?? 0), publish: publishes(p) - (before.get(p)?.p ?? 0) }));
    console.log(`[redis-cluster] ${edits} edits on one session; per master (home ${home}): ${JSON.stringify(delta)}`);
    // Every message of the session on its own master (other sessions' anti-entropy rounds may run
    // elsewhere: only this one is loaded here, so the others see none), and no classic PUBLISH anywhere.
    for (const d of delta) {
      expect(d.publish, `PUBLISH on ${d.port}`).toBe(0);
      if (d.port !== home) expect(d.spublish, `SPUBLISH on ${d.port}, not the session's master`).toBe(0);
    }
    expect(delta.find((d) => d.port === home)!.spublish).toBeGreaterThanOrEqual(edits);
    for (const p of peers) p.destroy();
  }, 60_000);

  it('shows presence across nodes', async () => {
    const session = await newSession();
    const a = attach(nodes[0]!.wsUrl, session);
    const b = attach(nodes[2]!.wsUrl, session);
    await Promise.all([a, b].map(peerSynced));
    a.provider.setAwarenessField('cursor', { x: 7, y: 7 });
    await waitFor(() => (b.provider.awareness!.getStates().get(a.doc.clientID) as { cursor?: { x: number } } | undefined)?.cursor?.x === 7, { timeout: 5_000, what: 'cursor across nodes' });
    a.destroy();
    await waitFor(() => !b.provider.awareness!.getStates().has(a.doc.clientID), { timeout: 5_000, what: 'presence removed on leave' });
    b.destroy();
  }, 30_000);

  it("loses no acknowledged edit when the session's master is killed (its replica takes over) and reconverges without new edits", async () => {
    const session = await newSession();
    const a = attach(nodes[0]!.wsUrl, session);
    const b = attach(nodes[1]!.wsUrl, session);
    await Promise.all([a, b].map(peerSynced));
    const home = masterOf(`${prefix}:doc:{${session}}`);
    for (let i = 0; i < 10; i++) a.doc.getMap('m').set(`before-${i}`, i);
    await acknowledged(a, 10_000);
    await converged([a, b]);
    cluster.stop(home);
    const killedAt = Date.now();
    // Edits while the slot has no master: acknowledged by each node (PostgreSQL), not delivered.
    for (let i = 0; i < 10; i++) a.doc.getMap('m').set(`during-${i}`, i);
    b.doc.getText('t').insert(0, 'during-b ');
    await acknowledged(a, 15_000);
    await acknowledged(b, 15_000);
    await waitFor(() => masters().length === 3 && masterOf(`${prefix}:doc:{${session}}`) !== home, { timeout: 20_000, what: 'a replica promoted' }).catch((error: unknown) => {
      throw new Error(`${String(error)}; masters ${masters().join(',')}; nodes:\n${cluster.cli(masters()[0]!, 'CLUSTER', 'NODES')}`);
    });
    const promoted = Date.now();
    await converged([a, b], 20_000);
    console.log(`[redis-cluster] master ${home} killed: replica ${masterOf(`${prefix}:doc:{${session}}`)} promoted after ${promoted - killedAt} ms; converged ${Date.now() - promoted} ms later, no new edits`);
    for (let i = 0; i < 10; i++) {
      expect(b.doc.getMap('m').get(`before-${i}`)).toBe(i);
      expect(b.doc.getMap('m').get(`during-${i}`)).toBe(i);
    }
    expect(a.doc.getText('t').toString()).toContain('during-b');
    a.destroy();
    b.destroy();
  }, 60_000);
});
