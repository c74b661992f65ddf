/**
 * Worker side of `MergeWorker` (persistence/merge.ts): applies one document's log rows, in order, to
 * a fresh Y.Doc and answers with its encoded state. The rows arrive as one transferred buffer and
 * their lengths; the state goes back transferred too.
 */
import { parentPort } from 'node:worker_threads';
import * as Y from 'yjs';
import type { MergeJob, MergeReply } from './merge.ts';

const port = parentPort!;

port.on('message', ({ id, bytes, lengths }: MergeJob) => {
  const doc = new Y.Doc();
  try {
    const all = new Uint8Array(bytes);
    doc.transact(() => {
      let at = 0;
      for (const length of lengths) {
        Y.applyUpdate(doc, all.subarray(at, at + length));
        at += length;
      }
    });
    const state = Y.encodeStateAsUpdate(doc);
    // Its own buffer (not a view into a larger one), so it transfers whole.
    const out = state.byteOffset === 0 && state.byteLength === state.buffer.byteLength ? state : state.slice();
    port.postMessage({ id, state: out.buffer as ArrayBuffer } satisfies MergeReply, [out.buffer as ArrayBuffer]);
  } catch (error) {
    port.postMessage({ id, error: error instanceof Error ? error.message : String(error) } satisfies MergeReply);
  } finally {
    doc.destroy();
  }
});
