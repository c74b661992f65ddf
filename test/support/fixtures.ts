/** Rows a test needs (users, images) written straight into the server's database, and tokens. */
import pg from 'pg';
import { TokenService } from '../../server/auth/tokens.ts';
import { newImageId, newUserId } from '../../shared/ids.ts';
import { insertImage } from '../../persistence/repositories/images.ts';
import { insertUser } from '../../persistence/repositories/users.ts';
import { TEST_SECRET } from './server-process.ts';

export const tokens = new TokenService(TEST_SECRET);

export function openPool(url: string, register: (fn: () => Promise<void>) => void): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on('error', () => {});
  register(() => pool.end());
  return pool;
}

export async function createUser(db: pg.Pool, name = 'user'): Promise<string> {
  const userId = newUserId();
  await insertUser(db, { userId, username: `${name}_${userId.slice(4)}`, email: `${userId}@example.invalid`, displayName: name });
  return userId;
}

export async function createImage(
  db: pg.Pool,
  userId: string,
  options: { privacyLevel?: 'public' | 'followers' | 'private'; width?: number; height?: number } = {},
): Promise<string> {
  const imageId = newImageId();
  await insertImage(db, {
    imageId,
    userId,
    title: 'Test image',
    filename: 'test.png',
    mimeType: 'image/png',
    fileSize: 100,
    width: options.width ?? 640,
    height: options.height ?? 480,
    storagePath: `blobs/${imageId}.png`,
    privacyLevel: options.privacyLevel ?? 'private',
  });
  return imageId;
}

/** A user with a token, ready to call the API or connect. */
export async function createActor(db: pg.Pool, name = 'user'): Promise<{ userId: string; token: string }> {
  const userId = await createUser(db, name);
  return { userId, token: await tokens.sign(userId) };
}

export async function api(
  baseUrl: string,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; rawBody?: string } = {},
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read whatever JSON came back
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.rawBody !== undefined) body = options.rawBody;
  else if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${baseUrl}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body: parsed };
}

/** Creates a session through the HTTP API as `owner`; returns its id. */
export async function createSession(baseUrl: string, ownerToken: string, imageId: string, extra: Record<string, unknown> = {}) {
  const res = await api(baseUrl, 'POST', '/api/sessions', { token: ownerToken, body: { imageId, ...extra } });
  if (res.status !== 201) throw new Error(`session creation failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.session.sessionId as string;
}
