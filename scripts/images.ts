/**
 * `npm run images -- add --owner <user> [--width <px>] [--height <px>] [--title <title>]`: creates a
 * blank image (no bytes; 1280×800 by default) to start edit sessions on, and prints its id. Real
 * images arrive through the ingest API (`POST /api/images`).
 */
import { parseArgs } from 'node:util';
import { addBlankImage } from '../server/users.ts';
import { cliConfig, cliDatabase, runOrExplain, usage, wholeNumberOption } from './cli.ts';

const USAGE = 'npm run images -- add --owner <userId or username> [--width <px>] [--height <px>] [--title <title>]';

const config = await runOrExplain(async () => cliConfig());
await runOrExplain(
  async () => {
    let parsed;
    try {
      parsed = parseArgs({
        args: process.argv.slice(2),
        allowPositionals: true,
        options: { owner: { type: 'string' }, width: { type: 'string' }, height: { type: 'string' }, title: { type: 'string' } },
      });
    } catch (error) {
      usage(`${(error as Error).message.split('\n')[0]}; ${USAGE}`);
    }
    const { positionals, values } = parsed;
    if (positionals.length !== 1 || positionals[0] !== 'add' || !values.owner) usage(USAGE);
    const db = await cliDatabase(config, { migrate: true });
    try {
      const imageId = await addBlankImage(db, { ownerId: values.owner, title: values.title, width: wholeNumberOption(values.width), height: wholeNumberOption(values.height) });
      process.stdout.write(`imageId:  ${imageId}\n`);
    } finally {
      await db.close();
    }
  },
  () => ({ databaseUrl: config.DATABASE_URL }),
);
