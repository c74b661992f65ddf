/**
 * Users and blank images for operators and integrators (the rules behind `npm run users`,
 * `npm run images`, `npm run token` and `GET /api/users?username=`), apart from the CLI so tests
 * call them too. There is no sign-up or password login in this server: an operator creates users
 * and hands out tokens.
 */
import type { Database, Queryable } from '../persistence/db.ts';
import { insertImage } from '../persistence/repositories/images.ts';
import {
  deactivateUser as deactivateUserRow,
  getUser,
  getUserByUsername,
  insertUser,
  listUsers as listUserRows,
  type UserRow,
} from '../persistence/repositories/users.ts';
import { isId, newImageId, newUserId, type ImageId, type UserId } from '../shared/ids.ts';

/** A mistake in what the operator asked for; the message is one line saying what to do. */
export class UserInputError extends Error {
  override name = 'UserInputError';
}

/** The seed's `users.username` is VARCHAR(50); we also keep it to characters safe in URLs and shells. */
export const USERNAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$/;

export interface NewUser {
  username: string;
  displayName?: string | undefined;
  email?: string | undefined;
}

export async function addUser(db: Database, input: NewUser): Promise<UserRow> {
  if (!USERNAME_PATTERN.test(input.username)) {
    throw new UserInputError(`invalid username ${JSON.stringify(input.username)}: use 1-50 characters of A-Z a-z 0-9 _ . - (starting with a letter or digit)`);
  }
  const displayName = input.displayName ?? input.username;
  if (displayName.trim() === '' || displayName.length > 100) throw new UserInputError('invalid --display-name: give 1-100 characters');
  const email = input.email ?? `${input.username.toLowerCase()}@users.invalid`;
  if (!/^[^\s@]+@[^\s@]+$/.test(email) || email.length > 255) throw new UserInputError(`invalid --email ${JSON.stringify(email)}`);
  if (await getUserByUsername(db, input.username)) throw new UserInputError(`a user named ${input.username} exists already`);
  const userId = newUserId();
  try {
    await insertUser(db, { userId, username: input.username, email, displayName });
  } catch (error) {
    // 23505: a unique violation (the e-mail, or a user added by someone else meanwhile).
    if ((error as { code?: string }).code === '23505') {
      throw new UserInputError(`a user with that username or e-mail exists already (${(error as Error).message})`);
    }
    throw error;
  }
  return (await getUser(db, userId))!;
}

export function listUsers(db: Queryable): Promise<UserRow[]> {
  return listUserRows(db);
}

/** A user by id (`usr_…`) or by username, active or not. */
export async function findUser(db: Queryable, idOrUsername: string): Promise<UserRow | undefined> {
  if (isId(idOrUsername)) {
    const byId = await getUser(db, idOrUsername);
    if (byId) return byId;
  }
  return getUserByUsername(db, idOrUsername);
}

/** The active user named, or a one-line refusal (unknown or deactivated). */
export async function requireActiveUser(db: Queryable, idOrUsername: string): Promise<UserRow & { user_id: UserId }> {
  const user = await findUser(db, idOrUsername);
  if (!user) throw new UserInputError(`no user ${idOrUsername}: create one with npm run users -- add <username>, or see npm run users -- list`);
  if (!user.is_active) throw new UserInputError(`user ${user.username} (${user.user_id}) is deactivated: no token is issued for them`);
  return user as UserRow & { user_id: UserId };
}

export async function deactivateUser(db: Queryable, idOrUsername: string): Promise<UserRow> {
  const user = await findUser(db, idOrUsername);
  if (!user) throw new UserInputError(`no user ${idOrUsername}: see npm run users -- list`);
  return (await deactivateUserRow(db, user.user_id))!;
}

export interface BlankImage {
  ownerId: string;
  title?: string | undefined;
  width?: number | undefined;
  height?: number | undefined;
}

/** Largest side of a blank image: the canvas schema's and sharp's practical limit. */
export const MAX_BLANK_SIDE = 16_384;

/**
 * An image row with no bytes behind it (`file_size` 0, `mime_type` image/png): something to start
 * an edit session on until images arrive through the ingest API.
 */
export async function addBlankImage(db: Database, input: BlankImage): Promise<ImageId> {
  const owner = await requireActiveUser(db, input.ownerId);
  const width = input.width ?? 1280;
  const height = input.height ?? 800;
  for (const [name, value] of [['--width', width], ['--height', height]] as const) {
    if (!Number.isInteger(value) || value < 1 || value > MAX_BLANK_SIDE) {
      throw new UserInputError(`invalid ${name} ${String(value)}: give a whole number of pixels from 1 to ${MAX_BLANK_SIDE}`);
    }
  }
  const title = input.title ?? 'Blank canvas';
  if (title.trim() === '' || title.length > 255) throw new UserInputError('invalid --title: give 1-255 characters');
  const imageId = newImageId();
  await insertImage(db, {
    imageId,
    userId: owner.user_id,
    title,
    filename: 'blank.png',
    mimeType: 'image/png',
    fileSize: 0,
    width,
    height,
    storagePath: `blank/${imageId}`,
    privacyLevel: 'private',
  });
  return imageId;
}
