/** Small canvases and pixel readers for the renderer tests (test/renderer*.test.ts). */
import sharp from 'sharp';
import type { BlendMode, Canvas, Filter, Layer } from '../../shared/canvas.ts';

type Matrix = [number, number, number, number, number, number];
export const at = (x: number, y: number): Matrix => [1, 0, 0, 1, x, y];

type LayerInput = { [T in Layer['type']]: { type: T; data: Extract<Layer, { type: T }>['data'] } }[Layer['type']];

export function layer(
  input: LayerInput,
  extra: { order?: string; opacity?: number; blendMode?: BlendMode; visible?: boolean; transform?: Matrix; filters?: Filter[] } = {},
): Layer {
  return {
    name: input.type,
    order: extra.order ?? 'a0',
    visible: extra.visible ?? true,
    opacity: extra.opacity ?? 1,
    blendMode: extra.blendMode ?? 'normal',
    locked: false,
    transform: extra.transform ?? [1, 0, 0, 1, 0, 0],
    filters: extra.filters ?? [],
    ...input,
  } as Layer;
}

export function canvasOf(width: number, height: number, layers: Record<string, Layer>, background = 'transparent'): Canvas {
  return { meta: { width, height, background, imageId: 'img_base', baseVersionId: null }, layers };
}

export function rect(width: number, height: number, fill: string, extra: Partial<{ stroke: string; strokeWidth: number; cornerRadius: number }> = {}) {
  return {
    type: 'shape' as const,
    data: { shape: 'rectangle' as const, width, height, fill, stroke: extra.stroke ?? null, strokeWidth: extra.strokeWidth ?? 0, ...(extra.cornerRadius ? { cornerRadius: extra.cornerRadius } : {}) },
  };
}

export interface Pixels {
  data: Buffer;
  width: number;
  height: number;
}

/** Decodes an encoded render to RGBA. */
export async function decode(bytes: Buffer): Promise<Pixels> {
  const { data, info } = await sharp(bytes).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

export function pixel(p: Pixels, x: number, y: number): [number, number, number, number] {
  const i = (y * p.width + x) * 4;
  return [p.data[i]!, p.data[i + 1]!, p.data[i + 2]!, p.data[i + 3]!];
}

/** A deterministic RGB test photo (gradients + a checker), as PNG bytes. */
export async function testPhoto(width: number, height: number, alpha = false): Promise<Buffer> {
  const channels = alpha ? 4 : 3;
  const px = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * channels;
      const check = ((x >> 3) + (y >> 3)) % 2 === 0;
      px[i] = Math.round((x / Math.max(1, width - 1)) * 255);
      px[i + 1] = Math.round((y / Math.max(1, height - 1)) * 255);
      px[i + 2] = check ? 200 : 40;
      if (alpha) px[i + 3] = Math.round(255 - (x / Math.max(1, width - 1)) * 200);
    }
  }
  return sharp(px, { raw: { width, height, channels } }).png().toBuffer();
}
