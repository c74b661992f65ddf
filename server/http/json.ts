/** Request-body parsing shared by the route files: JSON, then a zod schema, else a stable error. */
import type { Context } from 'hono';
import type { z } from 'zod';
import { AppError } from '../../shared/errors.ts';
import type { Claims } from '../auth/tokens.ts';

export type Env = { Variables: { claims: Claims } };

export async function readJson<T>(c: Context, schema: z.ZodType<T>): Promise<T> {
  let body: unknown;
  const text = await c.req.text();
  try {
    body = text === '' ? {} : JSON.parse(text);
  } catch {
    throw new AppError('invalid_json');
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new AppError('invalid_body', `${issue.path.join('.') || 'body'}: ${issue.message}`);
  }
  return parsed.data;
}

