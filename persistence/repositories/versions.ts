/**
 * Named queries over `image_versions` and `canvas_layers` (and the two `edit_sessions` columns a
 * snapshot moves: the session's head in the version tree).
 *
 * Concurrency rule for every writer of image_versions: lock the image's `images` row first
 * (`lockImage`, SELECT … FOR UPDATE) in the writing transaction. That serializes the writers of
 * one image, so `nextNumber` (max + 1, read after the lock under READ COMMITTED, i.e. seeing every
 * committed version) is gap-free and distinct, and clearing the old `is_current` before setting
 * the new one never trips idx_versions_one_current. Lock order: image, then session.
 */
import type { Queryable } from '../db.ts';
import type { LayerRowJson } from '../../shared/versions.ts';

export type VersionKind = 'manual' | 'autosave' | 'restore';

/** A version without its canvas (what lists and the tree carry). */
export interface VersionMetaRow {
  version_id: string;
  image_id: string;
  parent_version_id: string | null;
  version_number: number;
  branch_name: string | null;
  created_by: string;
  created_at: Date;
  description: string | null;
  thumbnail_path: string | null;
  file_size: number;
  is_current: boolean;
  session_id: string | null;
  kind: VersionKind;
  restored_from_version_id: string | null;
}

export interface VersionFullRow extends VersionMetaRow {
  canvas_state: unknown;
}

export interface TreeRow extends VersionMetaRow {
  depth: number;
}

/** A canvas_layers row as the database returns it (opacity is NUMERIC: a string). */
export interface LayerRowRaw {
  layer_id: string;
  version_id: string;
  layer_key: string;
  layer_order: number;
  layer_type: string;
  name: string;
  visible: boolean;
  opacity: string;
  blend_mode: string;
  locked: boolean;
  layer_data: unknown;
  transform_matrix: unknown;
  filters: unknown;
  created_at: Date;
}

/** What one canvas_layers row is written from (see server/versions.ts `canvasToLayerRows`). */
export type LayerRowInput = Omit<LayerRowJson, 'createdAt'>;

export interface NewVersion {
  versionId: string;
  imageId: string;
  parentVersionId: string | null;
  versionNumber: number;
  branchName: string | null;
  createdBy: string;
  description: string | null;
  canvasState: unknown;
  fileSize: number;
  sessionId: string | null;
  kind: VersionKind;
  restoredFromVersionId: string | null;
  /** Whether the version becomes the image's current one (see server/versions.ts). */
  isCurrent: boolean;
}

/** The session columns a snapshot reads under lock. */
export interface SessionHeadRow {
  session_id: string;
  image_id: string;
  owner_id: string;
  head_version_id: string | null;
  branch_name: string | null;
  is_active: boolean;
}

const meta = `version_id, image_id, parent_version_id, version_number, branch_name, created_by, created_at,
  description, thumbnail_path, file_size, is_current, session_id, kind, restored_from_version_id`;

export const versionQueries = {
  lockImage: `SELECT image_id, user_id, title FROM images WHERE image_id = $1 FOR UPDATE`,
  touchImage: `UPDATE images SET last_edited_at = now() WHERE image_id = $1`,
  lockSession: `
    SELECT session_id, image_id, owner_id, head_version_id, branch_name, is_active
    FROM edit_sessions WHERE session_id = $1 FOR UPDATE`,
  moveHead: `UPDATE edit_sessions SET head_version_id = $2 WHERE session_id = $1`,
  nextNumber: `SELECT COALESCE(max(version_number), 0) + 1 AS n FROM image_versions WHERE image_id = $1`,
  clearCurrent: `UPDATE image_versions SET is_current = FALSE WHERE image_id = $1 AND is_current`,
  insert: `
    INSERT INTO image_versions (version_id, image_id, parent_version_id, version_number, branch_name, created_by,
                                description, canvas_state, file_size, is_current, session_id, kind,
                                restored_from_version_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $13, $10, $11, $12)
    RETURNING ${meta}`,
  /** All layers of a version in one statement: parallel arrays, JSON columns passed as text. */
  insertLayers: `
    INSERT INTO canvas_layers (layer_id, version_id, layer_key, layer_order, layer_type, name, visible, opacity,
                               blend_mode, locked, layer_data, transform_matrix, filters)
    SELECT t.layer_id, $1, t.layer_key, t.layer_order, t.layer_type, t.name, t.visible, t.opacity,
           t.blend_mode, t.locked, t.layer_data::jsonb, t.transform_matrix::jsonb, t.filters::jsonb
    FROM unnest($2::varchar[], $3::varchar[], $4::int[], $5::varchar[], $6::varchar[], $7::boolean[],
                $8::numeric[], $9::varchar[], $10::boolean[], $11::text[], $12::text[], $13::text[])
      AS t(layer_id, layer_key, layer_order, layer_type, name, visible, opacity, blend_mode, locked,
           layer_data, transform_matrix, filters)`,
  canvasOf: `SELECT canvas_state FROM image_versions WHERE version_id = $1`,
  get: `SELECT ${meta}, canvas_state FROM image_versions WHERE version_id = $1`,
  getMeta: `SELECT ${meta} FROM image_versions WHERE version_id = $1`,
  layers: `
    SELECT layer_id, version_id, layer_key, layer_order, layer_type, name, visible, opacity, blend_mode, locked,
           layer_data, transform_matrix, filters, created_at
    FROM canvas_layers WHERE version_id = $1 ORDER BY layer_order`,
  /**
   * The version tree of an image in one query: a recursive walk from the roots (no parent, or a
   * parent outside the image) down parent_version_id (idx_versions_parent), carrying the depth.
   * A child must have a higher version_number than its parent — always true for rows this server
   * writes (a parent is saved before its child) — which also makes a cycle impossible to follow.
   */
  tree: `
    WITH RECURSIVE tree AS (
      SELECT ${meta}, 0 AS depth
      FROM image_versions v
      WHERE v.image_id = $1 AND (v.parent_version_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM image_versions p WHERE p.version_id = v.parent_version_id AND p.image_id = v.image_id))
      UNION ALL
      SELECT c.version_id, c.image_id, c.parent_version_id, c.version_number, c.branch_name, c.created_by, c.created_at,
             c.description, c.thumbnail_path, c.file_size, c.is_current, c.session_id, c.kind, c.restored_from_version_id,
             t.depth + 1
      FROM image_versions c
      JOIN tree t ON c.parent_version_id = t.version_id
      WHERE c.image_id = t.image_id AND c.version_number > t.version_number
    )
    SELECT * FROM tree ORDER BY version_number`,
  /**
   * Whether `branch_name` $2 of image $1 holds versions saved in sessions someone other than $3
   * owns (or in no session): such a branch is not $3's to continue in a fork.
   */
  branchOfOthers: `
    SELECT 1 FROM image_versions v
    LEFT JOIN edit_sessions s ON s.session_id = v.session_id
    WHERE v.image_id = $1 AND v.branch_name = $2 AND (s.owner_id IS NULL OR s.owner_id <> $3)
    LIMIT 1`,
  /** Whether the user owns or participates in any session on the (non-deleted) image. */
  sessionMember: `
    SELECT 1 FROM edit_sessions s
    JOIN images i ON i.image_id = s.image_id AND NOT i.is_deleted
    WHERE s.image_id = $1 AND (s.owner_id = $2 OR EXISTS (
      SELECT 1 FROM session_participants p WHERE p.session_id = s.session_id AND p.user_id = $2))
    LIMIT 1`,
} as const;

export async function lockImage(tx: Queryable, imageId: string): Promise<{ image_id: string; user_id: string; title: string } | undefined> {
  const { rows } = await tx.query<{ image_id: string; user_id: string; title: string }>(versionQueries.lockImage, [imageId]);
  return rows[0];
}

export async function touchImage(tx: Queryable, imageId: string): Promise<void> {
  await tx.query(versionQueries.touchImage, [imageId]);
}

export async function lockSessionHead(tx: Queryable, sessionId: string): Promise<SessionHeadRow | undefined> {
  const { rows } = await tx.query<SessionHeadRow>(versionQueries.lockSession, [sessionId]);
  return rows[0];
}

export async function moveSessionHead(tx: Queryable, sessionId: string, versionId: string): Promise<void> {
  await tx.query(versionQueries.moveHead, [sessionId, versionId]);
}

/** The next version number of an image; call only while holding `lockImage`. */
export async function nextVersionNumber(tx: Queryable, imageId: string): Promise<number> {
  const { rows } = await tx.query<{ n: number }>(versionQueries.nextNumber, [imageId]);
  return rows[0]!.n;
}

/**
 * Inserts a version. With `isCurrent` it becomes the image's current one (the previous current is
 * cleared first); without, the image's current version stays where it is (a fork's save).
 */
export async function insertVersion(tx: Queryable, v: NewVersion): Promise<VersionMetaRow> {
  if (v.isCurrent) await tx.query(versionQueries.clearCurrent, [v.imageId]);
  const { rows } = await tx.query<VersionMetaRow>(versionQueries.insert, [
    v.versionId,
    v.imageId,
    v.parentVersionId,
    v.versionNumber,
    v.branchName,
    v.createdBy,
    v.description,
    JSON.stringify(v.canvasState),
    v.fileSize,
    v.sessionId,
    v.kind,
    v.restoredFromVersionId,
    v.isCurrent,
  ]);
  return rows[0]!;
}

export async function insertLayers(tx: Queryable, versionId: string, rows: readonly LayerRowInput[]): Promise<void> {
  if (rows.length === 0) return;
  const json = (value: unknown) => (value === undefined || value === null ? null : JSON.stringify(value));
  await tx.query(versionQueries.insertLayers, [
    versionId,
    rows.map((r) => r.layerId),
    rows.map((r) => r.layerKey),
    rows.map((r) => r.layerOrder),
    rows.map((r) => r.layerType),
    rows.map((r) => r.name),
    rows.map((r) => r.visible),
    rows.map((r) => r.opacity),
    rows.map((r) => r.blendMode),
    rows.map((r) => r.locked),
    rows.map((r) => json(r.layerData)),
    rows.map((r) => json(r.transformMatrix)),
    rows.map((r) => json(r.filters)),
  ]);
}

export async function getVersionCanvas(db: Queryable, versionId: string): Promise<unknown> {
  const { rows } = await db.query<{ canvas_state: unknown }>(versionQueries.canvasOf, [versionId]);
  return rows[0]?.canvas_state;
}

export async function getVersionFull(db: Queryable, versionId: string): Promise<VersionFullRow | undefined> {
  const { rows } = await db.query<VersionFullRow>(versionQueries.get, [versionId]);
  return rows[0];
}

export async function getVersionMeta(db: Queryable, versionId: string): Promise<VersionMetaRow | undefined> {
  const { rows } = await db.query<VersionMetaRow>(versionQueries.getMeta, [versionId]);
  return rows[0];
}

export async function getVersionLayers(db: Queryable, versionId: string): Promise<LayerRowRaw[]> {
  const { rows } = await db.query<LayerRowRaw>(versionQueries.layers, [versionId]);
  return rows;
}

export async function versionTree(db: Queryable, imageId: string): Promise<TreeRow[]> {
  const { rows } = await db.query<TreeRow>(versionQueries.tree, [imageId]);
  return rows;
}

export async function isSessionMemberOfImage(db: Queryable, imageId: string, userId: string): Promise<boolean> {
  const { rowCount } = await db.query(versionQueries.sessionMember, [imageId, userId]);
  return (rowCount ?? 0) > 0;
}

export async function isBranchOfOthers(db: Queryable, imageId: string, branchName: string, userId: string): Promise<boolean> {
  const { rowCount } = await db.query(versionQueries.branchOfOthers, [imageId, branchName, userId]);
  return (rowCount ?? 0) > 0;
}
