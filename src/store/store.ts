/**
 * The storage contract every cache layer stands on. Both `LRUStore` and
 * `LRU2Store` implement it; `Cache` and `Group` only ever see this interface.
 */

/** Why an entry left the store; passed to `onEvict`. */
export type EvictReason = "capacity" | "expired" | "deleted" | "cleared" | "replaced";

export type EvictListener<V> = (key: string, value: V, reason: EvictReason) => void;

/** A clock in milliseconds. Wall-clock by default so expiry times mean the same on every node. */
export type Clock = () => number;

export interface SetOptions {
  /**
   * Time to live in milliseconds. `undefined` or `0` means the entry never
   * expires (0 is "no TTL", never "already expired"). Must be finite and >= 0.
   */
  ttlMs?: number;
  /**
   * Absolute expiry time on the store's clock; wins over `ttlMs`. Lets a copy
   * keep its owner's expiry instead of restarting the TTL. `0` means never.
   */
  expiresAt?: number;
}

export interface Store<V = Uint8Array> {
  /** The value, or `undefined` when absent or expired. Marks the key as recently used. */
  get(key: string): V | undefined;
  /** Like `get` without touching recency. */
  peek(key: string): V | undefined;
  /**
   * Inserts or replaces. Returns `false` when the entry can never fit (larger
   * than the byte budget it would live in); nothing is stored then, and an
   * older value under the same key is removed so a stale value is never served.
   */
  set(key: string, value: V, options?: SetOptions): boolean;
  /** Removes the key; `true` when a live entry was removed. */
  delete(key: string): boolean;
  /** `true` when the key holds a live (unexpired) entry. Does not touch recency. */
  has(key: string): boolean;
  /** Absolute expiry time of a live entry: `0` when it never expires, `undefined` when absent. */
  expiresAt(key: string): number | undefined;
  /** A snapshot of the stored keys (expired ones not yet swept included). O(n): for rare maintenance. */
  keys(): string[];
  /** Removes every entry (each reported to `onEvict` with reason `cleared`). */
  clear(): void;
  /** Drops every expired entry now; returns how many. Cost is proportional to what expired. */
  purgeExpired(): number;
  /** Live entries, each key counted once. Entries past their expiry that were not yet swept may be included. */
  readonly size: number;
  /** Sum over entries of UTF-8 key length plus value size. */
  readonly bytes: number;
  /** Stops the sweep timer and drops every entry. Later calls are no-ops; see `Cache` for post-close behaviour. */
  close(): void;
}

/** Options shared by every store kind. Defaults live in `DEFAULT_STORE_OPTIONS`. */
export interface StoreOptions<V = Uint8Array> {
  /** Upper bound on entries. Default: none (then `maxBytes` is required). */
  maxEntries?: number;
  /** Upper bound on `bytes`. Default: none (then `maxEntries` is required). */
  maxBytes?: number;
  /** Size of a value in bytes; must give the same answer for the same value. Default: `byteLength` for binary values, UTF-8 length for strings. */
  sizeOf?: (value: V) => number;
  /** Called after an entry left the store. Default: none. */
  onEvict?: EvictListener<V>;
  /** TTL in milliseconds applied when `set` gives none. Default: 0 (never expire). */
  defaultTtlMs?: number;
  /** Time source. Default: `Date.now`. Inject a fake in tests instead of sleeping. */
  clock?: Clock;
  /**
   * How often the background sweep drops expired entries, in ms. The timer only
   * runs while some entry has a TTL and never keeps the process alive. `0`
   * disables it (expiry is then lazy on read plus `purgeExpired()`). Default: 1000.
   */
  sweepIntervalMs?: number;
}

export const DEFAULT_STORE_OPTIONS = {
  defaultTtlMs: 0,
  sweepIntervalMs: 1000,
} as const;
