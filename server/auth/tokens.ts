/**
 * Access tokens (docs/CONTRACT.md "Identity and access"): JWT, HS256, `sub` = users.user_id, `exp`
 * required, optional `sid` = user_sessions.session_id. jose does the cryptography and claim checks.
 */
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { AppError } from '../../shared/errors.ts';
import { isId, type UserId } from '../../shared/ids.ts';

export interface Claims {
  sub: UserId;
  exp: number;
  sid?: string;
}

const encoder = new TextEncoder();

export class TokenService {
  /**
   * Imported once: given raw bytes, jose imports a WebCrypto key on every call (half the cost of
   * a verify, which every /api request pays).
   */
  readonly #key: Promise<CryptoKey>;

  constructor(secret: string) {
    this.#key = crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
  }

  async sign(userId: string, options: { expiresInSeconds?: number; sid?: string } = {}): Promise<string> {
    const jwt = new SignJWT(options.sid ? { sid: options.sid } : {})
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(userId)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + (options.expiresInSeconds ?? 3600));
    return jwt.sign(await this.#key);
  }

  /**
   * Tokens whose signature and claims were verified, by their exact text, until their `exp`: a
   * reconnect storm presents the same tokens again, and each verify is an HMAC through WebCrypto
   * plus jose's parsing (the largest single cost of accepting a connection in the profile). Keyed
   * by the whole token, so nothing but the very bytes already verified can hit; expiry is checked
   * on every hit. Bounded: the oldest entries go first.
   */
  readonly #verified = new Map<string, Claims>();
  static readonly VERIFIED_CACHE_SIZE = 10_000;

  /** Tokens held verified now (tests). */
  get cachedTokens(): number {
    return this.#verified.size;
  }

  /** Verifies signature, algorithm and expiry; throws `AppError('unauthorized' | 'token_expired')`. */
  async verify(token: string | undefined | null): Promise<Claims> {
    if (!token) throw new AppError('unauthorized', 'No access token was given.');
    const known = this.#verified.get(token);
    if (known) {
      if (known.exp * 1000 > Date.now()) return { ...known };
      this.#verified.delete(token);
      throw new AppError('token_expired');
    }
    const claims = await this.#verify(token);
    if (this.#verified.size >= TokenService.VERIFIED_CACHE_SIZE) this.#verified.delete(this.#verified.keys().next().value!);
    this.#verified.set(token, claims);
    return { ...claims };
  }

  async #verify(token: string): Promise<Claims> {
    try {
      const { payload } = await jwtVerify(token, await this.#key, { algorithms: ['HS256'], requiredClaims: ['exp', 'sub'] });
      if (!isId(payload.sub)) throw new AppError('unauthorized', 'The token subject is not a valid user id.');
      if (payload.sid !== undefined && !isId(payload.sid)) {
        throw new AppError('unauthorized', 'The token sid is not a valid login session id.');
      }
      return { sub: payload.sub as UserId, exp: payload.exp!, ...(typeof payload.sid === 'string' ? { sid: payload.sid } : {}) };
    } catch (error) {
      if (error instanceof AppError) throw error;
      if (error instanceof joseErrors.JWTExpired) throw new AppError('token_expired');
      throw new AppError('unauthorized');
    }
  }
}
