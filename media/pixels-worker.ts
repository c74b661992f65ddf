/** A media thread of media/pixel-threads.ts: runs ingest's pixel work (media/pixels.ts) for the event loop. */
import { workerData } from 'node:worker_threads';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import type { ErrorCode } from '../shared/errors.ts';
import { processPixels, type PixelJob } from './pixels.ts';
import { lowerOwnThread, type MediaThreadPolicy } from './thread-priority.ts';

export interface PixelThreadData {
  readonly nice: number;
  readonly policy: MediaThreadPolicy;
}

export type PixelAnswer =
  /** The three variants one after the other in `packed`, `sizes` bytes each (large, medium, small). */
  | { ok: true; packed: Uint8Array; sizes: [number, number, number]; palette: Array<{ color: string; share: number }> }
  | { ok: false; code: ErrorCode; message: string };

// Ingests yield the CPU to the event loop that delivers edits, like the render threads.
const data = workerData as PixelThreadData | undefined;
if (data) lowerOwnThread(data.nice, data.policy);

export default async function pixels(job: PixelJob): Promise<PixelAnswer> {
  try {
    const { variants, palette } = await processPixels(job);
    // sharp's output buffers are external memory that cannot be transferred: the variants are
    // copied once, here, into one buffer that is then moved (not cloned) to the event loop.
    const parts = [variants.large, variants.medium, variants.small];
    const packed = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const part of parts) {
      packed.set(part, at);
      at += part.byteLength;
    }
    const answer: PixelAnswer = { ok: true, packed, sizes: parts.map((p) => p.byteLength) as [number, number, number], palette };
    return move({
      get [transferableSymbol]() {
        return packed.buffer;
      },
      get [valueSymbol]() {
        return answer;
      },
    }) as unknown as PixelAnswer;
  } catch (error) {
    // An error's class and code do not survive the thread boundary: it is answered as data.
    const e = error as { code?: ErrorCode; message?: string };
    return { ok: false, code: e.code ?? 'image_corrupt', message: e.message ?? String(error) };
  }
}
