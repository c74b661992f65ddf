/**
 * server/random-pool.ts: small getRandomValues requests come from a pool of CSPRNG bytes, each byte
 * handed out once; everything else behaves as Node's own Web Crypto (errors included), and Yjs's
 * clientIDs, drawn through lib0 after the pool is installed, are still random.
 */
import { webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import '../server/random-pool.ts';

describe('the random pool', () => {
  it('is what crypto.getRandomValues is once the server is imported', () => {
    expect(globalThis.crypto.getRandomValues).toBe(webcrypto.getRandomValues);
    expect(Object.getOwnPropertyDescriptor(webcrypto, 'getRandomValues')).toBeDefined();
    // Not Node's own method (globalThis.crypto is the same object, so the line above alone says little).
    expect(webcrypto.getRandomValues).not.toBe((Object.getPrototypeOf(webcrypto) as typeof webcrypto).getRandomValues);
  });

  it('fills small requests across many pool refills with bytes that look random and never repeat a draw', () => {
    const seen = new Set<string>();
    const counts = new Array<number>(256).fill(0);
    // 3,000 draws of 16 bytes: 48 KB, twelve refills of the 4 KiB pool, boundaries included.
    for (let i = 0; i < 3_000; i++) {
      const a = webcrypto.getRandomValues(new Uint8Array(16));
      const key = Buffer.from(a).toString('hex');
      expect(seen.has(key)).toBe(false);
      seen.add(key);
      for (const b of a) counts[b]!++;
    }
    // 48,000 bytes over 256 values: 187.5 expected each; a stuck or zeroed pool would fail this.
    expect(Math.min(...counts)).toBeGreaterThan(100);
    expect(Math.max(...counts)).toBeLessThan(290);
  });

  it("serves lib0's one-word requests from the pool too, aligned, between byte requests of odd sizes, across refills", () => {
    let bits = 0;
    let zeros = 0;
    const n = 20_000; // 80 KB of words plus 3-byte requests between them: about 35 refills
    for (let i = 0; i < n; i++) {
      if (i % 3 === 0) webcrypto.getRandomValues(new Uint8Array(3));
      const word = webcrypto.getRandomValues(new Uint32Array(1))[0]!;
      if (word === 0) zeros++;
      for (let v = word; v !== 0; v >>>= 1) bits += v & 1;
    }
    // A word served twice from a zeroed pool, or a stuck pool, would show as zeros or skewed bits.
    expect(zeros).toBeLessThanOrEqual(1);
    expect(bits / n).toBeGreaterThan(15.8);
    expect(bits / n).toBeLessThan(16.2);
    // A subclass, or a longer array, still goes the general way and is filled.
    class Words extends Uint32Array {}
    expect([...webcrypto.getRandomValues(new Words(4))].some((v) => v !== 0)).toBe(true);
    expect([...webcrypto.getRandomValues(new Uint32Array(2))].some((v) => v !== 0)).toBe(true);
  });

  it('fills a typed array through its own view, offset included, and returns it', () => {
    const backing = new Uint32Array(8);
    const view = new Uint32Array(backing.buffer, 8, 4);
    const out = webcrypto.getRandomValues(view);
    expect(out).toBe(view);
    expect(backing[0]).toBe(0);
    expect(backing[1]).toBe(0);
    expect(backing[6]).toBe(0);
    expect([...view].some((v) => v !== 0)).toBe(true);
  });

  it('leaves large and invalid requests to Node, with the Web Crypto errors', () => {
    const big = webcrypto.getRandomValues(new Uint8Array(65_536));
    expect(big.some((v) => v !== 0)).toBe(true);
    expect(() => webcrypto.getRandomValues(new Uint8Array(65_537))).toThrow(expect.objectContaining({ name: 'QuotaExceededError' }));
    expect(() => webcrypto.getRandomValues(new Float32Array(4) as unknown as Uint8Array)).toThrow(expect.objectContaining({ name: 'TypeMismatchError' }));
  });

  it('still gives Yjs documents distinct random clientIDs', async () => {
    const Y = await import('yjs');
    const ids = new Set(Array.from({ length: 2_000 }, () => new Y.Doc().clientID));
    expect(ids.size).toBe(2_000);
  });
});
