/**
 * Runs once before the test files: makes sure PostgreSQL answers and prepares the Debian 13 root
 * the uws transport tests run in (when this machine can make one).
 */
import pg from 'pg';
import { ensureUwsRoot, uwsLauncher } from './uws-runtime.ts';
import { adminUrl } from './databases.ts';

export default async function setup(): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect().catch((error: Error) => {
    throw new Error(`PostgreSQL is not reachable at ${adminUrl()}: ${error.message}`);
  });
  await client.end();

  const why = ensureUwsRoot();
  const launcher = uwsLauncher();
  if (launcher.ok) console.log(`[setup] uws transport: ${launcher.how}`);
  else console.log(`[setup] uws transport tests will be SKIPPED: ${why ?? launcher.reason}`);
}
