/**
 * Draining a node before it stops (SIGTERM, SIGINT, `close()`), so a fleet can be restarted one
 * node at a time without losing an edit or leaving a cursor behind (README "Rolling restarts"):
 *
 * 1. `/readyz` answers 503 `draining` and new WebSocket upgrades are refused (503
 *    `shutting_down`), so a load balancer that polls `/readyz` stops sending clients here;
 *    HTTP requests are still served for `DRAIN_DELAY_MS` (they were routed here before it knew).
 * 2. The listener closes: new connections are refused by the kernel and go to another node.
 * 3. The update log commits what it holds, so the acknowledgements of every edit received so far
 *    reach their clients before the sockets close (an edit whose acknowledgement is lost anyway
 *    is still in its client, which sends it again after reconnecting: Yjs updates are idempotent).
 * 4. Every WebSocket is closed with 1012 "Service Restart", reason `shutting_down`: the clients
 *    reconnect at once (HocuspocusProvider on any code after its 1 s delay, y-websocket on anything
 *    outside 4400–4499) — to another node behind the load balancer.
 * 5. Hocuspocus stores and unloads each document; closing each connection removed its cursors on
 *    every node (published through Redis) and released its awareness clientIDs in Redis.
 * 6. The server releases the rest in order (server/app.ts `release`): presence rows, the Redis
 *    liveness record, the update log (flushed), the database.
 */
import type { Hooks } from 'crossws';
import { AppError } from '../shared/errors.ts';

export class DrainState {
  #since: number | undefined;

  /** True from the moment the node began draining. */
  get draining(): boolean {
    return this.#since !== undefined;
  }

  /** Milliseconds since draining began (0 before). */
  get elapsedMs(): number {
    return this.#since === undefined ? 0 : Date.now() - this.#since;
  }

  begin(): void {
    this.#since ??= Date.now();
  }

  /**
   * `hooks` with WebSocket upgrades refused while draining: 503 with the registry's
   * `shutting_down` body, before any Hocuspocus connection exists. The client retries (through
   * the load balancer, to another node).
   */
  guardUpgrades(hooks: Partial<Hooks>): Partial<Hooks> {
    const upgrade = hooks.upgrade;
    return {
      ...hooks,
      upgrade: (request) => {
        if (this.draining) {
          const error = new AppError('shutting_down');
          throw new Response(JSON.stringify(error.toJSON()), {
            status: error.status,
            headers: { 'content-type': 'application/json', 'retry-after': '1' },
          });
        }
        return upgrade?.(request);
      },
    };
  }
}
