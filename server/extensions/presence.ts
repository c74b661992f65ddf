/**
 * Presence in `session_participants`, correct across nodes (docs/CONTRACT.md "Presence"):
 *
 * - A user's first connection to a session on this node writes this node's `node_presence` row
 *   and marks the participant online (`joined_at` keeps the first join, `last_active_at` = now,
 *   `left_at` cleared). The owner gets a participant row (and a colour) on first join.
 * - Edits and awareness updates move `last_active_at`, at most once per `activityThrottleMs` per
 *   user and session on this node — not one write per cursor move.
 * - The user's last connection on this node closing deletes the row and marks them offline unless
 *   another node still has a row for them (read after the delete, so a concurrent join elsewhere
 *   wins).
 * - Every `heartbeatMs` the node moves its rows' `heartbeat_at` and sweeps rows older than three
 *   heartbeats (nodes that died without saying so), marking whoever is left without a row offline.
 *   At start and at close the node deletes its own rows.
 *
 * Writes are batched (`#enqueue`): what the events of one event-loop turn (and of the time the
 * previous batch took) change is written together, one statement per kind for the whole batch
 * (persistence/repositories/presence.ts), and one batch at a time, so the writes of one
 * (session, user) land in the order of its events. A burst of joins — a node start, a reconnect
 * storm, 5,000 clients opening at once — costs a few statements, not two round trips per
 * connection. A failed write is logged; the next heartbeat's sweep and the next join/leave correct
 * the columns.
 */
import type { beforeHandleAwarenessPayload, beforeSyncPayload, connectedPayload, Extension } from '@hocuspocus/server';
import type { Logger } from 'pino';
import type { Database } from '../../persistence/db.ts';
import {
  clearNodePresence,
  ensureOwnerParticipant,
  heartbeatNode,
  onlineElsewhere,
  recordJoins,
  recordLeaves,
  sweepPresence,
  touchParticipants,
  type PresenceKey,
} from '../../persistence/repositories/presence.ts';
import { CURSOR_PALETTE } from '../../shared/presence.ts';
import type { ConnectionContext } from './auth.ts';

export interface PresenceOptions {
  db: Database;
  nodeId: string;
  logger: Logger;
  heartbeatMs: number;
  activityThrottleMs?: number;
}

/**
 * What the next batch writes for one (session, user): the state of its latest event — a join with
 * this node's connection count, a leave, or only activity — and, when a first join (the count went
 * from 0 to 1) is among the events not written yet, who waits for its cursor colour and whether it
 * is the owner's (who gets a participant row first).
 */
interface Pending extends PresenceKey {
  state: 'join' | 'leave' | 'touch';
  first?: { contexts: ConnectionContext[]; owner: boolean };
}

export class PresenceExtension implements Extension {
  extensionName = 'presence';
  readonly #opts: PresenceOptions;
  readonly #throttleMs: number;
  /** `${session}\0${user}` → open connections on this node. */
  readonly #counts = new Map<string, number>();
  readonly #lastTouch = new Map<string, number>();
  /** The next batch, by key: not started yet. */
  #next = new Map<string, Pending>();
  /** The keys of the batch being written (at most one: while `#started > #done`). */
  #runningKeys: ReadonlySet<string> = new Set();
  #scheduled = false;
  /** Batches started and written so far (numbered from 1). */
  #started = 0;
  #done = 0;
  /** Resolved when the running (or, if none, the next) batch is written. */
  #waiters: Array<() => void> = [];
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Statements the batches have issued (imageflow_presence_writes_total). */
  writes = 0;

  constructor(options: PresenceOptions) {
    this.#opts = options;
    this.#throttleMs = options.activityThrottleMs ?? 30_000;
  }

  /** Clears this node's rows from a previous life, then heartbeats and sweeps until close(). */
  async start(): Promise<void> {
    await clearNodePresence(this.#opts.db, this.#opts.nodeId).catch((error: unknown) =>
      this.#opts.logger.warn({ err: error }, 'presence: clearing stale rows of this node failed'),
    );
    this.#timer = setInterval(() => void this.beat(), this.#opts.heartbeatMs);
    this.#timer.unref();
  }

  /** One heartbeat and sweep (exported for tests that drive time). */
  async beat(): Promise<void> {
    try {
      await heartbeatNode(this.#opts.db, this.#opts.nodeId);
      await sweepPresence(this.#opts.db, (this.#opts.heartbeatMs * 3) / 1000);
    } catch (error) {
      this.#opts.logger.warn({ err: error }, 'presence heartbeat failed');
    }
  }

  connected({ connection, context, documentName }: connectedPayload<ConnectionContext>): Promise<void> {
    if (!context?.userId) return Promise.resolve();
    const key = `${documentName}\0${context.userId}`;
    const count = (this.#counts.get(key) ?? 0) + 1;
    this.#counts.set(key, count);
    this.#lastTouch.set(key, Date.now());
    const first = count === 1 ? { context, owner: context.role === 'owner' } : undefined;
    this.#enqueue(key, documentName, context.userId, 'join', count, first);
    connection.onClose(() => {
      const left = (this.#counts.get(key) ?? 1) - 1;
      if (left > 0) {
        this.#counts.set(key, left);
        return;
      }
      this.#counts.delete(key);
      this.#lastTouch.delete(key);
      this.#enqueue(key, documentName, context.userId, 'leave');
    });
    return Promise.resolve();
  }

  /**
   * Is anyone connected to `sessionId` on another live node? Waits first for this node's pending
   * writes of that session (a leave deletes this node's row before it asks), so when the last
   * users of two nodes leave at once, at least one of the two nodes sees the other's row gone.
   */
  async onlineElsewhere(sessionId: string): Promise<boolean> {
    await this.#written((key) => key.startsWith(`${sessionId}\0`));
    return onlineElsewhere(this.#opts.db, sessionId, this.#opts.nodeId, (this.#opts.heartbeatMs * 3) / 1000);
  }

  beforeSync({ connection, documentName }: beforeSyncPayload): Promise<void> {
    this.#activity(documentName, (connection.context as ConnectionContext | undefined)?.userId);
    return Promise.resolve();
  }

  beforeHandleAwareness({ connection, documentName, context }: beforeHandleAwarenessPayload): Promise<void> {
    if (connection) this.#activity(documentName, (context as ConnectionContext | undefined)?.userId);
    return Promise.resolve();
  }

  #activity(documentName: string, userId: string | undefined): void {
    if (!userId) return;
    const key = `${documentName}\0${userId}`;
    if (!this.#counts.has(key)) return;
    const now = Date.now();
    if (now - (this.#lastTouch.get(key) ?? 0) < this.#throttleMs) return;
    this.#lastTouch.set(key, now);
    this.#enqueue(key, documentName, userId, 'touch');
  }

  /**
   * Puts an event of `key` into the next batch. A join (with its connection count) and a leave
   * each set the rows to the state of their moment, so a later one replaces an earlier one not
   * written yet: a user opening many connections to one session at once (tabs, a reconnect) costs
   * one write, not one per connection. A first join not written yet is kept with whatever replaces
   * its state (its contexts still get the colour; the owner's participant row is still made).
   * Activity is dropped when anything else is pending (a join sets `last_active_at` too; the touch
   * of a user who is leaving this node is not needed).
   */
  #enqueue(key: string, sessionId: string, userId: string, state: Pending['state'], connections?: number, first?: { context: ConnectionContext; owner: boolean }): void {
    if (this.#closed) return;
    const pending = this.#next.get(key);
    if (pending && state === 'touch') return;
    const entry: Pending = pending ?? { sessionId, userId, state };
    entry.state = state;
    entry.connections = connections;
    if (first) {
      entry.first ??= { contexts: [], owner: false };
      entry.first.contexts.push(first.context);
      entry.first.owner ||= first.owner;
    }
    this.#next.set(key, entry);
    this.#schedule();
  }

  /** The next batch starts after this event-loop turn, once the running one is written. */
  #schedule(): void {
    if (this.#scheduled || this.#started > this.#done || this.#next.size === 0) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      if (this.#started > this.#done || this.#next.size === 0) return;
      const batch = this.#next;
      this.#next = new Map();
      this.#runningKeys = new Set(batch.keys());
      const seq = ++this.#started;
      void this.#write([...batch.values()]).finally(() => {
        this.#done = seq;
        this.#runningKeys = new Set();
        for (const resolve of this.#waiters.splice(0)) resolve();
        this.#schedule();
      });
    });
  }

  async #write(batch: Pending[]): Promise<void> {
    const { db, nodeId, logger } = this.#opts;
    const failed = (what: string, keys: readonly PresenceKey[]) => (error: unknown) =>
      logger.warn({ err: error, keys: keys.length, first: `${keys[0]?.sessionId}/${keys[0]?.userId}` }, `presence ${what} failed`);
    const owners = batch.filter((p) => p.first?.owner);
    await Promise.all(
      owners.map((p) => {
        this.writes++;
        return ensureOwnerParticipant(db, p.sessionId, p.userId, CURSOR_PALETTE).catch(failed('owner row', [p]));
      }),
    );
    const joins = batch.filter((p) => p.state === 'join');
    const leaves = batch.filter((p) => p.state === 'leave');
    const touches = batch.filter((p) => p.state === 'touch');
    const writes: Array<Promise<void>> = [];
    if (joins.length > 0) {
      this.writes += 2;
      writes.push(
        recordJoins(db, nodeId, joins).then((colors) => {
          for (const join of joins) {
            const color = colors.get(`${join.sessionId}\0${join.userId}`);
            if (color) for (const context of join.first?.contexts ?? []) context.cursorColor = color;
          }
        }, failed('join', joins)),
      );
    }
    if (leaves.length > 0) {
      this.writes += 2;
      writes.push(recordLeaves(db, nodeId, leaves).catch(failed('leave', leaves)));
    }
    if (touches.length > 0) {
      this.writes += 1;
      writes.push(touchParticipants(db, touches).catch(failed('activity', touches)));
    }
    await Promise.all(writes);
  }

  /**
   * Resolves once what is pending now for the keys `which` selects is written: the batch running
   * or the next one. Events arriving later are not waited for, so a busy session cannot keep its
   * caller waiting.
   */
  async #written(which: (key: string) => boolean = () => true): Promise<void> {
    const target = [...this.#next.keys()].some(which) ? this.#started + 1 : [...this.#runningKeys].some(which) ? this.#started : this.#done;
    while (this.#done < target) await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  /** Stops the heartbeat, waits for pending writes, deletes this node's rows. Before the database closes. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#closed = true;
    await this.#written();
    await clearNodePresence(this.#opts.db, this.#opts.nodeId).catch((error: unknown) =>
      this.#opts.logger.warn({ err: error }, 'presence: clearing this node failed'),
    );
  }
}
