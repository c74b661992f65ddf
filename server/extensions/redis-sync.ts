/**
 * Cross-node fan-out through Redis: @hocuspocus/extension-redis for the live path (each change
 * publishes a state vector on the document's channel, peers answer with the diff on the sender's
 * reply channel; awareness is relayed the same way), plus what it gets wrong (docs/STACK-NOTES.md):
 *
 * - **No store lock.** Its `onStoreDocument` takes a Redlock with no retry and makes a node that
 *   misses it skip its store (`SkipFurtherHooksError`). Our log is append-only and idempotent and
 *   compaction has its own advisory lock (persistence/update-log.ts), so the lock is dropped:
 *   every node's persistence hooks always run.
 * - **Anti-entropy.** Pub/sub is at-most-once: a message published while a subscriber reconnects
 *   is gone, and stock extension-redis only repairs that on the next edit. Every `syncIntervalMs`
 *   (and at once whenever a Redis connection becomes ready again) each node publishes, for every
 *   loaded document, its state vector and a digest of its delete set on one node-wide channel. A
 *   node that holds structs the sender lacks, or whose delete set differs, sends the sender
 *   `encodeStateAsUpdate(doc, senderStateVector)` on the sender's reply channel only (never the
 *   document channel: a diff computed for one state vector must not reach others, #1151). Delete
 *   sets are compared by digest because a delete-only update does not move the state vector.
 * - **Presence removals.** Hocuspocus re-encodes relayed awareness through a scratch Awareness,
 *   which drops `null` (removed) states, and extension-redis publishes nothing once the last local
 *   connection is gone, so a user who left stays visible on other nodes until y-protocols' 30 s
 *   timeout. Removals caused by a local connection closing are published on the node-wide channel
 *   and applied with `removeAwarenessStates` on every other node.
 * - **Awareness clientIDs are bound to users cluster-wide.** The awareness guard binds a clientID
 *   to the user who first used it; across nodes, the first use claims it in a Redis hash
 *   (`<prefix>:aw:<session>`, field clientID → `<user>|<node using it>|<released at>`), so a user
 *   on another node cannot forge a state under it, even after its user disconnected (stock: anyone
 *   can, on every node). The same user may use it from any node at once (a client moving from a
 *   killed node keeps its clientID). Each round renews this node's claims (a Redis restart loses
 *   them); released bindings are forgotten after an hour, or beyond a few per user.
 * - **Presence of a dead node.** A node killed with -9 publishes no removals. A peer not heard
 *   from for three sync intervals (its rounds stopped) is dead: every node removes the states the
 *   claim hash names it the owner of, instead of keeping them until y-protocols' 30 s timeout.
 *   Awareness changes relayed from Redis are not published again (stock re-publishes them, N-1
 *   times each).
 * - **Redis unreachable.** Loading a document does not wait for Redis longer than
 *   `loadWaitMs`; each node keeps serving its own clients; when Redis is back, document channels
 *   are re-subscribed and an anti-entropy round runs at once, so nodes reconverge without new edits.
 *
 * Keys and channels are namespaced `<prefix>:…` (default `imageflow`); the keys written are
 * `<prefix>:node:<nodeId>`, a liveness record that expires after three sync intervals, and
 * `<prefix>:aw:<session>`, the awareness claims, which expire an hour after the last node renewed them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Redis as RedisExtension, type RedisInstance } from '@hocuspocus/extension-redis';
import { OutgoingMessage } from '@hocuspocus/server';
import type {
  afterLoadDocumentPayload,
  afterStoreDocumentPayload,
  afterUnloadDocumentPayload,
  Document,
  Hocuspocus,
  onAwarenessUpdatePayload,
} from '@hocuspocus/server';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import type { Logger } from 'pino';
import { removeAwarenessStates } from 'y-protocols/awareness';
import * as Y from 'yjs';
import { RELEASED_BINDING_TTL_MS, type AwarenessClaims } from './awareness.ts';

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

/*
 * The awareness claim hash `<prefix>:aw:<session>`: field clientID → `<userId>|<node>|<releasedAt>`.
 * The user is who the clientID is bound to; the node is the one whose connection uses it now
 * (empty once released, with the time of the release), for removing a dead node's presence.
 */

/**
 * Claim an awareness clientID for a user on this node: KEYS[1] the document's claim hash, ARGV =
 * clientID, user, this node's identifier, TTL ms, and a node whose use may be replaced (dead, or
 * ''). Returns '' when the clientID is now this user's on this node (free, released by this user,
 * or already used by this node), otherwise the hash's value (bound to another user, or in use on
 * another node).
 */
const CLAIM_SCRIPT = `local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then
  local user, node = string.match(value, '^([^|]*)|([^|]*)|')
  if user ~= ARGV[2] then return value end
  if node ~= '' and node ~= ARGV[3] and node ~= ARGV[5] then return value end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|')
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return ''`;
/**
 * Release a claim if this node still uses it: the clientID stays bound to its user. KEYS[1] the
 * hash, ARGV = clientID, identifier, now (ms), released bindings kept per user, released TTL ms.
 * Then forgets that user's oldest released bindings beyond the number kept, and any released
 * longer ago than the TTL.
 */
const RELEASE_SCRIPT = `local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local user, node = string.match(value, '^([^|]*)|([^|]*)|')
if node ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], user .. '||' .. ARGV[3])
local now, keep, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
local mine = {}
for i = 1, #all, 2 do
  local u, n, at = string.match(all[i + 1], '^([^|]*)|([^|]*)|(.*)$')
  if n == '' then
    local t = tonumber(at) or 0
    if now - t > ttl then redis.call('HDEL', KEYS[1], all[i])
    elseif u == user then table.insert(mine, { all[i], t }) end
  end
end
if #mine > keep then
  table.sort(mine, function(a, b) return a[2] < b[2] end)
  for i = 1, #mine - keep do redis.call('HDEL', KEYS[1], mine[i][1]) end
end
return 1`;
/**
 * Keep this node's claims (a Redis restart loses them): KEYS[1] the hash, ARGV = identifier, TTL ms,
 * then pairs of clientID and user.
 */
const RENEW_SCRIPT = `for i = 3, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1] .. '|' .. ARGV[1] .. '|') end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

/** The user a claim hash value (`<user>|<node>|<releasedAt>`) binds the clientID to. */
export function claimUser(value: string): string {
  return value.split('|')[0] ?? '';
}

/** The node a claim hash value names as using the clientID now; '' when released. */
export function claimNode(value: string): string {
  return value.split('|')[1] ?? '';
}

interface ClaimCommands {
  ifcClaim(key: string, clientId: string, userId: string, identifier: string, ttlMs: string, replaceable: string): Promise<string>;
  ifcRelease(key: string, clientId: string, identifier: string, nowMs: string, keep: string, releasedTtlMs: string): Promise<number>;
  ifcRenew(key: string, identifier: string, ttlMs: string, ...clientIdsAndUsers: string[]): Promise<number>;
}

const MSG_STATE = 0;
const MSG_AWARENESS_REMOVED = 1;

function writeIds(e: encoding.Encoder, ids: readonly number[]): void {
  encoding.writeVarUint(e, ids.length);
  for (const id of ids) encoding.writeVarUint(e, id);
}

function readIds(d: decoding.Decoder): number[] {
  const count = decoding.readVarUint(d);
  const ids: number[] = [];
  for (let i = 0; i < count; i++) ids.push(decoding.readVarUint(d));
  return ids;
}

/** Pure: does `local` hold a struct that the peer with state vector `remote` lacks? */
export function hasStructsMissingFrom(local: Map<number, number>, remote: Map<number, number>): boolean {
  for (const [client, clock] of local) if (clock > (remote.get(client) ?? 0)) return true;
  return false;
}

/** Pure: the digest of a document's delete set (the only part of the state a state vector misses). */
export function deleteSetDigest(doc: Y.Doc, stateVector: Uint8Array): string {
  return createHash('sha1').update(Y.encodeStateAsUpdate(doc, stateVector)).digest('base64');
}

export class RedisSyncExtension extends RedisExtension implements AwarenessClaims {
  override priority = 1000;
  readonly #opts: RedisSyncOptions;
  readonly #control: RedisInstance;
  readonly #controlChannel: string;
  readonly #disposers: Array<() => void> = [];
  #closed = false;
  /** Per document: the awareness clientIDs this node's connections hold (claimed, not released) → their user. */
  readonly #localClients = new Map<string, Map<number, string>>();
  /** Claims released while Redis was unreachable: [document, clientID]. */
  readonly #unreleased: Array<[string, number]> = [];
  /** Peer identifier → when a message from it last arrived (ms). */
  readonly #lastHeard = new Map<string, number>();
  /** Since when all three Redis connections have been ready (a silent peer means nothing before). */
  #healthySince = Date.now();
  /** Remote awareness states removed because their node went silent (metrics). */
  deadPeerStatesRemoved = 0;
  /** Claims refused because another live node holds the clientID (metrics). */
  claimsRefused = 0;
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
    this.pub.defineCommand('ifcClaim', { numberOfKeys: 1, lua: CLAIM_SCRIPT });
    this.pub.defineCommand('ifcRelease', { numberOfKeys: 1, lua: RELEASE_SCRIPT });
    this.pub.defineCommand('ifcRenew', { numberOfKeys: 1, lua: RENEW_SCRIPT });
    this.#controlChannel = `${options.prefix}#control`;
    this.#control = this.sub.duplicate();
    for (const client of [this.pub, this.sub, this.#control]) {
      client.on('error', (error: Error) => options.logger.debug({ err: error }, 'redis connection error'));
    }
    // Any message from a peer shows it alive (a peer killed before its first round is still known).
    this.sub.on('messageBuffer', (_channel: Buffer, data: Buffer) => {
      // extension-redis's envelope: identifier length (1 byte), identifier, Hocuspocus message.
      const sender = data.toString('utf8', 1, (data[0] ?? 0) + 1);
      if (sender !== this.identifier) this.#lastHeard.set(sender, Date.now());
    });
    this.#control.on('messageBuffer', (_channel: Buffer, data: Buffer) => {
      try {
        this.#handleControl(new Uint8Array(data));
      } catch (error) {
        options.logger.warn({ err: error }, 'redis sync: bad control message');
      }
    });
    void this.#control.subscribe(this.#controlChannel).catch((error: unknown) => {
      options.logger.warn({ err: error }, 'redis sync: control subscription failed');
    });
    // Reconnected: re-subscribe every loaded document's channel (a load during the outage may have
    // given up on it) and exchange state at once, so nodes reconverge without waiting for an edit.
    const onReady = () => {
      if (this.#closed) return;
      this.#healthySince = Date.now();
      if (this.pub.status === 'ready') this.#releaseUnreleased();
      this.#resubscribe();
      this.#soon();
    };
    this.sub.on('ready', onReady);
    this.#control.on('ready', onReady);
    this.pub.on('ready', onReady);
    const timer = setInterval(() => void this.#round(), options.syncIntervalMs);
    timer.unref();
    this.#disposers.push(() => clearInterval(timer));
  }

  get identifier(): string {
    return this.configuration.identifier;
  }

  /** Redis reachable for publishing and for receiving. */
  healthy(): boolean {
    return this.pub.status === 'ready' && this.sub.status === 'ready' && this.#control.status === 'ready';
  }

  #hocuspocus(): Hocuspocus | undefined {
    return (this as { instance?: Hocuspocus }).instance;
  }

  /** A load never blocks on Redis longer than `loadWaitMs`: an outage must not refuse clients. */
  override async afterLoadDocument(payload: afterLoadDocumentPayload): Promise<void> {
    const waitMs = this.#opts.loadWaitMs ?? 2_000;
    let timer: NodeJS.Timeout | undefined;
    const work = super.afterLoadDocument(payload).catch((error: unknown) => {
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
    this.#localClients.delete(payload.documentName);
  }

  override async onAwarenessUpdate(payload: onAwarenessUpdatePayload): Promise<void> {
    const origin = payload.transactionOrigin as { source?: string } | null | undefined;
    // Relayed changes were published by the node whose client made them; publishing them again
    // only costs every node a message it ignores (same clock).
    if (origin?.source === 'redis') return;
    await super.onAwarenessUpdate(payload);
    // Only removals of this node's own clients: `null` is Hocuspocus removing a closed
    // connection's states. Timeouts (origin 'timeout') and relayed removals are not re-published.
    if (payload.removed.length === 0 || (origin !== null && origin !== undefined)) return;
    const e = encoding.createEncoder();
    encoding.writeVarUint(e, MSG_AWARENESS_REMOVED);
    encoding.writeVarString(e, this.identifier);
    encoding.writeVarString(e, payload.documentName);
    writeIds(e, payload.removed);
    await this.#publish(this.#controlChannel, encoding.toUint8Array(e));
  }

  #handleControl(data: Uint8Array): void {
    const d = decoding.createDecoder(data);
    const type = decoding.readVarUint(d);
    const sender = decoding.readVarString(d);
    if (sender === this.identifier) return;
    this.#lastHeard.set(sender, Date.now());
    const name = decoding.readVarString(d);
    const document = this.#hocuspocus()?.documents.get(name);
    if (!document) return;
    if (type === MSG_AWARENESS_REMOVED) {
      // Never a client connected here: a removal of it from another node is a forgery made there.
      const local = this.#localClients.get(name);
      const present = readIds(d).filter((id) => !local?.has(id) && document.awareness.getStates().has(id));
      if (present.length > 0) removeAwarenessStates(document.awareness, present, this.redisTransactionOrigin);
      return;
    }
    if (type !== MSG_STATE) return;
    const remoteVector = decoding.readVarUint8Array(d);
    const remoteDigest = decoding.readVarString(d);
    const localVector = Y.encodeStateVector(document);
    const missing = hasStructsMissingFrom(Y.decodeStateVector(localVector), Y.decodeStateVector(remoteVector));
    if (!missing && remoteDigest === deleteSetDigest(document, localVector)) return;
    this.#sendDiff(sender, name, document, remoteVector);
  }

  get #commands(): ClaimCommands {
    return this.pub as unknown as ClaimCommands;
  }

  #claimKey(name: string): string {
    return `${this.#opts.prefix}:aw:${name}`;
  }

  /**
   * The claim hash outlives the last round of the last node using it by this much (rounds renew
   * it): a released clientID stays bound to its user that long, as on one node.
   */
  get #claimTtl(): string {
    return String(Math.max(this.#opts.syncIntervalMs * 10, RELEASED_BINDING_TTL_MS));
  }

  /**
   * Cluster-wide: may a connection of `userId` here use awareness `clientId` in `name`? Not when
   * the clientID is bound to another user (used by them now on any node, or released by them), nor
   * while a node that is still subscribed to Redis (alive) uses it; a dead node's use is taken over,
   * so a client of the same user moving here from a killed node keeps its clientID. With
   * Redis unreachable or slow (500 ms), yes: presence must not stop because Redis did, and the
   * claim is written at the next round.
   */
  async claim(name: string, clientId: number, userId: string): Promise<boolean> {
    const free = await this.#claimInRedis(name, clientId, userId);
    if (free) {
      let local = this.#localClients.get(name);
      if (!local) this.#localClients.set(name, (local = new Map()));
      local.set(clientId, userId);
    }
    return free;
  }

  async #claimInRedis(name: string, clientId: number, userId: string): Promise<boolean> {
    if (!this.healthy()) return true;
    const work = async () => {
      const key = this.#claimKey(name);
      const id = String(clientId);
      const held = await this.#commands.ifcClaim(key, id, userId, this.identifier, this.#claimTtl, '');
      if (held === '') return true;
      let taken = true;
      if (claimUser(held) === userId) {
        // The same user's client on another node: alive there, or moving here from a dead node?
        const node = claimNode(held);
        const [, subscribers] = (await this.pub.pubsub('NUMSUB', `${this.#opts.prefix}#reply:${node}`)) as [string, number];
        taken = Number(subscribers) > 0 || (await this.#commands.ifcClaim(key, id, userId, this.identifier, this.#claimTtl, node)) !== '';
      }
      if (taken) this.claimsRefused += 1;
      return !taken;
    };
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([work(), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), 500)))]);
    } catch (error) {
      this.#opts.logger.debug({ err: error, session: name }, 'redis sync: awareness claim failed; allowed');
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A release that cannot reach Redis waits for it: a claim naming this live node as the user of
   * the clientID would keep the presence sweep from removing the state once this node dies.
   */
  release(name: string, clientId: number): void {
    this.#localClients.get(name)?.delete(clientId);
    if (this.pub.status !== 'ready') {
      this.#unreleased.push([name, clientId]);
      return;
    }
    const keep = String(this.#opts.releasedBindingsPerUser ?? 4);
    this.#commands.ifcRelease(this.#claimKey(name), String(clientId), this.identifier, String(Date.now()), keep, String(RELEASED_BINDING_TTL_MS)).catch((error: unknown) => {
      this.#opts.logger.debug({ err: error, session: name }, 'redis sync: awareness release failed; retried when Redis is back');
      this.#unreleased.push([name, clientId]);
    });
  }

  /** Releases that could not reach Redis, unless the clientID is this node's again meanwhile. */
  #releaseUnreleased(): void {
    for (const [name, clientId] of this.#unreleased.splice(0)) {
      if (!this.#localClients.get(name)?.has(clientId)) this.release(name, clientId);
    }
  }

  /**
   * Peers silent for three sync intervals are dead (their rounds stopped): remove the awareness
   * states the claim hash names them the owner of, so their users' cursors do not linger for 30 s.
   * Not while this node's own Redis connections have been ready for less than that (silence is then
   * ours, not theirs).
   */
  async #removeStatesOfSilentPeers(now: number): Promise<void> {
    const limit = this.#opts.syncIntervalMs * 3;
    if (now - this.#healthySince < limit) return;
    const dead = new Set([...this.#lastHeard].filter(([, heard]) => now - heard >= limit).map(([peer]) => peer));
    if (dead.size === 0) return;
    for (const peer of dead) this.#lastHeard.delete(peer);
    let removed = 0;
    for (const [name, document] of this.#hocuspocus()?.documents ?? []) {
      const claims = (await this.pub.hgetall(this.#claimKey(name))) as Record<string, string>;
      const states = document.awareness.getStates();
      const ids = Object.entries(claims)
        .filter(([id, value]) => dead.has(claimNode(value)) && states.has(Number(id)))
        .map(([id]) => Number(id));
      if (ids.length === 0) continue;
      removeAwarenessStates(document.awareness, ids, this.redisTransactionOrigin);
      removed += ids.length;
    }
    this.deadPeerStatesRemoved += removed;
    this.#opts.logger.info({ peers: [...dead], removed }, 'redis sync: peers silent, removed the presence they owned');
  }

  /** The diff for one peer's state vector, on that peer's reply channel only (#1151). */
  #sendDiff(peer: string, name: string, document: Document, remoteVector: Uint8Array): void {
    const message = new OutgoingMessage(name).createSyncMessage().writeUpdate(Y.encodeStateAsUpdate(document, remoteVector)).toUint8Array();
    const id = Buffer.from(this.identifier, 'utf8');
    const envelope = Buffer.concat([Buffer.from([id.length]), id, Buffer.from(message)]);
    this.diffsSent += 1;
    void this.#publish(`${this.#opts.prefix}#reply:${peer}`, envelope);
  }

  async #publish(channel: string, message: Uint8Array): Promise<void> {
    if (this.pub.status !== 'ready') return; // anti-entropy repairs it once Redis is back
    try {
      await this.pub.publish(channel, Buffer.from(message));
    } catch (error) {
      this.#opts.logger.debug({ err: error, channel }, 'redis publish failed');
    }
  }

  #resubscribe(): void {
    const documents = this.#hocuspocus()?.documents;
    if (!documents || this.sub.status !== 'ready') return;
    for (const name of documents.keys()) {
      this.sub.subscribe(`${this.#opts.prefix}:${name}`).catch((error: unknown) => {
        this.#opts.logger.debug({ err: error, session: name }, 'redis resubscribe failed');
      });
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

  /** One anti-entropy round: this node's state vector and delete-set digest for each loaded document. */
  async #round(): Promise<void> {
    if (this.#closed) return;
    if (!this.healthy()) {
      this.#healthySince = Date.now();
      return;
    }
    await this.#removeStatesOfSilentPeers(Date.now()).catch((error: unknown) => {
      this.#opts.logger.debug({ err: error }, 'redis sync: removing the presence of silent peers failed; next round');
    });
    const documents = this.#hocuspocus()?.documents ?? new Map<string, Document>();
    const sends: Promise<void>[] = [];
    for (const [name, document] of documents) {
      const vector = Y.encodeStateVector(document);
      const e = encoding.createEncoder();
      encoding.writeVarUint(e, MSG_STATE);
      encoding.writeVarString(e, this.identifier);
      encoding.writeVarString(e, name);
      encoding.writeVarUint8Array(e, vector);
      encoding.writeVarString(e, deleteSetDigest(document, vector));
      sends.push(this.#publish(this.#controlChannel, encoding.toUint8Array(e)));
      const local = this.#localClients.get(name);
      if (local && local.size > 0) {
        sends.push(
          this.#commands.ifcRenew(this.#claimKey(name), this.identifier, this.#claimTtl, ...[...local].flatMap(([id, user]) => [String(id), user])).then(
            () => undefined,
            () => undefined,
          ),
        );
      }
    }
    const ttl = this.#opts.syncIntervalMs * 3;
    sends.push(
      this.pub
        .set(`${this.#opts.prefix}:node:${this.#opts.nodeId}`, JSON.stringify({ identifier: this.identifier, documents: documents.size }), 'PX', ttl)
        .then(() => undefined, () => undefined),
    );
    await Promise.all(sends);
  }

  override async onDestroy(): Promise<void> {
    this.#closed = true;
    for (const dispose of this.#disposers.splice(0)) dispose();
    if (this.#soonTimer) clearTimeout(this.#soonTimer);
    this.#control.disconnect(false);
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
