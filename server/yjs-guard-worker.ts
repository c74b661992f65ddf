/**
 * Worker side of the UpdateGuard: decodes and applies each candidate update to an empty document.
 * Whatever a crafted update makes Yjs do (spin, allocate), it does it here, where the main thread
 * can measure our CPU time, stop us and replace us, instead of in the event loop every client shares.
 *
 * Per job it posts `{id, started}` first (the CPU budget is counted from there, so start-up and
 * queueing never count), then the verdict with the CPU time the job took.
 */
import { parentPort } from 'node:worker_threads';
import * as Y from 'yjs';
import type { GuardJob, GuardReply } from './yjs-guard.ts';

const port = parentPort!;

/** This thread's CPU time in µs (user + system): the same clock `worker.cpuUsage()` reads. */
function cpuMicros(): number {
  const { user, system } = process.threadCpuUsage();
  return user + system;
}

/**
 * Why `update`, applied to a document whose state vector is `state`, would leave something
 * pending there (structs whose dependencies the document lacks, or deletions of clocks that exist
 * neither in the document nor in the update), or null. `doc` has the update applied to an empty
 * document, so what it holds pending is what the update needs from elsewhere. An honest client
 * only ever refers to what the server sent it or what it sends itself (one ordered socket), so
 * these conditions never refuse an update that would integrate; they refuse deletes of nothing,
 * which cost the main thread as much to decode as real content and would be stored forever.
 */
function pendingProblem(doc: Y.Doc, state: Map<number, number>): string | null {
  const { pendingStructs, pendingDs } = doc.store;
  if (pendingStructs) {
    for (const [client, clock] of pendingStructs.missing) {
      // Yjs retries a pending struct once the client's state passes `clock`.
      if ((state.get(client) ?? 0) <= clock) return `the update depends on changes the document does not have (client ${client})`;
    }
  }
  if (!pendingDs) return null;
  const known = new Map(state);
  const raise = (client: number, clock: number) => known.set(client, Math.max(known.get(client) ?? 0, clock));
  for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVector(doc))) raise(client, clock);
  if (pendingStructs) for (const [client, clock] of Y.parseUpdateMetaV2(pendingStructs.update).to) raise(client, clock);
  for (const [client, ranges] of Y.decodeUpdateV2(pendingDs).ds.clients) {
    const end = known.get(client) ?? 0;
    for (const range of ranges) {
      if (range.clock + range.len > end) return `the update deletes changes that exist nowhere (client ${client})`;
    }
  }
  return null;
}

port.postMessage({ ready: true } satisfies GuardReply);

port.on('message', ({ id, bytes, stateVector, snapshot }: GuardJob) => {
  const start = cpuMicros();
  port.postMessage({ id, started: true, cpuMicros: start } satisfies GuardReply);
  // A fixed guid: a random one costs ~10x the rest of creating the document (bench finding).
  const doc = new Y.Doc({ guid: 'guard' });
  try {
    Y.applyUpdate(doc, bytes);
    const problem = stateVector ? pendingProblem(doc, Y.decodeStateVector(stateVector)) : null;
    if (problem) {
      port.postMessage({ id, ok: false, error: problem, cpuMicros: cpuMicros() - start } satisfies GuardReply);
      return;
    }
    const contained = snapshot ? Y.snapshotContainsUpdate(Y.decodeSnapshot(snapshot), bytes) : null;
    port.postMessage({ id, ok: true, contained, cpuMicros: cpuMicros() - start } satisfies GuardReply);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    port.postMessage({ id, ok: false, error: message, cpuMicros: cpuMicros() - start } satisfies GuardReply);
  } finally {
    doc.destroy();
  }
});
