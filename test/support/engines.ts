/** Both database engines for persistence tests: a fresh PostgreSQL database, and embedded PGlite. */
import { connectPostgres, openEmbedded, type Database } from '../../persistence/db.ts';
import { migrate } from '../../persistence/migrate.ts';
import { createDatabase } from './databases.ts';
import { tempDir } from './server-process.ts';

export const engines = ['postgres', 'pglite'] as const;
export type Engine = (typeof engines)[number];

/** Opens a migrated, empty database of that engine; teardown is registered here. */
export async function openEngine(engine: Engine, register: (fn: () => Promise<void>) => void): Promise<Database> {
  let db: Database;
  if (engine === 'postgres') {
    const created = await createDatabase('p');
    register(created.drop);
    db = connectPostgres(created.url);
  } else {
    db = await openEmbedded(tempDir(register));
  }
  register(() => db.close());
  await migrate(db.url);
  return db;
}
