/**
 * A test's own corner of the shared Redis: a random key prefix for the servers it starts
 * (REDIS_PREFIX) and a client for looking inside, whose keys under that prefix are deleted at
 * teardown.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export function redisScratch(register: (fn: () => Promise<void>) => void): { prefix: string; redis: Redis } {
  const prefix = `imageflow-test-${randomBytes(4).toString('hex')}`;
  const redis = new Redis(REDIS_URL);
  register(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  return { prefix, redis };
}
