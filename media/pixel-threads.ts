/**
 * Media threads for ingest's pixel work (media/pixels.ts): piscina's pool of worker threads, at
 * most `threads` at once (the image queue bounds how many ingests run anyway), lowered like the
 * render threads, idle ones ended after a while.
 *
 * Why a thread and not libuv's pool alone: sharp already decodes and encodes off the event loop,
 * but its results land there — the decode of every ingest is a raw buffer of up to 16 MB of
 * external memory on the event loop's heap, and under a render and ingest load that churn made
 * V8 run a full mark-compact of the event loop's heap about once a second (its global limit
 * counts external memory, server/v8-flags.ts). In a media thread the pixels are allocated and
 * collected in that thread's heap; the event loop receives the three variants, moved.
 */
import { Piscina } from 'piscina';
import { AppError } from '../shared/errors.ts';
import type { PixelJob, Processed } from './pixels.ts';
import type { PixelAnswer, PixelThreadData } from './pixels-worker.ts';
import type { MediaThreadPolicy } from './thread-priority.ts';

export interface PixelThreadOptions {
  readonly threads: number;
  readonly nice: number;
  readonly policy: MediaThreadPolicy;
  /** An idle thread ends after this long (a new one starts with the next ingest). */
  readonly idleMs?: number;
}

export class PixelThreads {
  readonly #pool: Piscina;

  constructor(options: PixelThreadOptions) {
    this.#pool = new Piscina({
      filename: new URL('./pixels-worker.ts', import.meta.url).href,
      minThreads: 0,
      maxThreads: options.threads,
      idleTimeout: options.idleMs ?? 30_000,
      workerData: { nice: options.nice, policy: options.policy } satisfies PixelThreadData,
    });
  }

  /** `processPixels` in a media thread: the same result, or the same AppError. */
  async process(job: PixelJob): Promise<Processed> {
    const answer = (await this.#pool.run(job)) as PixelAnswer;
    if (!answer.ok) throw new AppError(answer.code, answer.message);
    const [large, medium] = answer.sizes;
    const { packed } = answer;
    return {
      variants: { large: packed.subarray(0, large), medium: packed.subarray(large, large + medium), small: packed.subarray(large + medium) },
      palette: answer.palette,
    };
  }

  /** Threads running now (metrics, tests). */
  get threads(): number {
    return this.#pool.threads.length;
  }

  close(): Promise<void> {
    return this.#pool.close({ force: true });
  }
}
