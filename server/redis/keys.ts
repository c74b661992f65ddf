/**
 * Every Redis key and channel name the nodes use, in one place. Everything that belongs to one
 * session carries the session id as a hash tag (`{<sessionId>}`), so on a Redis Cluster all of a
 * session's keys and channels hash to one slot, one shard: a Lua script may touch several of them,
 * and a session's traffic never leaves its shard. Pure.
 */

export class RedisNames {
  readonly prefix: string;

  constructor(prefix: string) {
    this.prefix = prefix;
  }

  /** The hash tag of a session: the part of every name Redis Cluster hashes. */
  static tag(session: string): string {
    return `{${session}}`;
  }

  /** Hash `clientID → <userId>|<node using it>|<released at>`: who may use an awareness clientID. */
  claims(session: string): string {
    return `${this.prefix}:aw:${RedisNames.tag(session)}`;
  }

  /**
   * The document's channel: every node that has the session loaded subscribes to it; the live
   * updates, awareness, anti-entropy announcements and stateless broadcasts of the session travel on it.
   */
  document(session: string): string {
    return `${this.prefix}:doc:${RedisNames.tag(session)}`;
  }

  /** Prefix of the per-node channels of `session` (a node's name is appended): see `node`. */
  nodePrefix(session: string): string {
    return `${this.prefix}:node:${RedisNames.tag(session)}:`;
  }

  /**
   * The channel `node` subscribes to while it has `session` loaded: what is addressed to that node
   * alone arrives there, and its subscriber count is the node's liveness (server/redis/liveness.ts).
   */
  node(session: string, node: string): string {
    return `${this.nodePrefix(session)}${node}`;
  }
}
