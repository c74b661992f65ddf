/**
 * The limit on manual version saves (HTTP `POST /api/sessions/:id/versions`, the stateless
 * `saveVersion`) and restores: each writes a version, an activity and a notification per member, so
 * a loop of them floods the database and everyone's notifications. `perMinute` per user and
 * session, counted by rate-limiter-flexible: in Redis when the deployment has it (one budget across
 * nodes), else in memory. Should Redis fail or be unreachable, the count falls back to this node's
 * memory (the library's insurance limiter) rather than refusing or allowing everything. Autosaves
 * are not counted: the server makes them, at most one per quiet period.
 */
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { AppError } from '../shared/errors.ts';
import { RedisNames } from './redis/keys.ts';

/** A refusal by the limit; `retryAfterSeconds` goes into `Retry-After`. */
export class RateLimitedError extends AppError {
  readonly retryAfterSeconds: number;
  constructor(retryAfterSeconds: number) {
    super('rate_limited', `Too many versions saved in this session; retry in ${retryAfterSeconds} s.`);
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

export interface SaveLimitOptions {
  /** Saves per user and session per minute (RATE_LIMIT_VERSION_SAVES). */
  perMinute: number;
  /** An ioredis client (the Redis fan-out's) to share the count across nodes; absent: memory. */
  redis?: unknown;
  /** Key prefix in Redis (`<REDIS_PREFIX>:rl:save`). */
  keyPrefix: string;
}

export class SaveLimit {
  readonly #limiter: RateLimiterAbstract;

  constructor(options: SaveLimitOptions) {
    const shape = { points: options.perMinute, duration: 60, keyPrefix: options.keyPrefix };
    const memory = new RateLimiterMemory(shape);
    this.#limiter = options.redis
      ? new RateLimiterRedis({ ...shape, storeClient: options.redis, rejectIfRedisNotReady: true, insuranceLimiter: new RateLimiterMemory(shape) })
      : memory;
  }

  /** Counts one save of `userId` in `sessionId`; throws `RateLimitedError` past the limit. */
  async take(userId: string, sessionId: string): Promise<void> {
    try {
      // The session as a hash tag: on a Redis Cluster the count lives on the session's shard.
      await this.#limiter.consume(`${userId}:${RedisNames.tag(sessionId)}`);
    } catch (error) {
      if (error instanceof RateLimiterRes) throw new RateLimitedError(Math.max(1, Math.ceil(error.msBeforeNext / 1000)));
      throw error;
    }
  }
}
