/**
 * The versions API as clients see it: JSON shapes of the HTTP responses and the stateless
 * messages of the Hocuspocus protocol (a discriminated union on `type`).
 *
 * Stateless messages (a JSON string, `provider.sendStateless(JSON.stringify(msg))`):
 * - client → server `{ type: "saveVersion", description?, requestId? }`: snapshot the document now.
 * - server → every client of the document `{ type: "versionSaved", version, requestId? }` after
 *   any version of the session is saved (this message, HTTP, autosave or restore); `requestId`
 *   echoes the one of the saveVersion that asked for it, if any.
 * - server → the asking connection only `{ type: "error", code, message, requestId? }` when a
 *   saveVersion is refused (`forbidden` for a read-only connection, `invalid_canvas`, …).
 * - server → every client of the session `{ type: "thumbnailReady", versionId, imageId,
 *   thumbnailPath, thumbnailUrl, sizes }` once the render worker has stored a new version's
 *   thumbnails; `thumbnailUrl` (and each `sizes[].url`) is a signed URL for that connection's user.
 * Other stateless payloads are left to other extensions.
 */
import { z } from 'zod';
import { storableString, type Canvas, type Layer } from './canvas.ts';

export type VersionKind = 'manual' | 'autosave' | 'restore';

export interface VersionJson {
  versionId: string;
  imageId: string;
  parentVersionId: string | null;
  versionNumber: number;
  branchName: string | null;
  createdBy: string;
  createdAt: string;
  description: string | null;
  thumbnailPath: string | null;
  /** Bytes of the UTF-8 JSON of `canvasState`. */
  fileSize: number;
  isCurrent: boolean;
  sessionId: string | null;
  kind: VersionKind;
  restoredFromVersionId: string | null;
  /**
   * Signed URLs for `<img>` tags (no token needed; see README "Signed URLs"), valid for the
   * user they were made for: the thumbnail (null until the render worker has made it) and the
   * on-demand render of this version (append `width`, `height`, `format`… before signing — or use
   * it as is for the full canvas as WebP). Present in HTTP answers; absent in `versionSaved`.
   */
  thumbnailUrl?: string | null;
  renderUrl?: string;
}

/** A canvas_layers row in camelCase (`opacity` is the DECIMAL(3,2) column: rounded to 0.01). */
export interface LayerRowJson {
  layerId: string;
  layerKey: string;
  layerOrder: number;
  layerType: string;
  name: string;
  visible: boolean;
  opacity: number;
  blendMode: string;
  locked: boolean;
  layerData: unknown;
  transformMatrix: unknown;
  filters: unknown;
  createdAt: string;
}

/** `GET /api/versions/:id` */
export interface VersionDetailJson {
  version: VersionJson;
  canvasState: Canvas;
  layers: LayerRowJson[];
}

export interface TreeNodeJson extends VersionJson {
  /** 0 for a root (a version with no parent). */
  depth: number;
  childVersionIds: string[];
}

/** `GET /api/images/:id/versions`: every version of the image, by version number. */
export interface VersionTreeJson {
  imageId: string;
  currentVersionId: string | null;
  rootVersionIds: string[];
  versions: TreeNodeJson[];
}

/** A layer present in both canvases whose fields differ; `before`/`after` hold only those fields. */
export interface LayerChangeJson {
  layerId: string;
  fields: string[];
  before: Record<string, unknown>;
  after: Record<string, unknown>;
}

/** What changed from one canvas to another; layers are matched by their id in the canvas. */
export interface CanvasDiffJson {
  /** Changed `meta` fields. */
  meta: Array<{ field: string; before: unknown; after: unknown }>;
  /** In the second canvas only, bottom to top. */
  added: Array<{ layerId: string; layer: Layer }>;
  /** In the first canvas only, bottom to top. */
  removed: Array<{ layerId: string; layer: Layer }>;
  /** In both, with different fields; in the second canvas's order. */
  changed: LayerChangeJson[];
  /** How many layers are in both and identical. */
  unchanged: number;
}

/** `GET /api/versions/:a/diff/:b` */
export interface VersionDiffJson extends CanvasDiffJson {
  from: { versionId: string; versionNumber: number };
  to: { versionId: string; versionNumber: number };
}

export const saveVersionMessage = z.strictObject({
  type: z.literal('saveVersion'),
  description: storableString().max(2000).optional(),
  requestId: z.string().max(100).optional(),
});
export type SaveVersionMessage = z.infer<typeof saveVersionMessage>;

export interface ThumbnailReadyMessage {
  type: 'thumbnailReady';
  versionId: string;
  imageId: string;
  /** The blob key of the first configured size (`image_versions.thumbnail_path`). */
  thumbnailPath: string;
  /** Signed URL of that thumbnail for the receiving connection's user. */
  thumbnailUrl: string;
  /** Every configured size (px, the longer side) with its signed URL. */
  sizes: Array<{ size: number; url: string }>;
}

export type VersionsServerMessage =
  | { type: 'versionSaved'; version: VersionJson; requestId?: string }
  | ThumbnailReadyMessage
  | { type: 'error'; code: string; message: string; requestId?: string };

/** Parses a stateless payload from the server; undefined for payloads that are not ours. */
export function parseServerMessage(payload: string): VersionsServerMessage | undefined {
  try {
    const message = JSON.parse(payload) as { type?: unknown };
    return message?.type === 'versionSaved' || message?.type === 'thumbnailReady' || message?.type === 'error'
      ? (message as VersionsServerMessage)
      : undefined;
  } catch {
    return undefined;
  }
}
