/**
 * The canvas the page-vs-server fidelity test draws both ways: every layer type and every one of
 * the 16 blend modes, on an 640 × 400 canvas. The image layer shows `imageId` (a real ingested
 * image when the test has one).
 */
import type { NewLayer } from '../../shared/layers.ts';
import { blendModes } from '../../shared/canvas.ts';

/** Where the blend-mode swatches sit (over the green band, left of the text). */
export const SWATCH = {
  width: 30,
  height: 40,
  top: 270,
  left: (i: number) => 28 + i * 37,
  /** A pixel in the middle of swatch `i`, away from every edge. */
  centre: (i: number): [number, number] => [28 + i * 37 + 15, 290],
};

export function fidelityLayers(imageId: string | undefined): NewLayer[] {
  const layers: NewLayer[] = [];
  if (imageId) {
    layers.push({ type: 'image', name: 'photo', data: { imageId }, transform: [0.5, 0, 0, 0.5, 20, 20] });
  }
  layers.push(
    { type: 'shape', name: 'band', data: { shape: 'rectangle', width: 600, height: 120, fill: '#3cb44b', stroke: null, strokeWidth: 0 }, transform: [1, 0, 0, 1, 20, 260] },
    { type: 'shape', name: 'rounded', data: { shape: 'rectangle', width: 140, height: 90, fill: '#4363d8', stroke: '#000000', strokeWidth: 4, cornerRadius: 16 }, transform: [1, 0, 0, 1, 400, 30] },
    { type: 'shape', name: 'ellipse', data: { shape: 'ellipse', width: 120, height: 80, fill: '#f58231', stroke: null, strokeWidth: 0 }, transform: [0.866, 0.5, -0.5, 0.866, 300, 120] },
    { type: 'shape', name: 'polygon', data: { shape: 'polygon', width: 100, height: 100, fill: '#911eb4', stroke: null, strokeWidth: 0, points: [0, 100, 50, 0, 100, 100] }, transform: [1, 0, 0, 1, 520, 150] },
    { type: 'shape', name: 'path', data: { shape: 'path', width: 80, height: 80, fill: '#42d4f4', stroke: null, strokeWidth: 0, path: 'M0 0 L80 0 L80 80 Z' }, transform: [1, 0, 0, 1, 30, 160] },
    { type: 'shape', name: 'line', data: { shape: 'line', width: 200, height: 40, fill: null, stroke: '#000000', strokeWidth: 6 }, transform: [1, 0, 0, 1, 150, 210] },
    {
      type: 'drawing',
      name: 'ink',
      data: {
        strokes: [
          { tool: 'pen', color: '#e6194b', width: 8, points: [40, 60, 120, 90, 200, 70, 260, 110] },
          { tool: 'marker', color: '#bfef45', width: 14, points: [60, 130, 240, 140] },
        ],
      },
    },
    { type: 'text', name: 'title', data: { text: 'Fidelity 123', fontFamily: 'Noto Sans', fontSize: 36, color: '#000000', align: 'left' }, transform: [1, 0, 0, 1, 330, 320] },
  );
  // One small swatch per blend mode over the band, so every mode composites over real colour.
  blendModes.forEach((mode, i) => {
    layers.push({
      type: 'shape',
      name: `blend ${mode}`,
      data: { shape: 'rectangle', width: SWATCH.width, height: SWATCH.height, fill: i % 2 ? '#ffe119' : '#f032e6', stroke: null, strokeWidth: 0 },
      blendMode: mode,
      opacity: 0.85,
      transform: [1, 0, 0, 1, SWATCH.left(i), SWATCH.top],
    });
  });
  layers.push({
    type: 'adjustment',
    name: 'warm',
    data: { adjustment: 'hue-saturation', hue: 10, saturation: 0.2, lightness: 0 },
    opacity: 0.6,
  });
  return layers;
}
