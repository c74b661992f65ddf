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
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from 'ioredis';
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
