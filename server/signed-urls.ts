/**
 * Signed URLs: an expiring HMAC-SHA256 signature in the query string that stands in for the
 * Bearer token on GET routes an `<img>` tag must reach (renders, thumbnails, image files), because
 * a browser cannot add an `Authorization` header to an image request.
 *
 * What is signed (`canonical`): the method, the path, every query parameter except `sig` sorted
 * by name then value (each percent-encoded), and `expires` (unix seconds). So changing the path,
 * any parameter (a size, a format, the user) or the expiry breaks the signature.
 *
 * A signed URL names the user it was made for (`uid`): the route then checks access exactly as
 * for that user's token, at request time, so a user who loses access loses their URLs with it.
 *
 * The key is derived from the JWT secret with HKDF (its own `info`), so one secret serves both and
 * a signature can never be replayed as a JWT or the other way round. Comparison is timing-safe.
 *
 * Expiries are rounded up to a whole `EXPIRY_STEP_SECONDS`, so a client that fetches the same JSON
 * twice within the step gets the same URL back and its browser cache hits.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { AppError } from '../shared/errors.ts';
import { isId, type UserId } from '../shared/ids.ts';

/** Query parameters the signature itself uses. */
export const SIGNATURE_PARAM = 'sig';
export const EXPIRES_PARAM = 'expires';
export const USER_PARAM = 'uid';

export const EXPIRY_STEP_SECONDS = 300;

export interface SignedUrlClaims {
  /** The user the URL was signed for. */
  readonly userId: UserId;
  /** Unix seconds after which the URL is refused. */
  readonly expires: number;
}

/** The string the HMAC covers. `params` must not contain `sig`; `expires` is passed apart. */
export function canonical(method: string, path: string, params: URLSearchParams, expires: number): string {
  const pairs: Array<[string, string]> = [];
  for (const [name, value] of params) {
    if (name === SIGNATURE_PARAM || name === EXPIRES_PARAM) continue;
    pairs.push([name, value]);
  }
  pairs.sort(([an, av], [bn, bv]) => (an < bn ? -1 : an > bn ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  const query = pairs.map(([n, v]) => `${encodeURIComponent(n)}=${encodeURIComponent(v)}`).join('&');
  return `${method.toUpperCase()}\n${path}\n${query}\n${expires}`;
}

export class UrlSigner {
  readonly #key: Buffer;
  readonly #ttlSeconds: number;
  readonly #now: () => number;

  /**
   * @param jwtSecret the server's AUTH_JWT_SECRET (or the embedded mode's generated one)
   * @param ttlSeconds how long a URL made by `sign` stays valid (at least; see EXPIRY_STEP_SECONDS)
   * @param now milliseconds clock (tests)
   */
  constructor(jwtSecret: string, options: { ttlSeconds?: number; now?: () => number } = {}) {
    this.#key = Buffer.from(hkdfSync('sha256', jwtSecret, 'imageflow', 'imageflow signed urls v1', 32));
    this.#ttlSeconds = options.ttlSeconds ?? 3600;
    this.#now = options.now ?? Date.now;
  }

  #mac(text: string): Buffer {
    return createHmac('sha256', this.#key).update(text, 'utf8').digest();
  }

  /**
   * A path with query string (`/api/versions/ver_…/render?width=256&uid=…&expires=…&sig=…`) that
   * `verify` accepts for `method` until the expiry. `params` are the route's own parameters.
   */
  sign(
    method: string,
    path: string,
    userId: string,
    params: Record<string, string | number | undefined> = {},
    options: { expires?: number } = {},
  ): string {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value === undefined) continue;
      if (name === SIGNATURE_PARAM || name === EXPIRES_PARAM || name === USER_PARAM) {
        throw new Error(`signed URL parameter ${name} is reserved`);
      }
      query.set(name, String(value));
    }
    query.set(USER_PARAM, userId);
    const expires =
      options.expires ?? Math.ceil((this.#now() / 1000 + this.#ttlSeconds) / EXPIRY_STEP_SECONDS) * EXPIRY_STEP_SECONDS;
    const sig = this.#mac(canonical(method, path, query, expires)).toString('base64url');
    query.set(EXPIRES_PARAM, String(expires));
    query.set(SIGNATURE_PARAM, sig);
    return `${path}?${query.toString()}`;
  }

  /** Whether the URL carries a signature at all (then `verify` decides; no fallback to a token). */
  static isSigned(url: URL): boolean {
    return url.searchParams.has(SIGNATURE_PARAM);
  }

  /**
   * Checks a request URL's signature. Throws 403 `invalid_signature` for a missing, malformed or
   * wrong signature (anything tampered with), 403 `signature_expired` past its expiry. HEAD is
   * accepted with a GET signature (same resource, no body).
   */
  verify(method: string, url: URL): SignedUrlClaims {
    const params = url.searchParams;
    const sig = params.getAll(SIGNATURE_PARAM);
    const expiresText = params.getAll(EXPIRES_PARAM);
    const uid = params.getAll(USER_PARAM);
    if (sig.length !== 1 || expiresText.length !== 1 || uid.length !== 1) {
      throw new AppError('invalid_signature', 'A signed URL needs exactly one sig, expires and uid parameter.');
    }
    if (!/^\d{1,12}$/.test(expiresText[0]!)) throw new AppError('invalid_signature', 'The expires parameter is not a time.');
    const expires = Number(expiresText[0]);
    const given = Buffer.from(sig[0]!, 'base64url');
    const signedMethod = method.toUpperCase() === 'HEAD' ? 'GET' : method;
    const expected = this.#mac(canonical(signedMethod, url.pathname, params, expires));
    // Lengths first (timingSafeEqual throws on a mismatch); the length of a MAC is no secret.
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new AppError('invalid_signature');
    }
    if (!isId(uid[0])) throw new AppError('invalid_signature', 'The uid parameter is not a user id.');
    if (this.#now() / 1000 > expires) throw new AppError('signature_expired');
    return { userId: uid[0] as UserId, expires };
  }
}
