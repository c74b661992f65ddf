/**
 * Which images a canvas may reference: only images the session's owner may see (images_view_policy:
 * public, their own, `followers` images of people they follow; never deleted ones). An image layer
 * names an `images` row by `data.imageId`, and `meta.imageId` names the session's image; whoever
 * renders or loads the canvas gets those originals, so a canvas naming someone else's private image
 * would hand it out.
 *
 * Checked wherever a canvas is stored or seeded: every save (HTTP, the `saveVersion` message,
 * autosave and the restore's version, all through `recordVersion`), a restore before it touches the
 * live document, and a session created from a version. The renderer calls
 * `assertCanvasImagesVisible` with the user it renders for. An unknown id and an invisible one get
 * the same answer, so the check tells nobody which private images exist.
 */
import { canvasError, type Canvas, type CanvasIssue } from '../shared/canvas.ts';
import type { Queryable } from '../persistence/db.ts';
import { visibleImageIds } from '../persistence/repositories/images.ts';

/** Every image a canvas references, with where: `meta.imageId` (layerId null) and each image layer. */
export function canvasImageReferences(canvas: Canvas): Array<{ imageId: string; layerId: string | null; field: string }> {
  const refs: Array<{ imageId: string; layerId: string | null; field: string }> = [
    { imageId: canvas.meta.imageId, layerId: null, field: 'meta.imageId' },
  ];
  for (const [layerId, layer] of Object.entries(canvas.layers)) {
    if (layer.type === 'image') refs.push({ imageId: layer.data.imageId, layerId, field: 'data.imageId' });
  }
  return refs;
}

/** The references of `canvas` to images `userId` may not see (or that do not exist), as canvas issues. */
export async function invisibleImageReferences(db: Queryable, canvas: Canvas, userId: string): Promise<CanvasIssue[]> {
  const refs = canvasImageReferences(canvas);
  const visible = await visibleImageIds(db, [...new Set(refs.map((r) => r.imageId))], userId);
  return refs
    .filter((r) => !visible.has(r.imageId))
    .map((r) => ({ layerId: r.layerId, field: r.field, message: `names an image the session's owner may not see: ${r.imageId}` }));
}

/**
 * Throws `invalid_canvas` (naming each layer and field) unless every image `canvas` references is
 * visible to `userId`. `lead` starts the message (e.g. "The canvas was not saved").
 */
export async function assertCanvasImagesVisible(db: Queryable, canvas: Canvas, userId: string, lead?: string): Promise<void> {
  const issues = await invisibleImageReferences(db, canvas, userId);
  if (issues.length > 0) throw canvasError(issues, lead);
}
