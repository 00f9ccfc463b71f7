import { createStore, type StoreKind } from "./store/index.ts";
import type { LRUStore } from "./store/lru.ts";
import type { LRU2Store, LRU2StoreOptions } from "./store/lru2.ts";
import type { EvictReason, SetOptions } from "./store/store.ts";

export interface CacheOptions<V = Uint8Array> extends LRU2StoreOptions<V> {
  /** Store algorithm. Default: "lru2". (`buckets` and `level1Share` apply to "lru2" only.) */
  store?: StoreKind;
}

export const DEFAULT_CACHE_OPTIONS = {
  store: "lru2",
} as const satisfies Partial<CacheOptions>;

export interface CacheStats {
  /** Reads (`get`) since creation. */
  gets: number;
  hits: number;
  misses: number;
  /** Entries pushed out by the size bounds. */
  evictions: number;
  /** Entries dropped because their TTL ran out. */
  expirations: number;
  /** Current key + value bytes. */
  bytes: number;
  /** Current live entries. */
  items: number;
}

/**
 * A store plus the counters a cache is judged by. After `close()` the cache is
 * an inert, empty cache: reads miss (uncounted), writes store nothing and
 * return `false`. That is deliberate: loads that finish after a shutdown
 * began must not throw into callers that are being drained.
 */
export class Cache<V = Uint8Array> {
  private readonly store: LRUStore<V> | LRU2Store<V>;
  private gets = 0;
  private hits = 0;
  private evictions = 0;
  private expirations = 0;
  private closed = false;

  constructor(options: CacheOptions<V>) {
    const userListener = options.onEvict;
    this.store = createStore<V>(options.store ?? DEFAULT_CACHE_OPTIONS.store, {
      ...options,
      onEvict: (key: string, value: V, reason: EvictReason) => {
        if (reason === "capacity") this.evictions++;
        else if (reason === "expired") this.expirations++;
        userListener?.(key, value, reason);
      },
    });
  }

  get(key: string): V | undefined {
    const value = this._getIfHit(key);
    if (value === undefined && !this.closed) this.gets++;
    return value;
  }

  /**
   * `get` that counts only a hit: for a caller whose miss is counted by the
   * lookup it makes next (a peer's batch, then its Get for the key it missed).
   */
  _getIfHit(key: string): V | undefined {
    if (this.closed) return undefined;
    const value = this.store.get(key);
    if (value !== undefined) {
      this.gets++;
      this.hits++;
    }
    return value;
  }

  /** Reads without counting and without touching recency. */
  peek(key: string): V | undefined {
    return this.store.peek(key);
  }

  set(key: string, value: V, options?: SetOptions): boolean {
    if (this.closed) return false;
    return this.store.set(key, value, options);
  }

  delete(key: string): boolean {
    return this.store.delete(key);
  }

  /** Moves the byte bound (see the store's `_setMaxBytes`); for a cache built with `maxBytes`. */
  _setMaxBytes(maxBytes: number): void {
    this.store._setMaxBytes(maxBytes);
  }

  has(key: string): boolean {
    return this.store.has(key);
  }

  /** Absolute expiry of a live entry (`0`: never), `undefined` when absent. */
  expiresAt(key: string): number | undefined {
    return this.store.expiresAt(key);
  }

  /** `expiresAt` of a key `get` has just found (see the store's `_expiresAtOfFound`). */
  _expiresAtOfFound(key: string): number {
    return this.store._expiresAtOfFound(key);
  }

  clear(): void {
    this.store.clear();
  }

  /** A snapshot of the stored keys; O(n). */
  keys(): string[] {
    return this.store.keys();
  }

  purgeExpired(): number {
    return this.store.purgeExpired();
  }

  get size(): number {
    return this.store.size;
  }

  get bytes(): number {
    return this.store.bytes;
  }

  stats(): CacheStats {
    return {
      gets: this.gets,
      hits: this.hits,
      misses: this.gets - this.hits,
      evictions: this.evictions,
      expirations: this.expirations,
      bytes: this.store.bytes,
      items: this.store.size,
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.store.close();
  }
}
