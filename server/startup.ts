/**
 * Start-up failures an operator can fix, as one line each: what is wrong and what to do. The entry
 * point and the CLI scripts print the line and exit 1 (like `ConfigError`); anything not recognised
 * here is a bug and keeps its stack trace.
 */
import { DataDirLockedError } from '../persistence/db.ts';
import { ConfigError } from './config.ts';
import { UserInputError } from './users.ts';

/** A problem found by our own code, already phrased for the operator. */
export class StartupError extends Error {
  override name = 'StartupError';
}

/** `postgres://user:secret@host/db` → `postgres://user@host/db` (never print a password). */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.password = '';
    return parsed.toString().replace(/\/$/, '');
  } catch {
    return '(an unparsable URL)';
  }
}

interface Where {
  databaseUrl?: string | undefined;
  host?: string;
  port?: number;
}

/** The one line for a known start-up failure, or undefined when it is not one. */
export function startupProblem(error: unknown, where: Where = {}): string | undefined {
  if (error instanceof ConfigError || error instanceof StartupError || error instanceof DataDirLockedError || error instanceof UserInputError) {
    return error.message;
  }
  if (!(error instanceof Error)) return undefined;
  const code = (error as NodeJS.ErrnoException).code;
  const db = where.databaseUrl ? redactUrl(where.databaseUrl) : 'the database';
  const listenAt = `${where.host ?? 'HOST'}:${where.port ?? 'PORT'}`;
  switch (code) {
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `cannot reach the database at ${db} (${code}): start PostgreSQL there, or fix DATABASE_URL`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot reach the database at ${db}: its host name does not resolve (${code}); fix DATABASE_URL`;
    case '3D000':
      return `the database at ${db} does not exist (${error.message}): create it (createdb), or fix DATABASE_URL`;
    case '28000':
    case '28P01':
      return `the database at ${db} refused the login (${error.message}): fix the user or password in DATABASE_URL`;
    case '42P01':
      return `the database at ${db} has no schema yet (${error.message}): run npm run migrate, or start the server once`;
    case 'EADDRINUSE':
      return `cannot listen on ${listenAt}: the port is in use by another process; stop it, or set PORT (PORT=0 picks a free one)`;
    case 'EACCES':
      return `cannot listen on ${listenAt}: permission denied (ports below 1024 need privileges); set PORT to 1024 or above`;
    case 'EADDRNOTAVAIL':
      return `cannot listen on ${listenAt}: HOST is not an address of this machine; fix HOST`;
    default:
  }
  if (/could not listen on/.test(error.message)) {
    return `cannot listen on ${listenAt} (${error.message}): the port may be in use; stop the other process, or set PORT`;
  }
  if (/timeout/i.test(error.message) && /connect/i.test(error.message)) {
    return `cannot reach the database at ${db} (connection timed out): start PostgreSQL there, or fix DATABASE_URL`;
  }
  return undefined;
}

/**
 * Runs a command's body; a known failure prints its one line to stderr and exits 1. Used by the
 * entry point and every script, so none of them shows an operator a stack trace for a setup mistake.
 */
export async function runOrExplain<T>(body: () => Promise<T>, where: () => Where = () => ({})): Promise<T> {
  try {
    return await body();
  } catch (error) {
    const line = startupProblem(error, where());
    if (line === undefined) throw error;
    process.stderr.write(`${line}\n`);
    process.exit(1);
  }
}
