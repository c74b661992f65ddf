/**
 * What the command-line scripts share: the configuration read once, the database opened for a
 * command (in embedded mode through the running server when one holds DATA_DIR), token lifetimes,
 * and one line plus exit code 1 for every mistake an operator can fix (`runOrExplain`).
 */
import { hasEmbeddedDatabase, type Database } from '../persistence/db.ts';
import { migrate } from '../persistence/migrate.ts';
import { openDatabase } from '../server/app.ts';
import { loadConfig, type Config } from '../server/config.ts';
import { StartupError } from '../server/startup.ts';

export { runOrExplain } from '../server/startup.ts';

/** The default lifetime of a printed token, and the longest one `npm run token` issues. */
export const DEFAULT_TOKEN_SECONDS = 7 * 24 * 3600;
export const MAX_TOKEN_SECONDS = 365 * 24 * 3600;

export function cliConfig(): Config {
  return loadConfig(process.env);
}

/** A token lifetime argument: a whole number of seconds from 1 to a year, or a one-line refusal. */
export function parseExpiry(value: string | undefined): number {
  if (value === undefined) return DEFAULT_TOKEN_SECONDS;
  const seconds = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(seconds) || seconds < 1 || seconds > MAX_TOKEN_SECONDS) {
    throw new StartupError(
      `invalid expiry ${JSON.stringify(value)}: give the token's lifetime as whole seconds from 1 to ${MAX_TOKEN_SECONDS} (default ${DEFAULT_TOKEN_SECONDS}, 7 days)`,
    );
  }
  return seconds;
}

/**
 * The database a command works on. PostgreSQL: `DATABASE_URL`. Embedded: `DATA_DIR`, opened here
 * when no server runs on it, or reached through the running server's loopback URL when one does
 * (a second process must never open the directory itself). `needsExisting`: refuse a DATA_DIR no
 * server has run in yet (a token for a user of an empty directory cannot be right).
 */
export async function cliDatabase(config: Config, options: { needsExisting?: boolean; migrate?: boolean } = {}): Promise<Database> {
  if (!config.DATABASE_URL && options.needsExisting && !hasEmbeddedDatabase(config.DATA_DIR)) {
    throw new StartupError(
      `no embedded database in DATA_DIR ${config.DATA_DIR} yet: start the server there once (npm start), or set DATA_DIR (or DATABASE_URL) to the server's`,
    );
  }
  const db = await openDatabase(config, { whenHeld: 'attach' });
  if (options.migrate) {
    try {
      await migrate(db.url);
    } catch (error) {
      await db.close();
      throw error;
    }
  }
  return db;
}

/** Fails with a one-line usage message. */
/** A `--width`-style option: absent, a whole number, or NaN (the range is checked by whoever uses it, naming the option). */
export function wholeNumberOption(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  return /^\d+$/.test(value) ? Number(value) : NaN;
}

export function usage(text: string): never {
  throw new StartupError(`usage: ${text}`);
}
