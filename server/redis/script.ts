/**
 * A Lua script run by its SHA1 (`EVALSHA`), loaded on first use and again after a Redis restart
 * or on a new cluster shard (`NOSCRIPT`). Replies are `unknown`: each caller checks the shape it
 * expects instead of trusting a cast.
 */
import { createHash } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';

/** A connection for commands: one Redis, or a Redis Cluster (which routes each script by its first key). */
export type RedisClient = Redis | Cluster;

export class LuaScript {
  readonly lua: string;
  readonly sha: string;

  constructor(lua: string) {
    this.lua = lua;
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(redis: RedisClient, keys: readonly string[], args: ReadonlyArray<string | number>): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return redis.eval(this.lua, keys.length, ...keys, ...args);
    }
  }
}

/** A reply that must be a string (a Redis bulk string or status). */
export function replyString(reply: unknown): string {
  if (typeof reply !== 'string') throw new TypeError(`Redis replied ${typeof reply}, expected a string`);
  return reply;
}

/** A reply that must be an array of strings. */
export function replyStrings(reply: unknown): string[] {
  if (!Array.isArray(reply) || !reply.every((x) => typeof x === 'string')) throw new TypeError('Redis replied something else than an array of strings');
  return reply;
}
