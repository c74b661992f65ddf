/**
 * Applies the numbered SQL files in `migrations/` with node-pg-migrate. Its runner takes a
 * PostgreSQL advisory lock for the whole run, so several nodes starting at once apply each
 * migration exactly once: the others wait on the lock, then find nothing pending.
 */
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';

export const migrationsDir = fileURLToPath(new URL('../migrations', import.meta.url));

/** Applies every pending migration; returns the names of those it applied. */
export async function migrate(databaseUrl: string, log: (message: string) => void = () => {}): Promise<string[]> {
  const applied = await runner({
    databaseUrl,
    dir: migrationsDir,
    direction: 'up',
    migrationsTable: 'pgmigrations',
    checkOrder: true,
    // Wait for another node's run instead of failing (node-pg-migrate's default is 'fail').
    advisoryLockMode: 'wait',
    singleTransaction: true,
    log,
    logger: { debug: () => {}, info: log, warn: log, error: log },
  });
  return applied.map((m) => m.name);
}
