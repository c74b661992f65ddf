/**
 * Wiring shared by the two places a render worker runs: inside the server (`RENDER_WORKER=inline`,
 * server/app.ts) and on its own (`npm run worker`, worker/main.ts). Both read the same config.
 */
import type { Logger } from 'pino';
import type { Database } from '../persistence/db.ts';
import { RenderPool } from '../renderer/pool.ts';
import type { Config } from '../server/config.ts';
import type { Metrics } from '../server/metrics.ts';
import { RenderCache } from '../server/render-cache.ts';
import { RenderService } from '../server/renders.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { defaultProcessName, RenderWorker, type ThumbnailReadyPayload } from './queue.ts';

/** The render pool of this process: worker threads (the renderer's default count), RENDER_TIMEOUT_MS each. */
export function createRenderPool(config: Config): RenderPool {
  return new RenderPool({ timeoutMs: config.RENDER_TIMEOUT_MS, layerCacheBytes: config.RENDER_LAYER_CACHE_BYTES, threadNice: config.MEDIA_THREAD_NICE, threadPolicy: config.MEDIA_THREAD_POLICY });
}

/** The bound on cached renders and variants of this process (RENDER_CACHE_MAX_BYTES, server/render-cache.ts). */
export function createRenderCache(config: Config, db: Database, blobs: BlobStore, logger: Logger, metrics?: Metrics): RenderCache {
  return new RenderCache({
    db,
    blobs,
    maxBytes: config.RENDER_CACHE_MAX_BYTES,
    logger,
    ...(metrics
      ? {
          onEvicted: (entries: number, bytes: number) => {
            metrics.renderCacheEvicted.inc(entries);
            metrics.renderCacheEvictedBytes.inc(bytes);
          },
        }
      : {}),
  });
}

export function createRenderService(db: Database, blobs: BlobStore, pool: RenderPool, metrics?: Metrics, cache?: RenderCache): RenderService {
  return new RenderService({
    db,
    blobs,
    ...(cache ? { cache } : {}),
    render: (canvas, images, options) => pool.render(canvas, images, options),
    ...(metrics
      ? {
          onRender: (outcome, seconds) => {
            metrics.renders.inc({ outcome });
            metrics.renderSeconds.observe({ outcome }, seconds);
          },
        }
      : {}),
  });
}

export function createRenderWorker(
  config: Config,
  deps: {
    db: Database;
    renders: RenderService;
    logger: Logger;
    name: string;
    metrics?: Metrics;
    onThumbnail?: (payload: ThumbnailReadyPayload) => void;
  },
): RenderWorker {
  const { metrics } = deps;
  return new RenderWorker({
    db: deps.db,
    renders: deps.renders,
    logger: deps.logger,
    sizes: config.THUMBNAIL_SIZES,
    concurrency: config.RENDER_CONCURRENCY,
    sweepMs: config.RENDER_WORKER_SWEEP_MS,
    // Every size rendered at most RENDER_TIMEOUT_MS, plus a minute of slack.
    orphanAfterMs: config.RENDER_TIMEOUT_MS * config.THUMBNAIL_SIZES.length + 60_000,
    processName: defaultProcessName(deps.name),
    ...(metrics ? { onJob: (outcome) => metrics.renderJobs.inc({ outcome }) } : {}),
    ...(deps.onThumbnail ? { onThumbnail: deps.onThumbnail } : {}),
  });
}
