/**
 * The typed client for editor front-ends: one `CanvasClient` per edit session, over a
 * HocuspocusProvider. Runs in browsers and in Node (give `WebSocketPolyfill: ws` there: Node has
 * no global WebSocket before 22, and HocuspocusProvider's own `url` option needs one).
 *
 * What it adds to the provider:
 * - typed canvas operations (the `shared/layers.ts` helpers), each one transaction with this
 *   client's own origin, so `undo()`/`redo()` (a `Y.UndoManager`) revert only this user's changes —
 *   never a collaborator's edit or a server-side restore;
 * - typed awareness (cursor, selection) and the list of peers;
 * - typed stateless messages: `saveVersion()` resolves with the saved version (or rejects with the
 *   server's error code), and every server message reaches `on('message')`;
 * - `saved`: true only when the server has durably acknowledged every local change (the
 *   provider's unsynced count is zero after the first sync — the server acknowledges after the
 *   PostgreSQL commit), so "all changes saved" on a page is never a lie;
 * - errors as registry codes (`shared/errors.ts`) with their sentence, whether they come as an
 *   authentication refusal, a close reason or a stateless error.
 *
 * No Node built-ins: this module bundles for the browser as is.
 */
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import * as Y from 'yjs';
import { canvasSchema, readCanvas, type Canvas, type Layer } from '../shared/canvas.ts';
import { errors, type ErrorCode } from '../shared/errors.ts';
import { addLayer, layerIds, moveLayer, removeLayer, updateLayer, type LayerPatch, type NewLayer, type Placement } from '../shared/layers.ts';
import type { AwarenessState } from '../shared/presence.ts';
import { CloseCode, type AccessChangedMessage } from '../shared/protocol.ts';
import type { VersionJson } from '../shared/versions.ts';

export type ConnectionStatus = 'connecting' | 'connected' | 'disconnected';

/** An error the server reported, by its registry code. */
export interface ClientError {
  readonly code: string;
  /** The registry's sentence for known codes, else what the server sent. */
  readonly message: string;
  /** Where it came from: refused at authentication, the socket closed, or a stateless error. */
  readonly source: 'authentication' | 'close' | 'stateless';
  readonly layerId?: string;
  readonly requestId?: string;
}

/** A server → client stateless message (docs/CONTRACT.md, "Stateless messages"); unknown types pass as `other`. */
export type ServerMessage =
  | { type: 'versionSaved'; version: VersionJson; requestId?: string }
  | { type: 'thumbnailReady'; versionId: string; [key: string]: unknown }
  | { type: 'comment'; action: string; comment: unknown }
  | { type: 'error'; code: string; message?: string; layerId?: string; requestId?: string }
  | AccessChangedMessage
  | { type: 'other'; payload: unknown };

export interface Peer extends AwarenessState {
  readonly clientId: number;
}

interface Events {
  status: ConnectionStatus;
  saved: boolean;
  synced: undefined;
  change: undefined;
  peers: Peer[];
  message: ServerMessage;
  error: ClientError;
  /** The server changed this connection's access in place (true: may edit). */
  access: boolean;
}
type Listener<K extends keyof Events> = (value: Events[K]) => void;

export interface ConnectOptions {
  /** `ws://host:port/collab` */
  url: string;
  /** `edit_sessions.session_id`: the document name. */
  sessionId: string;
  /** The JWT, or a function returning a fresh one (called at each (re)connect). */
  token: string | (() => string | Promise<string>);
  /** Node: `import WebSocket from 'ws'` and pass it here. Browsers: leave it out. */
  WebSocketPolyfill?: unknown;
  /** An existing document to bind (default: a new one). */
  doc?: Y.Doc;
  /** How long `saveVersion()` waits for the server's answer, in ms (default 15 s). */
  requestTimeoutMs?: number;
}

function knownMessage(code: string, fallback?: string): string {
  return code in errors ? errors[code as ErrorCode].message : (fallback ?? code);
}

function parseServerMessage(payload: string): ServerMessage {
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return { type: 'other', payload };
  }
  const type = (value as { type?: unknown } | null)?.type;
  if (type === 'versionSaved' || type === 'thumbnailReady' || type === 'comment' || type === 'error' || type === 'access') return value as ServerMessage;
  return { type: 'other', payload: value };
}

export class CanvasClient {
  readonly doc: Y.Doc;
  readonly provider: HocuspocusProvider;
  readonly sessionId: string;
  /** The transaction origin of this client's own edits (what undo/redo track). */
  readonly origin = { client: 'canvas-client' } as const;
  readonly undoManager: Y.UndoManager;
  #socket: HocuspocusProviderWebsocket | undefined;
  #status: ConnectionStatus = 'connecting';
  #saved = false;
  #lastError: ClientError | undefined;
  /** Set when the server said this open connection's access changed (`access` message). */
  #canEdit: boolean | undefined;
  #listeners = new Map<keyof Events, Set<(value: never) => void>>();
  #pending = new Map<string, { resolve: (v: VersionJson) => void; reject: (e: ClientError) => void; timer: ReturnType<typeof setTimeout> }>();
  #requests = 0;
  #timeoutMs: number;
  #disposers: Array<() => void> = [];

  constructor(options: ConnectOptions) {
    this.doc = options.doc ?? new Y.Doc();
    this.sessionId = options.sessionId;
    this.#timeoutMs = options.requestTimeoutMs ?? 15_000;
    // A socket of our own when a polyfill is given (Node), so the provider never looks for a global WebSocket.
    this.#socket = options.WebSocketPolyfill
      ? new HocuspocusProviderWebsocket({ url: options.url, WebSocketPolyfill: options.WebSocketPolyfill })
      : undefined;
    const token = options.token;
    const common = {
      name: options.sessionId,
      document: this.doc,
      token: typeof token === 'string' ? token : async () => token(),
      onStatus: ({ status }: { status: string }) => this.#setStatus(status as ConnectionStatus),
      onSynced: () => {
        this.#emit('synced', undefined);
        this.#updateSaved();
      },
      onUnsyncedChanges: () => this.#updateSaved(),
      onAuthenticated: () => {
        this.#canEdit = undefined; // a fresh authentication's scope is the truth again
        this.#reannounce();
      },
      onAuthenticationFailed: ({ reason }: { reason: string }) =>
        this.#fail({ code: reason, message: knownMessage(reason), source: 'authentication' }),
      onClose: ({ event }: { event: { code: number; reason: string } }) => {
        // 1000/1001 without a reason are ordinary reconnects; a reason is one of our error codes.
        // 1012 (a node draining for a restart) is an ordinary reconnect too: the provider is
        // already reconnecting, through the load balancer, to another node.
        if (event.reason && event.code !== CloseCode.ServiceRestart) this.#fail({ code: event.reason, message: knownMessage(event.reason), source: 'close' });
        this.#forgetPeers();
      },
      onStateless: ({ payload }: { payload: string }) => this.#receive(payload),
      onAwarenessChange: () => this.#emit('peers', this.peers()),
    };
    this.provider = this.#socket
      ? new HocuspocusProvider({ ...common, websocketProvider: this.#socket })
      : new HocuspocusProvider({ ...common, url: options.url });
    // A provider handed its own socket must be attached explicitly, or it syncs nothing.
    if (this.#socket) this.provider.attach();

    this.undoManager = new Y.UndoManager([this.doc.getMap('meta'), this.doc.getMap('layers')], {
      trackedOrigins: new Set([this.origin]),
    });
    const onUpdate = () => this.#emit('change', undefined);
    this.doc.on('update', onUpdate);
    this.#disposers.push(() => this.doc.off('update', onUpdate));
  }

  // ------------------------------------------------------------------ state

  get status(): ConnectionStatus {
    return this.#status;
  }

  /** True when the first sync is done and the server has durably acknowledged every local change. */
  get saved(): boolean {
    return this.#saved;
  }

  /** The last error the server reported (refusal, close reason, stateless error). */
  get lastError(): ClientError | undefined {
    return this.#lastError;
  }

  /** Whether the server lets this connection write (false for read-only participants, after authentication). */
  get canWrite(): boolean {
    return this.#canEdit ?? this.provider.authorizedScope === 'read-write';
  }

  /** The canvas as plain JSON (validated against the schema; `undefined` before the first sync or when invalid). */
  canvas(): Canvas | undefined {
    const parsed = canvasSchema.safeParse(readCanvas(this.doc));
    return parsed.success ? parsed.data : undefined;
  }

  /** Layer ids bottom to top. */
  layerIds(): string[] {
    return layerIds(this.doc);
  }

  layer(layerId: string): Layer | undefined {
    return this.canvas()?.layers[layerId];
  }

  // ------------------------------------------------------------------ canvas operations

  /** Adds a layer (default on top); returns its id. Throws a ZodError for an invalid layer. */
  addLayer(layer: NewLayer, options: { id?: string; placement?: Placement } = {}): string {
    let id = '';
    this.doc.transact(() => {
      id = addLayer(this.doc, layer, options);
    }, this.origin);
    return id;
  }

  /** Moves, restyles or renames: only the fields given change. */
  updateLayer(layerId: string, patch: LayerPatch): void {
    this.doc.transact(() => updateLayer(this.doc, layerId, patch), this.origin);
  }

  /** Moves a layer by `dx`, `dy` canvas pixels (its transform's translation). */
  translateLayer(layerId: string, dx: number, dy: number): void {
    const layer = this.layer(layerId);
    if (!layer) throw new Error(`no layer ${layerId}`);
    const [a, b, c, d, e, f] = layer.transform;
    this.updateLayer(layerId, { transform: [a, b, c, d, e + dx, f + dy] });
  }

  reorderLayer(layerId: string, placement: Placement): void {
    this.doc.transact(() => moveLayer(this.doc, layerId, placement), this.origin);
  }

  removeLayer(layerId: string): boolean {
    let removed = false;
    this.doc.transact(() => {
      removed = removeLayer(this.doc, layerId);
    }, this.origin);
    return removed;
  }

  /** Canvas size and background (`meta`). */
  setMeta(patch: Partial<Pick<Canvas['meta'], 'width' | 'height' | 'background'>>): void {
    const meta = this.doc.getMap('meta');
    this.doc.transact(() => {
      for (const [key, value] of Object.entries(patch)) if (value !== undefined) meta.set(key, value);
    }, this.origin);
  }

  /** Reverts this user's last change (never anyone else's). */
  undo(): void {
    this.undoManager.undo();
  }

  redo(): void {
    this.undoManager.redo();
  }

  // ------------------------------------------------------------------ presence

  setCursor(cursor: { x: number; y: number } | null): void {
    this.provider.setAwarenessField('cursor', cursor);
  }

  setSelection(layerIds: string[]): void {
    this.provider.setAwarenessField('selection', layerIds);
  }

  /** Everyone else in the session (states as the server rebuilt them: ids, names and colours are not client-chosen). */
  peers(): Peer[] {
    const awareness = this.provider.awareness;
    if (!awareness) return [];
    const out: Peer[] = [];
    for (const [clientId, state] of awareness.getStates()) {
      if (clientId === awareness.clientID) continue;
      const s = state as Partial<AwarenessState>;
      if (!s.user) continue;
      out.push({ clientId, user: s.user, cursor: s.cursor ?? null, selection: s.selection ?? [] });
    }
    return out;
  }

  // ------------------------------------------------------------------ versions

  /** Saves a version of the live canvas; resolves with it, or rejects with the server's error. */
  saveVersion(description?: string): Promise<VersionJson> {
    const requestId = `req-${++this.#requests}-${Date.now().toString(36)}`;
    return new Promise<VersionJson>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(requestId);
        reject({ code: 'timeout', message: 'The server did not answer in time.', source: 'stateless', requestId } satisfies ClientError);
      }, this.#timeoutMs);
      this.#pending.set(requestId, { resolve, reject, timer });
      this.provider.sendStateless(JSON.stringify({ type: 'saveVersion', requestId, ...(description === undefined ? {} : { description }) }));
    });
  }

  // ------------------------------------------------------------------ events

  on<K extends keyof Events>(event: K, listener: Listener<K>): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener as (value: never) => void);
    return () => set.delete(listener as (value: never) => void);
  }

  /** Resolves once `saved` is true (or rejects after `timeoutMs`). */
  whenSaved(timeoutMs = 15_000): Promise<void> {
    if (this.#saved) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error('not saved in time'));
      }, timeoutMs);
      const off = this.on('saved', (saved) => {
        if (!saved) return;
        clearTimeout(timer);
        off();
        resolve();
      });
    });
  }

  /** Disconnects and releases everything. */
  destroy(): void {
    for (const dispose of this.#disposers.splice(0)) dispose();
    for (const [, pending] of this.#pending) clearTimeout(pending.timer);
    this.#pending.clear();
    this.undoManager.destroy();
    this.provider.destroy();
    this.#socket?.destroy();
    this.#listeners.clear();
  }

  // ------------------------------------------------------------------ internals

  /**
   * Presence across a reconnect (a restart drains the node, a node dies, the network blips), the
   * two halves of y-websocket#122. y-protocols ignores a state whose clock equals the one it
   * recorded when it removed that client, so without these every cursor would stay invisible for
   * up to the provider's 15 s renewal after each reconnect:
   *
   * - Others removed this client's state at its last clock (its node closed the connection), and
   *   the provider re-sends the state at that same clock: after authenticating, announce the
   *   same state with the next clock, which is new everywhere.
   * - The provider removed every other client's state when its socket closed, keeping their
   *   clocks; the node then sends their current states at those same clocks: forget the clocks
   *   of the clients removed, so their states are taken as new.
   */
  #forgetPeers(): void {
    const awareness = this.provider.awareness;
    if (!awareness) return;
    // `meta` is y-protocols' public per-client clock table; only clients whose state is gone.
    for (const clientId of [...awareness.meta.keys()]) {
      if (clientId !== awareness.clientID && !awareness.getStates().has(clientId)) awareness.meta.delete(clientId);
    }
  }

  #reannounce(): void {
    const awareness = this.provider.awareness;
    const state = awareness?.getLocalState();
    if (awareness && state) awareness.setLocalState(state);
  }

  #emit<K extends keyof Events>(event: K, value: Events[K]): void {
    for (const listener of this.#listeners.get(event) ?? []) (listener as Listener<K>)(value);
  }

  #setStatus(status: ConnectionStatus): void {
    if (status === this.#status) return;
    this.#status = status;
    this.#emit('status', status);
    this.#updateSaved();
  }

  #updateSaved(): void {
    const saved = this.provider.synced && !this.provider.hasUnsyncedChanges;
    if (saved === this.#saved) return;
    this.#saved = saved;
    this.#emit('saved', saved);
  }

  #fail(error: ClientError): void {
    this.#lastError = error;
    this.#emit('error', error);
  }

  #receive(payload: string): void {
    const message = parseServerMessage(payload);
    if (message.type === 'access') {
      this.#canEdit = message.canEdit;
      this.#emit('access', message.canEdit);
    }
    if (message.type === 'versionSaved' && message.requestId) {
      const pending = this.#pending.get(message.requestId);
      if (pending) {
        clearTimeout(pending.timer);
        this.#pending.delete(message.requestId);
        pending.resolve(message.version);
      }
    }
    if (message.type === 'error') {
      const error: ClientError = {
        code: message.code,
        message: knownMessage(message.code, message.message),
        source: 'stateless',
        ...(message.layerId ? { layerId: message.layerId } : {}),
        ...(message.requestId ? { requestId: message.requestId } : {}),
      };
      const pending = message.requestId ? this.#pending.get(message.requestId) : undefined;
      if (pending && message.requestId) {
        clearTimeout(pending.timer);
        this.#pending.delete(message.requestId);
        pending.reject(error);
      }
      this.#fail(error);
    }
    this.#emit('message', message);
  }
}

/** Connects to an edit session. */
export function connectCanvas(options: ConnectOptions): CanvasClient {
  return new CanvasClient(options);
}
