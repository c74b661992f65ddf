/**
 * The canvas document (docs/CONTRACT.md "The canvas document"): zod schemas and the mapping between a
 * plain JSON canvas (what `image_versions.canvas_state` holds) and the Yjs document.
 *
 * Yjs layout: `meta` is a Y.Map of scalars; `layers` is a Y.Map from layer id to a Y.Map whose
 * scalar fields merge per field, while `data`, `transform` and `filters` are plain JSON values
 * replaced whole on change (so two people dragging one layer never produce a half-old matrix).
 *
 * The schemas are exact: every object is strict (an unknown key is an error, not silently
 * dropped, so what a version stores is what the document held), and each layer's `data` has the
 * shape of its `type`. `canvasIssues` turns a failed parse into "layer <id>, field <path>"
 * sentences — what the server reports instead of storing a half-valid canvas.
 *
 * Helpers that read and change a live canvas (add, move, update, remove a layer) are in
 * `shared/layers.ts`.
 */
import * as Y from 'yjs';
import { z } from 'zod';
import { AppError } from './errors.ts';
import { ID_PATTERN } from './ids.ts';

export const layerTypes = ['image', 'drawing', 'text', 'shape', 'adjustment'] as const;
export type LayerType = (typeof layerTypes)[number];
export const blendModes = [
  'normal', 'multiply', 'screen', 'overlay', 'darken', 'lighten', 'color-dodge', 'color-burn',
  'hard-light', 'soft-light', 'difference', 'exclusion', 'hue', 'saturation', 'color', 'luminosity',
] as const;
export type BlendMode = (typeof blendModes)[number];

/** The most layers one canvas may hold (a version writes one canvas_layers row per layer). */
export const MAX_LAYERS = 1000;

// zod 4's z.number() already refuses NaN and ±Infinity, which JSON (and so JSONB) cannot hold.
const num = z.number();
const unit = num.min(0).max(1);
const nonNegative = num.min(0);
const positive = num.positive();
/**
 * Whether PostgreSQL can store `value` unchanged, in JSONB and in text columns: no NUL (JSONB
 * refuses `\u0000`, text refuses the 0x00 byte) and no unpaired UTF-16 surrogate (JSON.stringify
 * writes one as a `\ud800` escape, which JSONB refuses; as a text parameter it would silently turn
 * into U+FFFD). Every other string is stored exactly.
 */
export function isStorableText(value: string): boolean {
  return !value.includes('\u0000') && value.isWellFormed();
}

export const STORABLE_TEXT_MESSAGE = 'must not contain NUL (\\u0000) or an unpaired UTF-16 surrogate';

/**
 * The one string schema of everything that is stored: every string field of the canvas, and the
 * free-text fields of requests (`description`, `branchName`). Chain `.min`/`.max` as on z.string().
 */
export const storableString = () => z.string().refine(isStorableText, STORABLE_TEXT_MESSAGE);

const id = z.string().regex(ID_PATTERN, 'must be an id (1-20 characters of A-Z a-z 0-9 _ -)');

/** `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`, or `transparent`. */
export const colorSchema = z.union([
  z.string().regex(/^#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$/, 'must be #rgb, #rgba, #rrggbb or #rrggbbaa'),
  z.literal('transparent'),
]);

/** A flat list of x, y pairs: `[x0, y0, x1, y1, …]`. */
const points = (max: number) =>
  z
    .array(num)
    .max(max * 2)
    .refine((p) => p.length % 2 === 0, 'must hold x, y pairs (an even number of values)');

/** `[a, b, c, d, e, f]`: the 2-D affine matrix (x' = a·x + c·y + e, y' = b·x + d·y + f). */
export const transformSchema = z.tuple([num, num, num, num, num, num]);

// ---------------------------------------------------------------------------------------------
// Filters: `{ type, ...params }`
// ---------------------------------------------------------------------------------------------
export const filterSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('blur'), radius: num.min(0).max(1000) }),
  z.strictObject({ type: z.literal('sharpen'), amount: num.min(0).max(10) }),
  z.strictObject({ type: z.literal('brightness'), amount: num.min(0).max(10) }),
  z.strictObject({ type: z.literal('contrast'), amount: num.min(0).max(10) }),
  z.strictObject({ type: z.literal('saturate'), amount: num.min(0).max(10) }),
  z.strictObject({ type: z.literal('grayscale'), amount: unit }),
  z.strictObject({ type: z.literal('sepia'), amount: unit }),
  z.strictObject({ type: z.literal('invert'), amount: unit }),
  z.strictObject({ type: z.literal('hue-rotate'), degrees: num.min(-360).max(360) }),
  z.strictObject({ type: z.literal('noise'), amount: unit }),
  z.strictObject({ type: z.literal('pixelate'), size: num.min(1).max(1000) }),
  z.strictObject({
    type: z.literal('drop-shadow'),
    offsetX: num,
    offsetY: num,
    blur: num.min(0).max(1000),
    color: colorSchema,
  }),
]);
export type Filter = z.infer<typeof filterSchema>;
export const filterTypes = filterSchema.options.map((o) => o.shape.type.value);

// ---------------------------------------------------------------------------------------------
// Type-specific layer data
// ---------------------------------------------------------------------------------------------
export const imageDataSchema = z.strictObject({
  /** The `images` row whose original this layer shows. */
  imageId: id,
  /** The part of the original shown, in its pixels; absent = all of it. */
  crop: z.strictObject({ x: nonNegative, y: nonNegative, width: positive, height: positive }).optional(),
  flipX: z.boolean().optional(),
  flipY: z.boolean().optional(),
});

export const strokeSchema = z.strictObject({
  tool: z.enum(['pen', 'brush', 'marker', 'eraser']),
  color: colorSchema,
  width: num.positive().max(1000),
  opacity: unit.optional(),
  points: points(50_000),
});
export const drawingDataSchema = z.strictObject({ strokes: z.array(strokeSchema).max(10_000) });

export const textDataSchema = z.strictObject({
  text: storableString().max(10_000),
  fontFamily: storableString().min(1).max(100),
  fontSize: num.positive().max(2000),
  fontWeight: z.union([z.enum(['normal', 'bold']), z.number().int().min(100).max(900).multipleOf(100)]).optional(),
  fontStyle: z.enum(['normal', 'italic']).optional(),
  color: colorSchema,
  align: z.enum(['left', 'center', 'right', 'justify']),
  lineHeight: num.positive().max(10).optional(),
  letterSpacing: num.min(-100).max(100).optional(),
  /** Wrapping width in canvas pixels; absent = no wrapping. */
  boxWidth: positive.optional(),
});

export const shapeKinds = ['rectangle', 'ellipse', 'line', 'polygon', 'path'] as const;
export const shapeDataSchema = z
  .strictObject({
    shape: z.enum(shapeKinds),
    width: nonNegative,
    height: nonNegative,
    fill: colorSchema.nullable(),
    stroke: colorSchema.nullable(),
    strokeWidth: num.min(0).max(1000),
    cornerRadius: nonNegative.optional(),
    /** Polygon vertices (shape `polygon`). */
    points: points(10_000).optional(),
    /** SVG path data (shape `path`). */
    path: storableString().min(1).max(100_000).optional(),
  })
  .superRefine((d, ctx) => {
    if (d.shape === 'polygon' && (d.points?.length ?? 0) < 6) {
      ctx.addIssue({ code: 'custom', path: ['points'], message: 'a polygon needs at least 3 points' });
    }
    if (d.shape === 'path' && d.path === undefined) {
      ctx.addIssue({ code: 'custom', path: ['path'], message: 'a path shape needs path data' });
    }
  });

const curvePoint = z.tuple([num.min(0).max(255), num.min(0).max(255)]);
export const adjustmentDataSchema = z.discriminatedUnion('adjustment', [
  z.strictObject({ adjustment: z.literal('brightness-contrast'), brightness: num.min(-1).max(1), contrast: num.min(-1).max(1) }),
  z.strictObject({
    adjustment: z.literal('hue-saturation'),
    hue: num.min(-180).max(180),
    saturation: num.min(-1).max(1),
    lightness: num.min(-1).max(1),
  }),
  z.strictObject({
    adjustment: z.literal('levels'),
    inputBlack: num.min(0).max(255),
    inputWhite: num.min(0).max(255),
    gamma: num.min(0.01).max(10),
    outputBlack: num.min(0).max(255),
    outputWhite: num.min(0).max(255),
  }),
  z.strictObject({
    adjustment: z.literal('curves'),
    channel: z.enum(['rgb', 'red', 'green', 'blue']),
    points: z.array(curvePoint).min(2).max(256),
  }),
  z.strictObject({ adjustment: z.literal('exposure'), exposure: num.min(-10).max(10), gamma: num.min(0.01).max(10).optional() }),
  z.strictObject({ adjustment: z.literal('vibrance'), vibrance: num.min(-1).max(1) }),
  z.strictObject({ adjustment: z.literal('invert') }),
  z.strictObject({ adjustment: z.literal('threshold'), level: num.min(0).max(255) }),
]);

export type ImageLayerData = z.infer<typeof imageDataSchema>;
export type DrawingLayerData = z.infer<typeof drawingDataSchema>;
export type TextLayerData = z.infer<typeof textDataSchema>;
export type ShapeLayerData = z.infer<typeof shapeDataSchema>;
export type AdjustmentLayerData = z.infer<typeof adjustmentDataSchema>;

// ---------------------------------------------------------------------------------------------
// Layers and the canvas
// ---------------------------------------------------------------------------------------------
/** The fields every layer has, whatever its type (the `canvas_layers` columns in camelCase). */
export const layerBaseShape = {
  name: storableString().min(1).max(100),
  /** Fractional index (see shared/layers.ts); ascending = bottom to top, ties broken by layer id. */
  order: storableString().min(1).max(64),
  visible: z.boolean(),
  /** 0..1. The canvas keeps it exactly; canvas_layers.opacity (DECIMAL(3,2)) holds it rounded. */
  opacity: unit,
  blendMode: z.enum(blendModes),
  locked: z.boolean(),
  transform: transformSchema,
  filters: z.array(filterSchema).max(50),
};

export const imageLayerSchema = z.strictObject({ type: z.literal('image'), ...layerBaseShape, data: imageDataSchema });
export const drawingLayerSchema = z.strictObject({ type: z.literal('drawing'), ...layerBaseShape, data: drawingDataSchema });
export const textLayerSchema = z.strictObject({ type: z.literal('text'), ...layerBaseShape, data: textDataSchema });
export const shapeLayerSchema = z.strictObject({ type: z.literal('shape'), ...layerBaseShape, data: shapeDataSchema });
export const adjustmentLayerSchema = z.strictObject({ type: z.literal('adjustment'), ...layerBaseShape, data: adjustmentDataSchema });

export const layerSchema = z.discriminatedUnion('type', [
  imageLayerSchema,
  drawingLayerSchema,
  textLayerSchema,
  shapeLayerSchema,
  adjustmentLayerSchema,
]);
export type Layer = z.infer<typeof layerSchema>;
/** The `data` of a layer of type `T`. */
export type LayerData<T extends LayerType = LayerType> = Extract<Layer, { type: T }>['data'];

export const metaSchema = z.strictObject({
  width: z.number().int().positive().max(100_000),
  height: z.number().int().positive().max(100_000),
  background: colorSchema,
  imageId: id,
  /**
   * The version the live document was seeded from (or last restored to); null for a document
   * seeded from the original image. A version stores it as the document held it.
   */
  baseVersionId: id.nullable(),
});
export type CanvasMeta = z.infer<typeof metaSchema>;

/**
 * `__proto__` is an id by the pattern but cannot be a layer id: zod's record skips that key on
 * purpose (assigning it to a plain object would set the prototype), so a layer under it would
 * vanish from the parsed canvas, and from every version, without a word. Refused before the record.
 */
const noProtoKey = z.unknown().superRefine((value, ctx) => {
  if (typeof value === 'object' && value !== null && Object.hasOwn(value, '__proto__')) {
    ctx.addIssue({ code: 'custom', path: ['__proto__'], message: 'is reserved: __proto__ cannot be a layer id' });
  }
});

export const canvasSchema = z.strictObject({
  meta: metaSchema,
  layers: noProtoKey.pipe(
    z.record(id, layerSchema).refine((layers) => Object.keys(layers).length <= MAX_LAYERS, `must hold at most ${MAX_LAYERS} layers`),
  ),
});
export type Canvas = z.infer<typeof canvasSchema>;

export const IDENTITY: Layer['transform'] = [1, 0, 0, 1, 0, 0];

/** One problem with a canvas: the layer it is in (if any), the field's dotted path, the rule broken. */
export interface CanvasIssue {
  layerId: string | null;
  field: string;
  message: string;
}

/** Flattens a failed `canvasSchema` parse into issues that name the layer id and the field. */
export function canvasIssues(error: z.ZodError): CanvasIssue[] {
  return error.issues.map((issue) => {
    const path = issue.path.map(String);
    if (path[0] === 'layers' && path.length >= 2) {
      return { layerId: path[1]!, field: path.slice(2).join('.') || '(layer)', message: issue.message };
    }
    return { layerId: null, field: path.join('.') || '(canvas)', message: issue.message };
  });
}

/** One sentence per issue, e.g. `layer lay_x, field opacity: Too big: expected number to be <=1`. */
export function describeIssue(issue: CanvasIssue): string {
  return issue.layerId === null
    ? `field ${issue.field}: ${issue.message}`
    : `layer ${issue.layerId}, field ${issue.field}: ${issue.message}`;
}

/** How many issues an `invalid_canvas` message lists before "and N more". */
const ISSUES_IN_MESSAGE = 5;

/** The `invalid_canvas` error for `issues`: `<lead>: layer …, field …: …; … (and N more).` */
export function canvasError(issues: readonly CanvasIssue[], lead = 'The canvas was not saved'): AppError {
  const listed = issues.slice(0, ISSUES_IN_MESSAGE).map(describeIssue).join('; ');
  const more = issues.length > ISSUES_IN_MESSAGE ? ` (and ${issues.length - ISSUES_IN_MESSAGE} more)` : '';
  return new AppError('invalid_canvas', `${lead}: ${listed}${more}.`);
}

/** Parses an untrusted canvas; on failure returns the issues (layer id + field) instead of throwing. */
export function parseCanvas(value: unknown): { ok: true; canvas: Canvas } | { ok: false; issues: CanvasIssue[] } {
  const parsed = canvasSchema.safeParse(value);
  return parsed.success ? { ok: true, canvas: parsed.data } : { ok: false, issues: canvasIssues(parsed.error) };
}

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

/**
 * Turns a live document into `canvas` with the fewest changes: fields that already hold the
 * target value are not written, layers that exist keep their Y.Map (so a concurrent edit of an
 * untouched field survives), missing layers are added, extra layers and unknown fields removed.
 * Content outside `meta` and `layers` is left alone. Returns whether anything changed.
 */
export function applyCanvas(doc: Y.Doc, canvas: Canvas, origin?: unknown): boolean {
  let changed = false;
  doc.transact(() => {
    const meta = doc.getMap<unknown>('meta');
    for (const key of [...meta.keys()]) {
      if (!(key in canvas.meta)) {
        meta.delete(key);
        changed = true;
      }
    }
    for (const [key, value] of Object.entries(canvas.meta)) {
      if (!jsonEqual(meta.get(key), value)) {
        meta.set(key, value);
        changed = true;
      }
    }
    const layers = doc.getMap<unknown>('layers');
    for (const key of [...layers.keys()]) {
      if (!(key in canvas.layers)) {
        layers.delete(key);
        changed = true;
      }
    }
    for (const [layerId, layer] of Object.entries(canvas.layers)) {
      const existing = layers.get(layerId);
      if (!(existing instanceof Y.Map)) {
        const yLayer = new Y.Map<unknown>();
        for (const [key, value] of Object.entries(layer)) yLayer.set(key, value);
        layers.set(layerId, yLayer);
        changed = true;
        continue;
      }
      const yLayer = existing as Y.Map<unknown>;
      for (const key of [...yLayer.keys()]) {
        if (!(key in layer)) {
          yLayer.delete(key);
          changed = true;
        }
      }
      for (const [key, value] of Object.entries(layer)) {
        if (!jsonEqual(toPlain(yLayer.get(key)), value)) {
          yLayer.set(key, value);
          changed = true;
        }
      }
    }
  }, origin);
  return changed;
}

function toPlain(value: unknown): unknown {
  return value instanceof Y.AbstractType ? (value.toJSON() as unknown) : value;
}

/** Deep equality of JSON values (objects compared by keys, regardless of key order). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bArray = b as unknown[];
    return a.length === bArray.length && a.every((v, i) => jsonEqual(v, bArray[i]));
  }
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const aKeys = Object.keys(ao).filter((k) => ao[k] !== undefined);
  const bKeys = Object.keys(bo).filter((k) => bo[k] !== undefined);
  return aKeys.length === bKeys.length && aKeys.every((k) => Object.hasOwn(bo, k) && jsonEqual(ao[k], bo[k]));
}

/** Reads the Yjs document as a plain canvas (unvalidated: pass it to `parseCanvas` to check). */
export function readCanvas(doc: Y.Doc): { meta: Record<string, unknown>; layers: Record<string, Record<string, unknown>> } {
  // fromEntries defines own properties, so even a `__proto__` layer id stays visible (and is refused).
  const layers: Record<string, Record<string, unknown>> = Object.fromEntries(
    [...doc.getMap<unknown>('layers')].map(([id, layer]) => [id, layer instanceof Y.Map ? (layer.toJSON() as Record<string, unknown>) : {}]),
  );
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
