/**
 * Small random requests served from a pool of CSPRNG bytes.
 *
 * Yjs draws a new document's clientID and guid from lib0, which asks `crypto.getRandomValues` for
 * four bytes at a time: 32 calls for every `new Y.Doc()`. Hocuspocus 4.7 makes a scratch `Y.Doc`
 * for every awareness message it receives (its `beforeHandleAwareness` hook gets a scratch
 * Awareness), so on this server each cursor move and each connection's first awareness state paid
 * those 32 calls: about 10 % of the CPU of accepting a connection in its profile.
 *
 * Node's `crypto.randomUUID()` caches its entropy the same way. Here a request of up to 256 bytes
 * into an integer typed array is copied from a 4 KiB pool that `randomFillSync` (OpenSSL's CSPRNG,
 * what `getRandomValues` itself calls) refills when it runs out; each pool byte is handed out once.
 * Anything else — larger requests, other views, wrong arguments — goes to Node's own
 * `getRandomValues`, which validates and throws as the Web Crypto API says.
 *
 * Imported first by the server's entry (server/main.ts) and app (server/app.ts), before lib0 binds
 * `getRandomValues` at its load.
 */
import { randomFillSync, webcrypto } from 'node:crypto';

const POOL_BYTES = 4096;
const MAX_POOLED = 256;
/** The views Web Crypto fills; anything else goes to Node, which throws TypeMismatchError. */
const POOLED_VIEWS = new Set<unknown>([Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array]);
const INSTALLED = Symbol.for('imageflow.randomPool');

type Crypto = typeof webcrypto & { [INSTALLED]?: true };

const target = webcrypto as Crypto;
if (!target[INSTALLED]) {
  const original = target.getRandomValues.bind(target);
  const pool = new Uint8Array(POOL_BYTES);
  /** The same bytes as words, for lib0's one-word requests. */
  const words = new Uint32Array(pool.buffer);
  let offset = POOL_BYTES;
  const pooled = <T extends ArrayBufferView | null>(array: T): T => {
    // lib0's `uint32()` (`getRandomValues(new Uint32Array(1))`), 32 of each `new Y.Doc()`: one
    // aligned word, no views made. In a microbenchmark, `new Y.Doc()` 11 → 2.5 µs.
    if (array instanceof Uint32Array && array.length === 1 && array.constructor === Uint32Array) {
      let word = (offset + 3) >>> 2;
      if (word >= words.length) {
        randomFillSync(pool);
        word = 0;
      }
      array[0] = words[word]!;
      words[word] = 0;
      offset = (word + 1) << 2;
      return array;
    }
    if (!array || !POOLED_VIEWS.has(array.constructor) || array.byteLength > MAX_POOLED) return original(array as never) as T;
    const n = array.byteLength;
    if (offset + n > POOL_BYTES) {
      randomFillSync(pool);
      offset = 0;
    }
    new Uint8Array(array.buffer, array.byteOffset, n).set(pool.subarray(offset, offset + n));
    pool.fill(0, offset, offset + n);
    offset += n;
    return array;
  };
  Object.defineProperty(target, 'getRandomValues', { value: pooled, writable: true, configurable: true, enumerable: true });
  Object.defineProperty(target, INSTALLED, { value: true });
}

export {};
