/**
 * The servers compared, each started as its own child process on port 0 against the bench
 * database: ours (`server/main.ts`, as test/support/server-process.ts starts it) on the node or
 * uws transport, and stock Hocuspocus (`bench/stock-server.ts`).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TokenService } from '../../server/auth/tokens.ts';
import { SERVER_NODE_FLAGS } from '../../server/node-flags.ts';
import { canvasToUpdate, initialCanvas } from '../../shared/canvas.ts';
import { newId, newLayerId } from '../../shared/ids.ts';
import { COLLAB_PATH } from '../../shared/protocol.ts';
import { nodeBin, repoRoot } from '../../test/support/uws-runtime.ts';
import { spawnServer, type ServerChild } from './child.ts';
import { BENCH_IMAGE_SIZE, createOwnerWithImage, createUser, type BenchDatabase } from './database.ts';

export interface Target {
  /** 'stock', 'ours-node', 'ours-uws'. */
  readonly id: string;
  readonly label: string;
  /** The table the server writes documents to (scenario 3b locks it). */
  readonly storageTable: string;
  /** Starts a server process on the bench database (again after a kill: same data). */
  start(): Promise<ServerChild>;
  /** Token every client of this target presents. */
  token(): string;
  /**
   * Names of `count` new documents a client may open (for ours: new sessions, each holding the
   * initial canvas of its image). With `{ canvas: true }` stock's documents hold that same canvas
   * too (stored as their `stock_documents` row), so both servers send the same document to every
   * connection; otherwise stock's are empty.
   */
  newDocuments(server: ServerChild, count: number, options?: { canvas?: boolean }): Promise<string[]>;
  /** Removes what `start()` left on disk. */
  cleanup(): void;
}

const BENCH_SECRET = randomBytes(32).toString('base64url');

/**
 * Per-process overrides, so several processes of one server can form a deployment (the
 * cross-node bench): `env` is added to (and wins over) the target's own environment; `id` and
 * `label` name the process. Every target of one bench run shares BENCH_SECRET, so a token one of
 * our targets hands out is accepted by all of them.
 */
export interface TargetOptions {
  id?: string;
  label?: string;
  env?: Record<string, string>;
}

/** The servers' environment: nothing inherited but PATH and HOME, plus BENCH_SERVER_NODE_OPTIONS (e.g. --cpu-prof). */
function baseEnv(): Record<string, string> {
  const options = process.env.BENCH_SERVER_NODE_OPTIONS;
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    ...(options ? { NODE_OPTIONS: options } : {}),
  };
}

/**
 * BENCH_OURS_ENV: settings for our servers only, `NAME=value` separated by spaces (a lever's A/B,
 * e.g. `BENCH_OURS_ENV="UPDATE_GUARD_INLINE_BYTES=0"`).
 */
export function oursEnv(): Record<string, string> {
  const pairs = (process.env.BENCH_OURS_ENV ?? '').split(/\s+/).filter(Boolean);
  return Object.fromEntries(pairs.map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]));
}

/** A token for `userId` that every one of our targets of this run accepts. */
export function benchToken(userId: string): Promise<string> {
  return new TokenService(BENCH_SECRET).sign(userId, { expiresInSeconds: 3600 });
}

/** A new user of the bench database and its token (once a server has migrated the database). */
export async function benchUser(db: BenchDatabase): Promise<{ userId: string; token: string }> {
  const userId = await createUser(db.pool);
  return { userId, token: await benchToken(userId) };
}

export function stockTarget(db: BenchDatabase, options: TargetOptions = {}): Target {
  const label = options.label ?? 'stock Hocuspocus';
  return {
    id: options.id ?? 'stock',
    label,
    storageTable: 'stock_documents',
    start: () =>
      spawnServer({
        label,
        command: [nodeBin, join(repoRoot, 'bench/stock-server.ts')],
        env: { ...baseEnv(), DATABASE_URL: db.url, ...options.env },
        cwd: repoRoot,
        wsPath: '/',
      }),
    token: () => 'ignored-by-stock',
    newDocuments: async (_server, count, seed = {}) => {
      const names = Array.from({ length: count }, () => `doc-${randomBytes(6).toString('hex')}`);
      if (seed.canvas) {
        // What POST /api/sessions seeds ours with (server/sessions.ts) for the image
        // createOwnerWithImage makes; a fresh layer id per document, as there.
        const states = names.map((): Buffer => Buffer.from(canvasToUpdate(initialCanvas({ imageId: newId('image'), ...BENCH_IMAGE_SIZE }, newLayerId()))));
        await db.pool.query('INSERT INTO stock_documents (name, data) SELECT * FROM unnest($1::text[], $2::bytea[])', [names, states]);
      }
      return names;
    },
    cleanup: () => {},
  };
}

export function oursTarget(
  db: BenchDatabase,
  transport: 'node' | 'uws',
  launcherPrefix: readonly string[],
  options: TargetOptions = {},
): Target {
  const tokens = new TokenService(BENCH_SECRET);
  const dataDir = mkdtempSync(join(tmpdir(), `bench-${transport}-`));
  let owner: { userId: string; imageId: string; token: string } | undefined;
  const label = options.label ?? `ours (${transport})`;
  return {
    id: options.id ?? `ours-${transport}`,
    label,
    storageTable: 'document_updates',
    start: () =>
      spawnServer({
        label,
        command: [...launcherPrefix, nodeBin, ...SERVER_NODE_FLAGS, join(repoRoot, 'server/main.ts')],
        env: {
          ...baseEnv(),
          PORT: '0',
          HOST: '127.0.0.1',
          DATA_DIR: dataDir,
          TRANSPORT: transport,
          LOG_LEVEL: 'info',
          AUTH_JWT_SECRET: BENCH_SECRET,
          DATABASE_URL: db.url,
          NODE_ID: `bench-${transport}`,
          ...oursEnv(),
          ...options.env,
        },
        cwd: repoRoot,
        wsPath: COLLAB_PATH,
      }),
    token: () => {
      if (!owner) throw new Error('no documents created yet: newDocuments() writes the fixtures');
      return owner.token;
    },
    newDocuments: async (server, count) => {
      // The server has migrated the database by the time it listens; fixtures go in after.
      if (!owner) {
        const { userId, imageId } = await createOwnerWithImage(db.pool);
        owner = { userId, imageId, token: await tokens.sign(userId, { expiresInSeconds: 3600 }) };
      }
      const names: string[] = [];
      for (let i = 0; i < count; i += 1) {
        const response = await fetch(`${server.httpUrl}/api/sessions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ imageId: owner.imageId }),
        });
        const body = (await response.json()) as { session?: { sessionId?: string } };
        if (response.status !== 201 || !body.session?.sessionId) {
          throw new Error(`POST /api/sessions answered ${response.status}: ${JSON.stringify(body)}`);
        }
        names.push(body.session.sessionId);
      }
      return names;
    },
    cleanup: () => rmSync(dataDir, { recursive: true, force: true }),
  };
}
