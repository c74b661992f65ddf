/**
 * Worker side of the UpdateGuard: decodes and applies each candidate update to a scratch document
 * holding only the target document's history, content-free (`knownHistory`).
 * Whatever a crafted update makes Yjs do (spin, allocate), it does it here, where the main thread
 * can measure our CPU time, stop us and replace us, instead of in the event loop every client shares.
 *
 * Jobs come in batches; before each job it writes into shared memory which job runs and its CPU
 * clock (the main thread counts the budget from there, so start-up and queueing never count), and
 * it posts the batch's verdicts, with the CPU time each job took, once the batch is done.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as encoding from 'lib0/encoding';
import * as Y from 'yjs';
import { RUNNING_CPU, RUNNING_ID, type GuardBatch, type GuardJob, type GuardReply, type GuardVerdict } from './yjs-guard.ts';

const port = parentPort!;
const shared = (workerData as { shared: SharedArrayBuffer }).shared;
const runningId = new Int32Array(shared);
const runningCpu = new Float64Array(shared);

/** This thread's CPU time in µs (user + system): the same clock `worker.cpuUsage()` reads. */
function cpuMicros(): number {
  const { user, system } = process.threadCpuUsage();
  return user + system;
}

/**
 * The clients whose history `update` refers to: its structs' own clients (a struct integrates only
 * after its client's earlier clocks), their origins' and parents', and its delete set's.
 */
function referencedClients(update: Uint8Array): Set<number> {
  const { structs, ds } = Y.decodeUpdate(update);
  const clients = new Set<number>(ds.clients.keys());
  for (const struct of structs) {
    clients.add(struct.id.client);
    if (!(struct instanceof Y.Item)) continue;
    if (struct.origin) clients.add(struct.origin.client);
    if (struct.rightOrigin) clients.add(struct.rightOrigin.client);
    if (struct.parent instanceof Y.ID) clients.add(struct.parent.client);
  }
  return clients;
}

/**
 * An update of one content-free GC struct per client, covering clocks [0, clock) of `state`: the
 * target document's history as far as the candidate refers to it. Applied first, it lets the
 * candidate integrate (against GC'd neighbours, cheaply) instead of being parked as pending: in an
 * empty document every edit of existing content is pending, and Yjs re-encodes pending structs
 * and deletions with two fresh V2 encoders — 60 % of a check's CPU before (bench finding).
 */
function knownHistory(state: Map<number, number>, clients: Set<number>): Uint8Array {
  const encoder = encoding.createEncoder();
  const known: Array<[number, number]> = [];
  for (const client of clients) {
    const clock = state.get(client) ?? 0;
    if (clock > 0) known.push([client, clock]);
  }
  encoding.writeVarUint(encoder, known.length);
  for (const [client, clock] of known) {
    encoding.writeVarUint(encoder, 1); // structs of this client
    encoding.writeVarUint(encoder, client);
    encoding.writeVarUint(encoder, 0); // first clock
    encoding.writeUint8(encoder, 0); // info: GC
    encoding.writeVarUint(encoder, clock); // its length
  }
  encoding.writeVarUint(encoder, 0); // empty delete set
  return encoding.toUint8Array(encoder);
}

/**
 * Why `doc` (the target's history, then the candidate) holds something pending, or null. What is
 * pending there is what the target document would keep pending: structs whose dependencies it
 * lacks, or deletions of clocks that exist neither in it nor in the update. Once a connection's
 * handshake is done, an honest client only ever refers to what the server sent it or what it sends
 * itself (one ordered socket), so these never refuse an update that would integrate; they refuse
 * deletes of nothing, which cost the main thread as much to decode as real content and would be
 * stored forever. Before the handshake, a client that moved from another node may refer to its own
 * edits still in transit: the update path sets such an update aside (extensions/updates.ts).
 */
function pendingProblem(doc: Y.Doc): string | null {
  const { pendingStructs, pendingDs } = doc.store;
  if (pendingStructs) {
    const [client] = pendingStructs.missing.keys();
    return `the update depends on changes the document does not have (client ${client})`;
  }
  if (pendingDs) {
    const [client] = Y.decodeUpdateV2(pendingDs).ds.clients.keys();
    return `the update deletes changes that exist nowhere (client ${client})`;
  }
  return null;
}

function check({ bytes, stateVector, snapshot }: GuardJob, id: number, start: number): GuardVerdict {
  // A fixed guid: a random one costs ~10x the rest of creating the document (bench finding).
  const doc = new Y.Doc({ guid: 'guard' });
  try {
    if (stateVector) Y.applyUpdate(doc, knownHistory(Y.decodeStateVector(stateVector), referencedClients(bytes)));
    Y.applyUpdate(doc, bytes);
    const problem = stateVector ? pendingProblem(doc) : null;
    if (problem) return { id, ok: false, error: problem, pending: true, cpuMicros: cpuMicros() - start };
    const contained = snapshot ? Y.snapshotContainsUpdate(Y.decodeSnapshot(snapshot), bytes) : null;
    return { id, ok: true, contained, cpuMicros: cpuMicros() - start };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { id, ok: false, error: message, cpuMicros: cpuMicros() - start };
  } finally {
    doc.destroy();
  }
}

port.on('message', ({ jobs }: GuardBatch) => {
  const verdicts: GuardVerdict[] = [];
  for (const job of jobs) {
    const start = cpuMicros();
    runningCpu[RUNNING_CPU] = start;
    Atomics.store(runningId, 0, job.id);
    verdicts.push(check(job, job.id, start));
  }
  Atomics.store(runningId, RUNNING_ID, 0);
  port.postMessage({ verdicts } satisfies GuardReply);
});
