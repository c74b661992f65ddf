/** Named queries over `images` and `image_versions`. */
import type { Queryable } from '../db.ts';

export interface ImageRow {
  image_id: string;
  user_id: string;
  title: string;
  width: number;
  height: number;
  privacy_level: 'public' | 'followers' | 'private';
  is_deleted: boolean;
}

export interface VersionRow {
  version_id: string;
  image_id: string;
  parent_version_id: string | null;
  version_number: number;
  branch_name: string | null;
  canvas_state: unknown;
  is_current: boolean;
}

export const imageQueries = {
  get: `
    SELECT image_id, user_id, title, width, height, privacy_level, is_deleted
    FROM images WHERE image_id = $1`,
  /**
   * The seed's images_view_policy for one viewer (the app connects as table owner, so RLS does not
   * apply to it): public images, your own, and `followers` images of people you follow. As in
   * migration 001's policy, `private` means owner-only (the seed's text let followers see those too).
   */
  visibleTo: `
    SELECT 1 FROM images i
    WHERE i.image_id = $1 AND NOT i.is_deleted AND (
      i.privacy_level = 'public' OR i.user_id = $2 OR (i.privacy_level = 'followers' AND EXISTS (
        SELECT 1 FROM follows f WHERE f.follower_id = $2 AND f.following_id = i.user_id)))`,
  /** Of the ids $1, those visible to $2 (the same rule as `visibleTo`, for many images at once). */
  visibleAmong: `
    SELECT i.image_id FROM images i
    WHERE i.image_id = ANY($1::varchar[]) AND NOT i.is_deleted AND (
      i.privacy_level = 'public' OR i.user_id = $2 OR (i.privacy_level = 'followers' AND EXISTS (
        SELECT 1 FROM follows f WHERE f.follower_id = $2 AND f.following_id = i.user_id)))`,
  insert: `
    INSERT INTO images (image_id, user_id, title, filename, mime_type, file_size, width, height,
                        storage_path, thumbnail_paths, privacy_level)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
  currentVersion: `
    SELECT version_id, image_id, parent_version_id, version_number, branch_name, canvas_state, is_current
    FROM image_versions WHERE image_id = $1 AND is_current`,
  version: `
    SELECT version_id, image_id, parent_version_id, version_number, branch_name, canvas_state, is_current
    FROM image_versions WHERE version_id = $1`,
} as const;

export async function getImage(db: Queryable, imageId: string): Promise<ImageRow | undefined> {
  const { rows } = await db.query<ImageRow>(imageQueries.get, [imageId]);
  return rows[0];
}

export async function isImageVisibleTo(db: Queryable, imageId: string, userId: string): Promise<boolean> {
  const { rowCount } = await db.query(imageQueries.visibleTo, [imageId, userId]);
  return (rowCount ?? 0) > 0;
}

/** Which of `imageIds` are visible to `userId` (images_view_policy); unknown ids are simply absent. */
export async function visibleImageIds(db: Queryable, imageIds: readonly string[], userId: string): Promise<Set<string>> {
  if (imageIds.length === 0) return new Set();
  const { rows } = await db.query<{ image_id: string }>(imageQueries.visibleAmong, [imageIds, userId]);
  return new Set(rows.map((r) => r.image_id));
}

/** What every new `images` row needs. */
export interface NewImage {
  imageId: string;
  userId: string;
  title: string;
  filename: string;
  mimeType: string;
  fileSize: number;
  width: number;
  height: number;
  storagePath: string;
  privacyLevel?: ImageRow['privacy_level'];
}

export async function insertImage(db: Queryable, image: NewImage): Promise<void> {
  await db.query(imageQueries.insert, [
    image.imageId,
    image.userId,
    image.title,
    image.filename,
    image.mimeType,
    image.fileSize,
    image.width,
    image.height,
    image.storagePath,
    JSON.stringify({}),
    image.privacyLevel ?? 'private',
  ]);
}

export async function getCurrentVersion(db: Queryable, imageId: string): Promise<VersionRow | undefined> {
  const { rows } = await db.query<VersionRow>(imageQueries.currentVersion, [imageId]);
  return rows[0];
}

export async function getVersion(db: Queryable, versionId: string): Promise<VersionRow | undefined> {
  const { rows } = await db.query<VersionRow>(imageQueries.version, [versionId]);
  return rows[0];
}

/** The whole `images` row, as ingest writes it and `GET /api/images/:id` reads it. */
export interface ImageRecord {
  image_id: string;
  user_id: string;
  title: string;
  description: string | null;
  filename: string;
  mime_type: string;
  file_size: number;
  width: number;
  height: number;
  storage_path: string;
  thumbnail_paths: Record<string, string>;
  privacy_level: 'public' | 'followers' | 'private';
  is_deleted: boolean;
  uploaded_at: Date;
  last_edited_at: Date | null;
  metadata: Record<string, unknown>;
  color_palette: Array<{ color: string; share: number }> | null;
  view_count: number;
}

const IMAGE_COLUMNS = `image_id, user_id, title, description, filename, mime_type, file_size, width, height, storage_path,
  thumbnail_paths, privacy_level, is_deleted, uploaded_at, last_edited_at, metadata, color_palette, view_count`;

export const ingestQueries = {
  insert: `
    INSERT INTO images (image_id, user_id, title, filename, mime_type, file_size, width, height,
                        storage_path, thumbnail_paths, privacy_level, metadata, color_palette)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12::jsonb, $13::jsonb)
    RETURNING ${IMAGE_COLUMNS}`,
  /** One image for one viewer: the row only if images_view_policy lets them see it (see visibleTo). */
  visibleRecord: `
    SELECT ${IMAGE_COLUMNS} FROM images i
    WHERE i.image_id = $1 AND NOT i.is_deleted AND (
      i.privacy_level = 'public' OR i.user_id = $2 OR (i.privacy_level = 'followers' AND EXISTS (
        SELECT 1 FROM follows f WHERE f.follower_id = $2 AND f.following_id = i.user_id)))`,
} as const;

export async function insertIngestedImage(
  db: Queryable,
  image: NewImage & {
    thumbnailPaths: Record<string, string>;
    privacyLevel: ImageRow['privacy_level'];
    metadata: Record<string, unknown>;
    colorPalette: Array<{ color: string; share: number }>;
  },
): Promise<ImageRecord> {
  const { rows } = await db.query<ImageRecord>(ingestQueries.insert, [
    image.imageId,
    image.userId,
    image.title,
    image.filename,
    image.mimeType,
    image.fileSize,
    image.width,
    image.height,
    image.storagePath,
    JSON.stringify(image.thumbnailPaths),
    image.privacyLevel,
    JSON.stringify(image.metadata),
    JSON.stringify(image.colorPalette),
  ]);
  return rows[0]!;
}

/** The image row if `viewerId` may see it (images_view_policy), else undefined. */
export async function getVisibleImage(db: Queryable, imageId: string, viewerId: string): Promise<ImageRecord | undefined> {
  const { rows } = await db.query<ImageRecord>(ingestQueries.visibleRecord, [imageId, viewerId]);
  return rows[0];
}
