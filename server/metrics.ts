/**
 * Prometheus metrics (`GET /metrics`), with prom-client. Every series carries `node` (NODE_ID).
 * Gauges that mirror state are read at scrape time, so nothing is updated on hot paths except the
 * counters and histograms below.
 */
import client from 'prom-client';

export interface MetricSources {
  documents: () => number;
  connections: () => number;
  /** Document connections (a socket attaching one document under two addresses counts twice). */
  attachments: () => number;
  logBacklog: () => number;
  logHealthy: () => boolean;
  updatesRefused: () => number;
  /** Updates the inline check let through without the guard's worker. */
  updatesInline?: () => number;
  /** Document broadcasts sent as native publishes, and the frames published (transport/publish.ts). */
  published?: { broadcasts: () => number; frames: () => number };
  /** Statements the presence batches issued (joins, leaves, activity). */
  presenceWrites?: () => number;
  /** Updates of a moving client set aside until its handshake SyncStep2 carried them. */
  updatesSetAside?: () => number;
  /** Connections closed for announcing more awareness clientIDs than allowed. */
  awarenessOverflows?: () => number;
  /** The access watch (server/auth/access-watch.ts) and its PostgreSQL feed. */
  access?: {
    feedListening: () => boolean;
    feedConnects: () => number;
    applied: () => number;
    checks: () => number;
    /** Changes the feed delivered. */
    changes: () => number;
    /** The access cache's reads (server/auth/access-cache.ts); absent on PGlite, which has none. */
    cache?: { hits: () => number; misses: () => number };
  };
  /** With REDIS_URL only. */
  redis?: {
    healthy: () => boolean;
    diffsSent: () => number;
    answersDeferred: () => number;
    announcementsAlone: () => number;
    announcementsCarried: () => number;
    relayedLogged: () => number;
    published: () => number;
    publishesLost: () => number;
    deadPeerStatesRemoved: () => number;
    claimsRefused: () => number;
  };
}

export class Metrics {
  readonly registry = new client.Registry();
  readonly committedUpdates: client.Counter;
  readonly commitBatches: client.Histogram;
  readonly commitSeconds: client.Histogram;
  readonly ackWaitSeconds: client.Histogram;
  /** Image ingest: outcomes (`ok` or the refusal's error code) and time. */
  readonly imagesIngested: client.Counter<'result'>;
  readonly ingestSeconds: client.Histogram;
  /** `GET /api/images/:id/file`: outcomes (`not_modified`, `cached`, `resized`) and resize time. */
  readonly imageFiles: client.Counter<'outcome'>;
  readonly resizeSeconds: client.Histogram;
  readonly renders: client.Counter<'outcome'>;
  readonly renderSeconds: client.Histogram<'outcome'>;
  readonly renderJobs: client.Counter<'outcome'>;
  /** Render-cache entries (and their bytes) this process evicted (server/render-cache.ts). */
  readonly renderCacheEvicted: client.Counter;
  readonly renderCacheEvictedBytes: client.Counter;

  constructor(nodeId: string) {
    this.registry.setDefaultLabels({ node: nodeId });
    client.collectDefaultMetrics({ register: this.registry, prefix: 'imageflow_process_' });
    const registers = [this.registry];
    this.committedUpdates = new client.Counter({
      name: 'imageflow_updates_committed_total',
      help: 'Yjs updates committed to the durable update log.',
      registers,
    });
    this.commitBatches = new client.Histogram({
      name: 'imageflow_update_log_batch_rows',
      help: 'Rows per group commit of the update log.',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 500],
      registers,
    });
    this.commitSeconds = new client.Histogram({
      name: 'imageflow_update_log_commit_seconds',
      help: 'Time one group commit of the update log took.',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.ackWaitSeconds = new client.Histogram({
      name: 'imageflow_ack_wait_seconds',
      help: 'Time an update waited for its commit before the client was acknowledged.',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers,
    });
    this.imagesIngested = new client.Counter({
      name: 'imageflow_images_ingested_total',
      help: 'Image ingests by result: ok, or the error code of the refusal.',
      labelNames: ['result'],
      registers,
    });
    this.ingestSeconds = new client.Histogram({
      name: 'imageflow_image_ingest_seconds',
      help: 'Time one image ingest took (validation, EXIF, palette, thumbnails, storing), successful or not.',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3, 10, 30],
      registers,
    });
    this.imageFiles = new client.Counter({
      name: 'imageflow_image_file_requests_total',
      help: 'Image file requests by outcome: not_modified (304), cached (a stored variant), resized.',
      labelNames: ['outcome'],
      registers,
    });
    this.resizeSeconds = new client.Histogram({
      name: 'imageflow_image_resize_seconds',
      help: 'Time one resize by URL parameters took (decode, resize, encode).',
      buckets: [0.005, 0.01, 0.02, 0.035, 0.05, 0.1, 0.2, 0.5, 1, 5],
      registers,
    });
    this.renders = new client.Counter({
      name: 'imageflow_renders_total',
      help: 'Renders asked of this process (routes and the inline worker), by outcome: rendered, cached (served from blob storage), failed, timeout.',
      labelNames: ['outcome'],
      registers,
    });
    this.renderSeconds = new client.Histogram({
      name: 'imageflow_render_seconds',
      help: 'Time to answer a render, by outcome (cached = a blob-store lookup).',
      labelNames: ['outcome'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.renderJobs = new client.Counter({
      name: 'imageflow_render_jobs_total',
      help: "Render jobs this process's worker ran, by outcome: done, error (will retry), parked (failed its last attempt).",
      labelNames: ['outcome'],
      registers,
    });
    this.renderCacheEvicted = new client.Counter({
      name: 'imageflow_render_cache_evicted_total',
      help: 'Cached renders and variants this process evicted from blob storage (least recently used, past RENDER_CACHE_MAX_BYTES).',
      registers,
    });
    this.renderCacheEvictedBytes = new client.Counter({
      name: 'imageflow_render_cache_evicted_bytes_total',
      help: 'Bytes of the cached renders and variants this process evicted.',
      registers,
    });
  }

  /**
   * Gauges of the render cache's accounting, read from PostgreSQL at scrape time (every node's
   * entries together, so any node reports the whole cache).
   */
  observeRenderCache(read: () => Promise<{ bytes: number; entries: number }>): void {
    this.#databaseGauges(read, {
      bytes: ['imageflow_render_cache_bytes', 'Bytes of cached renders and variants tracked in render_cache (bounded by RENDER_CACHE_MAX_BYTES).'],
      entries: ['imageflow_render_cache_entries', 'Cached renders and variants tracked in render_cache.'],
    });
  }

  /**
   * Gauges of the render queue, read from PostgreSQL at scrape time (shared by every node and
   * worker process, so any node reports them).
   */
  observeRenderQueue(read: () => Promise<{ waiting: number; running: number; parked: number }>): void {
    this.#databaseGauges(read, {
      waiting: ['imageflow_render_queue_waiting', 'Render jobs waiting to run (including retries waiting for their backoff).'],
      running: ['imageflow_render_queue_running', 'Render jobs a worker holds right now.'],
      parked: ['imageflow_render_jobs_parked', 'Render jobs that failed their last attempt; kept with their error in graphile_worker.jobs.'],
    });
  }

  /**
   * One gauge per field of what `read` answers (a database query), `[name, help]` each: one query
   * per scrape for all of them. While the database is unreachable (/readyz says so) a gauge keeps
   * its last value rather than a made-up one.
   */
  #databaseGauges<T extends Record<string, number>>(read: () => Promise<T>, gauges: { [K in keyof T]: [name: string, help: string] }): void {
    const registers = [this.registry];
    let last: Promise<T> | undefined;
    const values = () => (last ??= read().finally(() => setTimeout(() => (last = undefined), 0)));
    for (const field of Object.keys(gauges) as Array<keyof T>) {
      const [name, help] = gauges[field];
      new client.Gauge({
        name,
        help,
        registers,
        async collect() {
          try {
            this.set((await values())[field] as number);
          } catch {
            // unreachable: keep the last value
          }
        },
      });
    }
  }

  /** Registers the scrape-time gauges of image processing. */
  observeImages(sources: { running: () => number; queued: () => number }): void {
    const registers = [this.registry];
    new client.Gauge({ name: 'imageflow_image_jobs_running', help: 'Image ingests and resizes running now.', registers, collect() { this.set(sources.running()); } });
    new client.Gauge({ name: 'imageflow_image_jobs_queued', help: 'Image ingests and resizes waiting for a slot.', registers, collect() { this.set(sources.queued()); } });
  }

  /** Registers the scrape-time gauges. */
  observe(sources: MetricSources): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, read: () => number) =>
      new client.Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge('imageflow_documents_loaded', 'Documents loaded on this node.', sources.documents);
    gauge('imageflow_connections', 'Open WebSocket connections on this node.', sources.connections);
    gauge(
      'imageflow_document_attachments',
      'Document connections on this node: each (socket, document address) pair, each receiving its own copy of every broadcast.',
      sources.attachments,
    );
    gauge('imageflow_update_log_backlog', 'Updates accepted but not yet committed.', sources.logBacklog);
    gauge('imageflow_update_log_healthy', '1 while update log writes succeed, 0 while retrying.', () => (sources.logHealthy() ? 1 : 0));
    gauge('imageflow_updates_refused_total', 'Updates refused by the decode guard (yjs#687 and invalid updates).', sources.updatesRefused);
    if (sources.updatesSetAside) {
      gauge('imageflow_updates_set_aside_total', "Updates of a client that moved nodes, set aside until its handshake SyncStep2 carried them (not refused).", sources.updatesSetAside);
    }
    if (sources.published) {
      gauge('imageflow_broadcasts_published_total', 'Document broadcasts sent as native uWebSockets.js publishes (one per topic) instead of one send per connection.', sources.published.broadcasts);
      gauge('imageflow_publish_frames_total', 'Frames published natively: one per topic (document address and protocol) per broadcast.', sources.published.frames);
    }
    if (sources.updatesInline) {
      gauge('imageflow_updates_checked_inline_total', 'Small read-write updates proven harmless by a linear read and applied without the decode worker.', sources.updatesInline);
    }
    if (sources.presenceWrites) {
      gauge('imageflow_presence_writes_total', 'Statements written for presence joins, leaves and activity (batched: a burst of joins costs a few).', sources.presenceWrites);
    }
    if (sources.awarenessOverflows) {
      gauge('imageflow_awareness_overflows_total', 'Connections closed for announcing more awareness clientIDs than MAX_AWARENESS_CLIENTS_PER_CONNECTION.', sources.awarenessOverflows);
    }
    const access = sources.access;
    if (access) {
      gauge('imageflow_access_feed_listening', '1 while this node LISTENs for access changes in PostgreSQL, 0 while reconnecting.', () => (access.feedListening() ? 1 : 0));
      gauge('imageflow_access_feed_connects_total', 'Times the access feed started listening (start-up, then each reconnect, after which every connection is re-checked).', access.feedConnects);
      gauge('imageflow_access_checks_total', 'Access re-checks of open connections the database answered (one per session, user and login session).', access.checks);
      gauge('imageflow_access_changes_applied_total', 'Open connections closed or flipped read-only/read-write by an access re-check.', access.applied);
      gauge('imageflow_access_changes_heard_total', 'Access changes the feed delivered to this node (each drops what the access cache holds about it).', access.changes);
      const cache = access.cache;
      if (cache) {
        gauge('imageflow_access_cache_hits_total', 'Reads of users, login sessions and session access rows answered by the access cache.', cache.hits);
        gauge('imageflow_access_cache_misses_total', 'Reads of users, login sessions and session access rows that went to the database (re-checks always do).', cache.misses);
      }
    }
    const redis = sources.redis;
    if (!redis) return;
    gauge('imageflow_redis_connected', '1 while every Redis connection of this node is ready, 0 while degraded.', () => (redis.healthy() ? 1 : 0));
    gauge('imageflow_redis_anti_entropy_diffs_total', 'Diffs this node sent to peers found behind by the anti-entropy exchange.', redis.diffsSent);
    gauge('imageflow_redis_anti_entropy_deferred_total', "Carried announcements that lacked only this node's updates of the last round, left to the next one.", redis.answersDeferred);
    gauge('imageflow_redis_announcements_alone_total', "Anti-entropy announcements of this node's state sent as messages of their own.", redis.announcementsAlone);
    gauge('imageflow_redis_announcements_carried_total', "Anti-entropy announcements of this node's state carried by a live update of the document (no PUBLISH of their own).", redis.announcementsCarried);
    gauge('imageflow_redis_relayed_logged_total', 'Changes relayed from other nodes (updates, diffs) that this node appended to its own log.', redis.relayedLogged);
    gauge('imageflow_redis_published_total', 'Messages this node published to other nodes (updates, awareness, anti-entropy).', redis.published);
    gauge(
      'imageflow_redis_publishes_lost_total',
      'Publishes that never reached Redis (connection not ready, or failed): left to the anti-entropy round that follows at once.',
      redis.publishesLost,
    );
    gauge(
      'imageflow_redis_dead_peer_presence_removed_total',
      'Awareness states removed because the node that owned them went silent (killed).',
      redis.deadPeerStatesRemoved,
    );
    gauge(
      'imageflow_awareness_claims_refused_total',
      'Awareness states dropped because their clientID is bound to another user (the Redis claim hash).',
      redis.claimsRefused,
    );
  }
}
