/**
 * The bench's side of Redis (over ioredis, the client the server uses too): the counters of `INFO`
 * it reports (CPU, commands, network bytes), and removal of a run's keys.
 */
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

export type RedisConnection = Redis;

/** One connection that fails fast instead of queueing while Redis is away. */
export async function openRedis(url = REDIS_URL, timeoutMs = 5_000): Promise<RedisConnection> {
  const redis = new Redis(url, { lazyConnect: true, connectTimeout: timeoutMs, maxRetriesPerRequest: 1, enableOfflineQueue: false });
  await redis.connect();
  return redis;
}

/** The `INFO` fields the cross-node bench reports, summed/read from one snapshot. */
export interface RedisCounters {
  version: string;
  /** used_cpu_sys + used_cpu_user: CPU seconds of the whole Redis process since it started. */
  cpuSeconds: number;
  /** cmdstat_publish + cmdstat_spublish calls (classic and sharded pub/sub). */
  publishes: number;
  totalCommands: number;
  netInputBytes: number;
  netOutputBytes: number;
  /**
   * When Redis read these counters, in this process's `performance.now()` (the middle of the
   * INFO round trip): counting what the clients sent between two readings' `at` matches the
   * PUBLISH calls Redis counted between them, where a window opened after the first reply and
   * closed before the second request would miss the edits of those milliseconds.
   */
  at: number;
}

export async function redisCounters(redis: RedisConnection): Promise<RedisCounters> {
  const asked = performance.now();
  const text = await redis.info('all');
  const at = (asked + performance.now()) / 2;
  const field = (name: string): string | undefined => new RegExp(`^${name}:(.*)$`, 'm').exec(text)?.[1]?.trim();
  const num = (name: string) => Number(field(name) ?? Number.NaN);
  const calls = (command: string) => Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return {
    version: field('redis_version') ?? '?',
    cpuSeconds: num('used_cpu_sys') + num('used_cpu_user'),
    publishes: calls('publish') + calls('spublish'),
    totalCommands: num('total_commands_processed'),
    netInputBytes: num('total_net_input_bytes'),
    netOutputBytes: num('total_net_output_bytes'),
    at,
  };
}

/** `SCAN` + `DEL` every key starting with `prefix` (bounded: at most `maxRounds` SCAN calls); the count deleted. */
export async function deleteKeysWithPrefix(redis: RedisConnection, prefix: string, maxRounds = 10_000): Promise<number> {
  if (!/^[A-Za-z0-9_.:-]+$/.test(prefix)) throw new Error(`refusing to delete keys by an unusual prefix: ${prefix}`);
  let cursor = '0';
  let deleted = 0;
  for (let round = 0; round < maxRounds; round += 1) {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deleted += await redis.del(...keys);
    if (cursor === '0') return deleted;
  }
  throw new Error(`redis: SCAN for ${prefix}* did not finish in ${maxRounds} rounds`);
}
