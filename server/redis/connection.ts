/**
 * The Redis connections of a node, made from the configuration (one Redis, or a Redis Cluster). A
 * command connection fails a command after one reconnect attempt instead of queueing it in memory
 * through an outage (anti-entropy repairs what a lost publish missed); a subscriber waits for Redis
 * however long it takes and subscribes again by itself once back (ioredis `autoResubscribe`). On a
 * cluster the subscriber is made with `shardedSubscribers` (one subscriber connection per shard):
 * without it ioredis 6 cannot `SSUBSCRIBE` channels of several slots (docs/STACK-NOTES.md).
 */
import { Cluster, Redis } from 'ioredis';
import type { RedisTarget } from '../config.ts';
import type { RedisClient } from './script.ts';

export interface ConnectionOptions {
  target: RedisTarget;
  /** The connection's name in `CLIENT LIST` (`<prefix>:<nodeId>:<role>`). */
  name: string;
}

const retryStrategy = (times: number) => Math.min(times * 100, 1000);

function open(options: ConnectionOptions, maxRetriesPerRequest: number | null, subscriber: boolean): RedisClient {
  const { target, name } = options;
  if (target.kind === 'single') return new Redis(target.url, { maxRetriesPerRequest, retryStrategy, connectionName: name });
  return new Cluster(target.nodes, {
    clusterRetryStrategy: retryStrategy,
    shardedSubscribers: subscriber,
    redisOptions: {
      maxRetriesPerRequest,
      connectionName: name,
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
    },
  });
}

export function openCommands(options: ConnectionOptions): RedisClient {
  return open(options, 1, false);
}

export function openSubscriber(options: ConnectionOptions): RedisClient {
  return open(options, null, true);
}
