/**
 * Scenario 3, durability: right after the last acknowledgement of scenario 1, with its client
 * still connected, the server gets SIGKILL (no shutdown code runs). A new server process on the
 * same database then serves the document to a new client, which counts the acknowledged edits
 * that survived.
 */
import { connectSynced, type BenchClient } from '../lib/clients.ts';
import type { ServerChild } from '../lib/child.ts';
import type { Target } from '../lib/targets.ts';
import { ACK_MAP, ackKey } from './ack.ts';

export interface DurabilityResult {
  acknowledged: number;
  surviving: number;
  /** Milliseconds from SIGKILL to the restarted server listening. */
  restartMs: number;
}

export async function runDurability(
  target: Target,
  server: ServerChild,
  ack: { documentName: string; client: BenchClient; edits: number },
): Promise<{ result: DurabilityResult; server: ServerChild }> {
  // Kill first, then drop the client: a client leaving would make stock Hocuspocus store at once.
  const t0 = performance.now();
  await server.kill9();
  ack.client.destroy();
  const restarted = await target.start();
  const restartMs = performance.now() - t0;
  const reader = await connectSynced(restarted.wsUrl, ack.documentName, target.token());
  try {
    const map = reader.doc.getMap(ACK_MAP);
    let surviving = 0;
    for (let i = 0; i < ack.edits; i += 1) if (map.get(ackKey(i)) === i) surviving += 1;
    return { result: { acknowledged: ack.edits, surviving, restartMs }, server: restarted };
  } finally {
    reader.destroy();
  }
}
