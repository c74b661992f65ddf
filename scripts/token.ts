/** `npm run token -- <userId> [expiresInSeconds]`: prints an access token for that user. */
import { loadConfig } from '../server/config.ts';
import { signingSecret } from '../server/app.ts';
import { TokenService } from '../server/auth/tokens.ts';
import { isId } from '../shared/ids.ts';

const [userId, seconds] = process.argv.slice(2);
if (!userId || !isId(userId)) {
  process.stderr.write('usage: npm run token -- <userId> [expiresInSeconds]\n');
  process.exit(2);
}
const config = loadConfig(process.env);
const tokens = new TokenService(await signingSecret(config));
process.stdout.write(`${await tokens.sign(userId, { expiresInSeconds: seconds ? Number(seconds) : 7 * 24 * 3600 })}\n`);
