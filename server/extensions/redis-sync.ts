/**
 * Cross-node fan-out through Redis, composed of small parts (server/redis/):
 *
 * - **Live path** (`fanout.ts`): one hop. The exact update a client of this node sent (the bytes
 *   of the document's `update` event for every change whose origin is not redis) is published
 *   once on the document's channel, at once (not after its commit); other nodes apply it with the
 *   redis origin and append what it changed to their own log (`persist`), as they do with every
 *   anti-entropy diff: a node never holds an update that no log has or is writing, whichever node
 *   dies. Awareness changes and stateless broadcasts likewise (not logged). Replaces
 *   @hocuspocus/extension-redis, whose state vector → reply → diff exchange took three Redis hops
 *   and about four PUBLISH calls per crossing, and whose store Redlock made a node that missed it
 *   skip its store (our log is append-only and idempotent; compaction has its own advisory lock).
 * - **Joining a document**: after subscribing its channels a node publishes `hello` with its state
 *   vector; every peer answers on the node's own channel with the diff (even empty) and its
 *   awareness, and the load waits (at most `initialSyncMs`) for the first answer when a peer is
 *   subscribed, so a node that loads a document already open elsewhere serves it caught up.
 * - **Anti-entropy** (`anti-entropy.ts`): pub/sub is at-most-once; every `syncIntervalMs`, at once
 *   when a Redis connection is ready again, and soon after a publish that did not reach Redis,
 *   each loaded document's state is announced and peers that hold more answer the sender alone.
 *   This also heals an update that arrived before one it builds on (Yjs keeps it pending). A
 *   document this node published live traffic of since the last round (an update, a cursor move)
 *   announces its state on its next live message (`update-with-state`, `awareness-with-state`)
 *   instead of in a message of its own: under traffic the live path stays one PUBLISH per edit or
 *   move; a document whose next live message does not come within a round is announced on its
 *   own then.
 * - **Awareness claims** (`claims.ts`): clientIDs bound to users cluster-wide.
 * - **Liveness** (`liveness.ts`): a node is alive in a session while subscribed to its own channel
 *   of that session — the one answer the claims and the sweep both use.
 * - **Presence sweep** (`presence-sweep.ts`): states whose clientID no live node uses (a node
 *   killed with -9 publishes no removals) are removed, instead of lingering for y-protocols' 30 s.
 * - **Presence removals**: relayed awareness passes Hocuspocus's `beforeHandleAwareness` through a
 *   scratch Awareness, which drops `null` (removed) states; removals caused by a local connection
 *   closing are published as `awareness-removed` and applied with `removeAwarenessStates` on every
 *   other node. Awareness changes relayed from Redis are not published again.
 * - **Redis unreachable**: loading a document does not wait for Redis longer than `loadWaitMs`;
 *   each node keeps serving its own clients; when Redis is back, document channels are
 *   re-subscribed, each document says `hello` again (the answers bring the edits and awareness
 *   states it could not hear meanwhile) and an anti-entropy round runs at once, so nodes
 *   reconverge without new edits.
 *
 * - **One Redis or a Redis Cluster** (`connection.ts`): on a cluster the live path, anti-entropy
 *   and answers use sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`) and liveness asks `SHARDNUMSUB`;
 *   every name of a session carries its hash tag, so all of a session's traffic, claims and
 *   liveness checks stay on its slot's shard.
 *
 * The messages are typed and encoded by `wire.ts`; every key and channel name comes from `keys.ts`.
 */
import { randomBytes } from 'node:crypto';
import { IncomingMessage, MessageReceiver, MessageType, isTransactionOrigin } from '@hocuspocus/server';
import type {
  afterLoadDocumentPayload,
  afterUnloadDocumentPayload,
  beforeBroadcastStatelessPayload,
  Document,
  Extension,
  Hocuspocus,
  onAwarenessUpdatePayload,
  onConfigurePayload,
  RedisTransactionOrigin,
} from '@hocuspocus/server';
import * as encoding from 'lib0/encoding';
import type { Logger } from 'pino';
import { encodeAwarenessUpdate, removeAwarenessStates } from 'y-protocols/awareness';
import * as Y from 'yjs';
import type { AwarenessClaims } from './awareness.ts';
import { diffFor, stateMessage, stateVectorOf } from '../redis/anti-entropy.ts';
import { ClaimRegistry } from '../redis/claims.ts';
import type { RedisTarget } from '../config.ts';
import { openCommands, openSubscriber } from '../redis/connection.ts';
import { Fanout } from '../redis/fanout.ts';
import { RedisNames } from '../redis/keys.ts';
import { Liveness } from '../redis/liveness.ts';
import { PresenceSweep } from '../redis/presence-sweep.ts';
import type { RedisClient } from '../redis/script.ts';
import type { StateMessage, SyncMessage } from '../redis/wire.ts';

export interface RedisSyncOptions {
  /** One Redis, or a Redis Cluster (sharded pub/sub; every name of a session in its slot, keys.ts). */
  target: RedisTarget;
  nodeId: string;
  /** Key and channel namespace; distinct per deployment (and per test file). */
  prefix: string;
  /** Anti-entropy period, ms. */
  syncIntervalMs: number;
  logger: Logger;
  /** Longest a document load waits for Redis (subscribe, initial peer sync), ms. */
  loadWaitMs?: number;
  /** Longest a load waits for a peer's answer to its `hello` once subscribed, ms. */
  initialSyncMs?: number;
  /** Released awareness bindings kept per user and document (the awareness cap). */
  releasedBindingsPerUser?: number;
  /**
   * Logs a change relayed from another node (an update, a diff), from the document's `update`
   * event: exactly what it integrated here, appended to this node's own log (`UpdateLog.append`)
   * in the same event, so nothing this node holds in memory is left to another node's commit (see
   * `afterLoadDocument`). Absent: relayed changes are not logged here.
   */
  persist?: (document: string, update: Uint8Array) => void;
}

/** Carried announcements of one peer left unanswered in a row before the next is answered in full (`#answerState`). */
const MAX_DEFERRED = 3;

export class RedisSyncExtension implements Extension, AwarenessClaims {
  priority = 1000;
  readonly redisTransactionOrigin: RedisTransactionOrigin = { source: 'redis' };
  readonly #opts: RedisSyncOptions;
  readonly #names: RedisNames;
  readonly #identifier: string;
  /** Commands: publishes (in order), claims, the save limit's counters. */
  readonly commands: RedisClient;
  /** Subscriptions: each loaded session's document channel and this node's own channel of it. */
  readonly #subscriber: RedisClient;
  readonly #fanout: Fanout;
  readonly #liveness: Liveness;
  readonly #claims: ClaimRegistry;
  readonly #sweep: PresenceSweep;
  /** Documents from the start of their load (Hocuspocus lists them only once loaded). */
  readonly #documents = new Map<string, Document>();
  /** Loads waiting for a peer's answer to their `hello`. */
  readonly #answered = new Map<string, () => void>();
  readonly #disposers: Array<() => void> = [];
  #instance: Hocuspocus | undefined;
  #closed = false;
  /** Documents this node published a live update or awareness change of since the last round (`#round`). */
  readonly #live = new Set<string>();
  /** Documents whose next live message carries this node's announcement (`update-with-state`, `awareness-with-state`). */
  readonly #announceOnNextLive = new Set<string>();
  /** Announcements sent on their own / carried by a live update (metrics, tests). */
  announcementsAlone = 0;
  announcementsCarried = 0;
  /** Anti-entropy diffs this node sent to peers that were behind (metrics). */
  diffsSent = 0;
  /** Carried announcements that lacked only this node's updates of the last round, not answered (metrics). */
  answersDeferred = 0;
  /**
   * Per document, this node's state vector at the last two rounds (at its load, until the first
   * round): a carried announcement is judged against the older one (`#answerState`).
   */
  readonly #settled = new Map<string, { previous?: Map<number, number>; latest: Map<number, number> }>();
  /** Per document, the peers whose last carried announcements were deferred, and how many in a row. */
  readonly #deferred = new Map<string, Map<string, number>>();
  /** Changes relayed from other nodes that this node appended to its own log (metrics). */
  relayedLogged = 0;

  constructor(options: RedisSyncOptions) {
    this.#identifier = `${options.nodeId}-${randomBytes(4).toString('hex')}`;
    this.#opts = options;
    this.#names = new RedisNames(options.prefix);
    const sharded = options.target.kind === 'cluster';
    this.commands = openCommands({ target: options.target, name: `${options.prefix}:${options.nodeId}:commands` });
    this.#subscriber = openSubscriber({ target: options.target, name: `${options.prefix}:${options.nodeId}:subscriber` });
    this.#fanout = new Fanout({
      commands: this.commands,
      subscriber: this.#subscriber,
      names: this.#names,
      identifier: this.#identifier,
      logger: options.logger,
      sharded,
      onMessage: (message) => this.#handle(message),
      onLost: () => this.#soon(),
    });
    this.#liveness = new Liveness({ numsub: sharded ? 'SHARDNUMSUB' : 'NUMSUB', settleMs: options.syncIntervalMs * 3 });
    this.#claims = new ClaimRegistry({
      redis: this.commands,
      ready: () => this.commands.status === 'ready',
      names: this.#names,
      liveness: this.#liveness,
      identifier: this.#identifier,
      syncIntervalMs: options.syncIntervalMs,
      releasedBindingsPerUser: options.releasedBindingsPerUser ?? 4,
      logger: options.logger,
    });
    this.#sweep = new PresenceSweep(this.redisTransactionOrigin);
    for (const client of this.#connections()) {
      client.on('error', (error: Error) => options.logger.debug({ err: error }, 'redis connection error'));
    }
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

  onConfigure({ instance }: onConfigurePayload): Promise<void> {
    this.#instance = instance;
    return Promise.resolve();
  }

  get identifier(): string {
    return this.#identifier;
  }

  /** Every Redis connection of this node. */
  #connections(): RedisClient[] {
    return [this.commands, this.#subscriber];
  }

  /** Redis reachable for publishing and for receiving. */
  healthy(): boolean {
    return this.#connections().every((client) => client.status === 'ready');
  }

  /** Messages this node published, and publishes that never reached Redis (metrics, bench). */
  get published(): number {
    return this.#fanout.published;
  }

  get publishesLost(): number {
    return this.#fanout.lost;
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

  #document(name: string): Document | undefined {
    return this.#documents.get(name) ?? this.#instance?.documents.get(name);
  }

  /**
   * Starts the live path of the document (every change not from Redis is published once), then
   * subscribes its channels and says `hello`; never blocks a load on Redis longer than
   * `loadWaitMs`: an outage must not refuse clients.
   */
  async afterLoadDocument({ documentName, document }: afterLoadDocumentPayload): Promise<void> {
    this.#documents.set(documentName, document);
    // What it was loaded with is settled until the first round (nothing of it is in flight).
    this.#settled.set(documentName, { latest: stateVectorOf(document) });
    // Every change is published at once; every node logs what it holds. A change relayed from
    // another node (live update, anti-entropy diff, the answer to a `hello`) is appended to this
    // node's own log in the same `update` event that integrated it, before any edit of a client
    // of this node can build on it (the update path's listener, registered after this one, logs
    // those; their acknowledgements wait for a commit that includes the relayed rows before them).
    // So an update is never held by a node whose log does not have it or is not writing it: if its
    // origin dies before committing, the nodes that received it commit it themselves, and a client
    // that sees it on its new node (and so never sends it again) finds it in the log on the next
    // load. Duplicate rows are harmless (the log replays in any order, compaction merges them).
    // The row is lazy (persistence/update-log.ts): it starts no commit of its own, since its origin
    // commits it anyway, but goes with this node's next commit, which every acknowledgement here
    // waits for, or within a second.
    document.on('update', (update: Uint8Array, origin: unknown) => {
      if (isTransactionOrigin(origin) && origin.source === 'redis') {
        this.#persist(documentName, update);
        return;
      }
      this.#publishLive(documentName, document, 'update', update);
    });
    const waitMs = this.#opts.loadWaitMs ?? 2_000;
    let timer: NodeJS.Timeout | undefined;
    const work = this.#join(documentName, document).catch((error: unknown) => {
      this.#opts.logger.warn({ err: error, session: documentName }, 'redis sync: subscribing the document failed; will retry on reconnect');
    });
    await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
  }

  /** Subscribe, say hello, and wait for the first peer's answer if a peer has the document open. */
  async #join(name: string, document: Document): Promise<void> {
    await this.#fanout.subscribe(name);
    const peers = await this.#fanout.peers(name);
    const answered =
      peers > 0
        ? new Promise<void>((resolve) => {
            const timer = setTimeout(done, this.#opts.initialSyncMs ?? 1_000);
            function done(): void {
              clearTimeout(timer);
              resolve();
            }
            this.#answered.set(name, () => {
              this.#answered.delete(name);
              done();
            });
          })
        : undefined;
    this.#hello(name, document);
    await answered;
    this.#answered.delete(name);
  }

  async afterUnloadDocument(payload: afterUnloadDocumentPayload): Promise<void> {
    // Loaded again meanwhile (a fast reconnect): its channels stay.
    if (payload.instance.documents.has(payload.documentName)) return;
    this.#documents.delete(payload.documentName);
    this.#live.delete(payload.documentName);
    this.#announceOnNextLive.delete(payload.documentName);
    this.#settled.delete(payload.documentName);
    this.#deferred.delete(payload.documentName);
    this.#answered.get(payload.documentName)?.();
    this.#claims.forget(payload.documentName);
    this.#sweep.reset(payload.documentName);
    await this.#fanout.unsubscribe(payload.documentName).catch((error: unknown) => {
      this.#opts.logger.debug({ err: error, session: payload.documentName }, 'redis sync: unsubscribing failed');
    });
  }

  onAwarenessUpdate({ documentName, document, awareness, added, updated, removed, transactionOrigin: origin }: onAwarenessUpdatePayload): Promise<void> {
    // Relayed changes were published by the node whose client made them.
    if (isTransactionOrigin(origin) && origin.source === 'redis') return Promise.resolve();
    const changed = [...added, ...updated];
    if (changed.length > 0 && document.connections.size > 0) {
      this.#publishLive(documentName, document, 'awareness', encodeAwarenessUpdate(awareness, changed));
    }
    // Only removals of this node's own clients: `null` is Hocuspocus removing a closed
    // connection's states. Timeouts (origin 'timeout') are not re-published.
    if (removed.length > 0 && (origin === null || origin === undefined)) {
      this.#fanout.broadcast({ type: 'awareness-removed', sender: this.#identifier, document: documentName, clientIds: removed });
    }
    return Promise.resolve();
  }

  /**
   * A live update or awareness change of a client of this node, published once on the document's
   * channel; it carries this node's announcement of the document when one is due (`#round`). An
   * update's listener runs after it was applied, so the state announced is the one the receivers
   * reach with it.
   */
  #publishLive(name: string, document: Document, type: 'update' | 'awareness', bytes: Uint8Array): void {
    this.#live.add(name);
    if (this.#announceOnNextLive.delete(name)) {
      this.announcementsCarried += 1;
      this.#fanout.broadcast({ ...stateMessage(this.#identifier, name, document), type: `${type}-with-state`, bytes });
      return;
    }
    this.#fanout.broadcast({ type, sender: this.#identifier, document: name, bytes });
  }

  /** `Document.broadcastStateless` here: the document's connections on the other nodes get it too. */
  beforeBroadcastStateless({ documentName, payload }: beforeBroadcastStatelessPayload): Promise<void> {
    this.#fanout.broadcast({ type: 'stateless', sender: this.#identifier, document: documentName, payload });
    return Promise.resolve();
  }

  #handle(message: SyncMessage): void {
    const document = this.#document(message.document);
    if (!document) return;
    switch (message.type) {
      case 'update':
      case 'update-with-state':
      case 'diff':
        try {
          Y.applyUpdate(document, message.bytes, this.redisTransactionOrigin);
        } catch (error) {
          this.#opts.logger.warn({ err: error, session: message.document, from: message.sender }, 'redis sync: update from a peer refused');
        }
        if (message.type === 'diff') this.#answered.get(message.document)?.();
        if (message.type === 'update-with-state') this.#answerState(document, message, true);
        return;
      case 'awareness':
      case 'awareness-with-state':
        this.#applyAwareness(document, message.document, message.bytes);
        if (message.type === 'awareness-with-state') this.#answerState(document, message, true);
        return;
      case 'awareness-removed': {
        // Never a client connected here: a removal of it from another node is a forgery made there.
        const states = document.awareness.getStates();
        const present = message.clientIds.filter((id) => !this.#claims.isLocal(message.document, id) && states.has(id));
        if (present.length > 0) removeAwarenessStates(document.awareness, present, this.redisTransactionOrigin);
        return;
      }
      case 'state':
        this.#answerState(document, message, false);
        return;
      case 'hello': {
        this.#fanout.to(message.sender, { type: 'diff', sender: this.#identifier, document: message.document, bytes: Y.encodeStateAsUpdate(document, message.stateVector) });
        const clients = [...document.awareness.getStates().keys()];
        if (clients.length > 0) {
          this.#fanout.to(message.sender, { type: 'awareness', sender: this.#identifier, document: message.document, bytes: encodeAwarenessUpdate(document.awareness, clients) });
        }
        return;
      }
      case 'stateless':
        document.relayStateless(message.payload);
        return;
    }
  }

  /**
   * Through Hocuspocus's own awareness handling with the redis origin, so `beforeHandleAwareness`
   * (server/extensions/awareness.ts: another node never overwrites a client connected here) runs.
   */
  #applyAwareness(document: Document, name: string, update: Uint8Array): void {
    const e = encoding.createEncoder();
    encoding.writeVarString(e, name);
    encoding.writeVarUint(e, MessageType.Awareness);
    encoding.writeVarUint8Array(e, update);
    const message = new IncomingMessage(encoding.toUint8Array(e));
    message.writeVarString(message.readVarString());
    new MessageReceiver(message, this.redisTransactionOrigin).apply(document, undefined).catch((error: unknown) => {
      this.#opts.logger.debug({ err: error, session: name }, 'redis sync: awareness from a peer refused');
    });
  }

  #persist(name: string, update: Uint8Array): void {
    const persist = this.#opts.persist;
    if (!persist) return;
    try {
      persist(name, update);
      this.relayedLogged += 1;
    } catch (error) {
      // The log closed (the node is stopping): the change stays in memory only, like an
      // unacknowledged edit of a client of this node.
      this.#opts.logger.warn({ err: error, session: name }, 'redis sync: logging a relayed change failed');
    }
  }

  /**
   * A peer announced its state: if this node holds more, the peer gets the diff. An announcement
   * carried by a live message of a busy document is judged against what this node held a round
   * ago (`#settled`): lacking only this node's newest updates, the peer is most likely receiving
   * them right now (they cross its announcement; about one carried announcement in ten did in the
   * cross-node bench), so it is not answered. A struct lost on its way is older than the settled
   * state within two rounds and is answered then. A delete lost on its way does not move the state
   * vector, and the delete-set digests are only compared when nothing is in flight; so a peer
   * deferred `MAX_DEFERRED` times in a row is answered in full on its next announcement. Announcements
   * on their own (quiet documents, and every document when Redis is back) are answered at once.
   */
  #answerState(document: Document, state: Omit<StateMessage, 'type'>, carried: boolean): void {
    let deferred = this.#deferred.get(state.document);
    const times = deferred?.get(state.sender) ?? 0;
    const known = this.#settled.get(state.document);
    const settled = carried && times < MAX_DEFERRED ? (known?.previous ?? known?.latest) : undefined;
    const answer = diffFor(document, state, settled);
    if (answer === 'in-flight') {
      this.answersDeferred += 1;
      if (!deferred) this.#deferred.set(state.document, (deferred = new Map()));
      deferred.set(state.sender, times + 1);
      return;
    }
    deferred?.delete(state.sender);
    if (answer) this.#sendDiff(state.sender, state.document, answer);
  }

  /** A regular round's state vector of the document; the one before becomes what is settled. */
  #settle(name: string, document: Document): void {
    const latest = stateVectorOf(document);
    const settled = this.#settled.get(name);
    if (settled) {
      settled.previous = settled.latest;
      settled.latest = latest;
    } else this.#settled.set(name, { latest });
  }

  /** The diff for one peer's state vector, on that peer's own channel only (#1151). */
  #sendDiff(peer: string, name: string, diff: Uint8Array): void {
    this.diffsSent += 1;
    this.#fanout.to(peer, { type: 'diff', sender: this.#identifier, document: name, bytes: diff });
  }

  /**
   * After an outage of either connection, once both are back: subscribes every loaded document's
   * channels again, then says `hello` for each, as a load does, and publishes the awareness states
   * of its own clients. Live messages published while a node could not hear them are lost (a
   * cursor moved, a clientID taken), and clients renew their awareness only every 15 s; the two
   * messages cover both orders in which nodes come back: the answers to `hello` bring this node
   * what the peers already back hold (edits, their clients' states), and the states it publishes
   * reach the peers already subscribed — a peer that comes back later does the same in turn.
   */
  /** Asks every peer of the document for what this node lacks (each answers with a diff and its awareness). */
  #hello(name: string, document: Document): void {
    this.#fanout.broadcast({ type: 'hello', sender: this.#identifier, document: name, stateVector: Y.encodeStateVector(document) });
  }

  #resubscribe(): void {
    if (this.#subscriber.status !== 'ready' || this.commands.status !== 'ready') return;
    for (const [name, document] of this.#documents) {
      this.#fanout
        .subscribe(name)
        .then(() => {
          if (this.#documents.get(name) !== document) return; // unloaded meanwhile
          this.#hello(name, document);
          const own = [...document.awareness.getStates().keys()].filter((id) => this.#claims.isLocal(name, id));
          if (own.length > 0) {
            this.#fanout.broadcast({ type: 'awareness', sender: this.#identifier, document: name, bytes: encodeAwarenessUpdate(document.awareness, own) });
          }
        })
        .catch((error: unknown) => this.#opts.logger.debug({ err: error, session: name }, 'redis resubscribe failed'));
    }
  }

  #soonTimer: NodeJS.Timeout | undefined;
  #soon(): void {
    if (this.#soonTimer) return;
    this.#soonTimer = setTimeout(() => {
      this.#soonTimer = undefined;
      void this.#round(true);
    }, 100);
  }

  /**
   * One round: per loaded document, this node's state (anti-entropy) and its claims (renewed,
   * and — once this node's own view of Redis is steady — the report of unused clientIDs the sweep
   * acts on).
   *
   * A document with live traffic since the last round announces on its next live message
   * (`#publishLive`); one whose carried announcement is still due from the last round (nothing
   * live came since) goes on its own now: an announcement is at most one round late. `now` (a
   * lost publish, Redis back): every document on its own, at once.
   */
  async #round(now = false): Promise<void> {
    if (this.#closed) return;
    const healthy = this.healthy();
    const judging = this.#liveness.judging(healthy);
    if (!healthy) {
      this.#sweep.reset();
      return;
    }
    const documents = this.#documents;
    const work: Promise<void>[] = [];
    for (const [name, document] of documents) {
      if (!now) this.#settle(name, document);
      if (!now && this.#live.has(name)) {
        this.#announceOnNextLive.add(name);
      } else {
        this.#announceOnNextLive.delete(name);
        this.announcementsAlone += 1;
        this.#fanout.broadcast(stateMessage(this.#identifier, name, document));
      }
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
    this.#live.clear();
    await Promise.all(work);
  }

  #hasRemoteStates(name: string, document: Document): boolean {
    for (const id of document.awareness.getStates().keys()) if (!this.#claims.isLocal(name, id)) return true;
    return false;
  }

  async onDestroy(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const dispose of this.#disposers.splice(0)) dispose();
    if (this.#soonTimer) clearTimeout(this.#soonTimer);
    for (const resolve of [...this.#answered.values()]) resolve();
    this.#subscriber.disconnect(false);
    this.commands.disconnect(false);
    return Promise.resolve();
  }

  /** Disposer for the server's close(): same as Hocuspocus's onDestroy (idempotent). */
  close(): Promise<void> {
    return this.onDestroy();
  }
}
