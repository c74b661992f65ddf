/**
 * The sweep of presence nobody owns any more: a node killed with -9 publishes no awareness
 * removals, and pub/sub may lose a removal that was published. Each round the claim registry
 * reports, per document, the clientIDs no live node uses (server/redis/claims.ts); a state for such
 * a clientID that is not this node's own client is removed here — once it was reported in two
 * consecutive rounds, so a node whose Redis connection only blipped (its subscription, and so its
 * liveness, gone for a moment) keeps its users' cursors: its next round claims them again.
 */
import type { Document } from '@hocuspocus/server';
import type { RedisTransactionOrigin } from '@hocuspocus/server';
import { removeAwarenessStates } from 'y-protocols/awareness';

/**
 * Pure: of the clientIDs reported unused this round (and present here, not local), those also
 * reported the round before are removed now; the rest become the suspects of the next round.
 */
export function confirmUnused(previous: ReadonlySet<number>, candidates: Iterable<number>): { remove: number[]; suspects: Set<number> } {
  const remove: number[] = [];
  const suspects = new Set<number>();
  for (const id of candidates) {
    if (previous.has(id)) remove.push(id);
    else suspects.add(id);
  }
  return { remove, suspects };
}

export class PresenceSweep {
  readonly #origin: RedisTransactionOrigin;
  /** Per document: the clientIDs reported unused last round (present here then). */
  readonly #suspects = new Map<string, Set<number>>();
  /** Awareness states removed because no live node used their clientID (metrics). */
  removed = 0;

  constructor(origin: RedisTransactionOrigin) {
    this.#origin = origin;
  }

  /**
   * A round's report for `document`, asked for at `askedAt` (ms); returns how many states it
   * removed. A state updated since the report was asked for is kept whatever it says: its client
   * was claimed again meanwhile (the report and the update that followed the claim travel on
   * different connections, so they may arrive in either order).
   */
  apply(document: Document, unused: readonly number[], isLocal: (clientId: number) => boolean, askedAt: number): number {
    const states = document.awareness.getStates();
    const meta = document.awareness.meta;
    const candidates = unused.filter((id) => states.has(id) && !isLocal(id) && (meta.get(id)?.lastUpdated ?? 0) < askedAt);
    const { remove, suspects } = confirmUnused(this.#suspects.get(document.name) ?? new Set(), candidates);
    if (suspects.size > 0) this.#suspects.set(document.name, suspects);
    else this.#suspects.delete(document.name);
    if (remove.length === 0) return 0;
    removeAwarenessStates(document.awareness, remove, this.#origin);
    this.removed += remove.length;
    return remove.length;
  }

  /** This node cannot judge this round (or the document is gone): start afresh. */
  reset(name?: string): void {
    if (name === undefined) this.#suspects.clear();
    else this.#suspects.delete(name);
  }
}
