/**
 * Shape and drawing layers as SVG, rasterised by librsvg (through sharp) over the layer's bounding
 * box only: the SVG's viewBox is that box in working-frame pixels and the content carries the
 * layer's full matrix, so librsvg does the transform and the anti-aliasing.
 *
 * Nothing user-written reaches the SVG unchecked: numbers are printed by us, colours are parsed,
 * and path data must match the SVG path grammar's characters (no quotes, no angle brackets).
 */
import sharp from 'sharp';
import type { DrawingLayerData, ShapeLayerData } from '../shared/canvas.ts';
import { hex6, parseColor, type Rgba } from '../shared/color.ts';
import { overInto } from './blend.ts';
import { grow, intersect, meanScale, transformedBox, type Box, type Matrix } from './geometry.ts';
import { emptyRaster, type Raster } from './raster.ts';

const PATH_DATA = /^[MmLlHhVvCcSsQqTtAaZz0-9eE+\-.,\s]*$/;

export function isSafePathData(d: string): boolean {
  return PATH_DATA.test(d);
}

const n = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(4).replace(/0+$/, '').replace(/\.$/, ''));

function paint(kind: 'fill' | 'stroke', color: string | null, extraOpacity = 1): string {
  if (color === null) return `${kind}="none"`;
  const c: Rgba = parseColor(color);
  if (c.a === 0) return `${kind}="none"`;
  const opacity = (c.a / 255) * extraOpacity;
  return `${kind}="${hex6(c)}"${opacity < 1 ? ` ${kind}-opacity="${n(opacity)}"` : ''}`;
}

function pointsAttr(points: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i + 1 < points.length; i += 2) out.push(`${n(points[i]!)},${n(points[i + 1]!)}`);
  return out.join(' ');
}

/** Local bounding rectangle of a point list. */
function pointBounds(points: readonly number[]): [number, number, number, number] {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (let i = 0; i + 1 < points.length; i += 2) {
    x0 = Math.min(x0, points[i]!);
    x1 = Math.max(x1, points[i]!);
    y0 = Math.min(y0, points[i + 1]!);
    y1 = Math.max(y1, points[i + 1]!);
  }
  return [x0, y0, x1, y1];
}

const PATH_ARGS: Record<string, number> = { m: 2, l: 2, h: 1, v: 1, c: 6, s: 4, q: 4, t: 2, a: 7, z: 0 };

/**
 * A box holding everything an SVG path can paint (before its stroke): every end and control
 * point (a Bézier curve lies inside the hull of its control points) and, for an arc, its
 * ellipse around the arc's start (radii scaled up as SVG does when they cannot span the arc).
 * undefined when the data does not read as a path; the caller then rasterises the whole clip. A
 * path without bounds used to make every path layer a frame-sized raster.
 */
export function pathBounds(d: string): [number, number, number, number] | undefined {
  const token = /\s*,?\s*([MmLlHhVvCcSsQqTtAaZz]|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)/y;
  const flag = /\s*,?\s*([01])/y;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const add = (x: number, y: number, r = 0) => {
    x0 = Math.min(x0, x - r); y0 = Math.min(y0, y - r); x1 = Math.max(x1, x + r); y1 = Math.max(y1, y + r);
  };
  let cx = 0, cy = 0, sx = 0, sy = 0;
  let ctrlX = 0, ctrlY = 0; // the last curve's second control point (for S/T reflection)
  let command = '';
  let pos = 0;
  const rest = () => /^[\s,]*$/.test(d.slice(pos));
  const number = (): number | undefined => {
    token.lastIndex = pos;
    const m = token.exec(d);
    if (!m || /[A-Za-z]/.test(m[1]!)) return undefined;
    pos = token.lastIndex;
    return Number(m[1]);
  };
  while (!rest()) {
    token.lastIndex = pos;
    const m = token.exec(d);
    if (!m) return undefined;
    if (/^[A-Za-z]$/.test(m[1]!)) {
      command = m[1]!;
      pos = token.lastIndex;
    } else if (command === '' || command === 'z' || command === 'Z') {
      return undefined; // numbers with no command to take them
    }
    const lower = command.toLowerCase();
    const relative = command !== command.toUpperCase();
    if (lower === 'z') {
      cx = sx; cy = sy; ctrlX = cx; ctrlY = cy;
      continue;
    }
    const args: number[] = [];
    for (let i = 0; i < PATH_ARGS[lower]!; i++) {
      if (lower === 'a' && (i === 3 || i === 4)) {
        flag.lastIndex = pos;
        const f = flag.exec(d);
        if (!f) return undefined;
        pos = flag.lastIndex;
        args.push(Number(f[1]));
        continue;
      }
      const v = number();
      if (v === undefined || !Number.isFinite(v)) return undefined;
      args.push(v);
    }
    const ox = relative ? cx : 0, oy = relative ? cy : 0;
    switch (lower) {
      case 'm':
        cx = ox + args[0]!; cy = oy + args[1]!; sx = cx; sy = cy; add(cx, cy);
        command = relative ? 'l' : 'L'; // further pairs are line-tos
        ctrlX = cx; ctrlY = cy;
        break;
      case 'l':
        cx = ox + args[0]!; cy = oy + args[1]!; add(cx, cy); ctrlX = cx; ctrlY = cy;
        break;
      case 'h':
        cx = ox + args[0]!; add(cx, cy); ctrlX = cx; ctrlY = cy;
        break;
      case 'v':
        cy = oy + args[0]!; add(cx, cy); ctrlX = cx; ctrlY = cy;
        break;
      case 'c':
        add(ox + args[0]!, oy + args[1]!); add(ox + args[2]!, oy + args[3]!);
        ctrlX = ox + args[2]!; ctrlY = oy + args[3]!;
        cx = ox + args[4]!; cy = oy + args[5]!; add(cx, cy);
        break;
      case 's':
        add(2 * cx - ctrlX, 2 * cy - ctrlY); add(ox + args[0]!, oy + args[1]!);
        ctrlX = ox + args[0]!; ctrlY = oy + args[1]!;
        cx = ox + args[2]!; cy = oy + args[3]!; add(cx, cy);
        break;
      case 'q':
        add(ox + args[0]!, oy + args[1]!);
        ctrlX = ox + args[0]!; ctrlY = oy + args[1]!;
        cx = ox + args[2]!; cy = oy + args[3]!; add(cx, cy);
        break;
      case 't': {
        const qx = 2 * cx - ctrlX, qy = 2 * cy - ctrlY;
        add(qx, qy);
        ctrlX = qx; ctrlY = qy;
        cx = ox + args[0]!; cy = oy + args[1]!; add(cx, cy);
        break;
      }
      case 'a': {
        let rx = Math.abs(args[0]!), ry = Math.abs(args[1]!);
        const phi = (args[2]! * Math.PI) / 180;
        const ex = ox + args[5]!, ey = oy + args[6]!;
        if (rx > 0 && ry > 0) {
          // SVG 1.1 F.6.6: radii too small for the arc are scaled up until they span it.
          const hx = (cx - ex) / 2, hy = (cy - ey) / 2;
          const xp = Math.cos(phi) * hx + Math.sin(phi) * hy;
          const yp = -Math.sin(phi) * hx + Math.cos(phi) * hy;
          const lambda = (xp * xp) / (rx * rx) + (yp * yp) / (ry * ry);
          if (lambda > 1) {
            rx *= Math.sqrt(lambda);
            ry *= Math.sqrt(lambda);
          }
          // The ellipse passes through the start: all of it lies within its diameter of it.
          add(cx, cy, 2 * Math.max(rx, ry));
        }
        cx = ex; cy = ey; add(cx, cy); ctrlX = cx; ctrlY = cy;
        break;
      }
    }
  }
  return Number.isFinite(x0) ? [x0, y0, x1, y1] : undefined;
}

export interface VectorPiece {
  /** SVG elements in layer-local coordinates. */
  body: string;
  /** Local bounds of the geometry (before stroke width); undefined = unknown (rasterise the whole clip). */
  bounds: [number, number, number, number] | undefined;
  /** How far paint can reach past the bounds, in local units (half a stroke, miters, blur). */
  reach: number;
}

export function shapeSvg(data: ShapeLayerData): VectorPiece | undefined {
  const sw = data.stroke === null ? 0 : data.strokeWidth;
  const strokeAttrs = sw > 0 ? `${paint('stroke', data.stroke)} stroke-width="${n(sw)}"` : 'stroke="none"';
  const fill = paint('fill', data.fill);
  const w = data.width;
  const h = data.height;
  switch (data.shape) {
    case 'rectangle': {
      if (w <= 0 || h <= 0) return undefined;
      const r = Math.min(data.cornerRadius ?? 0, w / 2, h / 2);
      const rx = r > 0 ? ` rx="${n(r)}" ry="${n(r)}"` : '';
      return { body: `<rect x="0" y="0" width="${n(w)}" height="${n(h)}"${rx} ${fill} ${strokeAttrs} stroke-linejoin="miter"/>`, bounds: [0, 0, w, h], reach: sw };
    }
    case 'ellipse': {
      if (w <= 0 || h <= 0) return undefined;
      return { body: `<ellipse cx="${n(w / 2)}" cy="${n(h / 2)}" rx="${n(w / 2)}" ry="${n(h / 2)}" ${fill} ${strokeAttrs}/>`, bounds: [0, 0, w, h], reach: sw };
    }
    case 'line': {
      // A line runs from the first point to the second, or from (0, 0) to (width, height).
      const p = data.points && data.points.length >= 4 ? data.points.slice(0, 4) : [0, 0, w, h];
      if (sw <= 0) return undefined;
      return {
        body: `<line x1="${n(p[0]!)}" y1="${n(p[1]!)}" x2="${n(p[2]!)}" y2="${n(p[3]!)}" ${strokeAttrs} stroke-linecap="butt"/>`,
        bounds: pointBounds(p),
        reach: sw,
      };
    }
    case 'polygon': {
      const pts = data.points ?? [];
      if (pts.length < 6) return undefined;
      return { body: `<polygon points="${pointsAttr(pts)}" ${fill} ${strokeAttrs} stroke-linejoin="miter"/>`, bounds: pointBounds(pts), reach: sw * 4 };
    }
    case 'path': {
      const d = data.path ?? '';
      if (!isSafePathData(d)) return undefined;
      // Unknown bounds (a path we cannot read) rasterise the whole clip, as librsvg would paint it.
      return { body: `<path d="${d}" ${fill} ${strokeAttrs} stroke-linejoin="miter"/>`, bounds: pathBounds(d), reach: sw * 4 };
    }
  }
}

/** Default stroke opacity per tool when a stroke has none (a marker is translucent). */
export const TOOL_OPACITY = { pen: 1, brush: 1, marker: 0.5, eraser: 1 } as const;

export function drawingSvg(data: DrawingLayerData): VectorPiece | undefined {
  let body = '';
  let defs = '';
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  let reach = 0;
  let id = 0;
  for (const stroke of data.strokes) {
    if (stroke.points.length < 2) continue;
    const d = pathData(stroke.points);
    const [a, b, c, e] = pointBounds(stroke.points);
    const opacity = stroke.opacity ?? TOOL_OPACITY[stroke.tool];
    const w = n(stroke.width);
    if (stroke.tool === 'eraser') {
      // Erases what the layer's earlier strokes painted: everything so far goes under a luminance
      // mask that is white except where the eraser passes (black, or grey for a partial eraser).
      if (body === '') continue;
      const gray = Math.round(255 * (1 - opacity));
      const mask = `m${id++}`;
      defs += `<mask id="${mask}" maskUnits="userSpaceOnUse" x="-1e6" y="-1e6" width="2e6" height="2e6"><rect x="-1e6" y="-1e6" width="2e6" height="2e6" fill="#ffffff"/><path d="${d}" fill="none" stroke="rgb(${gray},${gray},${gray})" stroke-width="${w}" stroke-linecap="round" stroke-linejoin="round"/></mask>`;
      body = `<g mask="url(#${mask})">${body}</g>`;
      continue;
    }
    x0 = Math.min(x0, a); y0 = Math.min(y0, b); x1 = Math.max(x1, c); y1 = Math.max(y1, e);
    const color = parseColor(stroke.color);
    if (color.a === 0) continue;
    const strokePaint = paint('stroke', stroke.color, opacity);
    if (stroke.tool === 'pen') {
      body += `<path d="${d}" fill="none" ${strokePaint} stroke-width="${w}" stroke-linecap="round" stroke-linejoin="round"/>`;
      reach = Math.max(reach, stroke.width);
    } else if (stroke.tool === 'marker') {
      // A chisel marker: square ends, bevelled corners, translucent, painted once per stroke so
      // its own overlaps do not darken.
      body += `<path d="${d}" fill="none" ${strokePaint} stroke-width="${w}" stroke-linecap="square" stroke-linejoin="bevel"/>`;
      reach = Math.max(reach, stroke.width);
    } else {
      // A brush: round, with a soft edge (Gaussian, σ = width / 6).
      const f = `b${id++}`;
      const sigma = stroke.width / 6;
      defs += `<filter id="${f}" filterUnits="userSpaceOnUse" x="-1e6" y="-1e6" width="2e6" height="2e6"><feGaussianBlur stdDeviation="${n(sigma)}"/></filter>`;
      body += `<path d="${d}" fill="none" ${strokePaint} stroke-width="${w}" stroke-linecap="round" stroke-linejoin="round" filter="url(#${f})"/>`;
      reach = Math.max(reach, stroke.width + 3 * sigma);
    }
  }
  if (body === '' || !Number.isFinite(x0)) return undefined;
  return { body: defs === '' ? body : `<defs>${defs}</defs>${body}`, bounds: [x0, y0, x1, y1], reach };
}

function pathData(points: readonly number[]): string {
  let d = `M${n(points[0]!)} ${n(points[1]!)}`;
  if (points.length === 2) return `${d}L${n(points[0]!)} ${n(points[1]!)}`; // a dot: the caps draw it
  for (let i = 2; i + 1 < points.length; i += 2) d += `L${n(points[i]!)} ${n(points[i + 1]!)}`;
  return d;
}

/** The box a piece paints inside `clip` (its bounds through `m`, plus its reach), or the clip. */
function pieceBox(piece: VectorPiece, m: Matrix, clip: Box): Box | undefined {
  if (!piece.bounds) return clip;
  const [x0, y0, x1, y1] = piece.bounds;
  return intersect(transformedBox(m, x0 - piece.reach, y0 - piece.reach, x1 + piece.reach, y1 + piece.reach, 1), clip);
}

/** librsvg renders `body` (local coordinates, matrix `m`) over `box` of the working frame. */
async function svgInBox(body: string, m: Matrix, box: Box): Promise<Raster> {
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${box.width}" height="${box.height}" viewBox="${box.left} ${box.top} ${box.width} ${box.height}">` +
    `<g transform="matrix(${m.map(n).join(' ')})">${body}</g></svg>`;
  const { data, info } = await sharp(Buffer.from(svg), { density: 72, limitInputPixels: false })
    .ensureAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, left: box.left, top: box.top };
}

/** Rasterises a vector piece with matrix `m` (local → working frame) inside `clip`. */
export async function rasterizeVector(piece: VectorPiece, m: Matrix, clip: Box): Promise<Raster | undefined> {
  const box = pieceBox(piece, m, clip);
  return box ? svgInBox(piece.body, m, box) : undefined;
}

type Stroke = DrawingLayerData['strokes'][number];

/**
 * A drawing layer. Without brush strokes: one SVG, librsvg does everything. With them, librsvg's
 * feGaussianBlur measured ≈ 200 ns per pixel of the layer's box whatever σ (30 ms for one brush
 * stroke of the bench canvas, per stroke), so the strokes are taken in order instead: runs of pen
 * and marker strokes as one SVG each, each brush stroke drawn without the filter and its alpha
 * blurred by libvips (a true Gaussian, σ = width / 6 in the layer's scale; one colour, so one
 * band), each composited over what came before; an eraser takes its coverage × its opacity off
 * the alpha of everything before it (what the SVG's luminance mask did).
 */
export async function rasterizeDrawing(data: DrawingLayerData, m: Matrix, clip: Box): Promise<Raster | undefined> {
  const whole = drawingSvg(data);
  if (!whole) return undefined;
  const paints = (s: Stroke) => s.points.length >= 2 && parseColor(s.color).a > 0;
  if (!data.strokes.some((s) => s.tool === 'brush' && paints(s))) return rasterizeVector(whole, m, clip);
  const box = pieceBox(whole, m, clip);
  if (!box) return undefined;
  const acc = emptyRaster(box);
  const over = (r: Raster) => overInto(acc.data, box.width, box.height, { ...r, left: r.left - box.left, top: r.top - box.top });
  let run: Stroke[] = [];
  const flush = async () => {
    const piece = run.length > 0 ? drawingSvg({ strokes: run }) : undefined;
    run = [];
    if (piece) over(await svgInBox(piece.body, m, box));
  };
  const scale = meanScale(m);
  for (const stroke of data.strokes) {
    if (stroke.points.length < 2) continue;
    if (stroke.tool === 'pen' || stroke.tool === 'marker') {
      run.push(stroke);
      continue;
    }
    await flush();
    if (stroke.tool === 'eraser') {
      const opacity = stroke.opacity ?? TOOL_OPACITY.eraser;
      // The mask's grey was round(255 · (1 − opacity)): the same share erased here.
      const share = (255 - Math.round(255 * (1 - opacity))) / 255;
      if (share <= 0) continue;
      const path = `<path d="${pathData(stroke.points)}" fill="none" stroke="#000000" stroke-width="${n(stroke.width)}" stroke-linecap="round" stroke-linejoin="round"/>`;
      const cover = (await svgInBox(path, m, box)).data;
      const a = acc.data;
      for (let i = 3; i < a.length; i += 4) if (cover[i] !== 0 && a[i] !== 0) a[i] = Math.round(a[i]! * (1 - (cover[i]! / 255) * share));
      continue;
    }
    if (!paints(stroke)) continue;
    // brush: the stroke as a pen would draw it, its alpha blurred (room around it for the blur).
    const sigma = (stroke.width / 6) * scale;
    const room = grow(box, Math.ceil(3 * sigma) + 1);
    const pen = drawingSvg({ strokes: [{ ...stroke, tool: 'pen', opacity: stroke.opacity ?? TOOL_OPACITY.brush }] });
    if (!pen) continue;
    const drawn = await svgInBox(pen.body, m, room);
    const alpha = Buffer.alloc(room.width * room.height);
    for (let i = 0, j = 3; i < alpha.length; i++, j += 4) alpha[i] = drawn.data[j]!;
    const blurred =
      sigma < 0.3
        ? alpha
        : await sharp(alpha, { raw: { width: room.width, height: room.height, channels: 1 }, limitInputPixels: false })
            .blur({ sigma, precision: 'float', minAmplitude: 0.01 })
            .toColourspace('b-w')
            .raw()
            .toBuffer();
    const c = parseColor(stroke.color);
    const soft = emptyRaster(box);
    const d = soft.data;
    const dx = box.left - room.left, dy = box.top - room.top;
    for (let y = 0; y < box.height; y++) {
      for (let x = 0, j = (y + dy) * room.width + dx, i = y * box.width * 4; x < box.width; x++, j++, i += 4) {
        d[i] = c.r; d[i + 1] = c.g; d[i + 2] = c.b; d[i + 3] = blurred[j]!;
      }
    }
    over(soft);
  }
  await flush();
  return acc;
}
