/**
 * The live path between nodes, one Redis hop per change: a node publishes the exact update its
 * client sent (the bytes of the document's `update` event, after the guard accepted and applied it)
 * once on the document's channel, framed by `wire.ts` with the node's identifier; every other node
 * that has the document loaded applies those bytes as they are (with the redis origin, so it does
 * not publish them again; server/extensions/redis-sync.ts appends what they changed to that node's
 * own log). Awareness changes, anti-entropy announcements and stateless
 * broadcasts of the document travel on the same channel; answers meant for one node (diffs, the
 * awareness answering a `hello`) on that node's own channel of the session (keys.ts), so a diff
 * computed for one state vector never reaches another node (hocuspocus#1151).
 *
 * Pub/sub delivers at most once and Redis drops what is published while a subscriber reconnects,
 * so this part only promises "once, or reported": a publish while the command connection is not
 * ready, or one that fails, is counted (`lost`) and reported to `onLost`, which runs an
 * anti-entropy round (server/redis/anti-entropy.ts) as soon as Redis answers again. An update that
 * arrives before one it builds on stays pending in Yjs until that round's diff brings the missing
 * structs (tested in test/multi-node.test.ts).
 */
import type { Logger } from 'pino';
import type { RedisNames } from './keys.ts';
import type { NumsubCommand } from './liveness.ts';
import { LuaScript, type RedisClient } from './script.ts';
import { decodeMessage, encodeMessage, type SyncMessage } from './wire.ts';

export interface FanoutOptions {
  /** Publishes go out on this connection, in order. */
  commands: RedisClient;
  /** Subscriptions: the documents' channels and this node's own channel of each. */
  subscriber: RedisClient;
  /**
   * Sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, a Redis Cluster): a session's channels hash to its
   * slot (keys.ts), so its messages touch only its shard. Classic `PUBLISH` on a cluster is
   * broadcast to every shard.
   */
  sharded: boolean;
  names: RedisNames;
  identifier: string;
  logger: Logger;
  /** A message of another node, decoded (this node's own messages are dropped here). */
  onMessage: (message: SyncMessage) => void;
  /** A publish did not reach Redis: anti-entropy must repair it. */
  onLost: () => void;
}

/** Subscribers of a channel, asked on the slot of KEYS[1] (on a cluster `SHARDNUMSUB` is shard-local). */
const NUMSUB = new LuaScript(`return redis.call('PUBSUB', ARGV[1], ARGV[2])`);

export class Fanout {
  readonly #o: FanoutOptions;
  /** Messages published (metrics, bench). */
  published = 0;
  /** Publishes that never reached Redis (left to anti-entropy). */
  lost = 0;

  constructor(options: FanoutOptions) {
    this.#o = options;
    // A cluster's subscriber emits a sharded message on both `smessage` and `smessageBuffer`.
    options.subscriber.on(options.sharded ? 'smessageBuffer' : 'messageBuffer', (channel: Buffer, data: Buffer) => this.#receive(channel, data));
  }

  #receive(channel: Buffer, data: Buffer): void {
    let message: SyncMessage;
    try {
      message = decodeMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } catch (error) {
      this.#o.logger.warn({ err: error, channel: channel.toString() }, 'redis fan-out: bad message');
      return;
    }
    // Redis delivers a node's publishes to its own subscriber too.
    if (message.sender === this.#o.identifier) return;
    this.#o.onMessage(message);
  }

  /** To every node that has `message.document` loaded. */
  broadcast(message: SyncMessage): void {
    this.#send(this.#o.names.document(message.document), message);
  }

  /** To one node only (its own channel of the session). */
  to(node: string, message: SyncMessage): void {
    this.#send(this.#o.names.node(message.document, node), message);
  }

  #send(channel: string, message: SyncMessage): void {
    const { commands, logger } = this.#o;
    if (commands.status !== 'ready') {
      this.#lose();
      return;
    }
    const bytes = encodeMessage(message);
    this.published += 1;
    const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    (this.#o.sharded ? commands.spublish(channel, buffer) : commands.publish(channel, buffer)).catch((error: unknown) => {
      logger.debug({ err: error, channel }, 'redis publish failed');
      this.#lose();
    });
  }

  #lose(): void {
    this.lost += 1;
    this.#o.onLost();
  }

  /** The channels of `document` this node listens on: the document's and its own. */
  channels(document: string): [string, string] {
    return [this.#o.names.document(document), this.#o.names.node(document, this.#o.identifier)];
  }

  async subscribe(document: string): Promise<void> {
    const { subscriber, sharded } = this.#o;
    await (sharded ? subscriber.ssubscribe(...this.channels(document)) : subscriber.subscribe(...this.channels(document)));
  }

  async unsubscribe(document: string): Promise<void> {
    const { subscriber, sharded } = this.#o;
    await (sharded ? subscriber.sunsubscribe(...this.channels(document)) : subscriber.unsubscribe(...this.channels(document)));
  }

  /** Subscribers of the document's channel other than this node (`PUBSUB NUMSUB`/`SHARDNUMSUB` on its slot). */
  async peers(document: string): Promise<number> {
    const numsub: NumsubCommand = this.#o.sharded ? 'SHARDNUMSUB' : 'NUMSUB';
    const { names, commands } = this.#o;
    const reply = (await NUMSUB.run(commands, [names.claims(document)], [numsub, names.document(document)])) as [string, number | string];
    return Math.max(0, Number(reply[1] ?? 0) - 1);
  }
}
