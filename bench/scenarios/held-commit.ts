/**
 * Scenario 3b, acknowledgement vs commit: the kill -9 of scenario 3 lands after the last commit
 * finished, so it cannot tell "acknowledged after the commit" from "acknowledged just before it".
 * Here the commit is held back on purpose: another connection locks the server's storage table
 * (SHARE ROW EXCLUSIVE: reads go on, INSERT/UPDATE wait), one edit is made, and we watch whether
 * it is acknowledged. Then the server is killed, the statement it left waiting is cancelled
 * (pg_terminate_backend: it never commits, as if the crash came a moment earlier), the lock is
 * released, and a restarted server is asked whether the edit exists.
 *
 * An acknowledgement that means "committed" cannot arrive while the commit is held.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { allAcknowledged, connectSynced, withTimeout } from '../lib/clients.ts';
import type { ServerChild } from '../lib/child.ts';
import type { BenchDatabase } from '../lib/database.ts';
import type { Target } from '../lib/targets.ts';

export interface HeldCommitResult {
  table: string;
  /** Acknowledged while its write could not commit. */
  acknowledged: boolean;
  ackMs: number | null;
  /** Present after kill -9 and restart. */
  survived: boolean;
  /** Statements of the server found waiting on the lock (what the kill interrupted). */
  waitingStatements: number;
}

const HOLD_MS = 2_000;

export async function runHeldCommit(
  target: Target,
  server: ServerChild,
  db: BenchDatabase,
): Promise<{ result: HeldCommitResult; server: ServerChild }> {
  const [documentName] = await target.newDocuments(server, 1);
  if (!documentName) throw new Error('no document');
  const table = target.storageTable;
  const client = await connectSynced(server.wsUrl, documentName, target.token());
  const locker = await db.pool.connect();
  let locked = false;
  try {
    client.doc.getMap('held').set('warm', 1);
    await withTimeout(allAcknowledged(client.provider), 10_000, 'warm-up acknowledgement');
    await sleep(300); // nothing of ours in flight any more

    const lockerPid = (await locker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    await locker.query('BEGIN');
    locked = true;
    await locker.query(`LOCK TABLE ${table} IN SHARE ROW EXCLUSIVE MODE`);

    const t0 = performance.now();
    client.doc.getMap('held').set('probe', 42);
    let ackMs: number | null = null;
    try {
      await withTimeout(allAcknowledged(client.provider), HOLD_MS, 'acknowledgement');
      ackMs = performance.now() - t0;
    } catch {
      // not acknowledged while the commit is held: what "acknowledged = committed" requires
    }
    await sleep(100);

    await server.kill9();
    const { rows } = await db.admin.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> $2",
      [db.name, lockerPid],
    );
    for (const { pid } of rows) await db.admin.query('SELECT pg_terminate_backend($1)', [pid]);
    await locker.query('ROLLBACK');
    locked = false;
    client.destroy();

    const restarted = await target.start();
    const reader = await connectSynced(restarted.wsUrl, documentName, target.token());
    try {
      const survived = reader.doc.getMap('held').get('probe') === 42;
      return {
        result: { table, acknowledged: ackMs !== null, ackMs, survived, waitingStatements: rows.length },
        server: restarted,
      };
    } finally {
      reader.destroy();
    }
  } finally {
    if (locked) await locker.query('ROLLBACK');
    locker.release();
    client.destroy();
  }
}
