/**
 * The renderer's boundary: a pure function from a canvas state (shared/canvas.ts) plus a reader of
 * image bytes to an encoded image. The server, the render worker and the tests all call
 * `renderCanvas` (renderer/index.ts); nothing here touches the database or HTTP.
 */
import type { Canvas } from '../shared/canvas.ts';

export type OutputFormat = 'png' | 'webp' | 'jpeg' | 'avif';
export type Fit = 'contain' | 'cover' | 'fill' | 'inside' | 'outside';

export interface RenderOptions {
  /** Output box in CSS pixels; absent = the canvas size (or scaled to keep the aspect ratio). */
  readonly width?: number;
  readonly height?: number;
  readonly fit?: Fit;
  /** Device pixel ratio: the box is multiplied by it (1..4). */
  readonly dpr?: number;
  readonly format?: OutputFormat;
  /** 1..100 for lossy formats. */
  readonly quality?: number;
  /** A region of the canvas, in canvas pixels, rendered instead of the whole. */
  readonly region?: { readonly left: number; readonly top: number; readonly width: number; readonly height: number };
}

/**
 * A file holding an original's bytes, read by the renderer itself where it runs (the local blob
 * store's): in the render pool that is a worker thread, so the bytes of every render's images are
 * allocated and collected in that thread's heap, never the event loop's.
 */
export interface ImageFile {
  readonly file: string;
}

/** Reads an image layer's original (its bytes, or a file of them) by `images.image_id`; the caller has checked access. */
export type ImageSource = (imageId: string) => Promise<Uint8Array | ImageFile | undefined>;

export interface RenderResult {
  readonly data: Buffer;
  readonly format: OutputFormat;
  readonly width: number;
  readonly height: number;
  readonly contentType: string;
  /** Image ids the ImageSource did not return (or that did not decode): rendered as empty areas. */
  readonly missingImages?: readonly string[];
}

export type RenderCanvas = (canvas: Canvas, images: ImageSource, options?: RenderOptions) => Promise<RenderResult>;
