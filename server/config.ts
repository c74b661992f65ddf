/**
 * The server's configuration: one zod schema over the environment, read once by the entry point
 * (never at import time). A bad value stops start-up with a one-line reason (`ConfigError`).
 */
import { z } from 'zod';

const port = z.coerce.number().int().min(0).max(65_535);
const bytes = z.coerce.number().int().positive();

const schema = z
  .object({
    PORT: port.default(8080),
    HOST: z.string().min(1).default('127.0.0.1'),
    DATABASE_URL: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
      .optional(),
    /** One Redis (`redis://`, `rediss://`), or a Redis Cluster's seeds (`redis+cluster://host:port,host:port`). */
    REDIS_URL: z
      .string()
      .regex(/^(rediss?|redis\+cluster):\/\//, 'must be a redis://, rediss:// or redis+cluster:// URL')
      .optional(),
    /** Seeds of a Redis Cluster, comma-separated `host:port` (instead of REDIS_URL): sharded pub/sub. */
    REDIS_CLUSTER_NODES: z
      .string()
      .regex(/^[^\s,:/@]+:\d{1,5}(,[^\s,:/@]+:\d{1,5})*$/, 'must be comma-separated host:port')
      .optional(),
    /** Namespace of this deployment's Redis keys and channels. */
    REDIS_PREFIX: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'must be 1-64 characters of A-Z a-z 0-9 _ . : -')
      .default('imageflow'),
    /** How often each node exchanges state vectors of its loaded documents through Redis, in ms. */
    REDIS_SYNC_INTERVAL_MS: z.coerce.number().int().min(100).max(60_000).default(2_000),
    /**
     * On SIGTERM, how long `/readyz` answers 503 (and new WebSockets are refused) before the
     * listener closes, in ms: a load balancer's health-check interval × its fall count.
     */
    DRAIN_DELAY_MS: z.coerce.number().int().min(0).max(300_000).default(0),
    /** Presence heartbeat of this node in node_presence, in ms; rows older than three beats are swept. */
    PRESENCE_HEARTBEAT_MS: z.coerce.number().int().min(100).max(300_000).default(10_000),
    AUTH_JWT_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
    DATA_DIR: z.string().min(1).default('./data'),
    TRANSPORT: z.enum(['auto', 'uws', 'node']).default('auto'),
    /**
     * On uWebSockets.js, a document broadcast is one native publish per topic instead of one send
     * per connection (server/transport/publish.ts); `false` sends one at a time, as on node.
     */
    NATIVE_PUBLISH: z
      .enum(['true', 'false', '1', '0'])
      .default('true')
      .transform((v) => v === 'true' || v === '1'),
    NODE_ID: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 characters of A-Z a-z 0-9 _ . -')
      .optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** Largest WebSocket frame accepted, in bytes. */
    MAX_MESSAGE_BYTES: bytes.default(4 * 1024 * 1024),
    /** Largest a document may grow (estimated from its loaded size plus accepted updates), in bytes. */
    MAX_DOCUMENT_BYTES: bytes.default(64 * 1024 * 1024),
    /** Documents one WebSocket may have open at once (Hocuspocus multiplexes documents on a socket). */
    MAX_DOCUMENTS_PER_SOCKET: bytes.default(16),
    /** Attachments of one document one WebSocket may hold (addresses `name`, `name\0suffix`, …). */
    MAX_ATTACHMENTS_PER_DOCUMENT: bytes.default(4),
    /** Bytes one socket may be owed (sent by the server, not yet read by its client) before it is closed. */
    MAX_BUFFERED_BYTES: bytes.default(16 * 1024 * 1024),
    /** Per-socket rate limit: messages per second (a burst of twice this is allowed). */
    RATE_LIMIT_MESSAGES: bytes.default(500),
    /** Per-socket rate limit: bytes per second (a burst of twice this is allowed). */
    RATE_LIMIT_BYTES: bytes.default(16 * 1024 * 1024),
    /** Awareness clientIDs one connection may use (a provider uses one); more closes it. */
    MAX_AWARENESS_CLIENTS_PER_CONNECTION: z.coerce.number().int().min(1).max(1_000).default(4),
    /** Manual version saves (and restores) one user may make per session per minute (429 `rate_limited` past it). */
    RATE_LIMIT_VERSION_SAVES: bytes.default(30),
    /** A socket that has not authenticated any document after this long is closed, in ms. */
    AUTH_TIMEOUT_MS: bytes.default(10_000),
    /** CPU time any one update may take to decode (in a worker) before it is refused, in ms (yjs#687). */
    UPDATE_DECODE_BUDGET_MS: bytes.default(100),
    /**
     * Further decode CPU time allowed per MiB of update, in ms: big honest edits cost in proportion
     * to their size (10,000 text layers, 3.5 MB, take 290-530 ms of the worker's CPU on this
     * project's 2-core test machines: 150 ms/MiB refused them there about half the time).
     */
    UPDATE_DECODE_BUDGET_MS_PER_MIB: bytes.default(400),
    /**
     * Read-write updates up to this many bytes that a linear read proves harmless (ordinary items,
     * nothing pending) are applied without the decode worker's round trip (server/yjs-precheck.ts);
     * 0 sends every update to the worker. At most 16 KiB.
     */
    UPDATE_GUARD_INLINE_BYTES: z.coerce.number().int().min(0).max(16_384).default(1_024),
    /**
     * How long an update of a client that moved nodes, set aside before its handshake SyncStep2
     * (server/extensions/updates.ts), waits for that SyncStep2 before the document is refused
     * `invalid_update`.
     */
    UPDATE_HANDSHAKE_GRACE_MS: z.coerce.number().int().min(100).max(600_000).default(10_000),
    /**
     * Group commits of the update log written at once, each on its own pooled connection
     * (persistence/update-log.ts). The embedded database always uses 1.
     */
    UPDATE_LOG_WRITERS: z.coerce.number().int().min(1).max(8).default(2),
    /**
     * How long an update may wait for others before a free writer commits it (ms; 0 = at once):
     * fewer, larger commits for up to this much more acknowledgement latency
     * (persistence/update-log.ts). Broadcasts do not wait for it.
     */
    UPDATE_LOG_GATHER_MS: z.coerce.number().int().min(0).max(50).default(1),
    /** Compact a document's update log once this many updates follow its snapshot. */
    COMPACT_AFTER_UPDATES: bytes.default(500),
    /** Autosave a version this long after a document's last change, in ms; 0 disables (saving on last leave stays). */
    AUTOSAVE_QUIET_MS: z.coerce.number().int().min(0).max(24 * 3600 * 1000).default(30_000),
    /** Autosave when a session's last participant leaves; `false` with AUTOSAVE_QUIET_MS=0 turns autosave off. */
    AUTOSAVE_ON_LEAVE: z
      .enum(['true', 'false', '1', '0'])
      .default('true')
      .transform((v) => v === 'true' || v === '1'),
    /** Longest an open connection is served without re-reading its access from the database, in ms. */
    ACCESS_RECHECK_MS: z.coerce.number().int().min(1_000).max(3_600_000).default(60_000),
    /** Where image bytes, thumbnails and cached renders live: files under DATA_DIR, or S3-compatible storage. */
    BLOB_STORE: z.enum(['local', 's3']).default('local'),
    S3_ENDPOINT: z.string().url('must be a URL').optional(),
    S3_REGION: z.string().min(1).default('us-east-1'),
    S3_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name').optional(),
    S3_ACCESS_KEY_ID: z.string().min(1).optional(),
    S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
    S3_FORCE_PATH_STYLE: z
      .enum(['true', 'false', '1', '0'])
      .default('true')
      .transform((v) => v === 'true' || v === '1'),
    /** How long signed URLs (renders, thumbnails, files for `<img>` tags) stay valid, in seconds (rounded up to 5 min). */
    SIGNED_URL_TTL_SECONDS: z.coerce.number().int().min(60).max(7 * 24 * 3600).default(3600),
    /** Largest image `POST /api/images` accepts in the request body, in bytes (larger: the direct upload path). */
    IMAGE_MAX_BODY_BYTES: bytes.default(32 * 1024 * 1024),
    /** Largest image a direct upload (`POST /api/uploads`) may announce, in bytes. */
    IMAGE_MAX_UPLOAD_BYTES: bytes.default(256 * 1024 * 1024),
    /** Largest image accepted in pixels (width × height), checked from the header before decoding. */
    IMAGE_MAX_PIXELS: bytes.default(100_000_000),
    /** Longest one ingest or resize may take (sharp's per-pipeline timeout), in ms. */
    IMAGE_TIMEOUT_MS: bytes.default(30_000),
    /** Images processed at once (ingest and resizing share it); further requests queue. */
    IMAGE_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(2),
    /** Requests that may wait for an image slot; beyond that they are refused (503 image_busy). */
    IMAGE_QUEUE_LIMIT: z.coerce.number().int().min(0).max(10_000).default(64),
    /** Keep variants made by `/file` in the blob store (off: every request resizes; for benchmarks). */
    IMAGE_CACHE_VARIANTS: z
      .enum(['true', 'false', '1', '0'])
      .default('true')
      .transform((v) => v === 'true' || v === '1'),
    /** Bytes of small variants (≤ 1 MiB each) also kept in memory; 0 turns that off. */
    IMAGE_MEMORY_CACHE_BYTES: z.coerce.number().int().min(0).default(64 * 1024 * 1024),
    /** How long a direct upload's URL stays valid, in seconds. */
    UPLOAD_TTL_SECONDS: z.coerce.number().int().min(60).max(7 * 24 * 3600).default(3600),
    /** `inline`: a render worker inside the server; `off`: run `npm run worker` separately. */
    RENDER_WORKER: z.enum(['inline', 'off']).default('inline'),
    /** Thumbnail sizes of every new version (px, the longer side), comma-separated; the first is `thumbnail_path`. */
    THUMBNAIL_SIZES: z
      .string()
      .regex(/^\d{1,4}(,\d{1,4}){0,7}$/, 'must be 1-8 comma-separated sizes in px')
      .default('256')
      .transform((v) => v.split(',').map(Number))
      .refine((sizes) => sizes.every((n) => n >= 16 && n <= 4096), 'sizes must be 16-4096 px'),
    /**
     * Bytes of cached renders and resized variants kept in blob storage (every node's together,
     * tracked in PostgreSQL); past it the least recently used are evicted down to 90 %
     * (server/render-cache.ts). 0 = unbounded.
     */
    RENDER_CACHE_MAX_BYTES: z.coerce.number().int().min(0).default(1024 * 1024 * 1024),
    /** Render jobs one worker process runs at once. */
    RENDER_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(2),
    /** Longest one render may take, in ms (on-demand and worker). */
    RENDER_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(30_000),
    /** Bytes of rasterised layers each render thread keeps for the next render (renderer/layer-cache.ts); 0 turns it off. */
    RENDER_LAYER_CACHE_BYTES: z.coerce.number().int().min(0).default(64 * 1024 * 1024),
    /**
     * Nice value of the threads that do media work (libuv's pool, where sharp runs, and the render
     * threads): they lose to the event loop when both want a core (media/thread-priority.ts). 0: unchanged.
     */
    MEDIA_THREAD_NICE: z.coerce.number().int().min(0).max(19).default(10),
    /**
     * `idle`: those threads are also put under Linux's SCHED_IDLE (they run only on a core nothing
     * else wants); `nice`: the nice value alone. Needs MEDIA_THREAD_NICE > 0.
     */
    MEDIA_THREAD_POLICY: z.enum(['nice', 'idle']).default('nice'),
    /** How often each render worker looks for workers that are gone (killed) and unlocks their jobs. */
    RENDER_WORKER_SWEEP_MS: z.coerce.number().int().min(100).max(300_000).default(5_000),
  })
  .superRefine((env, ctx) => {
    if (env.DATABASE_URL && !env.AUTH_JWT_SECRET) {
      ctx.addIssue({ code: 'custom', path: ['AUTH_JWT_SECRET'], message: 'is required when DATABASE_URL is set' });
    }
    if (env.REDIS_URL && env.REDIS_CLUSTER_NODES) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_CLUSTER_NODES'], message: 'and REDIS_URL are both set: name one Redis or one Redis Cluster' });
    }
    if (env.REDIS_URL?.startsWith('redis+cluster://') && !CLUSTER_URL.test(env.REDIS_URL)) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_URL'], message: 'must be redis+cluster://[user:password@]host:port[,host:port…]' });
    }
    if (env.BLOB_STORE === 's3' && !env.S3_BUCKET) {
      ctx.addIssue({ code: 'custom', path: ['S3_BUCKET'], message: 'is required when BLOB_STORE=s3' });
    }
  });

export type Config = Readonly<z.infer<typeof schema>>;

const CLUSTER_URL = /^redis\+cluster:\/\/(?:([^:@/]*):([^@/]*)@)?([^\s,:/@]+:\d{1,5}(?:,[^\s,:/@]+:\d{1,5})*)\/?$/;

/** Where the nodes meet: one Redis (classic pub/sub) or a Redis Cluster (sharded pub/sub). */
export type RedisTarget =
  | { kind: 'single'; url: string }
  | { kind: 'cluster'; nodes: Array<{ host: string; port: number }>; username?: string; password?: string };

/** The Redis of a configuration, or undefined for a single node without Redis. */
export function redisTarget(config: Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES'>): RedisTarget | undefined {
  const seeds = (list: string) =>
    list.split(',').map((seed) => {
      const at = seed.lastIndexOf(':');
      return { host: seed.slice(0, at), port: Number(seed.slice(at + 1)) };
    });
  if (config.REDIS_CLUSTER_NODES) return { kind: 'cluster', nodes: seeds(config.REDIS_CLUSTER_NODES) };
  if (!config.REDIS_URL) return undefined;
  const cluster = CLUSTER_URL.exec(config.REDIS_URL);
  if (!cluster) return { kind: 'single', url: config.REDIS_URL };
  const [, username, password, list] = cluster;
  return {
    kind: 'cluster',
    nodes: seeds(list!),
    ...(username ? { username: decodeURIComponent(username) } : {}),
    ...(password ? { password: decodeURIComponent(password) } : {}),
  };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses the environment; throws `ConfigError` whose message is one line naming the bad variable. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  // Empty strings mean "unset": `FOO= npm start` should behave like no FOO at all.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const result = schema.safeParse(cleaned);
  if (!result.success) {
    const issue = result.error.issues[0];
    const name = issue?.path.join('.') || 'environment';
    throw new ConfigError(`invalid configuration: ${name} ${issue?.message ?? 'is invalid'}`);
  }
  return Object.freeze(result.data);
}
