/**
 * Composition root: wires database, migrations, the update log, the Hocuspocus core with its
 * extensions, the HTTP app and a transport into one running server. The entry point and the tests
 * both start servers through `startServer`; nothing here reads the environment.
 */
// First: before lib0 (through Yjs) binds crypto.getRandomValues at its load (server/random-pool.ts).
import './random-pool.ts';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { Hocuspocus } from '@hocuspocus/server';
import pino, { type Logger } from 'pino';
import { CloseCode, COLLAB_PATH } from '../shared/protocol.ts';
import { connectPostgres, openEmbedded, type Database, type EmbeddedOptions } from '../persistence/db.ts';
import { migrate } from '../persistence/migrate.ts';
import { UpdateLog } from '../persistence/update-log.ts';
import { TokenService } from './auth/tokens.ts';
import { UrlSigner } from './signed-urls.ts';
import { AccessFeed } from './auth/access-feed.ts';
import { createAccessSource } from './auth/access-cache.ts';
import { AccessWatch } from './auth/access-watch.ts';
import { redisTarget, type Config } from './config.ts';
import { AuthExtension } from './extensions/auth.ts';
import { AwarenessGuardExtension } from './extensions/awareness.ts';
import { LimitsExtension } from './extensions/limits.ts';
import { UpdateGuard } from './yjs-guard.ts';
import { Metrics } from './metrics.ts';
import { PersistenceExtension } from './extensions/persistence.ts';
import { AckGate, UpdatePath } from './extensions/updates.ts';
import { SnapshotExtension } from './extensions/snapshots.ts';
import { SaveLimit } from './save-limit.ts';
import { PresenceExtension } from './extensions/presence.ts';
import { RedisSyncExtension } from './extensions/redis-sync.ts';
import { createHttpApp } from './http/app.ts';
import { createBlobStore } from '../storage/index.ts';
import { PixelThreads } from '../media/pixel-threads.ts';
import type { PixelJob } from '../media/pixels.ts';
import { JobQueue, hardenSharp } from '../media/sharp.ts';
import { keepMediaThreadsLow } from '../media/thread-priority.ts';
import { MergeWorker } from '../persistence/merge.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { createSocketHooks } from './transport/hooks.ts';
import { publishBroadcasts, publishStats } from './transport/publish.ts';
import { migrateQueue, type RenderWorker, type ThumbnailReadyPayload } from '../worker/queue.ts';
import { createRenderCache, createRenderPool, createRenderService, createRenderWorker } from '../worker/compose.ts';
import { ThumbnailNotifier } from './thumbnails.ts';
import { queueCounts } from '../persistence/repositories/renders.ts';
import { listen, type TransportName } from './transport/index.ts';
import { YJS_PREFIX } from './transport/y-websocket.ts';
import { DrainState } from './drain.ts';

export interface RunningServer {
  readonly port: number;
  readonly url: string;
  readonly transport: TransportName;
  readonly nodeId: string;
  readonly db: Database;
  readonly tokens: TokenService;
  readonly signer: UrlSigner;
  readonly hocuspocus: Hocuspocus;
  readonly log: UpdateLog;
  readonly logger: Logger;
  /** Image bytes, thumbnails, cached renders (BLOB_STORE: files under DATA_DIR, or S3). */
  readonly blobs: BlobStore;
  /**
   * Drains and stops (server/drain.ts): `/readyz` 503 and new WebSockets refused, after
   * `DRAIN_DELAY_MS` the listener closed, acknowledgements out, every socket closed with 1012
   * `shutting_down`, every document stored, presence rows and Redis claims released, the log
   * committed, the database closed. Safe to call twice.
   */
  close(): Promise<void>;
}

/** The embedded mode's signing secret: generated once into DATA_DIR, readable only by its owner. */
async function embeddedSecret(dataDir: string): Promise<string> {
  const file = join(dataDir, 'jwt-secret');
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const secret = randomBytes(32).toString('base64url');
  await mkdir(dataDir, { recursive: true });
  await writeFile(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  return secret;
}

/** The configured database; in embedded mode `DATA_DIR` is locked while it is open (see persistence/db.ts). */
export async function openDatabase(config: Config, embedded: EmbeddedOptions = {}): Promise<Database> {
  return config.DATABASE_URL ? connectPostgres(config.DATABASE_URL) : openEmbedded(config.DATA_DIR, embedded);
}

export async function signingSecret(config: Config): Promise<string> {
  return config.AUTH_JWT_SECRET ?? embeddedSecret(config.DATA_DIR);
}

export async function startServer(config: Config, options: { logger?: Logger } = {}): Promise<RunningServer> {
  const nodeId = config.NODE_ID ?? `node-${randomBytes(4).toString('hex')}`;
  const logger = (options.logger ?? pino({ level: config.LOG_LEVEL })).child({ node: nodeId });

  const db = await openDatabase(config, {
    // Another process may be writing the directory now: stop at once (acknowledged edits are stored).
    onLockLost: (error) => {
      logger.fatal({ err: error }, `lost the lock on DATA_DIR ${config.DATA_DIR}; stopping`);
      process.exit(1);
    },
  });
  try {
    const applied = await migrate(db.url);
    if (applied.length > 0) logger.info({ applied }, 'applied migrations');
    // The render queue's own schema: a version's transaction enqueues into it (worker/queue.ts).
    await migrateQueue(db);
  } catch (error) {
    await db.close();
    throw error;
  }

  const secret = await signingSecret(config);
  const tokens = new TokenService(secret);
  const signer = new UrlSigner(secret, { ttlSeconds: config.SIGNED_URL_TTL_SECONDS });
  const blobs = createBlobStore(config);
  // Process-wide: only the accepted formats' loaders stay unblocked (media/sharp.ts).
  hardenSharp();
  // Media work yields the CPU to this event loop (media/thread-priority.ts).
  const stopMediaNice = await keepMediaThreadsLow(config.MEDIA_THREAD_NICE, config.MEDIA_THREAD_POLICY);
  const imageQueue = new JobQueue(config.IMAGE_CONCURRENCY, config.IMAGE_QUEUE_LIMIT);
  // Ingest's decode and variants in media threads, not on this event loop's heap (media/pixel-threads.ts).
  const pixelThreads = new PixelThreads({ threads: config.IMAGE_CONCURRENCY, nice: config.MEDIA_THREAD_NICE, policy: config.MEDIA_THREAD_POLICY });
  const metrics = new Metrics(nodeId);
  // Compaction merges rows in a worker thread, not on this event loop (persistence/merge.ts).
  const merger = new MergeWorker();
  const log = new UpdateLog(db, {
    nodeId,
    merge: merger.merge,
    // PGlite serves one connection: concurrent batches would only queue there.
    writers: db.kind === 'pglite' ? 1 : config.UPDATE_LOG_WRITERS,
    gatherMs: config.UPDATE_LOG_GATHER_MS,
    onError: (error, context) => logger.error({ err: error }, `update log: ${context}`),
    onCommit: (rows, seconds) => {
      metrics.committedUpdates.inc(rows);
      metrics.commitBatches.observe(rows);
      metrics.commitSeconds.observe(seconds);
    },
  });

  // Access changes made anywhere (any node, SQL by hand) act on this node's open connections, and
  // drop what the access cache holds about them first (server/auth/access-cache.ts).
  let feedListening = () => false;
  const access = createAccessSource(db, { ttlMs: config.ACCESS_RECHECK_MS, listening: () => feedListening() });
  const accessWatch = new AccessWatch({ source: access.fresh, logger, recheckMs: config.ACCESS_RECHECK_MS });
  const accessFeed = new AccessFeed({
    db,
    nodeId,
    logger,
    handlers: {
      onChange: (change) => {
        access.invalidate(change);
        void accessWatch.onChange(change).catch((err: unknown) => logger.error({ err }, 'access change not applied'));
      },
      onResync: (reason) => {
        access.clear();
        void accessWatch.recheckAll(reason).catch((err: unknown) => logger.error({ err }, 'access re-check failed'));
      },
    },
  });
  feedListening = () => accessFeed.listening;
  await accessFeed.start();
  accessWatch.start();
  const auth = new AuthExtension(access.cached, tokens, accessWatch, logger);
  const presence = new PresenceExtension({ db, nodeId, logger, heartbeatMs: config.PRESENCE_HEARTBEAT_MS });
  await presence.start();
  // Only with REDIS_URL or REDIS_CLUSTER_NODES: otherwise a single node, and nothing Redis-related runs.
  const target = redisTarget(config);
  const redis = target
    ? new RedisSyncExtension({
        target,
        nodeId,
        prefix: config.REDIS_PREFIX,
        syncIntervalMs: config.REDIS_SYNC_INTERVAL_MS,
        releasedBindingsPerUser: config.MAX_AWARENESS_CLIENTS_PER_CONNECTION,
        logger,
        // Relayed changes are logged lazily: their own node commits them; ours go with our next commit.
        persist: (document, update) => log.append(document, update, { lazy: true }),
      })
    : undefined;
  const snapshots = new SnapshotExtension({
    db,
    log,
    logger,
    quietMs: config.AUTOSAVE_QUIET_MS,
    onLeave: config.AUTOSAVE_ON_LEAVE,
    onlineElsewhere: (sessionId) => presence.onlineElsewhere(sessionId),
    // With Redis the count is shared by every node (the fan-out's command connection).
    saveLimit: new SaveLimit({
      perMinute: config.RATE_LIMIT_VERSION_SAVES,
      keyPrefix: `${config.REDIS_PREFIX}:rl:save`,
      ...(redis ? { redis: redis.commands } : {}),
    }),
  });
  // Every acknowledgement of the node waits here for its commit (extensions/updates.ts, step 4).
  const acks = new AckGate(() => log.flushed(), (seconds) => metrics.ackWaitSeconds.observe(seconds));
  const guard = new UpdateGuard({ budgetMs: config.UPDATE_DECODE_BUDGET_MS, budgetMsPerMiB: config.UPDATE_DECODE_BUDGET_MS_PER_MIB });
  const awareness = new AwarenessGuardExtension({
    claims: redis,
    maxClientsPerConnection: config.MAX_AWARENESS_CLIENTS_PER_CONNECTION,
    logger,
  });
  const updatePath = new UpdatePath({
    log,
    guard,
    maxDocumentBytes: config.MAX_DOCUMENT_BYTES,
    logger,
    inlineMaxBytes: config.UPDATE_GUARD_INLINE_BYTES,
    handshakeGraceMs: config.UPDATE_HANDSHAKE_GRACE_MS,
  });
  const hocuspocus = new Hocuspocus({
    name: nodeId,
    quiet: true,
    timeout: 30_000,
    // Pre-authentication floods: far below Hocuspocus's defaults (1,000 messages / 5 MiB).
    maxUnauthenticatedQueueMessages: 64,
    maxUnauthenticatedQueueSize: Math.min(config.MAX_MESSAGE_BYTES, 1024 * 1024),
    maxPendingDocuments: config.MAX_DOCUMENTS_PER_SOCKET,
    extensions: [
      auth,
      // ClientIDs bound to users (with Redis, across nodes), capped per connection; names forced.
      awareness,
      new LimitsExtension({
        maxDocumentsPerSocket: config.MAX_DOCUMENTS_PER_SOCKET,
        maxAttachmentsPerDocument: config.MAX_ATTACHMENTS_PER_DOCUMENT,
      }),
      // The one way an edit goes through: guard, apply once, log; acknowledgements via `acks`.
      updatePath,
      // Load and compaction over the update log.
      new PersistenceExtension(log, logger, { compactAfterUpdates: config.COMPACT_AFTER_UPDATES }),
      snapshots,
      presence,
      ...(redis ? [redis] : []),
      // Broadcasts as one native publish per document on uWebSockets.js (server/transport/publish.ts).
      { extensionName: 'publish', afterLoadDocument: ({ document }) => Promise.resolve(publishBroadcasts(document)) },
    ],
  });

  metrics.observe({
    documents: () => hocuspocus.getDocumentsCount(),
    connections: () => hocuspocus.getConnectionsCount(),
    attachments: () => {
      let total = 0;
      for (const document of hocuspocus.documents.values()) total += document.getConnectionsCount();
      return total;
    },
    logBacklog: () => log.backlog,
    logHealthy: () => log.healthy,
    // Updates set aside for a moving client's handshake (extensions/updates.ts) are not refusals.
    updatesRefused: () => guard.rejected - updatePath.setAside,
    updatesInline: () => updatePath.inlineChecked,
    published: { broadcasts: () => publishStats.broadcasts, frames: () => publishStats.publishes },
    presenceWrites: () => presence.writes,
    updatesSetAside: () => updatePath.setAside,
    access: {
      feedListening: () => accessFeed.listening,
      feedConnects: () => accessFeed.connects,
      applied: () => accessWatch.applied,
      checks: () => accessWatch.checks,
      changes: () => accessFeed.changes,
      ...(access.cache ? { cache: { hits: () => access.cache!.hits, misses: () => access.cache!.misses } } : {}),
    },
    awarenessOverflows: () => awareness.overflows,
    ...(redis
      ? {
          redis: {
            healthy: () => redis.healthy(),
            diffsSent: () => redis.diffsSent,
            answersDeferred: () => redis.answersDeferred,
            announcementsAlone: () => redis.announcementsAlone,
            announcementsCarried: () => redis.announcementsCarried,
            relayedLogged: () => redis.relayedLogged,
            published: () => redis.published,
            publishesLost: () => redis.publishesLost,
            deadPeerStatesRemoved: () => redis.deadPeerStatesRemoved,
            claimsRefused: () => redis.claimsRefused,
          },
        }
      : {}),
  });
  metrics.observeImages({ running: () => imageQueue.running, queued: () => imageQueue.queued });
  // One bound over cached renders and resized variants alike (RENDER_CACHE_MAX_BYTES).
  const renderCache = createRenderCache(config, db, blobs, logger, metrics);
  metrics.observeRenderCache(() => renderCache.totals());
  const images = {
    db,
    blobs,
    queue: imageQueue,
    pixels: (job: PixelJob) => pixelThreads.process(job),
    limits: { maxPixels: config.IMAGE_MAX_PIXELS, timeoutMs: config.IMAGE_TIMEOUT_MS },
    spoolDir: join(config.DATA_DIR, 'spool'),
    signer,
    metrics,
    logger,
    maxBodyBytes: config.IMAGE_MAX_BODY_BYTES,
    maxUploadBytes: config.IMAGE_MAX_UPLOAD_BYTES,
    uploadTtlSeconds: config.UPLOAD_TTL_SECONDS,
    cacheVariants: config.IMAGE_CACHE_VARIANTS,
    memoryCacheBytes: config.IMAGE_MEMORY_CACHE_BYTES,
    cache: renderCache,
    imageAccess: access.images,
    sessionAccess: access.cached,
  };
  // Renders: the on-demand routes and the inline worker share one bounded RenderService.
  const renderPool = createRenderPool(config);
  const renders = createRenderService(db, blobs, renderPool, metrics, renderCache);
  metrics.observeRenderQueue(() => queueCounts(db));
  // Thumbnails reach this node's clients by NOTIFY from whichever worker made them; in embedded
  // mode (one process; NOTIFY does not cross pglite-socket connections) straight from the inline worker.
  const thumbnails = new ThumbnailNotifier({ url: db.url, hocuspocus, signer, logger });
  if (db.kind === 'postgres') await thumbnails.start();
  let renderWorker: RenderWorker | undefined;
  if (config.RENDER_WORKER === 'inline') {
    renderWorker = createRenderWorker(config, {
      db,
      renders,
      logger,
      name: nodeId,
      metrics,
      ...(db.kind === 'pglite' ? { onThumbnail: (payload: ThumbnailReadyPayload) => thumbnails.send(payload) } : {}),
    });
    await renderWorker.start();
  }
  const drain = new DrainState();
  const http = createHttpApp({ drain, db, access, tokens, signer, renders, thumbnailSize: config.THUMBNAIL_SIZES[0]!, log, hocuspocus, logger, maxBodyBytes: config.MAX_MESSAGE_BYTES, nodeId, metrics, versions: snapshots, images, ...(redis ? { redis } : {}) });
  /** Stops everything started above, in order: the one list for a failed start and for close(). */
  const release = async () => {
    await renderWorker?.stop();
    await renderPool.close();
    await pixelThreads.close();
    await renderCache.idle();
    await thumbnails.close();
    await redis?.close();
    await accessFeed.close();
    accessWatch.close();
    await presence.close();
    await log.close();
    await merger.close();
    await guard.close();
    await blobs.close();
    await db.close();
  };
  const listened = listen(
    config.TRANSPORT,
    {
      fetch: (request) => http.fetch(request),
      socketHooks: ({ copyMessages, publish }) =>
        drain.guardUpgrades(createSocketHooks({
          hocuspocus,
          acks,
          logger,
          copyMessages,
          ...(publish && config.NATIVE_PUBLISH ? { publish } : {}),
          rateLimit: { messages: config.RATE_LIMIT_MESSAGES, bytes: config.RATE_LIMIT_BYTES },
          authTimeoutMs: config.AUTH_TIMEOUT_MS,
          maxBufferedBytes: config.MAX_BUFFERED_BYTES,
          isAuthenticated: (request) => auth.authenticated.has(request),
        })),
      wsPaths: [COLLAB_PATH, YJS_PREFIX],
      maxMessageBytes: config.MAX_MESSAGE_BYTES,
      maxBufferedBytes: config.MAX_BUFFERED_BYTES,
      // uWebSockets.js buffers HTTP bodies (server/transport/uws.ts): image bodies up to their limit.
      maxBodyBytes: Math.max(config.MAX_MESSAGE_BYTES, config.IMAGE_MAX_BODY_BYTES),
    },
    config.HOST,
    config.PORT,
  ).catch(async (error: unknown) => {
    // Not listening (the port is in use…): release everything opened so far — above all the
    // embedded directory and its lock — before the caller reports the failure (within 10 s: a
    // part that does not close must not keep the operator from hearing why).
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      release().catch((closeError: unknown) => logger.warn({ err: closeError }, 'clean-up after a failed listen')),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, 10_000).unref())),
    ]);
    clearTimeout(timer);
    throw error;
  });
  const { listening, note } = await listened;
  // The embedded database's loopback URL is logged so `psql` (and the tests) can look inside it;
  // the Node flags so an operator sees whether it runs with server/node-flags.ts's (npm start does).
  logger.info(
    {
      transport: listening.transport,
      port: listening.port,
      database: db.kind,
      ...(db.kind === 'pglite' ? { databaseUrl: db.url } : {}),
      nodeFlags: process.execArgv,
    },
    `listening; transport: ${note}`,
  );

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      drain.begin();
      stopMediaNice();
      const connections = hocuspocus.getConnectionsCount();
      const documents = hocuspocus.getDocumentsCount();
      logger.info({ connections, documents, delayMs: config.DRAIN_DELAY_MS }, 'draining: /readyz answers 503, new WebSockets are refused');
      if (config.DRAIN_DELAY_MS > 0) await sleep(config.DRAIN_DELAY_MS);
      await listening.stopAccepting();
      // The acknowledgements of what this node received go out before its sockets close. Bounded:
      // with PostgreSQL unreachable the clients keep those edits and send them to the next node.
      const bounded = new AbortController();
      await Promise.race([log.flushed(), sleep(5_000, undefined, { signal: bounded.signal }).catch(() => {})]);
      bounded.abort();
      await listening.close({ code: CloseCode.ServiceRestart, reason: 'shutting_down' });
      // Closing the sockets makes Hocuspocus store and unload each document; wait for that,
      // then for the log to commit everything it holds.
      const deadline = Date.now() + 10_000;
      while (hocuspocus.getDocumentsCount() > 0 && Date.now() < deadline) {
        hocuspocus.flushPendingStores();
        await sleep(20);
      }
      const unloaded = hocuspocus.getDocumentsCount() === 0;
      await release();
      logger.info({ connections, documents, unloaded, ms: drain.elapsedMs }, 'drained: every document stored, presence and claims released');
    })());

  const host = config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST;
  return {
    port: listening.port,
    url: `http://${host}:${listening.port}`,
    transport: listening.transport,
    nodeId,
    db,
    tokens,
    signer,
    hocuspocus,
    log,
    logger,
    blobs,
    close,
  };
}
