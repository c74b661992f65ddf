/**
 * The demo editor served at `/` (built by esbuild from this file, see server/http/web.ts).
 * Everything goes through the typed client (client/index.ts) and the HTTP API; nothing here has
 * privileges a page from elsewhere would not have. The link carries the session and the token
 * in the fragment (`/#session=ses_…&token=…`), which never reaches the server's logs.
 */
import { connectCanvas, type CanvasClient, type ClientError, type Peer } from '../client/index.ts';
import type { Canvas, Layer } from '../shared/canvas.ts';
import { errors, type ErrorCode } from '../shared/errors.ts';
import { layersInOrder, type NewLayer } from '../shared/layers.ts';
import { drawCanvas, layoutText, textHeight } from './draw.ts';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

const params = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
const sessionId = params.get('session') ?? '';
const token = params.get('token') ?? '';

type Tool = 'select' | 'rectangle' | 'ellipse' | 'line' | 'text' | 'draw';

interface SessionInfo {
  sessionId: string;
  imageId: string;
  ownerId: string;
  branchName: string | null;
  isActive: boolean;
}

const state = {
  tool: 'select' as Tool,
  selection: [] as string[],
  me: '' as string,
  session: undefined as SessionInfo | undefined,
  images: new Map<string, ImageBitmap | 'loading' | 'failed'>(),
  scale: 1,
  compare: [] as string[],
  openVersion: undefined as string | undefined,
};

// ------------------------------------------------------------------ HTTP

async function api<T>(method: string, path: string, body?: unknown, raw?: Blob): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (raw) headers['content-type'] = raw.type || 'application/octet-stream';
  const res = await fetch(path, { method, headers, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)) });
  const text = await res.text();
  const json = text ? (JSON.parse(text) as unknown) : undefined;
  if (!res.ok) {
    const err = (json as { error?: { code: string; message: string } } | undefined)?.error;
    throw Object.assign(new Error(err?.message ?? `HTTP ${res.status}`), { code: err?.code ?? 'internal' });
  }
  return json as T;
}

function tokenSubject(jwt: string): string {
  try {
    const payload = JSON.parse(atob(jwt.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/'))) as { sub?: string };
    return payload.sub ?? '';
  } catch {
    return '';
  }
}

// ------------------------------------------------------------------ errors in words

function explain(error: { code: string; message?: string }): string {
  const known = error.code in errors ? errors[error.code as ErrorCode].message : undefined;
  const hints: Record<string, string> = {
    forbidden: 'You can look, but not change this canvas (read-only).',
    participant_removed: 'The owner removed you from this session.',
    session_ended: 'This session has ended.',
    session_expired: 'This session has expired.',
    token_expired: 'Your link has expired: ask for a new one.',
    unauthorized: 'This link is not valid: ask for a new one.',
    rate_limited: 'Too many changes at once: slow down a little.',
    layer_locked: 'That layer is locked by someone else.',
  };
  return hints[error.code] ?? known ?? error.message ?? error.code;
}

function showError(error: { code: string; message?: string } | undefined): void {
  const box = $('error');
  if (!error) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.textContent = explain(error);
  box.dataset.code = error.code;
}

// ------------------------------------------------------------------ start

if (!sessionId || !token) {
  document.body.innerHTML =
    '<p style="padding:2em">Open the link the server printed at start-up: it names the session and carries your token (<code>/#session=…&amp;token=…</code>).</p>';
  throw new Error('no session in the link');
}
state.me = tokenSubject(token);

const client: CanvasClient = connectCanvas({ url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/collab`, sessionId, token });
Object.assign(window, { __editor: { client, state, renderVersionToDataUrl, drawToDataUrl } });

const canvasEl = $<HTMLCanvasElement>('canvas');
const overlayEl = $<HTMLCanvasElement>('overlay');
const ctx = canvasEl.getContext('2d', { willReadFrequently: true })!;
const octx = overlayEl.getContext('2d')!;

client.on('status', renderStatus);
client.on('saved', renderStatus);
client.on('synced', () => {
  renderStatus();
  void loadVersions();
  scheduleDraw();
  renderLayers();
});
client.on('change', () => {
  scheduleDraw();
  scheduleLayers();
});
client.on('peers', () => {
  drawOverlay();
  renderPeople();
});
client.on('access', (canEdit) => {
  renderStatus();
  showError(canEdit ? undefined : { code: 'forbidden' });
});
client.on('error', (error: ClientError) => {
  showError(error);
  renderStatus();
});
client.on('message', (message) => {
  if (message.type === 'versionSaved' || message.type === 'thumbnailReady') void loadVersions();
});
window.addEventListener('online', renderStatus);
window.addEventListener('offline', renderStatus);

void (async () => {
  try {
    const { session } = await api<{ session: SessionInfo }>('GET', `/api/sessions/${sessionId}`);
    state.session = session;
    $('session-name').textContent = `${session.sessionId}${session.branchName ? ` · ${session.branchName}` : ''}`;
    $('invite').hidden = session.ownerId !== state.me;
  } catch {
    // Not readable as a session (older server): the canvas itself names the image (below).
  }
  await Promise.all([loadPeople(), loadVersions()]);
})();

function renderStatus(): void {
  const status = $('status');
  const offline = !navigator.onLine || client.status === 'disconnected';
  status.textContent = offline ? 'offline' : client.status;
  status.className = `pill ${offline ? 'bad' : client.status === 'connected' ? 'ok' : 'warn'}`;
  const saved = $('saved');
  saved.textContent = client.saved ? 'All changes saved' : offline ? 'Not saved (offline)' : 'Saving…';
  saved.className = `pill ${client.saved ? 'ok' : 'warn'}`;
  saved.dataset.saved = String(client.saved);
  const role = $('role');
  role.textContent = client.provider.authorizedScope === undefined ? '' : client.canWrite ? 'can edit' : 'read-only';
  role.dataset.role = client.canWrite ? 'edit' : 'read-only';
}

// ------------------------------------------------------------------ drawing

let drawQueued = false;
function scheduleDraw(): void {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    draw();
  });
}

function imageLookup(imageId: string): ImageBitmap | undefined {
  const entry = state.images.get(imageId);
  if (entry instanceof ImageBitmap) return entry;
  if (entry === undefined) {
    state.images.set(imageId, 'loading');
    void (async () => {
      try {
        const res = await fetch(`/api/images/${imageId}/file?session=${encodeURIComponent(sessionId)}`, { headers: { authorization: `Bearer ${token}` } });
        if (!res.ok) throw new Error(String(res.status));
        state.images.set(imageId, await createImageBitmap(await res.blob()));
        scheduleDraw();
      } catch {
        state.images.set(imageId, 'failed');
      }
    })();
  }
  return undefined;
}

function draw(): void {
  const canvas = client.canvas();
  if (!canvas) return;
  const { width, height } = canvas.meta;
  const stage = $('stage');
  state.scale = Math.min(1, (stage.clientWidth - 32) / width, (stage.clientHeight - 32) / height) || 1;
  for (const el of [canvasEl, overlayEl]) {
    if (el.width !== width || el.height !== height) {
      el.width = width;
      el.height = height;
    }
    el.style.width = `${width * state.scale}px`;
    el.style.height = `${height * state.scale}px`;
  }
  drawCanvas(ctx, canvas, imageLookup);
  drawOverlay();
}

/** The page's drawing of the live canvas as a PNG data URL (tests compare it with the server's render). */
function drawToDataUrl(): string {
  draw();
  return canvasEl.toDataURL('image/png');
}

/** Draws a saved version at 1:1 and returns it as a PNG data URL. */
async function renderVersionToDataUrl(versionId: string): Promise<string> {
  const { canvasState } = await api<{ canvasState: Canvas }>('GET', `/api/versions/${versionId}`);
  const el = document.createElement('canvas');
  el.width = canvasState.meta.width;
  el.height = canvasState.meta.height;
  const c = el.getContext('2d', { willReadFrequently: true })!;
  // Wait for every image the version shows before drawing it for comparison.
  for (let i = 0; i < 200; i++) {
    const missing = drawCanvas(c, canvasState, imageLookup).filter((id) => state.images.get(id) !== 'failed');
    if (missing.length === 0) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  return el.toDataURL('image/png');
}

// ------------------------------------------------------------------ geometry

function layerBox(layer: Layer): { w: number; h: number } {
  switch (layer.type) {
    case 'shape':
      return { w: Math.max(layer.data.width, 1), h: Math.max(layer.data.height, 1) };
    case 'text': {
      ctx.font = `${layer.data.fontStyle === 'italic' ? 'italic ' : ''}${layer.data.fontWeight ?? 'normal'} ${layer.data.fontSize}px "${layer.data.fontFamily}", "Noto Sans", sans-serif`;
      const lines = layoutText(ctx, layer.data);
      const w = layer.data.boxWidth ?? Math.max(1, ...lines.map((l) => ctx.measureText(l.text).width));
      return { w, h: textHeight(ctx, layer.data, lines.length) };
    }
    case 'drawing': {
      let w = 1;
      let h = 1;
      for (const s of layer.data.strokes) for (let i = 0; i + 1 < s.points.length; i += 2) {
        w = Math.max(w, s.points[i]! + s.width);
        h = Math.max(h, s.points[i + 1]! + s.width);
      }
      return { w, h };
    }
    case 'image': {
      const img = state.images.get(layer.data.imageId);
      const crop = layer.data.crop;
      if (crop) return { w: crop.width, h: crop.height };
      return img instanceof ImageBitmap ? { w: img.width, h: img.height } : { w: client.canvas()?.meta.width ?? 1, h: client.canvas()?.meta.height ?? 1 };
    }
    default:
      return { w: client.canvas()?.meta.width ?? 1, h: client.canvas()?.meta.height ?? 1 };
  }
}

function corners(layer: Layer): Array<[number, number]> {
  const { w, h } = layerBox(layer);
  const [a, b, c, d, e, f] = layer.transform;
  return ([[0, 0], [w, 0], [w, h], [0, h]] as Array<[number, number]>).map(([x, y]) => [a * x + c * y + e, b * x + d * y + f]);
}

function toLocal(layer: Layer, x: number, y: number): [number, number] {
  const [a, b, c, d, e, f] = layer.transform;
  const det = a * d - b * c || 1;
  const dx = x - e;
  const dy = y - f;
  return [(d * dx - c * dy) / det, (-b * dx + a * dy) / det];
}

function hitTest(x: number, y: number): string | undefined {
  const canvas = client.canvas();
  if (!canvas) return undefined;
  const ordered = layersInOrder(canvas.layers).reverse();
  for (const [id, layer] of ordered) {
    if (!layer.visible || layer.type === 'adjustment') continue;
    const [lx, ly] = toLocal(layer, x, y);
    const { w, h } = layerBox(layer);
    if (lx >= 0 && ly >= 0 && lx <= w && ly <= h) return id;
  }
  return undefined;
}

// ------------------------------------------------------------------ overlay: selections and cursors

function outline(layer: Layer, color: string, width: number): void {
  const pts = corners(layer);
  octx.strokeStyle = color;
  octx.lineWidth = width;
  octx.beginPath();
  pts.forEach(([x, y], i) => (i === 0 ? octx.moveTo(x, y) : octx.lineTo(x, y)));
  octx.closePath();
  octx.stroke();
}

function drawOverlay(): void {
  octx.setTransform(1, 0, 0, 1, 0, 0);
  octx.clearRect(0, 0, overlayEl.width, overlayEl.height);
  const canvas = client.canvas();
  if (!canvas) return;
  const px = 1 / state.scale;
  for (const peer of client.peers()) {
    for (const id of peer.selection) {
      const layer = canvas.layers[id];
      if (layer) outline(layer, peer.user.color, 2 * px);
    }
  }
  for (const id of state.selection) {
    const layer = canvas.layers[id];
    if (!layer) continue;
    outline(layer, '#4363d8', 2 * px);
    const [, tr, br] = corners(layer);
    octx.fillStyle = '#4363d8';
    octx.fillRect(br![0] - 5 * px, br![1] - 5 * px, 10 * px, 10 * px); // scale handle
    const top = corners(layer)[0]!;
    octx.beginPath();
    octx.arc((top[0] + tr![0]) / 2, (top[1] + tr![1]) / 2 - 20 * px, 5 * px, 0, Math.PI * 2); // rotate handle
    octx.fill();
  }
  for (const peer of client.peers()) drawCursor(peer, px);
  if (draft) drawDraft(px);
}

function drawCursor(peer: Peer, px: number): void {
  if (!peer.cursor) return;
  const { x, y } = peer.cursor;
  octx.fillStyle = peer.user.color;
  octx.beginPath();
  octx.moveTo(x, y);
  octx.lineTo(x + 12 * px, y + 4 * px);
  octx.lineTo(x + 4 * px, y + 12 * px);
  octx.closePath();
  octx.fill();
  octx.font = `${12 * px}px "Noto Sans", sans-serif`;
  const label = peer.user.name;
  const w = octx.measureText(label).width + 8 * px;
  octx.fillRect(x + 12 * px, y + 12 * px, w, 16 * px);
  octx.fillStyle = '#fff';
  octx.textBaseline = 'top';
  octx.fillText(label, x + 16 * px, y + 14 * px);
}

// ------------------------------------------------------------------ pointer: tools

type Drag =
  | { kind: 'move'; id: string; x: number; y: number; start: Layer['transform'] }
  | { kind: 'scale'; id: string; x: number; y: number; start: Layer['transform']; box: { w: number; h: number } }
  | { kind: 'rotate'; id: string; cx: number; cy: number; start: Layer['transform']; angle0: number }
  | { kind: 'shape'; x: number; y: number; x2: number; y2: number }
  | { kind: 'draw'; points: number[] };
let drag: Drag | undefined;
let draft: Drag | undefined;

function point(event: PointerEvent): [number, number] {
  const rect = overlayEl.getBoundingClientRect();
  return [(event.clientX - rect.left) / state.scale, (event.clientY - rect.top) / state.scale];
}

function color(): string {
  return ($<HTMLInputElement>('color').value || '#e6194b').toLowerCase();
}

function strokeWidth(): number {
  return Math.max(1, Number($<HTMLInputElement>('stroke-width').value) || 4);
}

function select(ids: string[]): void {
  state.selection = ids;
  client.setSelection(ids);
  renderLayers();
  drawOverlay();
}

function guarded(fn: () => void): void {
  if (!client.canWrite) {
    showError({ code: 'forbidden' });
    return;
  }
  try {
    fn();
  } catch (error) {
    showError({ code: 'invalid_canvas', message: (error as Error).message });
  }
}

overlayEl.addEventListener('pointerdown', (event) => {
  const [x, y] = point(event);
  overlayEl.setPointerCapture(event.pointerId);
  const canvas = client.canvas();
  if (!canvas) return;
  if (state.tool === 'select') {
    const selected = state.selection[0] ? canvas.layers[state.selection[0]] : undefined;
    if (selected && state.selection[0]) {
      const c = corners(selected);
      const px = 1 / state.scale;
      const br = c[2]!;
      const topMid = [(c[0]![0] + c[1]![0]) / 2, (c[0]![1] + c[1]![1]) / 2 - 20 * px] as const;
      if (Math.abs(x - br[0]) < 8 * px && Math.abs(y - br[1]) < 8 * px) {
        drag = { kind: 'scale', id: state.selection[0], x, y, start: selected.transform, box: layerBox(selected) };
        return;
      }
      if (Math.hypot(x - topMid[0], y - topMid[1]) < 8 * px) {
        const cx = (c[0]![0] + c[2]![0]) / 2;
        const cy = (c[0]![1] + c[2]![1]) / 2;
        drag = { kind: 'rotate', id: state.selection[0], cx, cy, start: selected.transform, angle0: Math.atan2(y - cy, x - cx) };
        return;
      }
    }
    const id = hitTest(x, y);
    select(id ? [id] : []);
    if (id) drag = { kind: 'move', id, x, y, start: canvas.layers[id]!.transform };
    return;
  }
  if (state.tool === 'text') {
    const text = prompt('Text');
    if (text) {
      guarded(() => {
        const id = client.addLayer({
          type: 'text',
          name: text.slice(0, 40) || 'Text',
          data: { text, fontFamily: 'Noto Sans', fontSize: 32, color: color(), align: 'left' },
          transform: [1, 0, 0, 1, x, y],
        });
        select([id]);
      });
    }
    return;
  }
  if (state.tool === 'draw') drag = { kind: 'draw', points: [x, y] };
  else drag = { kind: 'shape', x, y, x2: x, y2: y };
  draft = drag;
});

overlayEl.addEventListener('pointermove', (event) => {
  const [x, y] = point(event);
  client.setCursor({ x: Math.round(x), y: Math.round(y) });
  if (!drag) return;
  if (drag.kind === 'move') {
    const [a, b, c, d, e, f] = drag.start;
    const dx = x - drag.x;
    const dy = y - drag.y;
    guarded(() => client.updateLayer((drag as { id: string }).id, { transform: [a, b, c, d, e + dx, f + dy] }));
  } else if (drag.kind === 'scale') {
    const layer = client.layer(drag.id);
    if (!layer) return;
    const [lx, ly] = toLocal({ ...layer, transform: drag.start } as Layer, x, y);
    const sx = Math.max(0.05, lx / drag.box.w);
    const sy = Math.max(0.05, ly / drag.box.h);
    const [a, b, c, d, e, f] = drag.start;
    guarded(() => client.updateLayer((drag as { id: string }).id, { transform: [a * sx, b * sx, c * sy, d * sy, e, f] }));
  } else if (drag.kind === 'rotate') {
    const t = Math.atan2(y - drag.cy, x - drag.cx) - drag.angle0;
    const cos = Math.cos(t);
    const sin = Math.sin(t);
    const [a, b, c, d, e, f] = drag.start;
    // Rotate about the layer's centre: R·(p − centre) + centre, composed with the old matrix.
    const ne = cos * (e - drag.cx) - sin * (f - drag.cy) + drag.cx;
    const nf = sin * (e - drag.cx) + cos * (f - drag.cy) + drag.cy;
    guarded(() =>
      client.updateLayer((drag as { id: string }).id, {
        transform: [cos * a - sin * b, sin * a + cos * b, cos * c - sin * d, sin * c + cos * d, ne, nf],
      }),
    );
  } else if (drag.kind === 'shape') {
    drag.x2 = x;
    drag.y2 = y;
    drawOverlay();
  } else {
    drag.points.push(Math.round(x * 10) / 10, Math.round(y * 10) / 10);
    drawOverlay();
  }
});

overlayEl.addEventListener('pointerup', () => {
  const done = drag;
  drag = undefined;
  draft = undefined;
  if (!done) return;
  if (done.kind === 'shape') {
    const x = Math.min(done.x, done.x2);
    const y = Math.min(done.y, done.y2);
    const w = Math.abs(done.x2 - done.x);
    const h = Math.abs(done.y2 - done.y);
    if (w < 2 && h < 2) return drawOverlay();
    const kind = state.tool as 'rectangle' | 'ellipse' | 'line';
    const layer: NewLayer =
      kind === 'line'
        ? {
            type: 'shape',
            name: 'Line',
            data: { shape: 'line', width: done.x2 - done.x, height: done.y2 - done.y, fill: null, stroke: color(), strokeWidth: strokeWidth() },
            transform: [1, 0, 0, 1, done.x, done.y],
          }
        : {
            type: 'shape',
            name: kind === 'rectangle' ? 'Rectangle' : 'Ellipse',
            data: { shape: kind, width: w, height: h, fill: color(), stroke: null, strokeWidth: 0 },
            transform: [1, 0, 0, 1, x, y],
          };
    guarded(() => select([client.addLayer(layer)]));
  } else if (done.kind === 'draw') {
    if (done.points.length < 2) return;
    guarded(() =>
      select([
        client.addLayer({
          type: 'drawing',
          name: 'Drawing',
          data: { strokes: [{ tool: 'pen', color: color(), width: strokeWidth(), points: done.points }] },
        }),
      ]),
    );
  }
  drawOverlay();
});

overlayEl.addEventListener('pointerleave', () => client.setCursor(null));

function drawDraft(px: number): void {
  if (!draft) return;
  octx.strokeStyle = color();
  octx.lineWidth = draft.kind === 'draw' ? strokeWidth() : 1 * px;
  octx.setLineDash(draft.kind === 'draw' ? [] : [4 * px, 4 * px]);
  octx.beginPath();
  if (draft.kind === 'draw') {
    const p = draft.points;
    octx.lineCap = 'round';
    octx.lineJoin = 'round';
    for (let i = 0; i + 1 < p.length; i += 2) {
      if (i === 0) octx.moveTo(p[i]!, p[i + 1]!);
      else octx.lineTo(p[i]!, p[i + 1]!);
    }
  } else if (draft.kind === 'shape') {
    if (state.tool === 'line') {
      octx.moveTo(draft.x, draft.y);
      octx.lineTo(draft.x2, draft.y2);
    } else if (state.tool === 'ellipse') {
      octx.ellipse((draft.x + draft.x2) / 2, (draft.y + draft.y2) / 2, Math.abs(draft.x2 - draft.x) / 2, Math.abs(draft.y2 - draft.y) / 2, 0, 0, Math.PI * 2);
    } else octx.rect(Math.min(draft.x, draft.x2), Math.min(draft.y, draft.y2), Math.abs(draft.x2 - draft.x), Math.abs(draft.y2 - draft.y));
  }
  octx.stroke();
  octx.setLineDash([]);
}

for (const button of document.querySelectorAll<HTMLButtonElement>('[data-tool]')) {
  button.addEventListener('click', () => {
    state.tool = button.dataset.tool as Tool;
    for (const b of document.querySelectorAll('[data-tool]')) b.classList.toggle('active', b === button);
  });
}

$('undo').addEventListener('click', () => client.undo());
$('redo').addEventListener('click', () => client.redo());
document.addEventListener('keydown', (event) => {
  if ((event.target as HTMLElement).tagName === 'INPUT') return;
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 'z') {
    event.preventDefault();
    if (event.shiftKey) client.redo();
    else client.undo();
  } else if ((event.key === 'Delete' || event.key === 'Backspace') && state.selection.length) {
    guarded(() => state.selection.forEach((id) => client.removeLayer(id)));
    select([]);
  }
});

// ------------------------------------------------------------------ image upload

$<HTMLInputElement>('upload').addEventListener('change', async (event) => {
  const file = (event.target as HTMLInputElement).files?.[0];
  if (!file) return;
  if (!client.canWrite) return showError({ code: 'forbidden' });
  try {
    const { image } = await api<{ image: { imageId: string; width: number; height: number } }>(
      'POST',
      `/api/images?title=${encodeURIComponent(file.name)}`,
      undefined,
      file,
    );
    const meta = client.canvas()?.meta;
    const scale = meta ? Math.min(1, meta.width / 2 / image.width, meta.height / 2 / image.height) : 1;
    guarded(() =>
      select([
        client.addLayer({ type: 'image', name: file.name.slice(0, 100) || 'Image', data: { imageId: image.imageId }, transform: [scale, 0, 0, scale, 20, 20] }),
      ]),
    );
  } catch (error) {
    showError(error as { code: string; message: string });
  }
});

// ------------------------------------------------------------------ layers panel

let layersQueued = false;
function scheduleLayers(): void {
  if (layersQueued) return;
  layersQueued = true;
  setTimeout(() => {
    layersQueued = false;
    renderLayers();
  }, 50);
}

const BLENDS: Layer['blendMode'][] = [
  'normal', 'multiply', 'screen', 'overlay', 'darken', 'lighten', 'color-dodge', 'color-burn',
  'hard-light', 'soft-light', 'difference', 'exclusion', 'hue', 'saturation', 'color', 'luminosity',
];

function renderLayers(): void {
  const list = $('layers');
  const canvas = client.canvas();
  if (!canvas) return;
  if (list.contains(document.activeElement) && document.activeElement?.tagName === 'INPUT') return; // do not fight a slider
  list.replaceChildren();
  const top = layersInOrder(canvas.layers).reverse();
  for (const [id, layer] of top) {
    const li = document.createElement('li');
    li.draggable = true;
    li.dataset.layerId = id;
    li.dataset.testid = 'layer';
    li.classList.toggle('selected', state.selection.includes(id));
    const visible = document.createElement('input');
    visible.type = 'checkbox';
    visible.checked = layer.visible;
    visible.title = 'visible';
    visible.addEventListener('change', () => guarded(() => client.updateLayer(id, { visible: visible.checked })));
    const name = document.createElement('span');
    name.textContent = `${layer.name} (${layer.type})`;
    name.addEventListener('click', () => select([id]));
    const lock = document.createElement('button');
    lock.textContent = layer.locked ? '🔒' : '🔓';
    lock.title = layer.locked ? 'unlock' : 'lock';
    lock.addEventListener('click', () => guarded(() => client.updateLayer(id, { locked: !layer.locked })));
    const props = document.createElement('div');
    props.className = 'props';
    const opacity = document.createElement('input');
    opacity.type = 'range';
    opacity.min = '0';
    opacity.max = '1';
    opacity.step = '0.05';
    opacity.value = String(layer.opacity);
    opacity.title = 'opacity';
    opacity.addEventListener('input', () => guarded(() => client.updateLayer(id, { opacity: Number(opacity.value) })));
    const blend = document.createElement('select');
    blend.title = 'blend mode';
    for (const mode of BLENDS) blend.add(new Option(mode, mode, false, mode === layer.blendMode));
    blend.addEventListener('change', () => guarded(() => client.updateLayer(id, { blendMode: blend.value as Layer['blendMode'] })));
    const remove = document.createElement('button');
    remove.textContent = '✕';
    remove.title = 'delete layer';
    remove.addEventListener('click', () => guarded(() => client.removeLayer(id)));
    props.append(opacity, blend, remove);
    li.append(visible, name, lock, props);
    li.addEventListener('dragstart', (e) => e.dataTransfer?.setData('text/plain', id));
    li.addEventListener('dragover', (e) => e.preventDefault());
    li.addEventListener('drop', (e) => {
      e.preventDefault();
      const moved = e.dataTransfer?.getData('text/plain');
      if (moved && moved !== id) guarded(() => client.reorderLayer(moved, { above: id }));
    });
    list.append(li);
  }
}

// ------------------------------------------------------------------ people

interface ParticipantJson {
  userId: string;
  displayName?: string;
  username?: string;
  cursorColor?: string;
  isOnline?: boolean;
  permissions?: { canEdit?: boolean };
}
let participants: ParticipantJson[] = [];

async function loadPeople(): Promise<void> {
  try {
    const res = await api<{ participants: ParticipantJson[] }>('GET', `/api/sessions/${sessionId}/participants`);
    participants = res.participants;
  } catch {
    participants = [];
  }
  renderPeople();
}

function renderPeople(): void {
  const list = $('people');
  list.replaceChildren();
  const online = new Set(client.peers().map((p) => p.user.id));
  online.add(state.me);
  const owner = state.session?.ownerId === state.me;
  for (const p of participants) {
    const li = document.createElement('li');
    li.dataset.userId = p.userId;
    li.classList.toggle('offline', !online.has(p.userId));
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.style.background = p.cursorColor ?? '#999';
    const name = document.createElement('span');
    name.textContent = `${p.displayName ?? p.username ?? p.userId}${p.userId === state.me ? ' (you)' : ''}${p.permissions?.canEdit === false ? ' · read-only' : ''}`;
    li.append(dot, name);
    if (owner && p.userId !== state.me) {
      const toggle = document.createElement('button');
      toggle.textContent = p.permissions?.canEdit === false ? 'allow edits' : 'make read-only';
      toggle.addEventListener('click', async () => {
        await api('POST', `/api/sessions/${sessionId}/participants`, { userId: p.userId, permissions: { canEdit: p.permissions?.canEdit === false } }).catch(showError);
        await loadPeople();
      });
      const remove = document.createElement('button');
      remove.textContent = 'remove';
      remove.addEventListener('click', async () => {
        await api('DELETE', `/api/sessions/${sessionId}/participants/${p.userId}`).catch(showError);
        await loadPeople();
      });
      li.append(toggle, remove);
    }
    list.append(li);
  }
}

$('invite').addEventListener('submit', async (event) => {
  event.preventDefault();
  const username = $<HTMLInputElement>('invite-username').value.trim();
  try {
    const found = await api<{ users: Array<{ userId: string }> } | { user: { userId: string } }>('GET', `/api/users?username=${encodeURIComponent(username)}`);
    const userId = 'user' in found ? found.user.userId : found.users[0]?.userId;
    if (!userId) throw Object.assign(new Error('No such user.'), { code: 'user_not_found' });
    await api('POST', `/api/sessions/${sessionId}/participants`, { userId, permissions: { canEdit: $<HTMLInputElement>('invite-edit').checked } });
    $<HTMLInputElement>('invite-username').value = '';
    await loadPeople();
  } catch (error) {
    showError(error as { code: string; message: string });
  }
});

// ------------------------------------------------------------------ versions

interface VersionNode {
  versionId: string;
  versionNumber: number;
  description: string | null;
  branchName: string;
  kind?: string;
  thumbnailUrl?: string | null;
  depth?: number;
}

$('save-version').addEventListener('click', async () => {
  const input = $<HTMLInputElement>('version-description');
  try {
    await client.saveVersion(input.value || undefined);
    input.value = '';
    await loadVersions();
  } catch (error) {
    showError(error as ClientError);
  }
});

function imageId(): string | undefined {
  return state.session?.imageId ?? client.canvas()?.meta.imageId;
}

async function loadVersions(): Promise<void> {
  const image = imageId();
  if (!image) return;
  try {
    const tree = await api<{ versions: VersionNode[]; currentVersionId: string | null }>('GET', `/api/images/${image}/versions`);
    renderVersions(tree.versions, tree.currentVersionId);
  } catch {
    // not readable: leave the list empty
  }
}

function renderVersions(versions: VersionNode[], current: string | null): void {
  const list = $('versions');
  list.replaceChildren();
  for (const v of [...versions].reverse()) {
    const li = document.createElement('li');
    li.dataset.versionId = v.versionId;
    li.style.paddingLeft = `${(v.depth ?? 0) * 6}px`;
    const pick = document.createElement('input');
    pick.type = 'checkbox';
    pick.title = 'compare';
    pick.checked = state.compare.includes(v.versionId);
    pick.addEventListener('change', () => {
      state.compare = pick.checked ? [...state.compare, v.versionId].slice(-2) : state.compare.filter((x) => x !== v.versionId);
      void renderDiff();
    });
    const img = document.createElement('img');
    img.alt = '';
    if (v.thumbnailUrl) img.src = v.thumbnailUrl;
    const label = document.createElement('a');
    label.href = '#';
    label.textContent = `v${v.versionNumber} ${v.branchName}${v.versionId === current ? ' ★' : ''} ${v.description ?? v.kind ?? ''}`;
    label.addEventListener('click', (e) => {
      e.preventDefault();
      void openVersion(v);
    });
    li.append(pick, img, label);
    list.append(li);
  }
}

async function openVersion(v: VersionNode): Promise<void> {
  state.openVersion = v.versionId;
  $('version-title').textContent = `Version ${v.versionNumber} (${v.branchName})`;
  const dialog = $<HTMLDialogElement>('version-view');
  dialog.showModal();
  const el = $<HTMLCanvasElement>('version-canvas');
  const { canvasState } = await api<{ canvasState: Canvas }>('GET', `/api/versions/${v.versionId}`);
  el.width = canvasState.meta.width;
  el.height = canvasState.meta.height;
  drawCanvas(el.getContext('2d')!, canvasState, imageLookup);
}

$('version-close').addEventListener('click', () => $<HTMLDialogElement>('version-view').close());
$('version-restore').addEventListener('click', async () => {
  if (!state.openVersion) return;
  await api('POST', `/api/sessions/${sessionId}/restore`, { versionId: state.openVersion }).catch(showError);
  $<HTMLDialogElement>('version-view').close();
  await loadVersions();
});
$('version-branch').addEventListener('click', async () => {
  const image = imageId();
  if (!state.openVersion || !image) return;
  try {
    const { session } = await api<{ session: SessionInfo }>('POST', '/api/sessions', { imageId: image, fromVersionId: state.openVersion });
    location.hash = `session=${session.sessionId}&token=${token}`;
    location.reload();
  } catch (error) {
    showError(error as { code: string; message: string });
  }
});

async function renderDiff(): Promise<void> {
  const box = $('diff');
  if (state.compare.length !== 2) {
    box.hidden = true;
    return;
  }
  const [a, b] = state.compare;
  const diff = await api<{ added: unknown[]; removed: unknown[]; changed: Array<{ layerId: string; fields: string[] }>; meta: unknown[] }>(
    'GET',
    `/api/versions/${a}/diff/${b}`,
  );
  box.hidden = false;
  box.textContent = `${diff.added.length} added, ${diff.removed.length} removed, ${diff.changed.length} changed${
    diff.changed.length ? `: ${diff.changed.map((c) => `${c.layerId} (${c.fields.join(', ')})`).join('; ')}` : ''
  }`;
}

addEventListener('resize', scheduleDraw);
