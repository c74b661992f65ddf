/**
 * Per-pixel work the browser's Canvas 2D has no operation for — adjustment layers and the noise
 * filter — with the very functions the server's renderer uses (shared/color.ts), on the
 * non-premultiplied RGBA bytes `getImageData` gives.
 */
export { addNoisePixels, adjustPixels, parseColor, seedOf } from '../shared/color.ts';
