/**
 * The Redis connections of a node, made from the configuration. A command connection fails a
 * command after one reconnect attempt instead of queueing it in memory through an outage
 * (anti-entropy repairs what a lost publish missed); a subscriber waits for Redis however long it
 * takes and subscribes again by itself once back (ioredis `autoResubscribe`).
 */
import { Redis } from 'ioredis';

export interface ConnectionOptions {
  url: string;
  /** The connection's name in `CLIENT LIST` (`<prefix>:<nodeId>:<role>`). */
  name: string;
}

const retryStrategy = (times: number) => Math.min(times * 100, 1000);

export function openCommands(options: ConnectionOptions): Redis {
  return new Redis(options.url, { maxRetriesPerRequest: 1, retryStrategy, connectionName: options.name });
}

export function openSubscriber(options: ConnectionOptions): Redis {
  return new Redis(options.url, { maxRetriesPerRequest: null, retryStrategy, connectionName: options.name });
}
