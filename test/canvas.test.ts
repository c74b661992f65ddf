/**
 * The canvas schema, the layer helpers (fractional z-order), and the pure parts of versions:
 * canvas → canvas_layers rows, diff, content comparison, minimal restore, the tree JSON.
 */
import { describe, expect, it } from 'vitest';
import * as Y from 'yjs';
import {
  applyCanvas,
  canvasToUpdate,
  initialCanvas,
  parseCanvas,
  readCanvas,
  writeCanvas,
  type Canvas,
} from '../shared/canvas.ts';
import { addLayer, getLayer, layerIds, layersInOrder, moveLayer, removeLayer, updateLayer } from '../shared/layers.ts';
import { buildTree, canvasToLayerRows, diffCanvases, invalidCanvas, roundOpacity, sameContent } from '../server/versions.ts';
import type { TreeRow } from '../persistence/repositories/versions.ts';
import { addEveryLayerType } from './support/canvas.ts';

const IMAGE = 'img_test000000000000';

function docWithEveryType(): { doc: Y.Doc; ids: string[] } {
  const doc = new Y.Doc();
  writeCanvas(doc, { ...initialCanvas({ imageId: IMAGE, width: 800, height: 600 }, 'lay_original'), layers: {} });
  const ids = addEveryLayerType(doc, IMAGE);
  return { doc, ids };
}

function canvasOf(doc: Y.Doc): Canvas {
  const parsed = parseCanvas(readCanvas(doc));
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  return parsed.canvas;
}

describe('canvas schema', () => {
  it('accepts a canvas with every layer type', () => {
    const { doc } = docWithEveryType();
    const canvas = canvasOf(doc);
    expect(Object.values(canvas.layers).map((l) => l.type).sort()).toEqual(['adjustment', 'adjustment', 'drawing', 'image', 'shape', 'text']);
  });

  it('reports an invalid layer by id and field, every problem at once', () => {
    const { doc, ids } = docWithEveryType();
    const layers = doc.getMap<Y.Map<unknown>>('layers');
    layers.get(ids[0]!)!.set('opacity', 1.5);
    layers.get(ids[2]!)!.set('data', { text: 'x', fontFamily: 'Inter', fontSize: -1, color: 'red', align: 'center' });
    layers.get(ids[3]!)!.set('bogus', true);
    doc.getMap('meta').set('width', 0);
    const parsed = parseCanvas(readCanvas(doc));
    expect(parsed.ok).toBe(false);
    if (parsed.ok) return;
    const found = parsed.issues.map((i) => `${i.layerId}:${i.field}`);
    expect(found).toEqual(
      expect.arrayContaining([`${ids[0]}:opacity`, `${ids[2]}:data.fontSize`, `${ids[2]}:data.color`, `${ids[3]}:(layer)`, 'null:meta.width']),
    );
    const message = invalidCanvas(parsed.issues).message;
    expect(message).toContain(`layer ${ids[0]}, field opacity`);
    expect(message).toContain(`layer ${ids[2]}, field data.fontSize`);
  });

  it('checks data against the layer type and unknown types and filters', () => {
    const base = { name: 'x', order: 'a0', visible: true, opacity: 1, blendMode: 'normal', locked: false, transform: [1, 0, 0, 1, 0, 0], filters: [] };
    const check = (layer: Record<string, unknown>) =>
      parseCanvas({ meta: initialCanvas({ imageId: IMAGE, width: 1, height: 1 }, 'l').meta, layers: { lay_1: layer } });
    expect(check({ ...base, type: 'image', data: { imageId: IMAGE } }).ok).toBe(true);
    expect(check({ ...base, type: 'text', data: { imageId: IMAGE } }).ok).toBe(false);
    expect(check({ ...base, type: 'video', data: {} }).ok).toBe(false);
    expect(check({ ...base, type: 'image', data: { imageId: IMAGE }, filters: [{ type: 'explode' }] }).ok).toBe(false);
    expect(check({ ...base, type: 'image', data: { imageId: IMAGE }, transform: [1, 0, 0, 1, 0] }).ok).toBe(false);
    expect(check({ ...base, type: 'shape', data: { shape: 'path', width: 1, height: 1, fill: null, stroke: null, strokeWidth: 0 } }).ok).toBe(false);
    expect(check({ ...base, type: 'drawing', data: { strokes: [{ tool: 'pen', color: '#fff', width: 1, points: [1, 2, 3] }] } }).ok).toBe(false);
  });
});

describe('layer helpers', () => {
  it('adds on top by default, and moves with keys between the new neighbours only', () => {
    const { doc, ids } = docWithEveryType();
    expect(layerIds(doc)).toEqual(ids);
    const [a, b, c] = ids;
    const orderBefore = Object.fromEntries(ids.map((id) => [id, getLayer(doc, id)!.order]));
    moveLayer(doc, a!, { above: c! });
    expect(layerIds(doc).slice(0, 3)).toEqual([b, c, a]);
    // Only the moved layer's key changed.
    for (const id of ids.filter((x) => x !== a)) expect(getLayer(doc, id)!.order).toBe(orderBefore[id]);
    moveLayer(doc, a!, 'bottom');
    expect(layerIds(doc)[0]).toBe(a);
    moveLayer(doc, a!, 'top');
    expect(layerIds(doc).at(-1)).toBe(a);
    moveLayer(doc, a!, { below: b! });
    expect(layerIds(doc)[0]).toBe(a);
    const added = addLayer(doc, { type: 'image', name: 'Under', data: { imageId: IMAGE } }, { placement: { above: a! } });
    expect(layerIds(doc).slice(0, 3)).toEqual([a, added, b]);
    expect(removeLayer(doc, added)).toBe(true);
    expect(removeLayer(doc, added)).toBe(false);
  });

  it('re-keys the stack when neighbours have equal or foreign keys', () => {
    const doc = new Y.Doc();
    const x = addLayer(doc, { type: 'image', name: 'x', data: { imageId: IMAGE } }, { id: 'lay_x' });
    const y = addLayer(doc, { type: 'image', name: 'y', data: { imageId: IMAGE } }, { id: 'lay_y' });
    const z = addLayer(doc, { type: 'image', name: 'z', data: { imageId: IMAGE } }, { id: 'lay_z' });
    const layers = doc.getMap<Y.Map<unknown>>('layers');
    // Two concurrent inserts at one spot produce equal keys; ids break the tie.
    layers.get(x)!.set('order', 'a5');
    layers.get(y)!.set('order', 'a5');
    layers.get(z)!.set('order', 'not a key!');
    expect(layerIds(doc)).toEqual([x, y, z]);
    moveLayer(doc, z, { above: x });
    expect(layerIds(doc)).toEqual([x, z, y]);
    const keys = layerIds(doc).map((id) => getLayer(doc, id)!.order as string);
    expect(new Set(keys).size).toBe(3);
  });

  it('converges when two replicas move different layers at once', () => {
    const a = new Y.Doc();
    const ids = addEveryLayerType(a, IMAGE);
    const b = new Y.Doc();
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
    moveLayer(a, ids[0]!, 'top');
    moveLayer(b, ids[5]!, 'bottom');
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
    Y.applyUpdate(a, Y.encodeStateAsUpdate(b));
    expect(layerIds(a)).toEqual(layerIds(b));
    expect(layerIds(a)[0]).toBe(ids[5]);
    expect(layerIds(a).at(-1)).toBe(ids[0]);
  });

  it('validates updates against the layer type and writes only changed fields', () => {
    const { doc, ids } = docWithEveryType();
    const updates: number[] = [];
    doc.on('update', (u: Uint8Array) => updates.push(u.length));
    updateLayer(doc, ids[2]!, { name: 'Caption', opacity: 0.5 });
    expect(getLayer(doc, ids[2]!)).toMatchObject({ name: 'Caption', opacity: 0.5 });
    expect(() => updateLayer(doc, ids[2]!, { data: { imageId: IMAGE } })).toThrow();
    expect(() => updateLayer(doc, ids[2]!, { opacity: 2 })).toThrow();
    const count = updates.length;
    updateLayer(doc, ids[2]!, { name: 'Caption' });
    expect(updates.length).toBe(count);
  });
});

describe('versions: pure parts', () => {
  it('maps a canvas to canvas_layers rows bottom to top, opacity rounded to the column', () => {
    const { doc, ids } = docWithEveryType();
    const canvas = canvasOf(doc);
    let n = 0;
    const rows = canvasToLayerRows(canvas, () => `lay_row${n++}`);
    expect(rows.map((r) => r.layerKey)).toEqual(ids);
    expect(rows.map((r) => r.layerOrder)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(rows.map((r) => r.layerId)).toEqual(['lay_row0', 'lay_row1', 'lay_row2', 'lay_row3', 'lay_row4', 'lay_row5']);
    const shape = rows[3]!;
    expect(shape).toMatchObject({ layerType: 'shape', visible: false, opacity: 0.12, transformMatrix: [1, 0, 0, 1, 0, 0] });
    expect(rows[0]).toMatchObject({ layerType: 'image', blendMode: 'multiply', opacity: 0.35, filters: canvas.layers[ids[0]!]!.filters });
    expect(roundOpacity(0.005)).toBe(0.01);
    expect(roundOpacity(1)).toBe(1);
  });

  it('diffs two canvases: added, removed, changed with fields, meta', () => {
    const { doc, ids } = docWithEveryType();
    const before = canvasOf(doc);
    updateLayer(doc, ids[0]!, { opacity: 0.9, name: 'Photo 2' });
    moveLayer(doc, ids[1]!, 'top');
    removeLayer(doc, ids[2]!);
    const added = addLayer(doc, { type: 'text', name: 'New', data: { text: 'hi', fontFamily: 'Inter', fontSize: 10, color: '#000', align: 'left' } });
    doc.getMap('meta').set('background', '#ffffff');
    const diff = diffCanvases(before, canvasOf(doc));
    expect(diff.added.map((a) => a.layerId)).toEqual([added]);
    expect(diff.removed.map((r) => r.layerId)).toEqual([ids[2]]);
    expect(diff.changed).toEqual([
      { layerId: ids[0], fields: ['name', 'opacity'], before: { name: 'Photo', opacity: 0.35 }, after: { name: 'Photo 2', opacity: 0.9 } },
      {
        layerId: ids[1],
        fields: ['order'],
        before: { order: before.layers[ids[1]!]!.order },
        after: { order: getLayer(doc, ids[1]!)!.order },
      },
    ]);
    expect(diff.unchanged).toBe(3);
    expect(diff.meta).toEqual([{ field: 'background', before: 'transparent', after: '#ffffff' }]);
    expect(diffCanvases(before, before)).toEqual({ meta: [], added: [], removed: [], changed: [], unchanged: 6 });
  });

  it('compares content without meta.baseVersionId', () => {
    const { doc } = docWithEveryType();
    const canvas = canvasOf(doc);
    const json = JSON.parse(JSON.stringify({ ...canvas, meta: { ...canvas.meta, baseVersionId: 'ver_other' } })) as unknown;
    expect(sameContent(json, canvas)).toBe(true);
    const first = Object.keys(canvas.layers)[0]!;
    expect(sameContent(json, { ...canvas, layers: { ...canvas.layers, [first]: { ...canvas.layers[first]!, name: 'x' } } })).toBe(false);
    expect(sameContent(undefined, canvas)).toBe(false);
  });

  it('restores a canvas into a live document with the fewest changes', () => {
    const { doc, ids } = docWithEveryType();
    const target = canvasOf(doc);
    const layers = doc.getMap<Y.Map<unknown>>('layers');
    const untouched = layers.get(ids[1]!);
    updateLayer(doc, ids[0]!, { opacity: 0.9 });
    removeLayer(doc, ids[2]!);
    addLayer(doc, { type: 'image', name: 'Extra', data: { imageId: IMAGE } });
    layers.get(ids[3]!)!.set('stray', 1);
    doc.getText('notes').insert(0, 'outside the canvas');

    const other = new Y.Doc();
    Y.applyUpdate(other, Y.encodeStateAsUpdate(doc));
    const sv = Y.encodeStateVector(doc);
    expect(applyCanvas(doc, target)).toBe(true);
    expect(canvasOf(doc)).toEqual(target);
    expect(layers.get(ids[1]!)).toBe(untouched); // unchanged layers keep their Y.Map
    expect(doc.getText('notes').toString()).toBe('outside the canvas');
    expect(applyCanvas(doc, target)).toBe(false);
    // The change is an ordinary Yjs update another replica applies.
    Y.applyUpdate(other, Y.encodeStateAsUpdate(doc, sv));
    expect(canvasOf(other)).toEqual(target);
  });

  it('round-trips a canvas through a Yjs update', () => {
    const { doc } = docWithEveryType();
    const canvas = canvasOf(doc);
    const copy = new Y.Doc();
    Y.applyUpdate(copy, canvasToUpdate(canvas));
    expect(canvasOf(copy)).toEqual(canvas);
    expect(layersInOrder(canvasOf(copy).layers).map(([id]) => id)).toEqual(layerIds(doc));
  });

  it('builds the tree JSON: children, roots, current', () => {
    const row = (id: string, parent: string | null, n: number, depth: number, current = false): TreeRow => ({
      version_id: id,
      image_id: IMAGE,
      parent_version_id: parent,
      version_number: n,
      branch_name: 'main',
      created_by: 'usr_x',
      created_at: new Date(0),
      description: null,
      thumbnail_path: null,
      file_size: 1,
      is_current: current,
      session_id: null,
      kind: 'manual',
      restored_from_version_id: null,
      depth,
    });
    const tree = buildTree(IMAGE, [row('v1', null, 1, 0), row('v2', 'v1', 2, 1), row('v3', 'v1', 3, 1), row('v4', 'v3', 4, 2, true)]);
    expect(tree.rootVersionIds).toEqual(['v1']);
    expect(tree.currentVersionId).toBe('v4');
    expect(tree.versions.map((v) => [v.versionId, v.depth, v.childVersionIds])).toEqual([
      ['v1', 0, ['v2', 'v3']],
      ['v2', 1, []],
      ['v3', 1, ['v4']],
      ['v4', 2, []],
    ]);
  });
});
