/**
 * Typed helpers to read and change the layers of a live canvas (a Yjs document laid out as in
 * shared/canvas.ts). Clients and tests use them; every change is one Yjs transaction.
 *
 * Z-order: each layer has a fractional `order` key (npm `fractional-indexing`); ascending keys
 * are bottom to top, and equal keys (two people inserting at the same spot at once) are ordered
 * by layer id, so every replica sorts identically. Moving a layer rewrites only its own key — a
 * key strictly between its new neighbours — so concurrent moves of different layers merge. When
 * no key fits between the neighbours (equal keys, or keys not made by fractional-indexing), the
 * whole stack is re-keyed in the same transaction.
 *
 * Every helper validates what it writes against the layer schema and throws a `ZodError` for an
 * invalid layer, so a client learns at once, not when a version is saved.
 */
import { generateKeyBetween, generateNKeysBetween } from 'fractional-indexing';
import * as Y from 'yjs';
import { IDENTITY, jsonEqual, layerSchema, type BlendMode, type Filter, type Layer, type LayerData, type LayerType } from './canvas.ts';
import { newLayerId } from './ids.ts';

/** What a new layer needs: its type, data and name; everything else has a default. */
export type NewLayer = {
  [T in LayerType]: {
    type: T;
    data: LayerData<T>;
    name: string;
    visible?: boolean;
    opacity?: number;
    blendMode?: BlendMode;
    locked?: boolean;
    transform?: Layer['transform'];
    filters?: Filter[];
  };
}[LayerType];

/** A change to a layer's fields. `type` cannot change; `data` must fit the layer's type. */
export type LayerPatch = Partial<Omit<Layer, 'type' | 'data' | 'order'>> & { data?: LayerData };

/** Where a layer goes in the stack. */
export type Placement = 'top' | 'bottom' | { above: string } | { below: string };

/** Orders `[id, layer]` entries bottom to top: by `order`, then by id (plain code-unit comparison). */
export function compareLayerEntries(a: readonly [string, { order: string }], b: readonly [string, { order: string }]): number {
  if (a[1].order !== b[1].order) return a[1].order < b[1].order ? -1 : 1;
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  return 0;
}

/** A plain canvas's layers bottom to top, as `[id, layer]` pairs. */
export function layersInOrder<L extends { order: string }>(layers: Readonly<Record<string, L>>): Array<[string, L]> {
  return Object.entries(layers).sort(compareLayerEntries);
}

function layersMap(doc: Y.Doc): Y.Map<Y.Map<unknown>> {
  return doc.getMap<Y.Map<unknown>>('layers');
}

/** The layer ids of a live document, bottom to top. */
export function layerIds(doc: Y.Doc): string[] {
  const entries: Array<[string, { order: string }]> = [];
  for (const [id, yLayer] of layersMap(doc)) {
    const order = yLayer instanceof Y.Map ? yLayer.get('order') : undefined;
    entries.push([id, { order: typeof order === 'string' ? order : '' }]);
  }
  return entries.sort(compareLayerEntries).map(([id]) => id);
}

/** One layer of a live document as a plain object (unvalidated), or undefined. */
export function getLayer(doc: Y.Doc, layerId: string): Record<string, unknown> | undefined {
  const yLayer = layersMap(doc).get(layerId);
  return yLayer instanceof Y.Map ? (yLayer.toJSON() as Record<string, unknown>) : undefined;
}

/**
 * The key that puts a layer at `placement` among the others (the moving layer itself excluded),
 * or undefined when no key fits between the neighbours' keys.
 */
function keyFor(doc: Y.Doc, placement: Placement, exclude?: string): string | undefined {
  const ids = layerIds(doc).filter((id) => id !== exclude);
  const orderOf = (id: string | undefined) => (id === undefined ? null : (layersMap(doc).get(id)!.get('order') as string));
  let lower: string | undefined;
  let upper: string | undefined;
  if (placement === 'top') lower = ids.at(-1);
  else if (placement === 'bottom') upper = ids[0];
  else {
    const anchor = 'above' in placement ? placement.above : placement.below;
    const index = ids.indexOf(anchor);
    if (index < 0) throw new Error(`no layer ${anchor} to place against`);
    if ('above' in placement) [lower, upper] = [ids[index], ids[index + 1]];
    else [lower, upper] = [ids[index - 1], ids[index]];
  }
  const a = orderOf(lower);
  const b = orderOf(upper);
  if (a !== null && b !== null && a >= b) return undefined;
  try {
    return generateKeyBetween(a, b);
  } catch {
    return undefined; // a neighbour's key was not made by fractional-indexing
  }
}

/** Re-keys the whole stack in its current order with `moving` inserted at `placement`. */
function rekey(doc: Y.Doc, placement: Placement, moving: string): void {
  const ids = layerIds(doc).filter((id) => id !== moving);
  let at: number;
  if (placement === 'top') at = ids.length;
  else if (placement === 'bottom') at = 0;
  else if ('above' in placement) at = ids.indexOf(placement.above) + 1;
  else at = ids.indexOf(placement.below);
  ids.splice(at, 0, moving);
  const keys = generateNKeysBetween(null, null, ids.length);
  ids.forEach((id, i) => {
    const yLayer = layersMap(doc).get(id)!;
    if (yLayer.get('order') !== keys[i]) yLayer.set('order', keys[i]);
  });
}

function writeFields(yLayer: Y.Map<unknown>, layer: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(layer)) {
    if (value !== undefined) yLayer.set(key, value);
  }
}

/** Adds a layer (default: on top); returns its id. Throws a ZodError if the layer is invalid. */
export function addLayer(doc: Y.Doc, input: NewLayer, options: { id?: string; placement?: Placement } = {}): string {
  const layerId = options.id ?? newLayerId();
  if (layersMap(doc).has(layerId)) throw new Error(`layer ${layerId} already exists`);
  const layer = layerSchema.parse({
    visible: true,
    opacity: 1,
    blendMode: 'normal',
    locked: false,
    transform: IDENTITY,
    filters: [],
    ...input,
    order: 'a0', // placeholder, replaced below
  });
  doc.transact(() => {
    const yLayer = new Y.Map<unknown>();
    layersMap(doc).set(layerId, yLayer);
    writeFields(yLayer, layer);
    const placement = options.placement ?? 'top';
    const key = keyFor(doc, placement, layerId);
    if (key === undefined) rekey(doc, placement, layerId);
    else yLayer.set('order', key);
  });
  return layerId;
}

/** Moves a layer in the z-order by giving it a key between its new neighbours. */
export function moveLayer(doc: Y.Doc, layerId: string, placement: Placement): void {
  const yLayer = layersMap(doc).get(layerId);
  if (!(yLayer instanceof Y.Map)) throw new Error(`no layer ${layerId}`);
  if (typeof placement === 'object' && ('above' in placement ? placement.above : placement.below) === layerId) return;
  doc.transact(() => {
    const key = keyFor(doc, placement, layerId);
    if (key === undefined) rekey(doc, placement, layerId);
    else yLayer.set('order', key);
  });
}

/**
 * Changes some fields of a layer; only fields whose value differs are written. Throws a ZodError
 * if the result is not a valid layer (e.g. `data` of another type's shape).
 */
export function updateLayer(doc: Y.Doc, layerId: string, patch: LayerPatch): void {
  const yLayer = layersMap(doc).get(layerId);
  if (!(yLayer instanceof Y.Map)) throw new Error(`no layer ${layerId}`);
  const current = yLayer.toJSON() as Record<string, unknown>;
  const next = layerSchema.parse({ ...current, ...patch });
  doc.transact(() => {
    for (const [key, value] of Object.entries(patch)) {
      if (value === undefined) continue;
      if (!jsonEqual(current[key], value)) yLayer.set(key, (next as Record<string, unknown>)[key]);
    }
  });
}

/** Removes a layer; returns whether it existed. */
export function removeLayer(doc: Y.Doc, layerId: string): boolean {
  const layers = layersMap(doc);
  if (!layers.has(layerId)) return false;
  layers.delete(layerId);
  return true;
}
