import { hash32 } from "../cluster/hash.ts";
import { invalidOption } from "../errors.ts";
import { _bound, _LinkedStore, type _ListLimits } from "./_linked-store.ts";
import type { StoreOptions } from "./store.ts";

export interface LRU2StoreOptions<V = Uint8Array> extends StoreOptions<V> {
  /**
   * Keys are spread over this many buckets by hash, each with its own two
   * levels. Rounded up to a power of two, at most 32768, and lowered when
   * `maxEntries` is too small to give every level of every bucket one entry.
   * Default: 1. The reference design's 16 buckets shard locks in Go; a
   * single-threaded store gains nothing from them, and their uneven fill
   * costs hit ratio and leaves preallocated slots empty.
   */
  buckets?: number;
  /** Fraction of each bucket's entries and bytes given to level 1 (probation). Default: 0.5. */
  level1Share?: number;
  /**
   * What becomes of the entry a promotion pushes out of level 2: `"demote"`
   * moves it to the head of level 1, where it has to be read again to climb
   * back; `"drop"` evicts it, the reference design's rule. Default:
   * `"demote"`. Dropping leaves level 1's share to keys read once, so a
   * cache that could hold most of what is read misses up to twice as often
   * as plain LRU; demoting, it misses less than LRU (docs/benchmarks.md).
   */
  level2Victims?: "demote" | "drop";
}

export const DEFAULT_LRU2_OPTIONS = {
  buckets: 1,
  level1Share: 0.5,
  level2Victims: "demote",
} as const;

const MAX_BUCKETS = 1 << 15;

/**
 * Two-level LRU ("LRU-2"): a new key enters level 1 (probation); a read hit
 * there promotes it to level 2 (protected). Level 1 evicts its own least
 * recently used entry when over its share of the bounds; level 2's goes back
 * to the head of level 1 (or, with `level2Victims: "drop"`, is evicted). A
 * one-off scan therefore churns level 1 only and cannot flush the keys that
 * were read twice.
 *
 * Updating a key that is already stored keeps it in its level (moved to the
 * head): an overwritten hot key is still hot, and a key lives in exactly one
 * level, so `size` counts it once.
 *
 * A value must fit the byte share of level 1 of its bucket
 * (`maxBytes × level1Share / buckets`); larger values are refused by `set`.
 */
export class LRU2Store<V = Uint8Array> extends _LinkedStore<V> {
  readonly buckets: number;
  private readonly bucketMask: number;
  private readonly demote: boolean;
  private readonly level1Share: number;

  constructor(options: LRU2StoreOptions<V>) {
    const maxEntries = _bound("maxEntries", options.maxEntries, true);
    const maxBytes = _bound("maxBytes", options.maxBytes, false);
    if (maxEntries === Infinity && maxBytes === Infinity) {
      throw invalidOption("LRU2Store needs a bound: set maxEntries, maxBytes or both");
    }
    if (maxEntries < 2) throw invalidOption(`LRU2Store needs maxEntries >= 2 (one per level), got ${maxEntries}`);
    const share = options.level1Share ?? DEFAULT_LRU2_OPTIONS.level1Share;
    if (!(share > 0 && share < 1)) throw invalidOption(`level1Share must be between 0 and 1 (exclusive), got ${share}`);
    const victims = options.level2Victims ?? DEFAULT_LRU2_OPTIONS.level2Victims;
    if (victims !== "demote" && victims !== "drop") {
      throw invalidOption(`level2Victims must be "demote" or "drop", got ${String(victims)}`);
    }
    const buckets = bucketCount(options.buckets ?? DEFAULT_LRU2_OPTIONS.buckets, maxEntries);
    super(options, levelLimits(buckets, maxEntries, maxBytes, share));
    this.buckets = buckets;
    this.bucketMask = buckets - 1;
    this.demote = victims === "demote";
    this.level1Share = share;
  }

  /** 1 or 2 for a stored key, `undefined` otherwise. For tests and diagnostics; does not touch recency. */
  _levelOf(key: string): 1 | 2 | undefined {
    if (!this.has(key)) return undefined;
    return (this.listAt(this.entryFor(key)!) & 1) === 0 ? 1 : 2;
  }

  protected listForNewKey(key: string): number {
    return this.bucketMask === 0 ? 0 : (hash32(key) & this.bucketMask) << 1;
  }

  /**
   * The base class's `get`, restated. JSC profiles a method per source
   * function, so in a process that uses both store kinds (a node's main
   * cache and hot cache) one shared `get` sees two `touch` targets and
   * inlines neither. With a copy per kind each call stays monomorphic:
   * get-heavy at 10,000 entries went from 1.00–1.10× lru-cache to 1.10–1.32×
   * here, and from 1.22–1.39× to 1.71–2.07× for LRUStore (docs/benchmarks.md).
   */
  override get(key: string): V | undefined {
    const entry = this.entryFor(key);
    if (entry === undefined) return undefined;
    const i = entry >> this.listBits;
    if (this.expires !== null && this.isExpired(i)) {
      this.removeSlot(i, this.listAt(entry), "expired");
      return undefined;
    }
    this.touch(key, entry, i);
    return this.valueAt(i);
  }

  protected splitByteBound(maxBytes: number, bounds: Float64Array): void {
    const [level1, level2] = split(maxBytes, this.buckets, this.level1Share, 0);
    for (let list = 0; list < bounds.length; list += 2) {
      bounds[list] = level1;
      bounds[list + 1] = level2;
    }
  }

  protected touch(key: string, entry: number, i: number): void {
    const list = this.listAt(entry);
    // Kept small so it inlines into `get`: most hits are in level 2.
    if ((list & 1) === 1) this.moveToHead(i, list);
    else this.promote(key, i, list);
  }

  /** A read hit in level 1 moves to level 2, unless it is too large for that level's byte share. */
  private promote(key: string, i: number, list: number): void {
    if (!this.fitsList(i, list + 1)) this.moveToHead(i, list);
    else if (this.demote) this.moveToListSpilling(key, i, list, list + 1, list);
    else this.moveToList(key, i, list, list + 1);
  }
}

function bucketCount(requested: number, maxEntries: number): number {
  if (!Number.isInteger(requested) || requested < 1 || requested > MAX_BUCKETS) {
    throw invalidOption(`buckets must be an integer from 1 to ${MAX_BUCKETS}, got ${requested}`);
  }
  let buckets = 1;
  while (buckets < requested) buckets <<= 1;
  while (buckets > 1 && maxEntries < 2 * buckets) buckets >>= 1;
  return buckets;
}

/** Lists are laid out as [bucket0 level1, bucket0 level2, bucket1 level1, …]. */
function levelLimits(buckets: number, maxEntries: number, maxBytes: number, share: number): _ListLimits[] {
  const [entries1, entries2] = split(maxEntries, buckets, share, 1);
  const [bytes1, bytes2] = split(maxBytes, buckets, share, 0);
  const limits: _ListLimits[] = [];
  for (let b = 0; b < buckets; b++) {
    limits.push({ maxEntries: entries1, maxBytes: bytes1 }, { maxEntries: entries2, maxBytes: bytes2 });
  }
  return limits;
}

function split(total: number, buckets: number, share: number, atLeast: number): [number, number] {
  if (total === Infinity) return [Infinity, Infinity];
  const perBucket = Math.floor(total / buckets);
  const level1 = Math.min(Math.max(Math.round(perBucket * share), atLeast), perBucket - atLeast);
  return [level1, perBucket - level1];
}
