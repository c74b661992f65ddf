/** The worker side of renderer/pool.ts: runs renderCanvas, asks the pool for image bytes. */
import { parentPort, workerData } from 'node:worker_threads';
import { AppError } from '../shared/errors.ts';
import { renderCanvas } from './index.ts';
import { setLayerCacheBytes } from './layer-cache.ts';
import { lowerOwnThread } from '../media/thread-priority.ts';
import type { FromWorker, PoolWorkerData, ToWorker } from './pool.ts';
import type { ImageFile } from './types.ts';

const port = parentPort;
if (!port) throw new Error('renderer/pool-worker.ts runs only as a worker thread');
setLayerCacheBytes((workerData as PoolWorkerData).layerCacheBytes);
// Renders yield the CPU to the event loop that delivers edits (media/thread-priority.ts).
lowerOwnThread((workerData as PoolWorkerData).threadNice, (workerData as PoolWorkerData).threadPolicy);

let nextRequest = 1;
const waiting = new Map<number, (bytes: Uint8Array | ImageFile | undefined) => void>();

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'image') {
    waiting.get(msg.request)?.(msg.bytes);
    waiting.delete(msg.request);
    return;
  }
  const id = msg.id;
  const images = (imageId: string) =>
    new Promise<Uint8Array | ImageFile | undefined>((resolve) => {
      const request = nextRequest++;
      waiting.set(request, resolve);
      const ask: FromWorker = { type: 'image', id, request, imageId };
      port.postMessage(ask);
    });
  renderCanvas(msg.canvas, images, msg.options).then(
    (result) => {
      // sharp's output buffers are external memory, which cannot be transferred: copied once,
      // here (a thread that yields to the event loop), into a buffer that is then transferred, so
      // the main thread does not copy megabytes of PNG while it deserialises the message.
      const data = new Uint8Array(result.data.byteLength);
      data.set(result.data);
      const done: FromWorker = { type: 'done', id, result: { ...result, data: data as Buffer } };
      port.postMessage(done, [data.buffer]);
    },
    (err: unknown) => {
      const failed: FromWorker = {
        type: 'error',
        id,
        code: err instanceof AppError ? err.code : undefined,
        message: err instanceof Error ? err.message : String(err),
      };
      port.postMessage(failed);
    },
  );
});
