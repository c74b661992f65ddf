/**
 * Node liveness, one source for everything that asks "is that node alive?" (the awareness claims
 * when the same user's clientID is held elsewhere, and the sweep of a dead node's presence): a node
 * is alive in a session while it is subscribed to its own channel of that session
 * (`<prefix>:node:{<session>}:<node>`, server/redis/keys.ts), which it is from loading the
 * document until unloading it. Redis drops a subscription the moment the subscriber's connection
 * closes, so a node killed with -9 is dead at once, without waiting for heartbeats to age; and
 * the channel shares the session's hash slot, so a Lua script on the session's keys can ask
 * (`PUBSUB NUMSUB`, or `SHARDNUMSUB` for sharded pub/sub) atomically with what it decides.
 *
 * What a subscription cannot tell: a node whose Redis connection only blipped looks dead for that
 * moment. Callers that act on a death (the presence sweep) therefore confirm it over two rounds,
 * and a node does not judge others while its own connections have been ready for less than
 * `settleMs` (its own reconnect may be the silence).
 */

/**
 * `alive(node)` in Lua for the scripts that need it: ARGV-independent, so each script passes the
 * subcommand (`NUMSUB` or `SHARDNUMSUB`) and the session's node-channel prefix.
 */
export const ALIVE_LUA = `local function alive(numsub, channelPrefix, node)
  local reply = redis.call('PUBSUB', numsub, channelPrefix .. node)
  return tonumber(reply[2]) > 0
end
`;

export type NumsubCommand = 'NUMSUB' | 'SHARDNUMSUB';

export class Liveness {
  /** The `PUBSUB` subcommand that counts subscribers of the channels in use. */
  readonly numsub: NumsubCommand;
  readonly #settleMs: number;
  /** Since when this node's own Redis connections have all been ready (ms); undefined while not. */
  #readySince: number | undefined;

  constructor(options: { numsub: NumsubCommand; settleMs: number }) {
    this.numsub = options.numsub;
    this.#settleMs = options.settleMs;
    this.#readySince = undefined;
  }

  /** A connection of this node became ready (again): its view of the others starts afresh. */
  connected(now = Date.now()): void {
    this.#readySince = now;
  }

  /**
   * May this node take another for dead now? Only while all its connections are ready (`healthy`)
   * and have been for `settleMs`.
   */
  judging(healthy: boolean, now = Date.now()): boolean {
    if (!healthy) {
      this.#readySince = undefined;
      return false;
    }
    this.#readySince ??= now;
    return now - this.#readySince >= this.#settleMs;
  }
}
