/**
 * Worker side of the UpdateGuard: decodes and applies each candidate update to an empty document.
 * Whatever a crafted update makes Yjs do (spin, allocate), it does it here, where the main thread
 * can time it out and terminate us, instead of in the event loop every client shares.
 */
import { parentPort } from 'node:worker_threads';
import * as Y from 'yjs';

// Start-up (loading Yjs) does not count against the first update's budget.
parentPort!.postMessage({ ready: true });

parentPort!.on('message', ({ id, bytes }: { id: number; bytes: Uint8Array }) => {
  // A fixed guid: a random one costs ~10x the rest of creating the document (bench finding).
  const doc = new Y.Doc({ guid: 'guard' });
  try {
    Y.applyUpdate(doc, bytes);
    parentPort!.postMessage({ id, ok: true });
  } catch (error) {
    parentPort!.postMessage({ id, ok: false, error: error instanceof Error ? error.message : String(error) });
  } finally {
    doc.destroy();
  }
});
