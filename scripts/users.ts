/**
 * `npm run users -- add <username> [--display-name <name>] [--email <e-mail>] [--with-image
 * [--width <px>] [--height <px>] [--title <title>]] [--expires <seconds>]`: creates a user and prints
 * their id and a token (and a blank image's id). `npm run users -- list`; `npm run users --
 * deactivate <user>` (their tokens are refused from then on).
 */
import { parseArgs } from 'node:util';
import { signingSecret } from '../server/app.ts';
import { TokenService } from '../server/auth/tokens.ts';
import { addBlankImage, addUser, deactivateUser, listUsers } from '../server/users.ts';
import { cliConfig, cliDatabase, parseExpiry, runOrExplain, usage, wholeNumberOption } from './cli.ts';

const USAGE =
  'npm run users -- add <username> [--display-name <name>] [--email <e-mail>] [--with-image [--width <px>] [--height <px>] [--title <title>]] [--expires <seconds>] | list | deactivate <userId or username>';

const config = await runOrExplain(async () => cliConfig());

await runOrExplain(
  async () => {
    let parsed;
    try {
      parsed = parseArgs({
        args: process.argv.slice(2),
        allowPositionals: true,
        options: {
          'display-name': { type: 'string' },
          email: { type: 'string' },
          'with-image': { type: 'boolean' },
          width: { type: 'string' },
          height: { type: 'string' },
          title: { type: 'string' },
          expires: { type: 'string' },
        },
      });
    } catch (error) {
      usage(`${(error as Error).message.split('\n')[0]}; ${USAGE}`);
    }
    const [command, subject, ...extra] = parsed.positionals;
    const { values } = parsed;
    if (command === 'add' && subject && extra.length === 0) {
      const expiresInSeconds = parseExpiry(values.expires);
      const db = await cliDatabase(config, { migrate: true });
      try {
        const user = await addUser(db, { username: subject, displayName: values['display-name'], email: values.email });
        const imageId = values['with-image']
          ? await addBlankImage(db, {
              ownerId: user.user_id,
              title: values.title,
              width: wholeNumberOption(values.width),
              height: wholeNumberOption(values.height),
            })
          : undefined;
        const token = await new TokenService(await signingSecret(config)).sign(user.user_id, { expiresInSeconds });
        process.stdout.write(
          [
            `userId:   ${user.user_id}`,
            `username: ${user.username}`,
            ...(imageId ? [`imageId:  ${imageId}`] : []),
            `token:    ${token}`,
            `(the token expires in ${expiresInSeconds} s; another: npm run token -- ${user.username})`,
          ].join('\n') + '\n',
        );
      } finally {
        await db.close();
      }
      return;
    }
    if (command === 'list' && !subject) {
      const db = await cliDatabase(config, { migrate: true });
      try {
        const users = await listUsers(db);
        if (users.length === 0) process.stdout.write('no users yet: npm run users -- add <username>\n');
        for (const u of users) {
          process.stdout.write(`${u.user_id.padEnd(20)}  ${u.username.padEnd(20)}  ${u.is_active ? 'active     ' : 'deactivated'}  ${u.display_name}\n`);
        }
      } finally {
        await db.close();
      }
      return;
    }
    if (command === 'deactivate' && subject && extra.length === 0) {
      const db = await cliDatabase(config, { migrate: true });
      try {
        const user = await deactivateUser(db, subject);
        process.stdout.write(`deactivated ${user.username} (${user.user_id}): their tokens are refused from now on\n`);
      } finally {
        await db.close();
      }
      return;
    }
    usage(USAGE);
  },
  () => ({ databaseUrl: config.DATABASE_URL }),
);
