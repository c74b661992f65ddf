/** Named queries over `image_uploads` (direct uploads awaiting their bytes; migrations/006_image_uploads.sql). */
import type { Queryable } from '../db.ts';

export interface UploadRow {
  upload_id: string;
  user_id: string;
  filename: string;
  mime_type: string;
  file_size: number;
  storage_key: string;
  created_at: Date;
  expires_at: Date;
  status: 'pending' | 'processing' | 'completed' | 'failed';
  image_id: string | null;
}

const COLUMNS = 'upload_id, user_id, filename, mime_type, file_size, storage_key, created_at, expires_at, status, image_id';

export const uploadQueries = {
  insert: `
    INSERT INTO image_uploads (upload_id, user_id, filename, mime_type, file_size, storage_key, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
    RETURNING ${COLUMNS}`,
  get: `SELECT ${COLUMNS} FROM image_uploads WHERE upload_id = $1`,
  /** Claims a pending upload for ingest (one caller wins); undefined if it is not pending. */
  claim: `UPDATE image_uploads SET status = 'processing' WHERE upload_id = $1 AND status = 'pending' RETURNING ${COLUMNS}`,
  release: `UPDATE image_uploads SET status = 'pending' WHERE upload_id = $1 AND status = 'processing'`,
  fail: `UPDATE image_uploads SET status = 'failed' WHERE upload_id = $1`,
  complete: `UPDATE image_uploads SET status = 'completed', image_id = $2 WHERE upload_id = $1`,
  /** A user's expired uploads that were never completed (their bytes, if any, are garbage). */
  expiredOf: `
    SELECT ${COLUMNS} FROM image_uploads
    WHERE user_id = $1 AND status = 'pending' AND expires_at < now()
    ORDER BY expires_at LIMIT $2`,
  remove: `DELETE FROM image_uploads WHERE upload_id = $1 AND status = 'pending'`,
} as const;

export async function insertUpload(
  db: Queryable,
  u: { uploadId: string; userId: string; filename: string; mimeType: string; fileSize: number; storageKey: string; ttlSeconds: number },
): Promise<UploadRow> {
  const { rows } = await db.query<UploadRow>(uploadQueries.insert, [u.uploadId, u.userId, u.filename, u.mimeType, u.fileSize, u.storageKey, u.ttlSeconds]);
  return rows[0]!;
}

export async function getUpload(db: Queryable, uploadId: string): Promise<UploadRow | undefined> {
  const { rows } = await db.query<UploadRow>(uploadQueries.get, [uploadId]);
  return rows[0];
}

export async function claimUpload(db: Queryable, uploadId: string): Promise<UploadRow | undefined> {
  const { rows } = await db.query<UploadRow>(uploadQueries.claim, [uploadId]);
  return rows[0];
}

/** Back to pending (ingest could not run: busy, a timeout, a store failure): the client may retry. */
export async function releaseUpload(db: Queryable, uploadId: string): Promise<void> {
  await db.query(uploadQueries.release, [uploadId]);
}

export async function failUpload(db: Queryable, uploadId: string): Promise<void> {
  await db.query(uploadQueries.fail, [uploadId]);
}

export async function markUploadCompleted(db: Queryable, uploadId: string, imageId: string): Promise<void> {
  await db.query(uploadQueries.complete, [uploadId, imageId]);
}

export async function expiredUploadsOf(db: Queryable, userId: string, limit: number): Promise<UploadRow[]> {
  const { rows } = await db.query<UploadRow>(uploadQueries.expiredOf, [userId, limit]);
  return rows;
}

export async function removeUpload(db: Queryable, uploadId: string): Promise<void> {
  await db.query(uploadQueries.remove, [uploadId]);
}
