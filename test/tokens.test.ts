/** Access tokens (server/auth/tokens.ts): verification, and its cache of verified tokens. */
import { describe, expect, it } from 'vitest';
import { AppError } from '../shared/errors.ts';
import { newUserId } from '../shared/ids.ts';
import { TokenService } from '../server/auth/tokens.ts';
import { waitFor } from './support/clients.ts';

const code = (promise: Promise<unknown>) =>
  promise.then(
    () => 'accepted',
    (error: unknown) => (error instanceof AppError ? error.code : String(error)),
  );

describe('TokenService', () => {
  it('answers a token it verified before from its cache, and still refuses it once expired', async () => {
    const tokens = new TokenService('s'.repeat(32));
    const userId = newUserId();
    const token = await tokens.sign(userId, { expiresInSeconds: 1 });
    expect((await tokens.verify(token)).sub).toBe(userId);
    // A hit returns a copy: a caller changing its claims changes nothing for the next one.
    const first = await tokens.verify(token);
    (first as { sub: string }).sub = 'changed';
    expect((await tokens.verify(token)).sub).toBe(userId);
    // `exp` has a resolution of one second: wait until it has passed, then the cached token is refused.
    await waitFor(async () => (await code(tokens.verify(token))) === 'token_expired', { timeout: 4_000, interval: 100, what: 'the cached token expired' });
  });

  it('refuses what differs from a verified token by one character, and tokens of another secret', async () => {
    const tokens = new TokenService('s'.repeat(32));
    const token = await tokens.sign(newUserId());
    await tokens.verify(token);
    // A character inside the signature: every one of its 6 bits is signature. (The last character
    // of a 32-byte HS256 signature carries 2 padding bits, so 'A' → 'B' there can decode to the
    // same bytes and verify: that made this test fail about once in twenty runs.)
    const at = token.length - 10;
    const changed = token.slice(0, at) + (token[at] === 'A' ? 'Q' : 'A') + token.slice(at + 1);
    expect(await code(tokens.verify(changed))).toBe('unauthorized');
    const other = await new TokenService('t'.repeat(32)).sign(newUserId());
    expect(await code(tokens.verify(other))).toBe('unauthorized');
    expect(await code(tokens.verify(''))).toBe('unauthorized');
  });

  it('keeps at most VERIFIED_CACHE_SIZE tokens, the oldest leaving first', async () => {
    const tokens = new TokenService('s'.repeat(32));
    const many = await Promise.all(Array.from({ length: TokenService.VERIFIED_CACHE_SIZE + 5 }, () => tokens.sign(newUserId())));
    for (const t of many) await tokens.verify(t);
    expect(tokens.cachedTokens).toBe(TokenService.VERIFIED_CACHE_SIZE);
    // Still correct for every one (evicted ones are verified again).
    expect((await tokens.verify(many[0]!)).sub).toBeDefined();
    expect((await tokens.verify(many.at(-1)!)).sub).toBeDefined();
  });
});
