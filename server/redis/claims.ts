/**
 * The cluster-wide registry of awareness clientIDs (the `AwarenessClaims` the awareness guard asks,
 * server/extensions/awareness.ts): a Redis hash per session, `<prefix>:aw:{<session>}`, field
 * clientID → `<userId>|<node using it>|<released at>`. The user is who the clientID is bound to;
 * the node is the one whose connection uses it now, empty once released (with the Redis time of
 * the release). Every decision is one Lua script on the session's slot, with node liveness asked
 * in the same script (server/redis/liveness.ts), so two nodes never both win a clientID.
 *
 * - A claim succeeds when the clientID is free, released by the same user, used by this node, or
 *   used for the same user by a node that is not alive (a client moving from a killed node keeps
 *   its clientID). It is refused when bound to another user (used or released: nobody can take
 *   over the clientID of someone who disconnected for a moment) or used by a live node.
 * - A release keeps the binding (user, time) and forgets the user's oldest released bindings beyond
 *   `releasedBindingsPerUser`, and any released longer than RELEASED_BINDING_TTL_MS ago. A release
 *   that cannot reach Redis is retried when Redis is back: a claim naming this live node would keep
 *   the sweep from removing the state once this node dies.
 * - Each round renews this node's claims (a Redis restart loses them) and reports which clientIDs
 *   no live node uses (released, or used by a dead node, which it releases), for the presence sweep.
 * - With Redis unreachable or slow (500 ms) a claim is allowed: presence must not stop because
 *   Redis did; the next round writes it.
 */
import type { Logger } from 'pino';
import { RELEASED_BINDING_TTL_MS, type AwarenessClaims } from '../extensions/awareness.ts';
import type { RedisNames } from './keys.ts';
import { ALIVE_LUA, type Liveness } from './liveness.ts';
import { LuaScript, replyString, replyStrings, type RedisClient } from './script.ts';

const NOW_LUA = `local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/**
 * KEYS[1] the claim hash; ARGV: clientID, user, this node, hash TTL ms, PUBSUB subcommand, the
 * session's node-channel prefix. '' when the clientID is now this user's on this node, otherwise
 * the hash's value (bound to another user, or in use on another live node).
 */
const CLAIM = new LuaScript(`${ALIVE_LUA}local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then
  local user, node = string.match(value, '^([^|]*)|([^|]*)|')
  if user ~= ARGV[2] then return value end
  if node ~= '' and node ~= ARGV[3] and alive(ARGV[5], ARGV[6], node) then return value end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|')
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return ''`);

/**
 * KEYS[1] the claim hash; ARGV: clientID, this node, released bindings kept per user, released TTL
 * ms. Releases the clientID if this node still uses it, then forgets that user's oldest released
 * bindings beyond the number kept, and any released longer ago than the TTL. 1 if released.
 */
const RELEASE = new LuaScript(`${NOW_LUA}local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
local user, node = string.match(value, '^([^|]*)|([^|]*)|')
if node ~= ARGV[2] then return 0 end
local t = now()
redis.call('HSET', KEYS[1], ARGV[1], user .. '||' .. t)
local keep, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local all = redis.call('HGETALL', KEYS[1])
local mine = {}
for i = 1, #all, 2 do
  local u, n, at = string.match(all[i + 1], '^([^|]*)|([^|]*)|(.*)$')
  if n == '' then
    local released = tonumber(at) or 0
    if t - released > ttl then redis.call('HDEL', KEYS[1], all[i])
    elseif u == user then table.insert(mine, { all[i], released }) end
  end
end
if #mine > keep then
  table.sort(mine, function(a, b) return a[2] < b[2] end)
  for i = 1, #mine - keep do redis.call('HDEL', KEYS[1], mine[i][1]) end
end
return 1`);

/**
 * KEYS[1] the claim hash; ARGV: this node, hash TTL ms, PUBSUB subcommand, the session's
 * node-channel prefix, '1' to judge others (else only renew), then pairs of clientID and user (this
 * node's claims). Renews those claims (as a claim would), releases the claims of nodes that are not
 * alive, and returns the clientIDs no live node uses (released ones and those just released).
 */
const ROUND = new LuaScript(`${ALIVE_LUA}${NOW_LUA}local me = ARGV[1]
for i = 6, #ARGV, 2 do
  local value = redis.call('HGET', KEYS[1], ARGV[i])
  local take = true
  if value then
    local user, node = string.match(value, '^([^|]*)|([^|]*)|')
    if user ~= ARGV[i + 1] or (node ~= '' and node ~= me and alive(ARGV[3], ARGV[4], node)) then take = false end
  end
  if take then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '|' .. me .. '|') end
end
local unused = {}
if ARGV[5] == '1' then
  local all = redis.call('HGETALL', KEYS[1])
  local dead = {}
  local t = nil
  for i = 1, #all, 2 do
    local user, node = string.match(all[i + 1], '^([^|]*)|([^|]*)|')
    if node == '' then
      table.insert(unused, all[i])
    elseif node ~= me then
      if dead[node] == nil then dead[node] = not alive(ARGV[3], ARGV[4], node) end
      if dead[node] then
        t = t or now()
        redis.call('HSET', KEYS[1], all[i], user .. '||' .. t)
        table.insert(unused, all[i])
      end
    end
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return unused`);

/** The user a claim hash value (`<user>|<node>|<releasedAt>`) binds the clientID to. */
export function claimUser(value: string): string {
  return value.split('|')[0] ?? '';
}

/** The node a claim hash value names as using the clientID now; '' when released. */
export function claimNode(value: string): string {
  return value.split('|')[1] ?? '';
}

export interface ClaimRegistryOptions {
  /** The command connection. */
  redis: RedisClient;
  /** Is the command connection ready? (Not: claims are allowed, releases wait.) */
  ready: () => boolean;
  names: RedisNames;
  liveness: Liveness;
  /** This node's identifier in claims and liveness channels. */
  identifier: string;
  /** The sync interval: the claim hash outlives the last round of the last node by ten of them (at least an hour). */
  syncIntervalMs: number;
  /** Released bindings kept per user and document (the awareness cap). */
  releasedBindingsPerUser: number;
  logger: Logger;
}

export class ClaimRegistry implements AwarenessClaims {
  readonly #o: ClaimRegistryOptions;
  /** Per document: the awareness clientIDs this node's connections hold (claimed, not released) → their user. */
  readonly #local = new Map<string, Map<number, string>>();
  /** Releases that could not reach Redis: [document, clientID]. */
  readonly #unreleased: Array<[string, number]> = [];
  /** Claims refused because the clientID is another user's, or in use on another live node (metrics). */
  refused = 0;

  constructor(options: ClaimRegistryOptions) {
    this.#o = options;
  }

  /**
   * The claim hash outlives the last round of the last node using it by this much (rounds renew
   * it): a released clientID stays bound to its user that long, as on one node.
   */
  get #ttl(): number {
    return Math.max(this.#o.syncIntervalMs * 10, RELEASED_BINDING_TTL_MS);
  }

  /** May a connection of `userId` here use awareness `clientId` in `name`? See the file comment. */
  async claim(name: string, clientId: number, userId: string): Promise<boolean> {
    const granted = await this.#claimInRedis(name, clientId, userId);
    if (granted) {
      let local = this.#local.get(name);
      if (!local) this.#local.set(name, (local = new Map()));
      local.set(clientId, userId);
    }
    return granted;
  }

  async #claimInRedis(name: string, clientId: number, userId: string): Promise<boolean> {
    if (!this.#o.ready()) return true;
    const { names, identifier, liveness, redis } = this.#o;
    const work = CLAIM.run(redis, [names.claims(name)], [clientId, userId, identifier, this.#ttl, liveness.numsub, names.nodePrefix(name)]).then((reply) => {
      const granted = replyString(reply) === '';
      if (!granted) this.refused += 1;
      return granted;
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([work, new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), 500)))]);
    } catch (error) {
      this.#o.logger.debug({ err: error, session: name }, 'redis sync: awareness claim failed; allowed');
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The connection that used `clientId` here closed: released in Redis (now, or once Redis is back). */
  release(name: string, clientId: number): void {
    this.#local.get(name)?.delete(clientId);
    if (!this.#o.ready()) {
      this.#unreleased.push([name, clientId]);
      return;
    }
    const { names, identifier, redis, releasedBindingsPerUser } = this.#o;
    RELEASE.run(redis, [names.claims(name)], [clientId, identifier, releasedBindingsPerUser, RELEASED_BINDING_TTL_MS]).catch((error: unknown) => {
      this.#o.logger.debug({ err: error, session: name }, 'redis sync: awareness release failed; retried when Redis is back');
      this.#unreleased.push([name, clientId]);
    });
  }

  /** Redis is back: the releases it missed, unless the clientID is this node's again meanwhile. */
  retryReleases(): void {
    for (const [name, clientId] of this.#unreleased.splice(0)) {
      if (!this.#local.get(name)?.has(clientId)) this.release(name, clientId);
    }
  }

  /** Is `clientId` used by a connection of this node in `name`? */
  isLocal(name: string, clientId: number): boolean {
    return this.#local.get(name)?.has(clientId) ?? false;
  }

  hasLocal(name: string): boolean {
    return (this.#local.get(name)?.size ?? 0) > 0;
  }

  /**
   * One round for a document: renews this node's claims there and, when `judging`, returns the
   * clientIDs that no live node uses (releasing those of dead nodes).
   */
  async round(name: string, judging: boolean): Promise<number[]> {
    const { names, identifier, liveness, redis } = this.#o;
    const mine = [...(this.#local.get(name) ?? [])].flatMap(([id, user]) => [String(id), user]);
    const reply = await ROUND.run(redis, [names.claims(name)], [identifier, this.#ttl, liveness.numsub, names.nodePrefix(name), judging ? '1' : '0', ...mine]);
    return replyStrings(reply).map(Number);
  }

  /** The document was unloaded here: nothing of it is held any more (its connections released theirs). */
  forget(name: string): void {
    this.#local.delete(name);
  }
}
