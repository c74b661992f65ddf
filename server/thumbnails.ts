/**
 * Tells the clients of a session that a version's thumbnails are ready. The render worker may be
 * another process (or on another machine): it NOTIFYs `imageflow_thumbnail_ready` in the
 * transaction that sets `thumbnail_path`, and every server node LISTENs on one dedicated
 * connection. A node sends `{"type":"thumbnailReady",…}` to the connections of that session it
 * holds itself — each node serves its own clients, so every client hears it once, whichever node
 * it is on — with URLs signed for each connection's user.
 *
 * In embedded mode (PGlite) there is one process and NOTIFY does not cross pglite-socket
 * connections: the inline worker calls `send` directly instead (server/app.ts).
 *
 * NOTIFY is at-most-once for a listener that is disconnected at that moment; the listener
 * reconnects with backoff. A client that missed a message still finds `thumbnailUrl` in the
 * version's JSON (`GET /api/versions/:id`).
 */
import type { Hocuspocus } from '@hocuspocus/server';
import pg from 'pg';
import type { Logger } from 'pino';
import type { ThumbnailReadyMessage } from '../shared/versions.ts';
import { THUMBNAIL_CHANNEL } from '../persistence/repositories/renders.ts';
import type { ThumbnailReadyPayload } from '../worker/queue.ts';
import type { ConnectionContext } from './extensions/auth.ts';
import type { UrlSigner } from './signed-urls.ts';
import { thumbnailUrl } from './render-urls.ts';

export function parseThumbnailPayload(text: string): ThumbnailReadyPayload | undefined {
  try {
    const value = JSON.parse(text) as Partial<ThumbnailReadyPayload>;
    if (typeof value.versionId !== 'string' || typeof value.thumbnailPath !== 'string') return undefined;
    if (!Array.isArray(value.sizes) || value.sizes.length === 0 || !value.sizes.every((n) => Number.isInteger(n))) return undefined;
    return value as ThumbnailReadyPayload;
  } catch {
    return undefined;
  }
}

/** The message for one user (URLs signed for them). */
export function thumbnailMessage(payload: ThumbnailReadyPayload, signer: UrlSigner, userId: string): ThumbnailReadyMessage {
  const sizes = payload.sizes.map((size) => ({ size, url: thumbnailUrl(signer, payload.versionId, userId, size) }));
  return {
    type: 'thumbnailReady',
    versionId: payload.versionId,
    imageId: payload.imageId,
    thumbnailPath: payload.thumbnailPath,
    thumbnailUrl: sizes[0]!.url,
    sizes,
  };
}

export class ThumbnailNotifier {
  readonly #url: string;
  readonly #hocuspocus: Hocuspocus;
  readonly #signer: UrlSigner;
  readonly #logger: Logger;
  #client: pg.Client | undefined;
  #retry: NodeJS.Timeout | undefined;
  #backoffMs = 100;
  #closed = false;
  /** Messages sent to connections (tests, logs). */
  sent = 0;

  constructor(options: { url: string; hocuspocus: Hocuspocus; signer: UrlSigner; logger: Logger }) {
    this.#url = options.url;
    this.#hocuspocus = options.hocuspocus;
    this.#signer = options.signer;
    this.#logger = options.logger;
  }

  /** Resolves once LISTEN is in place (or throws if the first connection fails). */
  async start(): Promise<void> {
    await this.#connect();
  }

  async #connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.#url });
    const lost = (error?: Error) => {
      if (this.#client !== client) return;
      this.#client = undefined;
      this.#logger.warn({ err: error }, 'thumbnail listener lost its connection; reconnecting');
      client.end().catch(() => {});
      this.#scheduleReconnect();
    };
    client.on('error', lost);
    client.on('end', () => lost());
    client.on('notification', (message) => {
      if (message.channel === THUMBNAIL_CHANNEL && message.payload) this.deliver(message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${THUMBNAIL_CHANNEL}`);
    } catch (error) {
      client.end().catch(() => {});
      throw error;
    }
    if (this.#closed) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#backoffMs = 100;
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#retry) return;
    const delay = this.#backoffMs;
    this.#backoffMs = Math.min(this.#backoffMs * 2, 5_000);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#connect().catch((error: unknown) => {
        this.#logger.warn({ err: error }, 'thumbnail listener could not reconnect; retrying');
        this.#scheduleReconnect();
      });
    }, delay);
  }

  /** A NOTIFY payload: parsed, then `send`. */
  deliver(text: string): void {
    const payload = parseThumbnailPayload(text);
    if (!payload) {
      this.#logger.warn({ payload: text.slice(0, 200) }, 'ignoring a malformed thumbnail notification');
      return;
    }
    this.send(payload);
  }

  /** Sends the message to this node's connections of the version's session. */
  send(payload: ThumbnailReadyPayload): void {
    if (!payload.sessionId) return;
    const document = this.#hocuspocus.documents.get(payload.sessionId);
    if (!document) return;
    for (const connection of document.getConnections()) {
      const context = connection.context as ConnectionContext | undefined;
      if (!context?.userId) continue;
      try {
        connection.sendStateless(JSON.stringify(thumbnailMessage(payload, this.#signer, context.userId)));
        this.sent += 1;
      } catch (error) {
        this.#logger.debug({ err: error, session: payload.sessionId }, 'could not send thumbnailReady (connection closed)');
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }
}
