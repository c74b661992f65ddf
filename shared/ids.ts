/**
 * Branded ids. Every id column of the seed schema is VARCHAR(20): ours are a 4-character type
 * prefix and 16 random base-62 characters (~95 bits), e.g. `ses_3fJ9a0LqZk1mP2xY`.
 */

declare const brand: unique symbol;
export type Brand<T, B extends string> = T & { readonly [brand]: B };

export type UserId = Brand<string, 'UserId'>;
export type ImageId = Brand<string, 'ImageId'>;
export type VersionId = Brand<string, 'VersionId'>;
export type SessionId = Brand<string, 'SessionId'>;
export type LayerId = Brand<string, 'LayerId'>;

const prefixes = {
  user: 'usr_',
  image: 'img_',
  version: 'ver_',
  session: 'ses_',
  layer: 'lay_',
  activity: 'act_',
  notification: 'ntf_',
  upload: 'upl_',
} as const;
type Kind = keyof typeof prefixes;

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function randomId(prefix: string): string {
  // Rejection sampling keeps the distribution uniform (256 is not a multiple of 62).
  let out = prefix;
  while (out.length < 20) {
    // Web Crypto: in browsers and Node alike (shared/ runs in both; no Node built-ins here).
    for (const byte of globalThis.crypto.getRandomValues(new Uint8Array(24))) {
      if (byte < 248 && out.length < 20) out += ALPHABET[byte % 62];
    }
  }
  return out;
}

export const newUserId = () => randomId(prefixes.user) as UserId;
export const newImageId = () => randomId(prefixes.image) as ImageId;
export const newVersionId = () => randomId(prefixes.version) as VersionId;
export const newSessionId = () => randomId(prefixes.session) as SessionId;
export const newLayerId = () => randomId(prefixes.layer) as LayerId;
export const newId = (kind: Kind) => randomId(prefixes[kind]);

/** Any id the schema can hold: 1-20 characters, no control characters or separators. */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,20}$/;
export const isId = (value: unknown): value is string => typeof value === 'string' && ID_PATTERN.test(value);
