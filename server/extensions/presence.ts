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
 * Writes for one (session, user) run one after another, in the order of the events. A failed write
 * is logged; the next heartbeat's sweep and the next join/leave correct the columns.
 */
import type { beforeHandleAwarenessPayload, beforeSyncPayload, connectedPayload, Extension } from '@hocuspocus/server';
import type { Logger } from 'pino';
import type { Database } from '../../persistence/db.ts';
import {
  clearNodePresence,
  ensureOwnerParticipant,
  heartbeatNode,
  onlineElsewhere,
  recordJoin,
  recordLeave,
  sweepPresence,
  touchParticipant,
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

export class PresenceExtension implements Extension {
  extensionName = 'presence';
  readonly #opts: PresenceOptions;
  readonly #throttleMs: number;
  /** `${session}\0${user}` → open connections on this node. */
  readonly #counts = new Map<string, number>();
  /** Per key: the tail of its write chain. */
  readonly #chains = new Map<string, Promise<void>>();
  /** Per key: the write queued behind the running one, not started yet (`#enqueue`). */
  readonly #waiting = new Map<string, { write: () => Promise<void>; kind: 'first' | 'state' | 'touch' }>();
  readonly #lastTouch = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

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
    if (count === 1) {
      this.#enqueue(
        key,
        async () => {
          if (context.role === 'owner') await ensureOwnerParticipant(this.#opts.db, documentName, context.userId, CURSOR_PALETTE);
          const color = await recordJoin(this.#opts.db, this.#opts.nodeId, documentName, context.userId, 1);
          if (color) context.cursorColor = color;
        },
        'first',
      );
    } else {
      this.#enqueue(key, () => recordJoin(this.#opts.db, this.#opts.nodeId, documentName, context.userId, count).then(() => undefined));
    }
    connection.onClose(() => {
      const left = (this.#counts.get(key) ?? 1) - 1;
      if (left > 0) {
        this.#counts.set(key, left);
        return;
      }
      this.#counts.delete(key);
      this.#lastTouch.delete(key);
      this.#enqueue(key, () => recordLeave(this.#opts.db, this.#opts.nodeId, documentName, context.userId));
    });
    return Promise.resolve();
  }

  /**
   * Is anyone connected to `sessionId` on another live node? Waits first for this node's pending
   * writes of that session (a leave deletes this node's row before it asks), so when the last
   * users of two nodes leave at once, at least one of the two nodes sees the other's row gone.
   */
  async onlineElsewhere(sessionId: string): Promise<boolean> {
    const prefix = `${sessionId}\0`;
    await Promise.all([...this.#chains].filter(([key]) => key.startsWith(prefix)).map(([, tail]) => tail));
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
    this.#enqueue(key, () => touchParticipant(this.#opts.db, documentName, userId), 'touch');
  }

  /**
   * Runs `write` after every earlier write of `key`, in order. A join (with its connection count)
   * and a leave each set the rows to the state of their moment, so one that has not started yet is
   * replaced by a later join or leave instead of queueing behind it: a user opening many
   * connections to one session at once (tabs, a reconnect) costs a few writes, not one per
   * connection. A first join (`first`: it also reads the cursor colour) is never replaced. An
   * activity touch is dropped when a write is already waiting (a join sets `last_active_at` too;
   * behind a leave, the touch of a user who is leaving this node is not needed), and a waiting
   * touch is replaced by a join or leave.
   */
  #enqueue(key: string, write: () => Promise<void>, kind: 'first' | 'state' | 'touch' = 'state'): void {
    if (this.#closed) return;
    const waiting = this.#waiting.get(key);
    if (waiting && kind === 'touch') return;
    if (waiting && waiting.kind !== 'first' && kind === 'state') {
      waiting.write = write;
      waiting.kind = kind;
      return;
    }
    const job = { write, kind };
    this.#waiting.set(key, job);
    const tail = (this.#chains.get(key) ?? Promise.resolve())
      .then(() => {
        if (this.#waiting.get(key) === job) this.#waiting.delete(key);
        return job.write();
      })
      .catch((error: unknown) => this.#opts.logger.warn({ err: error, key: key.replace('\0', '/') }, 'presence write failed'));
    this.#chains.set(key, tail);
    void tail.then(() => {
      if (this.#chains.get(key) === tail) this.#chains.delete(key);
    });
  }

  /** Stops the heartbeat, waits for pending writes, deletes this node's rows. Before the database closes. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await Promise.all([...this.#chains.values()]);
    this.#closed = true;
    await clearNodePresence(this.#opts.db, this.#opts.nodeId).catch((error: unknown) =>
      this.#opts.logger.warn({ err: error }, 'presence: clearing this node failed'),
    );
  }
}
