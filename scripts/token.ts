/**
 * `npm run token -- <user> [expiresInSeconds]`: prints an access token for an active user (by id or
 * username). Unknown and deactivated users are refused, and so is a lifetime that is not 1 s to a year.
 */
import { signingSecret } from '../server/app.ts';
import { TokenService } from '../server/auth/tokens.ts';
import { requireActiveUser } from '../server/users.ts';
import { cliConfig, cliDatabase, parseExpiry, runOrExplain, usage } from './cli.ts';

const USAGE = 'npm run token -- <userId or username> [expiresInSeconds]';

const config = await runOrExplain(async () => cliConfig());
await runOrExplain(
  async () => {
    const [who, seconds, ...extra] = process.argv.slice(2);
    if (!who || extra.length > 0) usage(USAGE);
    const expiresInSeconds = parseExpiry(seconds);
    const db = await cliDatabase(config, { needsExisting: true });
    try {
      const user = await requireActiveUser(db, who);
      const tokens = new TokenService(await signingSecret(config));
      process.stdout.write(`${await tokens.sign(user.user_id, { expiresInSeconds })}\n`);
    } finally {
      await db.close();
    }
  },
  () => ({ databaseUrl: config.DATABASE_URL }),
);
