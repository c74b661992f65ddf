/**
 * Versions: snapshots of an edit session's canvas, the branching version tree, and diffs.
 *
 * Pure parts (unit-tested without a database): `canvasToLayerRows` (canvas → canvas_layers rows),
 * `diffCanvases`, `sameContent`, `buildTree`, the JSON mappers. I/O parts: `recordVersion` (the
 * snapshot transaction) and the readers behind the HTTP routes. The live-document side — reading
 * the Yjs document, autosave, restore, the stateless message — is server/extensions/snapshots.ts.
 *
 * Rules (README "Versions"):
 * - A snapshot is one transaction: lock the image row, lock the session row, next version_number
 *   (max + 1 under the image lock: distinct and gap-free per image however many sessions save at
 *   once), one image_versions row whose parent is the session's head and whose branch is the
 *   session's branch, one canvas_layers row per layer, the session's head moves to it, the
 *   image's last_edited_at, one activities row, notifications.
 * - is_current: the most recently saved version in a session the image's owner started is the
 *   image's current one, whichever branch it is on (so the owner's next session without
 *   `fromVersionId` continues from the latest work). Saving such a version clears the previous
 *   current in the same transaction. Reading is not writing: a version saved in a session someone
 *   else started (a fork: the session owner may see the image but does not own it) never becomes
 *   current, whoever saves it — the image's owner let no one into that session.
 * - canvas_state is the canvas exactly as the document held it (validated by `canvasSchema`);
 *   canvas_layers is derived from it: layer_key = the layer's id in the canvas, layer_id a fresh
 *   id per row, layer_order = position bottom to top (0-based; by `order`, ties by id), opacity
 *   rounded to the column's two decimals. Loading a version reads canvas_state, so nothing is lost.
 * - file_size = bytes of the UTF-8 JSON of canvas_state.
 */
import { AppError } from '../shared/errors.ts';
import { canvasError, jsonEqual, parseCanvas, type Canvas, type Layer } from '../shared/canvas.ts';
import { newId, newLayerId, newVersionId } from '../shared/ids.ts';
import { layersInOrder } from '../shared/layers.ts';
import type {
  CanvasDiffJson,
  LayerChangeJson,
  LayerRowJson,
  TreeNodeJson,
  VersionDetailJson,
  VersionDiffJson,
  VersionJson,
  VersionTreeJson,
} from '../shared/versions.ts';
import type { Database, Queryable } from '../persistence/db.ts';
import { getImage, isImageVisibleTo } from '../persistence/repositories/images.ts';
import { assertCanvasImagesVisible } from './image-access.ts';
import { getSession } from '../persistence/repositories/sessions.ts';
import {
  actorDisplayName,
  insertActivity,
  insertNotifications,
  sessionMembersExcept,
} from '../persistence/repositories/activities.ts';
import {
  getVersionCanvas,
  getVersionFull,
  getVersionLayers,
  getVersionMeta,
  insertVersion,
  insertLayers,
  isSessionMemberOfImage,
  lockImage,
  lockSessionHead,
  moveSessionHead,
  nextVersionNumber,
  touchImage,
  versionTree,
  type LayerRowInput,
  type LayerRowRaw,
  type TreeRow,
  type VersionKind,
  type VersionMetaRow,
} from '../persistence/repositories/versions.ts';
import { enqueueRender } from '../persistence/repositories/renders.ts';

// ---------------------------------------------------------------------------------------------
// Pure: validation, rows, diff, tree, JSON
// ---------------------------------------------------------------------------------------------

/** Validates a canvas read from a document; throws `invalid_canvas` naming each bad layer and field. */
export function validateCanvas(raw: unknown): Canvas {
  const parsed = parseCanvas(raw);
  if (parsed.ok) return parsed.canvas;
  throw invalidCanvas(parsed.issues);
}

/** The `invalid_canvas` error naming each bad layer and field (shared/canvas.ts `canvasError`). */
export const invalidCanvas = canvasError;

/** canvas_layers.opacity is DECIMAL(3,2). */
export const roundOpacity = (opacity: number) => Math.round(opacity * 100) / 100;

/** The canvas_layers rows of a canvas, bottom to top. `newRowId` makes each row's layer_id. */
export function canvasToLayerRows(canvas: Canvas, newRowId: () => string = newLayerId): LayerRowInput[] {
  return layersInOrder(canvas.layers).map(([layerKey, layer], position) => ({
    layerId: newRowId(),
    layerKey,
    layerOrder: position,
    layerType: layer.type,
    name: layer.name,
    visible: layer.visible,
    opacity: roundOpacity(layer.opacity),
    blendMode: layer.blendMode,
    locked: layer.locked,
    layerData: layer.data,
    transformMatrix: layer.transform,
    filters: layer.filters,
  }));
}

export const canvasFileSize = (canvas: Canvas) => Buffer.byteLength(JSON.stringify(canvas), 'utf8');

/**
 * Whether two canvases hold the same content. `meta.baseVersionId` is left out: it says which
 * version a document was seeded from, not what it shows, so a document loaded from version V and
 * left unchanged has the same content as V.
 */
export function sameContent(a: unknown, b: Canvas): boolean {
  if (typeof a !== 'object' || a === null) return false;
  const { meta: aMeta, layers: aLayers } = a as { meta?: Record<string, unknown>; layers?: unknown };
  const { baseVersionId: _a, ...aRest } = aMeta ?? {};
  const { baseVersionId: _b, ...bRest } = b.meta;
  return jsonEqual(aRest, bRest) && jsonEqual(aLayers, b.layers);
}

/** Layers added, removed and changed (with the fields that changed) from canvas `a` to `b`. */
export function diffCanvases(a: Canvas, b: Canvas): CanvasDiffJson {
  const meta: CanvasDiffJson['meta'] = [];
  for (const field of new Set([...Object.keys(a.meta), ...Object.keys(b.meta)])) {
    const before = (a.meta as Record<string, unknown>)[field];
    const after = (b.meta as Record<string, unknown>)[field];
    if (!jsonEqual(before, after)) meta.push({ field, before: before ?? null, after: after ?? null });
  }
  const added: CanvasDiffJson['added'] = [];
  const changed: LayerChangeJson[] = [];
  let unchanged = 0;
  for (const [layerId, layer] of layersInOrder(b.layers)) {
    const old = a.layers[layerId];
    if (!old) {
      added.push({ layerId, layer });
      continue;
    }
    const fields = changedFields(old, layer);
    if (fields.length === 0) {
      unchanged += 1;
      continue;
    }
    const pick = (l: Layer) => Object.fromEntries(fields.map((f) => [f, (l as Record<string, unknown>)[f] ?? null]));
    changed.push({ layerId, fields, before: pick(old), after: pick(layer) });
  }
  const removed = layersInOrder(a.layers)
    .filter(([layerId]) => !(layerId in b.layers))
    .map(([layerId, layer]) => ({ layerId, layer }));
  return { meta, added, removed, changed, unchanged };
}

function changedFields(a: Layer, b: Layer): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => !jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

export function versionJson(v: VersionMetaRow): VersionJson {
  return {
    versionId: v.version_id,
    imageId: v.image_id,
    parentVersionId: v.parent_version_id,
    versionNumber: v.version_number,
    branchName: v.branch_name,
    createdBy: v.created_by,
    createdAt: v.created_at.toISOString(),
    description: v.description,
    thumbnailPath: v.thumbnail_path,
    fileSize: v.file_size,
    isCurrent: v.is_current,
    sessionId: v.session_id,
    kind: v.kind,
    restoredFromVersionId: v.restored_from_version_id,
  };
}

export function layerRowJson(r: LayerRowRaw): LayerRowJson {
  return {
    layerId: r.layer_id,
    layerKey: r.layer_key,
    layerOrder: r.layer_order,
    layerType: r.layer_type,
    name: r.name,
    visible: r.visible,
    opacity: Number(r.opacity),
    blendMode: r.blend_mode,
    locked: r.locked,
    layerData: r.layer_data,
    transformMatrix: r.transform_matrix,
    filters: r.filters,
    createdAt: r.created_at.toISOString(),
  };
}

/** The tree JSON from the recursive query's rows (children listed by version number). */
export function buildTree(imageId: string, rows: readonly TreeRow[]): VersionTreeJson {
  const children = new Map<string, string[]>();
  for (const row of rows) {
    if (row.depth === 0 || row.parent_version_id === null) continue;
    const list = children.get(row.parent_version_id) ?? [];
    list.push(row.version_id);
    children.set(row.parent_version_id, list);
  }
  const versions: TreeNodeJson[] = rows.map((row) => ({
    ...versionJson(row),
    depth: row.depth,
    childVersionIds: children.get(row.version_id) ?? [],
  }));
  return {
    imageId,
    currentVersionId: rows.find((r) => r.is_current)?.version_id ?? null,
    rootVersionIds: rows.filter((r) => r.depth === 0).map((r) => r.version_id),
    versions,
  };
}

// ---------------------------------------------------------------------------------------------
// The snapshot transaction
// ---------------------------------------------------------------------------------------------

/**
 * Whether a version saved in a session becomes its image's current version: only in a session the
 * image's owner started, where every saver is the owner or someone the owner let in. Any other
 * session on the image is a fork (README "Who may do what").
 */
export function movesCurrentVersion(s: { sessionOwnerId: string; imageOwnerId: string }): boolean {
  return s.sessionOwnerId === s.imageOwnerId;
}

export interface RecordVersionInput {
  sessionId: string;
  /** Who saves; null = the session's owner (an autosave with no known editor). */
  userId: string | null;
  canvas: Canvas;
  description: string | null;
  kind: VersionKind;
  restoredFromVersionId?: string | null;
  /** Record nothing (return null) when the canvas has the same content as the session's head. */
  onlyIfChanged?: boolean;
}

export interface RecordedVersion {
  version: VersionMetaRow;
  layerCount: number;
  /** Who got a notification. */
  notified: string[];
}

/** Writes one version of a session's canvas (see the rules at the top of this file). */
export async function recordVersion(db: Database, input: RecordVersionInput): Promise<RecordedVersion | null> {
  const session = await getSession(db, input.sessionId);
  if (!session) throw new AppError('session_not_found');
  if (input.canvas.meta.imageId !== session.image_id) {
    throw invalidCanvas([{ layerId: null, field: 'meta.imageId', message: `must be the session's image ${session.image_id}` }]);
  }
  // Every save path ends here: a canvas may only name images the session's owner may see.
  await assertCanvasImagesVisible(db, input.canvas, session.owner_id);
  return db.transaction(async (tx) => {
    const image = await lockImage(tx, session.image_id);
    if (!image) throw new AppError('image_not_found');
    const head = await lockSessionHead(tx, input.sessionId);
    if (!head) throw new AppError('session_not_found');
    if (input.onlyIfChanged && head.head_version_id) {
      if (sameContent(await getVersionCanvas(tx, head.head_version_id), input.canvas)) return null;
    }
    const createdBy = input.userId ?? head.owner_id;
    const versionNumber = await nextVersionNumber(tx, image.image_id);
    const version = await insertVersion(tx, {
      versionId: newVersionId(),
      imageId: image.image_id,
      parentVersionId: head.head_version_id,
      versionNumber,
      branchName: head.branch_name,
      createdBy,
      description: input.description,
      canvasState: input.canvas,
      fileSize: canvasFileSize(input.canvas),
      sessionId: input.sessionId,
      kind: input.kind,
      restoredFromVersionId: input.restoredFromVersionId ?? null,
      isCurrent: movesCurrentVersion({ sessionOwnerId: head.owner_id, imageOwnerId: image.user_id }),
    });
    const rows = canvasToLayerRows(input.canvas);
    await insertLayers(tx, version.version_id, rows);
    await moveSessionHead(tx, input.sessionId, version.version_id);
    await touchImage(tx, image.image_id);
    // The thumbnail job commits with the version or not at all (worker/queue.ts).
    await enqueueRender(tx, version.version_id);
    const notified = await recordActivity(tx, { version, actorId: createdBy, imageTitle: image.title });
    return { version, layerCount: rows.length, notified };
  });
}

/**
 * The seed's activity feed and notifications for a saved version. Every version writes one
 * `activities` row (actor = who saved, target = the version; `version_saved`, or
 * `version_restored` for a restore). Manual saves and restores also notify the session's owner
 * and participants other than the actor; autosaves do not (they happen every quiet period and
 * tell the people in the session nothing new).
 */
async function recordActivity(
  tx: Queryable,
  { version, actorId, imageTitle }: { version: VersionMetaRow; actorId: string; imageTitle: string },
): Promise<string[]> {
  const restored = version.kind === 'restore';
  const type = restored ? 'version_restored' : 'version_saved';
  const details = {
    imageId: version.image_id,
    sessionId: version.session_id,
    versionId: version.version_id,
    versionNumber: version.version_number,
    parentVersionId: version.parent_version_id,
    branchName: version.branch_name,
    kind: version.kind,
    description: version.description,
    ...(restored ? { restoredFromVersionId: version.restored_from_version_id } : {}),
  };
  await insertActivity(tx, {
    activityId: newId('activity'),
    actorId,
    activityType: type,
    targetType: 'image_version',
    targetId: version.version_id,
    metadata: details,
  });
  if (version.kind === 'autosave' || !version.session_id) return [];
  const recipients = await sessionMembersExcept(tx, version.session_id, actorId);
  if (recipients.length === 0) return [];
  const actor = (await actorDisplayName(tx, actorId)) ?? 'Someone';
  let message = `${actor} saved version ${version.version_number} of “${imageTitle}”.`;
  if (restored) {
    const from = version.restored_from_version_id ? await getVersionMeta(tx, version.restored_from_version_id) : undefined;
    message = `${actor} restored “${imageTitle}” to version ${from?.version_number ?? '?'} (now version ${version.version_number}).`;
  }
  await insertNotifications(
    tx,
    recipients.map((userId) => ({
      notificationId: newId('notification'),
      userId,
      type,
      actorId,
      targetType: 'image_version',
      targetId: version.version_id,
      message,
      data: details,
    })),
  );
  return recipients;
}

// ---------------------------------------------------------------------------------------------
// Readers (HTTP)
// ---------------------------------------------------------------------------------------------

/** Who may read an image's versions: those it is visible to (images_view_policy) and session members. */
export async function canReadImage(db: Queryable, imageId: string, userId: string): Promise<boolean> {
  return (await isImageVisibleTo(db, imageId, userId)) || (await isSessionMemberOfImage(db, imageId, userId));
}

/** `GET /api/versions/:id`. A version the user may not read is reported as not found. */
export async function versionDetail(db: Database, userId: string, versionId: string): Promise<VersionDetailJson> {
  const version = await getVersionFull(db, versionId);
  if (!version || !(await canReadImage(db, version.image_id, userId))) throw new AppError('version_not_found');
  const layers = await getVersionLayers(db, versionId);
  return { version: versionJson(version), canvasState: version.canvas_state as Canvas, layers: layers.map(layerRowJson) };
}

/** `GET /api/images/:id/versions`: the tree in one recursive query. */
export async function imageVersionTree(db: Database, userId: string, imageId: string): Promise<VersionTreeJson> {
  const image = await getImage(db, imageId);
  if (!image || image.is_deleted || !(await canReadImage(db, imageId, userId))) throw new AppError('image_not_found');
  return buildTree(imageId, await versionTree(db, imageId));
}

/** `GET /api/versions/:a/diff/:b`: any two versions the user may read (of one image or two). */
export async function versionDiff(db: Database, userId: string, fromId: string, toId: string): Promise<VersionDiffJson> {
  const [from, to] = await Promise.all([getVersionFull(db, fromId), getVersionFull(db, toId)]);
  for (const v of [from, to]) {
    if (!v || !(await canReadImage(db, v.image_id, userId))) throw new AppError('version_not_found');
  }
  const parse = (v: NonNullable<typeof from>) => {
    const parsed = parseCanvas(v.canvas_state);
    if (!parsed.ok) throw new AppError('internal', `Version ${v.version_id} holds a canvas that does not match the schema.`);
    return parsed.canvas;
  };
  return {
    from: { versionId: from!.version_id, versionNumber: from!.version_number },
    to: { versionId: to!.version_id, versionNumber: to!.version_number },
    ...diffCanvases(parse(from!), parse(to!)),
  };
}

/**
 * A version `callerId` restores into a session: it must exist and be readable by the caller (else
 * 404 `version_not_found`, the same as an unknown id, so nobody learns which private versions
 * exist), belong to the session's image (else 409 `version_image_mismatch`), and name only images
 * the session's owner may see (else 422 `invalid_canvas`). Checked before the live document changes.
 */
export async function versionToRestore(
  db: Database,
  session: { image_id: string; owner_id: string },
  callerId: string,
  versionId: string,
): Promise<{ row: VersionMetaRow; canvas: Canvas }> {
  const version = await getVersionFull(db, versionId);
  if (!version || !(await canReadImage(db, version.image_id, callerId))) throw new AppError('version_not_found');
  if (version.image_id !== session.image_id) throw new AppError('version_image_mismatch');
  const parsed = parseCanvas(version.canvas_state);
  if (!parsed.ok) throw new AppError('internal', `Version ${version.version_id} holds a canvas that does not match the schema.`);
  await assertCanvasImagesVisible(db, parsed.canvas, session.owner_id, `Version ${version.version_id} was not restored`);
  return { row: version, canvas: parsed.canvas };
}
