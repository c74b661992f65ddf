/**
 * A byte-bounded LRU of small immutable blobs (variants are content-addressed, so an entry never
 * goes stale): the hot thumbnails of a page are answered from memory without touching the blob
 * store; the renderer keeps rasterised layers in one (renderer/layer-cache.ts). Any value with a
 * `byteLength` fits. Map iteration order is insertion order; a hit re-inserts, so the first key
 * is the least recently used.
 */
export class ByteLru<V extends { readonly byteLength: number } = Uint8Array> {
  readonly #maxBytes: number;
  readonly #maxEntryBytes: number;
  readonly #entries = new Map<string, V>();
  #bytes = 0;

  constructor(maxBytes: number, maxEntryBytes = 1024 * 1024) {
    this.#maxBytes = maxBytes;
    this.#maxEntryBytes = Math.min(maxEntryBytes, maxBytes);
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  /** Whether an entry of `size` bytes would be kept. */
  fits(size: number): boolean {
    return size <= this.#maxEntryBytes;
  }

  get(key: string): V | undefined {
    const value = this.#entries.get(key);
    if (value) {
      this.#entries.delete(key);
      this.#entries.set(key, value);
    }
    return value;
  }

  set(key: string, value: V): void {
    if (!this.fits(value.byteLength)) return;
    const old = this.#entries.get(key);
    if (old) {
      this.#bytes -= old.byteLength;
      this.#entries.delete(key);
    }
    this.#entries.set(key, value);
    this.#bytes += value.byteLength;
    for (const [k, v] of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(k);
      this.#bytes -= v.byteLength;
    }
  }
}
