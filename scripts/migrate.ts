/** `npm run migrate`: applies pending migrations to DATABASE_URL (or the embedded database) and exits. */
import { loadConfig } from '../server/config.ts';
import { openDatabase } from '../server/app.ts';
import { migrate } from '../persistence/migrate.ts';

const config = loadConfig(process.env);
const db = await openDatabase(config);
try {
  const applied = await migrate(db.url);
  process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'nothing to apply: the schema is up to date\n');
} finally {
  await db.close();
}
