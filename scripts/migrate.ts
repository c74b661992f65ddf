/**
 * `npm run migrate`: applies pending migrations to DATABASE_URL (or the embedded database) and exits.
 * An embedded DATA_DIR a running server holds is refused (the server applies migrations itself).
 */
import { openDatabase } from '../server/app.ts';
import { migrate } from '../persistence/migrate.ts';
import { cliConfig, runOrExplain } from './cli.ts';

const config = await runOrExplain(async () => cliConfig());
await runOrExplain(
  async () => {
    const db = await openDatabase(config);
    try {
      const applied = await migrate(db.url);
      process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'nothing to apply: the schema is up to date\n');
    } finally {
      await db.close();
    }
  },
  () => ({ databaseUrl: config.DATABASE_URL }),
);
