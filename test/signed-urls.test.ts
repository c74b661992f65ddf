/**
 * Signed URLs (server/signed-urls.ts): the signer in process (valid, every kind of tampering,
 * expiry, HEAD, reserved names, stable URLs within a step), then end to end against the real
 * server: a signed URL is accepted instead of the Bearer token, a tampered or expired one is 403
 * with its code, and the user it names is checked like a token's user.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { UrlSigner, canonical, EXPIRY_STEP_SECONDS } from '../server/signed-urls.ts';
import { AppError } from '../shared/errors.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, openPool } from './support/fixtures.ts';
import { startServerProcess, TEST_SECRET, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

const BASE = 'http://127.0.0.1';
const USER = 'usr_0123456789abcdef';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    if (error instanceof AppError) return error.code;
    throw error;
  }
}

describe('UrlSigner', () => {
  let now = Date.UTC(2026, 11, 1, 12, 0, 0);
  const signer = new UrlSigner(TEST_SECRET, { ttlSeconds: 3600, now: () => now });

  it('accepts what it signed and returns the user and expiry', () => {
    const path = signer.sign('GET', '/api/versions/ver_x/render', USER, { width: 256, format: 'webp' });
    const claims = signer.verify('GET', new URL(path, BASE));
    expect(claims.userId).toBe(USER);
    expect(claims.expires * 1000).toBeGreaterThanOrEqual(now + 3600_000);
    expect(claims.expires % EXPIRY_STEP_SECONDS).toBe(0);
    // HEAD is the same resource without a body
    expect(signer.verify('HEAD', new URL(path, BASE)).userId).toBe(USER);
  });

  it('covers parameters in any order', () => {
    const url = new URL(signer.sign('GET', '/p', USER, { b: '2', a: '1' }), BASE);
    const reordered = new URL('/p', BASE);
    for (const name of ['sig', 'expires', 'a', 'uid', 'b']) reordered.searchParams.set(name, url.searchParams.get(name)!);
    expect(signer.verify('GET', reordered).userId).toBe(USER);
  });

  it('refuses every tampering with invalid_signature', () => {
    const good = new URL(signer.sign('GET', '/api/versions/ver_x/render', USER, { width: 256 }), BASE);
    const variant = (edit: (u: URL) => void) => {
      const u = new URL(good);
      edit(u);
      return u;
    };
    const cases: Array<[string, URL, string]> = [
      ['path', variant((u) => (u.pathname = '/api/versions/ver_y/render')), 'GET'],
      ['param changed', variant((u) => u.searchParams.set('width', '4096')), 'GET'],
      ['param added', variant((u) => u.searchParams.set('format', 'png')), 'GET'],
      ['param removed', variant((u) => u.searchParams.delete('width')), 'GET'],
      ['param repeated', variant((u) => u.searchParams.append('width', '256')), 'GET'],
      ['user', variant((u) => u.searchParams.set('uid', 'usr_fedcba9876543210')), 'GET'],
      ['expiry', variant((u) => u.searchParams.set('expires', String(Number(u.searchParams.get('expires')) + 300))), 'GET'],
      ['signature bit', variant((u) => {
        const sig = Buffer.from(u.searchParams.get('sig')!, 'base64url');
        sig[0]! ^= 1;
        u.searchParams.set('sig', sig.toString('base64url'));
      }), 'GET'],
      ['signature short', variant((u) => u.searchParams.set('sig', u.searchParams.get('sig')!.slice(0, 20))), 'GET'],
      ['signature missing value', variant((u) => u.searchParams.set('sig', '')), 'GET'],
      ['expires missing', variant((u) => u.searchParams.delete('expires')), 'GET'],
      ['expires not a number', variant((u) => u.searchParams.set('expires', '1e12')), 'GET'],
      ['method', good, 'DELETE'],
    ];
    for (const [name, url, method] of cases) {
      expect(codeOf(() => signer.verify(method, url)), name).toBe('invalid_signature');
    }
  });

  it('refuses a signature made with another secret', () => {
    const other = new UrlSigner('another-secret-another-secret-another-secret', { now: () => now });
    const url = new URL(other.sign('GET', '/p', USER), BASE);
    expect(codeOf(() => signer.verify('GET', url))).toBe('invalid_signature');
  });

  it('refuses an expired signature with signature_expired', () => {
    const url = new URL(signer.sign('GET', '/p', USER, {}, { expires: Math.floor(now / 1000) + 10 }), BASE);
    expect(signer.verify('GET', url).userId).toBe(USER);
    now += 11_000;
    expect(codeOf(() => signer.verify('GET', url))).toBe('signature_expired');
  });

  it('gives the same URL within one expiry step (so browsers cache it)', () => {
    now = Date.UTC(2026, 11, 1, 12, 0, 1);
    const a = signer.sign('GET', '/p', USER, { w: 1 });
    now += 60_000;
    expect(signer.sign('GET', '/p', USER, { w: 1 })).toBe(a);
  });

  it('reserves its own parameter names', () => {
    expect(() => signer.sign('GET', '/p', USER, { sig: 'x' })).toThrow(/reserved/);
    expect(() => signer.sign('GET', '/p', USER, { uid: 'x' })).toThrow(/reserved/);
  });

  it('signs a canonical string of method, path, sorted parameters and expiry', () => {
    const params = new URLSearchParams([['b', 'x y'], ['a', '2'], ['a', '1'], ['sig', 'ignored']]);
    expect(canonical('get', '/p', params, 99)).toBe('GET\n/p\na=1&a=2&b=x%20y\n99');
  });
});

describe('signed URLs on the HTTP API', () => {
  let server: ServerProcess;
  let db: pg.Pool;
  const signer = new UrlSigner(TEST_SECRET);

  beforeAll(async () => {
    const database = await createDatabase('signed');
    register(database.drop);
    server = await startServerProcess({ transport: 'node', databaseUrl: database.url, register });
    db = openPool(database.url, register);
  });

  it('accepts a signed URL instead of the token; tampered or expired is 403 with its code', async () => {
    const owner = await createActor(db, 'owner');
    const stranger = await createActor(db, 'stranger');
    const imageId = await createImage(db, owner.userId, { privacyLevel: 'private' });
    const path = `/api/images/${imageId}/versions`;

    const signed = signer.sign('GET', path, owner.userId);
    const ok = await api(server.url, 'GET', signed);
    expect(ok.status).toBe(200);
    expect(ok.body.imageId).toBe(imageId);

    const tampered = signed.replace(imageId, await createImage(db, owner.userId));
    const bad = await api(server.url, 'GET', tampered);
    expect(bad.status).toBe(403);
    expect(bad.body.error.code).toBe('invalid_signature');

    const past = signer.sign('GET', path, owner.userId, {}, { expires: Math.floor(Date.now() / 1000) - 1 });
    const expired = await api(server.url, 'GET', past);
    expect(expired.status).toBe(403);
    expect(expired.body.error.code).toBe('signature_expired');

    // A signature replaces the token, not the access check: the stranger's own valid URL for the
    // owner's private image is the same 404 their token would get.
    const strangers = await api(server.url, 'GET', signer.sign('GET', path, stranger.userId));
    expect(strangers.status).toBe(404);
    expect(strangers.body.error.code).toBe('image_not_found');

    // A signed GET does not authorize another method on the same path.
    const post = await api(server.url, 'POST', signer.sign('GET', `/api/sessions`, owner.userId), { body: { imageId } });
    expect(post.status).toBe(403);
    expect(post.body.error.code).toBe('invalid_signature');

    // A URL signed for a user that does not exist is refused like that user's token.
    const ghost = await api(server.url, 'GET', signer.sign('GET', path, 'usr_doesnotexist0000'));
    expect(ghost.status).toBe(401);
    expect(ghost.body.error.code).toBe('unknown_user');
  });
});
