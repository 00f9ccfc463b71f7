import { invalidArgument, invalidOption } from "../errors.ts";
import { _ExpiryHeap } from "./_expiry-heap.ts";
import { defaultSizeOf, utf8Length } from "./_size.ts";
import {
  DEFAULT_STORE_OPTIONS,
  type Clock,
  type EvictListener,
  type EvictReason,
  type SetOptions,
  type Store,
  type StoreOptions,
} from "./store.ts";

/** "No slot" in the typed-array links. Slot indices stay below it. */
const NIL = 0xffffffff;
const MAX_SLOTS = NIL - 1;
const MAX_ENTRY_BYTES = 0xffffffff;
/** Slots preallocated up front when `maxEntries` is known; beyond this the pool doubles on demand. */
const MAX_PREALLOCATED_SLOTS = 1 << 20;
const UNBOUNDED_INITIAL_SLOTS = 1024;

/** Per-list bounds; `Infinity` means unbounded. */
export interface _ListLimits {
  maxEntries: number;
  maxBytes: number;
}

/**
 * The machinery both stores share: entries live in numbered slots; keys and
 * values in plain arrays, links, sizes and expiries in typed arrays, so an
 * operation allocates nothing beyond the key's map entry. Slots belong to one
 * of several doubly linked recency lists (LRU uses one, LRU-2 two per bucket).
 * Subclasses decide which list a new key enters and what a read hit does.
 *
 * TTL costs nothing until the first entry with an expiry arrives: only then
 * are the expiry array, generation counters and expiry heap allocated.
 */
export abstract class _LinkedStore<V> implements Store<V> {
  protected readonly index = new Map<string, number>();
  protected readonly heads: Uint32Array;
  protected readonly tails: Uint32Array;
  protected readonly counts: Uint32Array;
  protected readonly listBytes: Float64Array;
  protected readonly maxCounts: Float64Array;
  protected readonly maxListBytes: Float64Array;
  protected next: Uint32Array;
  protected prev: Uint32Array;
  /** Entry bytes (key + value); entries are capped below 4 GiB. */
  protected sizes: Uint32Array;
  /** List of each slot; absent (all zero) when there is a single list. */
  protected listOf: Uint16Array | null;
  protected keyList: (string | undefined)[];
  protected vals: (V | undefined)[];

  private expires: Float64Array | null = null;
  private gens: Uint32Array | null = null;
  private heap: _ExpiryHeap | null = null;
  private liveWithTtl = 0;
  private sweepTimer: ReturnType<typeof setInterval> | null = null;

  /** Freed slots form a stack threaded through `next`, so free-slot bookkeeping costs no memory. */
  private freeHead = NIL;
  private neverUsed = 0;
  private capacity: number;
  private readonly slotLimit: number;
  private totalBytes = 0;
  private closed = false;

  private readonly sizeOf: (value: V) => number;
  private readonly onEvict: EvictListener<V> | null;
  private readonly clock: Clock;
  private readonly defaultTtlMs: number;
  private readonly sweepIntervalMs: number;

  protected constructor(options: StoreOptions<V>, limits: readonly _ListLimits[]) {
    this.sizeOf = options.sizeOf ?? (defaultSizeOf as (value: V) => number);
    this.onEvict = options.onEvict ?? null;
    this.clock = options.clock ?? Date.now;
    this.defaultTtlMs = checkTtlOption("defaultTtlMs", options.defaultTtlMs ?? DEFAULT_STORE_OPTIONS.defaultTtlMs);
    this.sweepIntervalMs = checkTtlOption(
      "sweepIntervalMs",
      options.sweepIntervalMs ?? DEFAULT_STORE_OPTIONS.sweepIntervalMs,
    );

    const lists = limits.length;
    this.heads = new Uint32Array(lists).fill(NIL);
    this.tails = new Uint32Array(lists).fill(NIL);
    this.counts = new Uint32Array(lists);
    this.listBytes = new Float64Array(lists);
    this.maxCounts = Float64Array.from(limits, (l) => l.maxEntries);
    this.maxListBytes = Float64Array.from(limits, (l) => l.maxBytes);

    const totalEntries = limits.reduce((sum, l) => sum + l.maxEntries, 0);
    this.slotLimit = Math.min(totalEntries, MAX_SLOTS);
    this.capacity = Number.isFinite(totalEntries)
      ? Math.min(this.slotLimit, MAX_PREALLOCATED_SLOTS)
      : UNBOUNDED_INITIAL_SLOTS;
    this.next = new Uint32Array(this.capacity);
    this.prev = new Uint32Array(this.capacity);
    this.sizes = new Uint32Array(this.capacity);
    this.listOf = lists > 1 ? new Uint16Array(this.capacity) : null;
    this.keyList = new Array<string | undefined>(this.capacity).fill(undefined);
    this.vals = new Array<V | undefined>(this.capacity).fill(undefined);
  }

  /** The list a key that is not in the store enters. */
  protected abstract listForNewKey(key: string): number;
  /** What a read hit on slot `i` does to recency (and level, for LRU-2). */
  protected abstract touch(i: number): void;

  get size(): number {
    this.purgeExpired();
    return this.index.size;
  }

  get bytes(): number {
    this.purgeExpired();
    return this.totalBytes;
  }

  get(key: string): V | undefined {
    const i = this.index.get(key);
    if (i === undefined) return undefined;
    if (this.expires !== null && this.isExpired(i)) {
      this.removeSlot(i, "expired");
      return undefined;
    }
    this.touch(i);
    return this.vals[i];
  }

  peek(key: string): V | undefined {
    const i = this.liveSlot(key);
    return i === undefined ? undefined : this.vals[i];
  }

  has(key: string): boolean {
    return this.liveSlot(key) !== undefined;
  }

  expiresAt(key: string): number | undefined {
    const i = this.liveSlot(key);
    if (i === undefined) return undefined;
    return this.expires === null ? 0 : this.expires[i]!;
  }

  set(key: string, value: V, options?: SetOptions): boolean {
    if (typeof key !== "string") throw invalidArgument(`key must be a string, got ${typeof key}`);
    if (this.closed) return false;
    const expiry = options === undefined && this.defaultTtlMs === 0 ? 0 : this.expiryFor(options);
    const existing = this.index.get(key);
    if (expiry !== 0 && expiry <= this.clock()) {
      // Already expired on arrival: store nothing, and let no older value survive it.
      if (existing !== undefined) this.removeSlot(existing, "replaced");
      return false;
    }
    // Same value again (a refresh, the common write of a hot key): only recency
    // and expiry change, and the value need not even be sized.
    if (existing !== undefined && this.vals[existing] === value) {
      this.setExpiry(existing, expiry);
      this.moveToHead(existing, this.listOf === null ? 0 : this.listOf[existing]!);
      return true;
    }
    const valueSize = this.sizeOf(value);
    if (valueSize !== valueSize >>> 0) {
      throw invalidArgument(`sizeOf must return a whole number of bytes below 2^32, got ${valueSize}`);
    }
    if (existing !== undefined) {
      const old = this.vals[existing] as V;
      // The key is unchanged, so its byte count is the entry size minus the old value's.
      const size = this.sizes[existing]! - this.sizeOf(old) + valueSize;
      return this.update(existing, key, value, size, expiry);
    }
    const size = utf8Length(key) + valueSize;
    if (size > MAX_ENTRY_BYTES) throw invalidArgument(`entry of ${size} bytes is too large (limit ${MAX_ENTRY_BYTES})`);
    return this.insert(key, value, size, expiry);
  }

  delete(key: string): boolean {
    const i = this.index.get(key);
    if (i === undefined) return false;
    if (this.expires !== null && this.isExpired(i)) {
      this.removeSlot(i, "expired");
      return false;
    }
    this.removeSlot(i, "deleted");
    return true;
  }

  keys(): string[] {
    return [...this.index.keys()];
  }

  clear(): void {
    const listener = this.onEvict;
    const evicted: [string, V][] | null = listener === null || this.index.size === 0 ? null : [];
    if (evicted !== null) {
      for (const [key, i] of this.index) evicted.push([key, this.vals[i] as V]);
    }
    this.index.clear();
    this.keyList.fill(undefined);
    this.vals.fill(undefined);
    this.heads.fill(NIL);
    this.tails.fill(NIL);
    this.counts.fill(0);
    this.listBytes.fill(0);
    this.totalBytes = 0;
    this.freeHead = NIL;
    this.neverUsed = 0;
    this.expires?.fill(0);
    this.heap?.clear();
    this.liveWithTtl = 0;
    this.stopSweep();
    // Listeners run last so a listener that touches the store sees it empty and consistent.
    if (evicted !== null && listener !== null) {
      for (const [key, value] of evicted) listener(key, value, "cleared");
    }
  }

  purgeExpired(): number {
    const heap = this.heap;
    if (heap === null || heap.length === 0) return 0;
    const now = this.clock();
    const expires = this.expires!;
    const gens = this.gens!;
    let purged = 0;
    while (heap.peekTime() <= now) {
      const time = heap.peekTime();
      const slot = heap.peekSlot();
      const gen = heap.peekGen();
      heap.pop();
      if (gens[slot] === gen && expires[slot] === time) {
        this.removeSlot(slot, "expired");
        purged++;
      }
    }
    return purged;
  }

  close(): void {
    if (this.closed) return;
    this.clear();
    this.closed = true;
  }

  /** Moves slot `i` to the head of the list it is in. */
  protected moveToHead(i: number, list: number): void {
    const head = this.heads[list]!;
    if (head === i) return;
    const p = this.prev[i]!;
    const n = this.next[i]!;
    // `i` is not the head, so it has a predecessor.
    this.next[p] = n;
    if (n === NIL) this.tails[list] = p;
    else this.prev[n] = p;
    this.prev[i] = NIL;
    this.next[i] = head;
    this.prev[head] = i;
    this.heads[list] = i;
  }

  /** Moves slot `i` from its list to the head of `target`, then trims `target`. */
  protected moveToList(i: number, target: number): void {
    this.unlink(i);
    this.linkHead(i, target);
    this.trim(target);
  }

  private liveSlot(key: string): number | undefined {
    const i = this.index.get(key);
    if (i === undefined) return undefined;
    if (this.expires !== null && this.isExpired(i)) {
      this.removeSlot(i, "expired");
      return undefined;
    }
    return i;
  }

  private isExpired(i: number): boolean {
    const at = this.expires![i]!;
    return at !== 0 && at <= this.clock();
  }

  private expiryFor(options: SetOptions | undefined): number {
    if (options !== undefined) {
      const at = options.expiresAt;
      if (at !== undefined) {
        if (!(at >= 0) || !Number.isFinite(at)) throw invalidArgument(`expiresAt must be a finite time >= 0, got ${at}`);
        return at;
      }
      const ttl = options.ttlMs;
      if (ttl !== undefined) {
        if (!(ttl >= 0) || !Number.isFinite(ttl)) throw invalidArgument(`ttlMs must be a finite number >= 0, got ${ttl}`);
        return ttl === 0 ? 0 : this.clock() + ttl;
      }
    }
    return this.defaultTtlMs === 0 ? 0 : this.clock() + this.defaultTtlMs;
  }

  private insert(key: string, value: V, size: number, expiry: number): boolean {
    const list = this.listForNewKey(key);
    if (size > this.maxListBytes[list]!) return false;
    if (this.counts[list]! + 1 > this.maxCounts[list]! || this.listBytes[list]! + size > this.maxListBytes[list]!) {
      // Expired entries are better victims than live ones.
      if (this.heap !== null && this.heap.peekTime() <= this.clock()) this.purgeExpired();
      const tail = this.tails[list]!;
      const full = this.counts[list]! + 1 > this.maxCounts[list]! || this.listBytes[list]! + size > this.maxListBytes[list]!;
      if (
        full &&
        tail !== NIL &&
        this.counts[list]! <= this.maxCounts[list]! &&
        this.listBytes[list]! - this.sizes[tail]! + size <= this.maxListBytes[list]!
      ) {
        return this.replaceTail(tail, list, key, value, size, expiry);
      }
      while (this.counts[list]! + 1 > this.maxCounts[list]! || this.listBytes[list]! + size > this.maxListBytes[list]!) {
        this.removeSlot(this.tails[list]!, "capacity");
      }
    }
    const i = this.allocSlot();
    this.keyList[i] = key;
    this.vals[i] = value;
    this.sizes[i] = size;
    this.index.set(key, i);
    this.linkHead(i, list);
    if (expiry !== 0) this.setExpiry(i, expiry);
    return true;
  }

  /**
   * The steady state of a full store: evicting the tail alone makes room, so
   * the new entry takes the tail's slot over in place (no unlink, free-list
   * round trip and relink), as a reused slot in the same list.
   */
  private replaceTail(i: number, list: number, key: string, value: V, size: number, expiry: number): boolean {
    const evictedKey = this.keyList[i]!;
    const evictedValue = this.vals[i] as V;
    this.index.delete(evictedKey);
    if (this.expires !== null) {
      if (this.expires[i] !== 0) {
        this.expires[i] = 0;
        this.liveWithTtl--;
      }
      // Invalidates any heap entry still pointing at this slot.
      this.gens![i]!++;
    }
    const delta = size - this.sizes[i]!;
    this.sizes[i] = size;
    this.listBytes[list] = this.listBytes[list]! + delta;
    this.totalBytes += delta;
    this.keyList[i] = key;
    this.vals[i] = value;
    this.index.set(key, i);
    this.moveToHead(i, list);
    if (expiry !== 0) this.setExpiry(i, expiry);
    if (this.onEvict !== null) this.onEvict(evictedKey, evictedValue, "capacity");
    return true;
  }

  private update(i: number, key: string, value: V, size: number, expiry: number): boolean {
    const list = this.listOf === null ? 0 : this.listOf[i]!;
    if (size > this.maxListBytes[list]! || size > MAX_ENTRY_BYTES) {
      // Too large for the list it lives in: start over as a new key (which may not fit either).
      this.removeSlot(i, "replaced");
      return this.insert(key, value, size, expiry);
    }
    const old = this.vals[i] as V;
    this.vals[i] = value;
    const delta = size - this.sizes[i]!;
    this.sizes[i] = size;
    this.listBytes[list] = this.listBytes[list]! + delta;
    this.totalBytes += delta;
    this.setExpiry(i, expiry);
    this.moveToHead(i, list);
    this.trim(list);
    if (old !== value && this.onEvict !== null) this.onEvict(key, old, "replaced");
    return true;
  }

  /** Evicts tails until `list` is within its bounds. The head always fits alone. */
  private trim(list: number): void {
    while (this.counts[list]! > this.maxCounts[list]! || this.listBytes[list]! > this.maxListBytes[list]!) {
      this.removeSlot(this.tails[list]!, "capacity");
    }
  }

  private linkHead(i: number, list: number): void {
    const head = this.heads[list]!;
    this.prev[i] = NIL;
    this.next[i] = head;
    if (head === NIL) this.tails[list] = i;
    else this.prev[head] = i;
    this.heads[list] = i;
    if (this.listOf !== null) this.listOf[i] = list;
    this.counts[list]!++;
    const size = this.sizes[i]!;
    this.listBytes[list] = this.listBytes[list]! + size;
    this.totalBytes += size;
  }

  private unlink(i: number): void {
    const list = this.listOf === null ? 0 : this.listOf[i]!;
    const p = this.prev[i]!;
    const n = this.next[i]!;
    if (p === NIL) this.heads[list] = n;
    else this.next[p] = n;
    if (n === NIL) this.tails[list] = p;
    else this.prev[n] = p;
    this.counts[list]!--;
    const size = this.sizes[i]!;
    this.listBytes[list] = this.listBytes[list]! - size;
    this.totalBytes -= size;
  }

  private removeSlot(i: number, reason: EvictReason): void {
    const key = this.keyList[i]!;
    const value = this.vals[i] as V;
    this.unlink(i);
    this.index.delete(key);
    this.keyList[i] = undefined;
    this.vals[i] = undefined;
    if (this.expires !== null) {
      if (this.expires[i] !== 0) {
        this.expires[i] = 0;
        this.liveWithTtl--;
      }
      // Invalidates any heap entry still pointing at this slot.
      this.gens![i]!++;
    }
    this.next[i] = this.freeHead;
    this.freeHead = i;
    if (this.onEvict !== null) this.onEvict(key, value, reason);
  }

  private allocSlot(): number {
    const free = this.freeHead;
    if (free !== NIL) {
      this.freeHead = this.next[free]!;
      return free;
    }
    if (this.neverUsed === this.capacity) this.grow();
    return this.neverUsed++;
  }

  private grow(): void {
    const capacity = Math.min(this.capacity * 2, this.slotLimit);
    if (capacity <= this.capacity) throw new RangeError("store slot pool exhausted");
    this.next = resized(this.next, capacity);
    this.prev = resized(this.prev, capacity);
    this.sizes = resized(this.sizes, capacity);
    if (this.listOf !== null) this.listOf = resized(this.listOf, capacity);
    if (this.expires !== null) this.expires = resized(this.expires, capacity);
    if (this.gens !== null) this.gens = resized(this.gens, capacity);
    for (let i = this.capacity; i < capacity; i++) {
      this.keyList.push(undefined);
      this.vals.push(undefined);
    }
    this.capacity = capacity;
  }

  private setExpiry(i: number, expiry: number): void {
    if (expiry === 0) {
      if (this.expires !== null && this.expires[i] !== 0) {
        this.expires[i] = 0;
        this.liveWithTtl--;
      }
      return;
    }
    if (this.expires === null) this.enableTtl();
    const expires = this.expires!;
    if (expires[i] === 0) this.liveWithTtl++;
    expires[i] = expiry;
    const heap = this.heap!;
    heap.push(expiry, i, this.gens![i]!);
    // Updates leave stale heap entries behind; rebuild before they dominate.
    if (heap.length > 2 * this.liveWithTtl + 1024) heap.rebuild(this.liveExpiries());
    if (this.sweepTimer === null && this.sweepIntervalMs > 0) this.startSweep();
  }

  private *liveExpiries(): Iterable<readonly [number, number, number]> {
    const expires = this.expires!;
    const gens = this.gens!;
    for (const i of this.index.values()) {
      const at = expires[i]!;
      if (at !== 0) yield [at, i, gens[i]!] as const;
    }
  }

  private enableTtl(): void {
    this.expires = new Float64Array(this.capacity);
    this.gens = new Uint32Array(this.capacity);
    this.heap = new _ExpiryHeap();
  }

  private startSweep(): void {
    const timer = setInterval(() => this.purgeExpired(), this.sweepIntervalMs);
    // The sweep is housekeeping: it must never keep a process alive.
    (timer as { unref?: () => void }).unref?.();
    this.sweepTimer = timer;
  }

  private stopSweep(): void {
    if (this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
  }
}

function resized<T extends Uint32Array | Float64Array | Uint16Array>(array: T, length: number): T {
  const copy = new (array.constructor as new (n: number) => T)(length);
  copy.set(array);
  return copy;
}

function checkTtlOption(name: string, value: number): number {
  if (!(value >= 0) || !Number.isFinite(value)) throw invalidOption(`${name} must be a finite number >= 0, got ${value}`);
  return value;
}

/** Validates an optional positive bound; `undefined` becomes `Infinity`. */
export function _bound(name: string, value: number | undefined, integer: boolean): number {
  if (value === undefined) return Infinity;
  if (!(value > 0) || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw invalidOption(`${name} must be a positive ${integer ? "integer" : "number"}, got ${value}`);
  }
  return value;
}
