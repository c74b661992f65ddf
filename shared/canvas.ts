/**
 * The canvas document (CONTRACT "The canvas document"): zod schemas and the mapping between a
 * plain JSON canvas (what `image_versions.canvas_state` holds) and the Yjs document.
 *
 * Yjs layout: `meta` is a Y.Map of scalars; `layers` is a Y.Map from layer id to a Y.Map whose
 * scalar fields merge per field, while `data`, `transform` and `filters` are plain JSON values
 * replaced whole on change (so two people dragging one layer never produce a half-old matrix).
 */
import * as Y from 'yjs';
import { z } from 'zod';

export const layerTypes = ['image', 'drawing', 'text', 'shape', 'adjustment'] as const;
export const blendModes = [
  'normal', 'multiply', 'screen', 'overlay', 'darken', 'lighten', 'color-dodge', 'color-burn',
  'hard-light', 'soft-light', 'difference', 'exclusion', 'hue', 'saturation', 'color', 'luminosity',
] as const;

const json: z.ZodType<unknown> = z.lazy(() =>
  z.union([z.string(), z.number(), z.boolean(), z.null(), z.array(json), z.record(z.string(), json)]),
);

export const transformSchema = z.tuple([z.number(), z.number(), z.number(), z.number(), z.number(), z.number()]);
export const filterSchema = z.looseObject({ type: z.string().min(1).max(50) });

export const layerSchema = z.object({
  type: z.enum(layerTypes),
  name: z.string().min(1).max(100),
  order: z.string().min(1).max(64),
  visible: z.boolean(),
  opacity: z.number().min(0).max(1),
  blendMode: z.enum(blendModes),
  locked: z.boolean(),
  data: z.record(z.string(), json),
  transform: transformSchema,
  filters: z.array(filterSchema),
});
export type Layer = z.infer<typeof layerSchema>;

export const metaSchema = z.object({
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  background: z.string().max(32),
  imageId: z.string().max(20),
  baseVersionId: z.string().max(20).nullable(),
});
export type CanvasMeta = z.infer<typeof metaSchema>;

export const canvasSchema = z.object({
  meta: metaSchema,
  layers: z.record(z.string().min(1).max(20), layerSchema),
});
export type Canvas = z.infer<typeof canvasSchema>;

export const IDENTITY: Layer['transform'] = [1, 0, 0, 1, 0, 0];

/** The canvas a new session on an image with no versions starts from: the original as one layer. */
export function initialCanvas(image: { imageId: string; width: number; height: number }, layerId: string): Canvas {
  return {
    meta: { width: image.width, height: image.height, background: 'transparent', imageId: image.imageId, baseVersionId: null },
    layers: {
      [layerId]: {
        type: 'image',
        name: 'Original',
        order: 'a0',
        visible: true,
        opacity: 1,
        blendMode: 'normal',
        locked: false,
        data: { imageId: image.imageId },
        transform: IDENTITY,
        filters: [],
      },
    },
  };
}

/** Writes a whole canvas into an empty (or to-be-replaced) Yjs document in one transaction. */
export function writeCanvas(doc: Y.Doc, canvas: Canvas, origin?: unknown): void {
  doc.transact(() => {
    const meta = doc.getMap('meta');
    for (const [key, value] of Object.entries(canvas.meta)) meta.set(key, value);
    const layers = doc.getMap<Y.Map<unknown>>('layers');
    for (const key of [...layers.keys()]) if (!(key in canvas.layers)) layers.delete(key);
    for (const [id, layer] of Object.entries(canvas.layers)) {
      const yLayer = new Y.Map<unknown>();
      for (const [key, value] of Object.entries(layer)) yLayer.set(key, value);
      layers.set(id, yLayer);
    }
  }, origin);
}

/** Reads the Yjs document as a plain canvas (unvalidated: pass it to `canvasSchema` to check). */
export function readCanvas(doc: Y.Doc): { meta: Record<string, unknown>; layers: Record<string, Record<string, unknown>> } {
  const layers: Record<string, Record<string, unknown>> = {};
  for (const [id, layer] of doc.getMap<unknown>('layers')) {
    layers[id] = layer instanceof Y.Map ? (layer.toJSON() as Record<string, unknown>) : {};
  }
  return { meta: doc.getMap('meta').toJSON(), layers };
}

/** Encodes a canvas as a Yjs update: the seed row of a new session's update log. */
export function canvasToUpdate(canvas: Canvas): Uint8Array {
  const doc = new Y.Doc();
  try {
    writeCanvas(doc, canvas);
    return Y.encodeStateAsUpdate(doc);
  } finally {
    doc.destroy();
  }
}
