/**
 * Named queries over the durable Yjs update log (`document_updates`) and its per-document summary
 * (`document_states`). `seq` comes from one identity sequence: it orders rows, but Yjs updates
 * commute, so nothing depends on commit order — compaction deletes exactly the rows it merged,
 * never "everything below seq N", so a row committed late by another writer is never lost.
 */
import { prepared, type Queryable } from '../db.ts';

export interface LogRow {
  seq: number;
  kind: 'update' | 'snapshot';
  payload: Uint8Array;
}

export interface AppendRow {
  sessionId: string;
  payload: Uint8Array;
}

export const documentQueries = {
  appendMany: prepared(
    'append_updates',
    `INSERT INTO document_updates (session_id, kind, payload, node_id)
    SELECT s, 'update', p, $3 FROM unnest($1::varchar[], $2::bytea[]) AS t(s, p)`,
  ),
  appendSnapshot: `
    INSERT INTO document_updates (session_id, kind, payload, node_id) VALUES ($1, 'snapshot', $2, $3)
    RETURNING seq`,
  load: `SELECT seq, kind, payload FROM document_updates WHERE session_id = $1 ORDER BY seq`,
  countUpdates: `SELECT count(*)::int AS n FROM document_updates WHERE session_id = $1 AND kind = 'update'`,
  deleteSeqs: `DELETE FROM document_updates WHERE session_id = $1 AND seq = ANY($2::bigint[])`,
  lockDocument: `SELECT pg_advisory_xact_lock(hashtextextended('document:' || $1, 0))`,
  upsertState: `
    INSERT INTO document_states (session_id, last_seq, snapshot_seq, byte_size, update_count, compacted_at, updated_at)
    VALUES ($1, $2, $2, $3, 0, now(), now())
    ON CONFLICT (session_id) DO UPDATE SET
      last_seq = GREATEST(document_states.last_seq, EXCLUDED.last_seq),
      snapshot_seq = EXCLUDED.snapshot_seq, byte_size = EXCLUDED.byte_size,
      update_count = 0, compacted_at = now(), updated_at = now()`,
} as const;

const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

export async function appendUpdates(db: Queryable, rows: readonly AppendRow[], nodeId: string): Promise<void> {
  await db.query(documentQueries.appendMany, [rows.map((r) => r.sessionId), rows.map((r) => toBuffer(r.payload)), nodeId]);
}

export async function appendSnapshot(db: Queryable, sessionId: string, state: Uint8Array, nodeId: string): Promise<number> {
  const { rows } = await db.query<{ seq: number }>(documentQueries.appendSnapshot, [sessionId, toBuffer(state), nodeId]);
  return rows[0]!.seq;
}

export async function loadLog(db: Queryable, sessionId: string): Promise<LogRow[]> {
  const { rows } = await db.query<LogRow>(documentQueries.load, [sessionId]);
  return rows;
}

/** The document's rows of kind `update` (not merged into a snapshot yet). */
export async function countUpdates(db: Queryable, sessionId: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(documentQueries.countUpdates, [sessionId]);
  return rows[0]?.n ?? 0;
}

export async function deleteSeqs(db: Queryable, sessionId: string, seqs: readonly number[]): Promise<void> {
  await db.query(documentQueries.deleteSeqs, [sessionId, seqs]);
}

/** Serializes compactions of one document across every node sharing the database. */
export async function lockDocument(tx: Queryable, sessionId: string): Promise<void> {
  await tx.query(documentQueries.lockDocument, [sessionId]);
}

export async function recordCompaction(tx: Queryable, sessionId: string, snapshotSeq: number, byteSize: number): Promise<void> {
  await tx.query(documentQueries.upsertState, [sessionId, snapshotSeq, byteSize]);
}
