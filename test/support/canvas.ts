/** Canvas content for tests: one layer of every type, with filters, transforms and blend modes. */
import type * as Y from 'yjs';
import { addLayer, type NewLayer } from '../../shared/layers.ts';

export function everyLayerType(imageId: string): NewLayer[] {
  return [
    {
      type: 'image',
      name: 'Photo',
      data: { imageId, crop: { x: 10, y: 20, width: 300, height: 200 }, flipX: true },
      opacity: 0.35,
      blendMode: 'multiply',
      transform: [0.5, 0, 0, 0.5, 12.25, -4],
      filters: [
        { type: 'blur', radius: 2.5 },
        { type: 'drop-shadow', offsetX: 3, offsetY: -2, blur: 4, color: '#00000080' },
      ],
    },
    {
      type: 'drawing',
      name: 'Sketch',
      data: {
        strokes: [
          { tool: 'pen', color: '#ff0000', width: 3, points: [0, 0, 10.5, 10, 20, 5] },
          { tool: 'eraser', color: '#000', width: 12, opacity: 0.5, points: [5, 5, 6, 6] },
        ],
      },
      blendMode: 'screen',
      locked: true,
    },
    {
      type: 'text',
      name: 'Caption — “quoted” ünïcode',
      data: {
        text: 'Hello, world\nsecond line ✓',
        fontFamily: 'Inter',
        fontSize: 32,
        fontWeight: 700,
        fontStyle: 'italic',
        color: '#333333',
        align: 'center',
        lineHeight: 1.25,
        boxWidth: 400,
      },
      transform: [Math.cos(0.3), Math.sin(0.3), -Math.sin(0.3), Math.cos(0.3), 100, 50],
    },
    {
      type: 'shape',
      name: 'Frame',
      data: { shape: 'polygon', width: 200, height: 100, fill: null, stroke: '#00ff00', strokeWidth: 2, points: [0, 0, 200, 0, 100, 100] },
      visible: false,
      opacity: 0.123456789,
      filters: [{ type: 'hue-rotate', degrees: 90 }],
    },
    {
      type: 'adjustment',
      name: 'Curves',
      data: { adjustment: 'curves', channel: 'rgb', points: [[0, 0], [128, 140], [255, 255]] },
      blendMode: 'luminosity',
    },
    {
      type: 'adjustment',
      name: 'Brightness',
      data: { adjustment: 'brightness-contrast', brightness: 0.1, contrast: -0.2 },
    },
  ];
}

/** Adds every layer type to a live document; returns their ids bottom to top. */
export function addEveryLayerType(doc: Y.Doc, imageId: string): string[] {
  return everyLayerType(imageId).map((layer) => addLayer(doc, layer));
}
