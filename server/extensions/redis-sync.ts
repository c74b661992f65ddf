/**
 * Cross-node fan-out through Redis, composed of small parts (server/redis/):
 *
 * - **Live path**: @hocuspocus/extension-redis (each change publishes a state vector on the
 *   document's channel, peers answer with the diff on the sender's reply channel; awareness is
 *   relayed the same way), minus its store lock: its `onStoreDocument` takes a Redlock with no
 *   retry and makes a node that misses it skip its store. Our log is append-only and idempotent and
 *   compaction has its own advisory lock (persistence/update-log.ts), so every node's persistence
 *   hooks always run.
 * - **Anti-entropy** (`anti-entropy.ts`): pub/sub is at-most-once; every `syncIntervalMs`, and at
 *   once when a Redis connection is ready again, each loaded document's state is announced and
 *   peers that hold more answer the sender alone.
 * - **Awareness claims** (`claims.ts`): clientIDs bound to users cluster-wide.
 * - **Liveness** (`liveness.ts`): a node is alive in a session while subscribed to its own channel
 *   of that session — the one answer the claims and the sweep both use.
 * - **Presence sweep** (`presence-sweep.ts`): states whose clientID no live node uses (a node
 *   killed with -9 publishes no removals) are removed, instead of lingering for y-protocols' 30 s.
 * - **Presence removals**: Hocuspocus re-encodes relayed awareness through a scratch Awareness,
 *   which drops `null` (removed) states, and extension-redis publishes nothing once the last local
 *   connection is gone; removals caused by a local connection closing are published here and
 *   applied with `removeAwarenessStates` on every other node. Awareness changes relayed from Redis
 *   are not published again (stock re-publishes them, N-1 times each).
 * - **Redis unreachable**: loading a document does not wait for Redis longer than `loadWaitMs`;
 *   each node keeps serving its own clients; when Redis is back, document channels are
 *   re-subscribed and an anti-entropy round runs at once, so nodes reconverge without new edits.
 *
 * The messages of our own parts are typed and encoded by `wire.ts`; every key and channel name
 * comes from `keys.ts`.
 */
import { randomBytes } from 'node:crypto';
import { Redis as RedisExtension } from '@hocuspocus/extension-redis';
import { OutgoingMessage, isTransactionOrigin } from '@hocuspocus/server';
import type {
  afterLoadDocumentPayload,
  afterStoreDocumentPayload,
  afterUnloadDocumentPayload,
  Document,
  Hocuspocus,
  onAwarenessUpdatePayload,
} from '@hocuspocus/server';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { removeAwarenessStates } from 'y-protocols/awareness';
import type { AwarenessClaims } from './awareness.ts';
import { diffFor, stateMessage } from '../redis/anti-entropy.ts';
import { ClaimRegistry } from '../redis/claims.ts';
import { openCommands, openSubscriber } from '../redis/connection.ts';
import { RedisNames } from '../redis/keys.ts';
import { Liveness } from '../redis/liveness.ts';
import { PresenceSweep } from '../redis/presence-sweep.ts';
import { decodeMessage, encodeMessage, type SyncMessage } from '../redis/wire.ts';

export interface RedisSyncOptions {
  url: string;
  nodeId: string;
  /** Key and channel namespace; distinct per deployment (and per test file). */
  prefix: string;
  /** Anti-entropy period, ms. */
  syncIntervalMs: number;
  logger: Logger;
  /** Longest a document load waits for Redis (subscribe, initial peer sync), ms. */
  loadWaitMs?: number;
  /** Released awareness bindings kept per user and document (the awareness cap). */
  releasedBindingsPerUser?: number;
}

export class RedisSyncExtension extends RedisExtension implements AwarenessClaims {
  override priority = 1000;
  readonly #opts: RedisSyncOptions;
  readonly #names: RedisNames;
  /** Commands: claims, anti-entropy publishes, the save limit's counters. */
  readonly commands: Redis;
  /** Our own subscriptions: the control channel and each loaded session's liveness channel. */
  readonly #subscriber: Redis;
  readonly #controlChannel: string;
  readonly #liveness: Liveness;
  readonly #claims: ClaimRegistry;
  readonly #sweep: PresenceSweep;
  readonly #disposers: Array<() => void> = [];
  #closed = false;
  /** Anti-entropy diffs this node sent to peers that were behind (metrics). */
  diffsSent = 0;

  constructor(options: RedisSyncOptions) {
    const identifier = `${options.nodeId}-${randomBytes(4).toString('hex')}`;
    const url = new URL(options.url);
    super({
      prefix: options.prefix,
      identifier,
      host: url.hostname,
      port: Number(url.port || 6379),
      options: {
        ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
        ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
        db: Number(url.pathname.slice(1) || 0),
        ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
        // Subscriptions wait for Redis however long it takes (see the publisher below).
        maxRetriesPerRequest: null,
        retryStrategy: (times: number) => Math.min(times * 100, 1000),
        connectionName: `${options.prefix}:${options.nodeId}`,
      },
      // The store lock is not used (see onStoreDocument).
      lockTimeout: 1000,
      disconnectDelay: 500,
      awaitInitialSyncTimeout: 1000,
    });
    // Publisher: a publish fails after one reconnect attempt instead of piling up in memory during
    // an outage (read by ioredis when a connection closes); anti-entropy repairs what it missed.
    (this.pub.options as { maxRetriesPerRequest: number | null }).maxRetriesPerRequest = 1;
    this.#opts = options;
    this.#names = new RedisNames(options.prefix);
    this.#controlChannel = `${options.prefix}#control`;
    this.commands = openCommands({ url: options.url, name: `${options.prefix}:${options.nodeId}:commands` });
    this.#subscriber = openSubscriber({ url: options.url, name: `${options.prefix}:${options.nodeId}:subscriber` });
    this.#liveness = new Liveness({ numsub: 'NUMSUB', settleMs: options.syncIntervalMs * 3 });
    this.#claims = new ClaimRegistry({
      redis: this.commands,
      ready: () => this.commands.status === 'ready',
      names: this.#names,
      liveness: this.#liveness,
      identifier,
      syncIntervalMs: options.syncIntervalMs,
      releasedBindingsPerUser: options.releasedBindingsPerUser ?? 4,
      logger: options.logger,
    });
    this.#sweep = new PresenceSweep(this.redisTransactionOrigin);
    for (const client of this.#connections()) {
      client.on('error', (error: Error) => options.logger.debug({ err: error }, 'redis connection error'));
    }
    this.#subscriber.on('messageBuffer', (channel: Buffer, data: Buffer) => {
      if (channel.toString() !== this.#controlChannel) return;
      let message: SyncMessage;
      try {
        message = decodeMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      } catch (error) {
        options.logger.warn({ err: error }, 'redis sync: bad control message');
        return;
      }
      if (message.sender !== this.identifier) this.#handle(message);
    });
    void this.#subscriber.subscribe(this.#controlChannel).catch((error: unknown) => {
      options.logger.warn({ err: error }, 'redis sync: control subscription failed');
    });
    // Reconnected: re-subscribe every loaded document's channels (a load during the outage may have
    // given up on them) and exchange state at once, so nodes reconverge without waiting for an edit.
    const onReady = () => {
      if (this.#closed) return;
      this.#liveness.connected();
      if (this.commands.status === 'ready') this.#claims.retryReleases();
      this.#resubscribe();
      this.#soon();
    };
    for (const client of this.#connections()) client.on('ready', onReady);
    const timer = setInterval(() => void this.#round(), options.syncIntervalMs);
    timer.unref();
    this.#disposers.push(() => clearInterval(timer));
  }

  get identifier(): string {
    return this.configuration.identifier;
  }

  /** Every Redis connection of this node (extension-redis's two and ours). */
  #connections(): Array<{ status: string; on(event: string, listener: (...args: never[]) => void): unknown }> {
    return [this.pub, this.sub, this.commands, this.#subscriber];
  }

  /** Redis reachable for publishing and for receiving. */
  healthy(): boolean {
    return this.#connections().every((client) => client.status === 'ready');
  }

  /** Awareness states removed because no live node used their clientID any more (metrics). */
  get deadPeerStatesRemoved(): number {
    return this.#sweep.removed;
  }

  /** Awareness claims refused (metrics). */
  get claimsRefused(): number {
    return this.#claims.refused;
  }

  claim(name: string, clientId: number, userId: string): Promise<boolean> {
    return this.#claims.claim(name, clientId, userId);
  }

  release(name: string, clientId: number): void {
    this.#claims.release(name, clientId);
  }

  #hocuspocus(): Hocuspocus | undefined {
    return (this as { instance?: Hocuspocus }).instance;
  }

  /**
   * Subscribes the document's channels (extension-redis's, and this node's liveness channel of the
   * session); never blocks a load on Redis longer than `loadWaitMs`: an outage must not refuse clients.
   */
  override async afterLoadDocument(payload: afterLoadDocumentPayload): Promise<void> {
    const waitMs = this.#opts.loadWaitMs ?? 2_000;
    let timer: NodeJS.Timeout | undefined;
    const work = Promise.all([super.afterLoadDocument(payload), this.#subscriber.subscribe(this.#liveChannel(payload.documentName))]).catch((error: unknown) => {
      this.#opts.logger.warn({ err: error, session: payload.documentName }, 'redis sync: subscribing the document failed; will retry on reconnect');
    });
    await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
  }

  /** No Redlock: every node stores what its own clients sent (append-only log; see file comment). */
  override onStoreDocument(): Promise<void> {
    return Promise.resolve();
  }

  override afterStoreDocument(payload: afterStoreDocumentPayload): Promise<void> {
    return super.afterStoreDocument(payload);
  }

  override async afterUnloadDocument(payload: afterUnloadDocumentPayload): Promise<void> {
    await super.afterUnloadDocument(payload);
    if (payload.instance.documents.has(payload.documentName)) return;
    this.#claims.forget(payload.documentName);
    this.#sweep.reset(payload.documentName);
    this.#subscriber.unsubscribe(this.#liveChannel(payload.documentName)).catch((error: unknown) => {
      this.#opts.logger.debug({ err: error, session: payload.documentName }, 'redis sync: unsubscribing failed');
    });
  }

  /** This node's liveness channel of a session (server/redis/liveness.ts). */
  #liveChannel(name: string): string {
    return this.#names.node(name, this.identifier);
  }

  override async onAwarenessUpdate(payload: onAwarenessUpdatePayload): Promise<void> {
    const origin = payload.transactionOrigin;
    // Relayed changes were published by the node whose client made them; publishing them again
    // only costs every node a message it ignores (same clock).
    if (isTransactionOrigin(origin) && origin.source === 'redis') return;
    await super.onAwarenessUpdate(payload);
    // Only removals of this node's own clients: `null` is Hocuspocus removing a closed
    // connection's states. Timeouts (origin 'timeout') and relayed removals are not re-published.
    if (payload.removed.length === 0 || (origin !== null && origin !== undefined)) return;
    await this.#publish({ type: 'awareness-removed', sender: this.identifier, document: payload.documentName, clientIds: payload.removed });
  }

  #handle(message: SyncMessage): void {
    const document = this.#hocuspocus()?.documents.get(message.document);
    if (!document) return;
    switch (message.type) {
      case 'awareness-removed': {
        // Never a client connected here: a removal of it from another node is a forgery made there.
        const states = document.awareness.getStates();
        const present = message.clientIds.filter((id) => !this.#claims.isLocal(message.document, id) && states.has(id));
        if (present.length > 0) removeAwarenessStates(document.awareness, present, this.redisTransactionOrigin);
        return;
      }
      case 'state': {
        const diff = diffFor(document, message);
        if (diff) this.#sendDiff(message.sender, message.document, diff);
        return;
      }
    }
  }

  /** The diff for one peer's state vector, on that peer's reply channel only (#1151). */
  #sendDiff(peer: string, name: string, diff: Uint8Array): void {
    const message = new OutgoingMessage(name).createSyncMessage().writeUpdate(diff).toUint8Array();
    // extension-redis's envelope: identifier length (1 byte), identifier, Hocuspocus message.
    const id = Buffer.from(this.identifier, 'utf8');
    const envelope = Buffer.concat([Buffer.from([id.length]), id, Buffer.from(message)]);
    this.diffsSent += 1;
    void this.#send(`${this.#opts.prefix}#reply:${peer}`, envelope);
  }

  #publish(message: SyncMessage): Promise<void> {
    return this.#send(this.#controlChannel, encodeMessage(message));
  }

  async #send(channel: string, bytes: Uint8Array): Promise<void> {
    if (this.commands.status !== 'ready') return; // anti-entropy repairs it once Redis is back
    try {
      await this.commands.publish(channel, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    } catch (error) {
      this.#opts.logger.debug({ err: error, channel }, 'redis publish failed');
    }
  }

  #resubscribe(): void {
    const documents = this.#hocuspocus()?.documents;
    if (!documents) return;
    const fail = (name: string) => (error: unknown) => this.#opts.logger.debug({ err: error, session: name }, 'redis resubscribe failed');
    for (const name of documents.keys()) {
      if (this.sub.status === 'ready') this.sub.subscribe(`${this.#opts.prefix}:${name}`).catch(fail(name));
      if (this.#subscriber.status === 'ready') this.#subscriber.subscribe(this.#liveChannel(name)).catch(fail(name));
    }
  }

  #soonTimer: NodeJS.Timeout | undefined;
  #soon(): void {
    if (this.#soonTimer) return;
    this.#soonTimer = setTimeout(() => {
      this.#soonTimer = undefined;
      void this.#round();
    }, 100);
  }

  /**
   * One round: per loaded document, this node's state (anti-entropy) and its claims (renewed,
   * and — once this node's own view of Redis is steady — the report of unused clientIDs the sweep
   * acts on).
   */
  async #round(): Promise<void> {
    if (this.#closed) return;
    const healthy = this.healthy();
    const judging = this.#liveness.judging(healthy);
    if (!healthy) {
      this.#sweep.reset();
      return;
    }
    const documents = this.#hocuspocus()?.documents ?? new Map<string, Document>();
    const work: Promise<void>[] = [];
    for (const [name, document] of documents) {
      work.push(this.#publish(stateMessage(this.identifier, name, document)));
      // Claims to renew here, or states of other nodes' clients that may have lost their owner.
      if (!this.#claims.hasLocal(name) && !this.#hasRemoteStates(name, document)) continue;
      const askedAt = Date.now();
      work.push(
        this.#claims.round(name, judging).then(
          (unused) => {
            if (!judging) return;
            const removed = this.#sweep.apply(document, unused, (id) => this.#claims.isLocal(name, id), askedAt);
            if (removed > 0) this.#opts.logger.info({ session: name, removed }, 'redis sync: removed presence no live node owns');
          },
          (error: unknown) => this.#opts.logger.debug({ err: error, session: name }, 'redis sync: claims round failed; next round'),
        ),
      );
    }
    await Promise.all(work);
  }

  #hasRemoteStates(name: string, document: Document): boolean {
    for (const id of document.awareness.getStates().keys()) if (!this.#claims.isLocal(name, id)) return true;
    return false;
  }

  override async onDestroy(): Promise<void> {
    this.#closed = true;
    for (const dispose of this.#disposers.splice(0)) dispose();
    if (this.#soonTimer) clearTimeout(this.#soonTimer);
    this.#subscriber.disconnect(false);
    this.commands.disconnect(false);
    try {
      await super.onDestroy();
    } catch (error) {
      // Redlock's quit fails while Redis is unreachable; the connections are dropped either way.
      this.#opts.logger.debug({ err: error }, 'redis sync: closing');
      this.pub.disconnect(false);
      this.sub.disconnect(false);
    }
  }

  /** Disposer for the server's close(): same as Hocuspocus's onDestroy (idempotent). */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.onDestroy();
  }
}
