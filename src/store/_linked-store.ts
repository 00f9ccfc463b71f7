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

/**
 * "No slot" in the typed-array links: slot 0 is never handed out, so the same
 * constant works for 16- and 32-bit links, and every link value is a small
 * non-negative integer (a sentinel of 2^32 - 1 read from a Uint32Array does
 * not fit an int32 and sends the JIT to slower double arithmetic).
 */
const NIL = 0;
/** Slot indices, doubled to index the links, stay int32 for the same reason. */
const MAX_SLOTS = 0x3ffffffe;
/** Up to this many slots the links are 16-bit, as in lru-cache: 4 bytes per entry less. */
const MAX_NARROW_SLOTS = 0xffff;
const MAX_ENTRY_BYTES = 0xffffffff;
/** Index entries (slot and list packed together) stay below this, so they remain int32 values. */
const MAX_INDEX_ENTRY = 0x7fffffff;
/** Slots preallocated up front when `maxEntries` is known; beyond this the pool doubles on demand. */
const MAX_PREALLOCATED_SLOTS = 1 << 20;
/** With slot 0, the arrays of a store without an entry bound start at 1024. */
const UNBOUNDED_INITIAL_SLOTS = 1023;
/**
 * From this many entries on, new keys enter a small second map and move into
 * the main index in batches. JavaScriptCore's generational collector revisits
 * an old object whole at the next young collection once a reference has been
 * stored into it: one new key in a Map of a million keys made every young
 * collection that followed take ~12 ms. The small map takes those stores, and
 * the main index is written once per batch. Below this size a revisit costs
 * under half a millisecond and one map is simpler and faster.
 */
const YOUNG_INDEX_FROM = 32_768;
/**
 * Keys and values live in chunks of this many slots rather than in one array
 * per store, for the same collector: a store into an old array makes the next
 * young collection revisit all of it (0.9 ms for a million slots), a store
 * into a chunk only that chunk.
 */
const CHUNK_BITS = 10;
const CHUNK_SLOTS = 1 << CHUNK_BITS;
const CHUNK_MASK = CHUNK_SLOTS - 1;
/** The young map moves over once it holds more than 1/64 of the entries (and at least 1/32 of `YOUNG_INDEX_FROM`). */
const YOUNG_INDEX_SHARE_SHIFT = 6;
/** ... or once lookups that reached it outnumber 1/8 of the main index's keys (see `countYoungLookup`). */
const YOUNG_LOOKUPS_SHIFT = 3;

/** Slot links: 16-bit for small stores, 32-bit otherwise; fixed for the life of a store. */
type Links = Uint16Array | Uint32Array;

/** Knobs for tests only, to reach behaviour that otherwise needs tens of thousands of entries. */
export interface _StoreInternals {
  /** Entries from which new keys go to the young map; default `YOUNG_INDEX_FROM`. */
  _youngIndexFrom?: number;
}

/** Per-list bounds; `Infinity` means unbounded. */
export interface _ListLimits {
  maxEntries: number;
  maxBytes: number;
}

/**
 * The machinery both stores share: entries live in numbered slots; keys and
 * values in chunked plain arrays, links, sizes and expiries in typed arrays, so
 * an operation allocates nothing beyond the key's map entry. A store bounded by
 * at most 65,535 entries gets 16-bit links; one that may hold more gets
 * 32-bit links from the start, so a store never switches array types (a hot
 * access that sees both widths is markedly slower). Slots belong to one
 * of several doubly linked recency lists (LRU uses one, LRU-2 two per bucket).
 * Subclasses decide which list a new key enters and what a read hit does.
 *
 * TTL costs nothing until the first entry with an expiry arrives: only then
 * are the expiry array, generation counters and expiry heap allocated.
 *
 * The layout also spares the garbage collector: a large store that keeps
 * taking writes adds little to each young collection (see `YOUNG_INDEX_FROM`
 * and `CHUNK_BITS`), where one Map and two slot arrays as large as the store
 * made each of them revisit all three.
 */
export abstract class _LinkedStore<V> implements Store<V> {
  /**
   * Key to index entry: `(slot << listBits) | list`. A read hit finds the list
   * in the entry it already has in hand instead of in a per-slot array, which
   * in a store larger than the CPU caches saves a memory access per hit.
   */
  private readonly index = new Map<string, number>();
  /**
   * Keys that arrived since the last move into `index` (see `YOUNG_INDEX_FROM`);
   * `null` while there are none. A key is in one of the two maps, never both.
   * Each batch starts a new map, which the collector then counts as young.
   */
  private young: Map<string, number> | null = null;
  /** Lookups that reached `young` since it was created (see `countYoungLookup`). */
  private youngLookups = 0;
  private readonly youngFrom: number;
  private readonly youngMin: number;
  /**
   * Low bits of an index entry that hold its list. Zero with a single list, and
   * when packing could overflow an int32 (a huge slot bound with many lists):
   * then the entry is the bare slot and `listOf` holds the lists.
   */
  protected readonly listBits: number;
  private readonly listMask: number;
  protected readonly heads: Uint32Array;
  protected readonly tails: Uint32Array;
  protected readonly counts: Uint32Array;
  protected readonly listBytes: Float64Array;
  protected readonly maxCounts: Float64Array;
  protected readonly maxListBytes: Float64Array;
  /**
   * Links of slot `i`: next (towards the tail) at `2i`, prev at `2i + 1`. Both
   * usually share a cache line, which in a store larger than the CPU caches
   * saves a memory access on every move.
   */
  protected links: Links;
  /**
   * Entry bytes (key + value; entries are capped below 4 GiB), kept only when a
   * byte bound needs them per slot. Without one, `bytes` is still exact: an
   * entry's size is recomputed when it leaves (`sizeOf` is deterministic by
   * contract), which saves 4 bytes per entry.
   */
  protected sizes: Uint32Array | null;
  /**
   * List of each slot (one byte while there are at most 256 lists), only when
   * there are several lists and index entries cannot carry them.
   */
  protected listOf: Uint8Array | Uint16Array | null;
  /** Key of slot `i` at `keyChunks[i >>> CHUNK_BITS][i & CHUNK_MASK]`; all chunks full-length but the last. */
  private readonly keyChunks: (string | undefined)[][];
  /** Value of slot `i`, laid out as `keyChunks`. */
  private readonly valueChunks: (V | undefined)[][];

  protected expires: Float64Array | null = null;
  private gens: Uint32Array | null = null;
  private heap: _ExpiryHeap | null = null;
  private liveWithTtl = 0;
  private sweepTimer: ReturnType<typeof setInterval> | null = null;

  /** Freed slots form a stack threaded through the next links, so free-slot bookkeeping costs no memory. */
  private freeHead = NIL;
  private neverUsed = 1;
  /** Length of the slot arrays, slot 0 included. */
  private capacity: number;
  private readonly slotLimit: number;
  private totalBytes = 0;
  private closed = false;

  private readonly sizeOf: (value: V) => number;
  private readonly onEvict: EvictListener<V> | null;
  private readonly clock: Clock;
  private readonly defaultTtlMs: number;
  private readonly sweepIntervalMs: number;

  protected constructor(options: StoreOptions<V> & _StoreInternals, limits: readonly _ListLimits[]) {
    this.youngFrom = options._youngIndexFrom ?? YOUNG_INDEX_FROM;
    this.youngMin = this.youngFrom >>> 5;
    this.sizeOf = options.sizeOf ?? (defaultSizeOf as (value: V) => number);
    this.onEvict = options.onEvict ?? null;
    this.clock = options.clock ?? Date.now;
    this.defaultTtlMs = checkTtlOption("defaultTtlMs", options.defaultTtlMs ?? DEFAULT_STORE_OPTIONS.defaultTtlMs);
    this.sweepIntervalMs = checkTtlOption(
      "sweepIntervalMs",
      options.sweepIntervalMs ?? DEFAULT_STORE_OPTIONS.sweepIntervalMs,
    );

    const lists = limits.length;
    this.heads = new Uint32Array(lists);
    this.tails = new Uint32Array(lists);
    this.counts = new Uint32Array(lists);
    this.listBytes = new Float64Array(lists);
    this.maxCounts = Float64Array.from(limits, (l) => l.maxEntries);
    this.maxListBytes = Float64Array.from(limits, (l) => l.maxBytes);

    const totalEntries = limits.reduce((sum, l) => sum + l.maxEntries, 0);
    this.slotLimit = Math.min(totalEntries, MAX_SLOTS);
    this.capacity =
      1 + (Number.isFinite(totalEntries) ? Math.min(this.slotLimit, MAX_PREALLOCATED_SLOTS) : UNBOUNDED_INITIAL_SLOTS);
    const narrow = this.slotLimit <= MAX_NARROW_SLOTS;
    this.links = narrow ? new Uint16Array(2 * this.capacity) : new Uint32Array(2 * this.capacity);
    this.sizes = limits.some((l) => l.maxBytes !== Infinity) ? new Uint32Array(this.capacity) : null;
    const listBits = 32 - Math.clz32(lists - 1);
    const packed = this.slotLimit <= MAX_INDEX_ENTRY >>> listBits;
    this.listBits = packed ? listBits : 0;
    this.listMask = packed ? (1 << listBits) - 1 : 0;
    this.listOf =
      packed || lists === 1 ? null : lists <= 256 ? new Uint8Array(this.capacity) : new Uint16Array(this.capacity);
    this.keyChunks = [];
    this.valueChunks = [];
    growChunks(this.keyChunks, 0, this.capacity);
    growChunks(this.valueChunks, 0, this.capacity);
  }

  /** The list a key that is not in the store enters. */
  protected abstract listForNewKey(key: string): number;
  /** What a read hit on `key` (index entry `entry`, slot `i`) does to recency (and level, for LRU-2). */
  protected abstract touch(key: string, entry: number, i: number): void;

  /** Writes each list's byte bound, for a store bound to `maxBytes` in all, into `bounds`. */
  protected abstract splitByteBound(maxBytes: number, bounds: Float64Array): void;

  /**
   * Moves the byte bound to `maxBytes`, each list keeping its share, and
   * evicts least recently used entries until every list is within its new
   * bound. For a cache that shares one budget with another: a group's main
   * cache takes whatever its hot cache leaves. Only for a store built with a
   * byte bound (it alone tracks entry sizes); `maxBytes` is not checked.
   */
  _setMaxBytes(maxBytes: number): void {
    if (this.sizes === null) throw invalidOption("_setMaxBytes: this store was built without a byte bound");
    this.splitByteBound(maxBytes, this.maxListBytes);
    for (let list = 0; list < this.maxListBytes.length; list++) this.trim(list);
  }

  get size(): number {
    this.purgeExpired();
    return this.entryCount();
  }

  get bytes(): number {
    this.purgeExpired();
    return this.totalBytes;
  }

  /** LRU2Store has its own copy of this method (see there for why): change both together. */
  get(key: string): V | undefined {
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

  peek(key: string): V | undefined {
    const i = this.liveSlot(key);
    return i === undefined ? undefined : this.valueAt(i);
  }

  has(key: string): boolean {
    return this.liveSlot(key) !== undefined;
  }

  expiresAt(key: string): number | undefined {
    const i = this.liveSlot(key);
    if (i === undefined) return undefined;
    return this.expires === null ? 0 : this.expires[i]!;
  }

  /**
   * `expiresAt` of a key just read with `get`, so known to be live: a store
   * that never held an expiring value answers without a second lookup.
   */
  _expiresAtOfFound(key: string): number {
    return this.expires === null ? 0 : (this.expiresAt(key) ?? 0);
  }

  set(key: string, value: V, options?: SetOptions): boolean {
    if (typeof key !== "string") throw invalidArgument(`key must be a string, got ${typeof key}`);
    if (this.closed) return false;
    const expiry = options === undefined && this.defaultTtlMs === 0 ? 0 : this.expiryFor(options);
    const entry = this.entryFor(key);
    if (expiry !== 0 && expiry <= this.clock()) {
      // Already expired on arrival: store nothing, and let no older value survive it.
      if (entry !== undefined) this.removeSlot(entry >> this.listBits, this.listAt(entry), "replaced");
      return false;
    }
    if (entry !== undefined) {
      const i = entry >> this.listBits;
      const list = this.listAt(entry);
      // Same value again (a refresh, the common write of a hot key): only recency
      // and expiry change, and the value need not even be sized.
      if (this.valueAt(i) === value) {
        this.setExpiry(i, expiry);
        this.moveToHead(i, list);
        return true;
      }
      return this.update(i, list, key, value, this.checkedSizeOf(value), expiry);
    }
    const size = utf8Length(key) + this.checkedSizeOf(value);
    if (size > MAX_ENTRY_BYTES) throw invalidArgument(`entry of ${size} bytes is too large (limit ${MAX_ENTRY_BYTES})`);
    return this.insert(key, value, size, expiry);
  }

  delete(key: string): boolean {
    const entry = this.entryFor(key);
    if (entry === undefined) return false;
    const i = entry >> this.listBits;
    const expired = this.expires !== null && this.isExpired(i);
    this.removeSlot(i, this.listAt(entry), expired ? "expired" : "deleted");
    return !expired;
  }

  keys(): string[] {
    const young = this.young;
    return young === null ? [...this.index.keys()] : [...this.index.keys(), ...young.keys()];
  }

  clear(): void {
    const listener = this.onEvict;
    const evicted: [string, V][] | null = listener === null || this.entryCount() === 0 ? null : [];
    if (evicted !== null) {
      const collect = (entry: number, key: string) => evicted.push([key, this.valueAt(entry >> this.listBits) as V]);
      this.index.forEach(collect);
      this.young?.forEach(collect);
    }
    this.index.clear();
    this.young = null;
    this.youngLookups = 0;
    for (const chunk of this.keyChunks) chunk.fill(undefined);
    for (const chunk of this.valueChunks) chunk.fill(undefined);
    this.heads.fill(NIL);
    this.tails.fill(NIL);
    this.counts.fill(0);
    this.listBytes.fill(0);
    this.totalBytes = 0;
    this.freeHead = NIL;
    this.neverUsed = 1;
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
        this.removeSlot(slot, this.listOfSlot(slot), "expired");
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
    const links = this.links;
    const p = links[(i << 1) | 1]!;
    const n = links[i << 1]!;
    // `i` is not the head, so it has a predecessor.
    links[p << 1] = n;
    if (n === NIL) this.tails[list] = p;
    else links[(n << 1) | 1] = p;
    links[(i << 1) | 1] = NIL;
    links[i << 1] = head;
    links[(head << 1) | 1] = i;
    this.heads[list] = i;
  }

  /** Moves `key`, in slot `i`, from `list` to the head of `target`, then trims `target`. */
  protected moveToList(key: string, i: number, list: number, target: number): void {
    this.relink(key, i, list, target);
    this.trim(target);
  }

  /**
   * `moveToList`, but what `target` then holds beyond its bounds moves on to
   * the head of `spill` (trimmed in turn) instead of leaving the store; an
   * entry too large for `spill` on its own leaves.
   */
  protected moveToListSpilling(key: string, i: number, list: number, target: number, spill: number): void {
    this.relink(key, i, list, target);
    while (this.counts[target]! > this.maxCounts[target]! || this.listBytes[target]! > this.maxListBytes[target]!) {
      const tail = this.tails[target]!;
      if (this.fitsList(tail, spill)) this.moveToList(this.keyAt(tail)!, tail, target, spill);
      else this.removeSlot(tail, target, "capacity");
    }
  }

  private relink(key: string, i: number, list: number, target: number): void {
    this.unlink(i, list);
    this.linkHead(i, target);
    if (this.listOf === null) this.replaceEntry(key, this.entryOf(i, target));
    const sizes = this.sizes;
    if (sizes !== null) {
      const size = sizes[i]!;
      this.listBytes[list] = this.listBytes[list]! - size;
      this.listBytes[target] = this.listBytes[target]! + size;
    }
  }

  /** Whether slot `i` fits the byte bound of `list` on its own. */
  protected fitsList(i: number, list: number): boolean {
    const sizes = this.sizes;
    return sizes === null || sizes[i]! <= this.maxListBytes[list]!;
  }

  /** The index entry of slot `i` in `list`. */
  private entryOf(i: number, list: number): number {
    return (i << this.listBits) | (list & this.listMask);
  }

  /** The list of index entry `entry`. */
  protected listAt(entry: number): number {
    const listOf = this.listOf;
    // Unpacked entries are bare slots.
    return listOf === null ? entry & this.listMask : listOf[entry]!;
  }

  /** The list of slot `i`, which is in use; off the hot paths, as it may look the key up. */
  private listOfSlot(i: number): number {
    const listOf = this.listOf;
    if (listOf !== null) return listOf[i]!;
    return this.listMask === 0 ? 0 : this.entryFor(this.keyAt(i)!)! & this.listMask;
  }

  private keyAt(i: number): string | undefined {
    return this.keyChunks[i >>> CHUNK_BITS]![i & CHUNK_MASK];
  }

  protected valueAt(i: number): V | undefined {
    return this.valueChunks[i >>> CHUNK_BITS]![i & CHUNK_MASK];
  }

  private setValueAt(i: number, value: V): void {
    this.valueChunks[i >>> CHUNK_BITS]![i & CHUNK_MASK] = value;
  }

  private fillSlot(i: number, key: string | undefined, value: V | undefined): void {
    const chunk = i >>> CHUNK_BITS;
    const at = i & CHUNK_MASK;
    this.keyChunks[chunk]![at] = key;
    this.valueChunks[chunk]![at] = value;
  }

  /** The index entry of `key`, or `undefined` when the store does not hold it. */
  protected entryFor(key: string): number | undefined {
    const entry = this.index.get(key);
    if (entry !== undefined) return entry;
    const young = this.young;
    if (young === null) return undefined;
    const found = young.get(key);
    this.countYoungLookup(young);
    return found;
  }

  /**
   * Every lookup that reaches the young map has paid for a second one. Once
   * those add up to about what a batch move costs (one revisit of the main
   * index, ~12 ns per key), the batch moves early: a store that reads much
   * and writes little does not keep paying for a young map.
   */
  private countYoungLookup(young: Map<string, number>): void {
    if (++this.youngLookups > this.index.size >>> YOUNG_LOOKUPS_SHIFT) this.promoteYoung(young);
  }

  private entryCount(): number {
    const young = this.young;
    return young === null ? this.index.size : this.index.size + young.size;
  }

  /** Indexes a key the store does not hold yet. */
  private addEntry(key: string, entry: number): void {
    const index = this.index;
    if (index.size < this.youngFrom) {
      index.set(key, entry);
      return;
    }
    let young = this.young;
    if (young === null) young = this.young = new Map();
    young.set(key, entry);
    const count = young.size;
    if (count > this.youngMin && count > (index.size + count) >>> YOUNG_INDEX_SHARE_SHIFT) this.promoteYoung(young);
  }

  /** One write into the main index for a whole batch of new keys (see `YOUNG_INDEX_FROM`). */
  private promoteYoung(young: Map<string, number>): void {
    const index = this.index;
    young.forEach((entry, key) => index.set(key, entry));
    this.young = null;
    this.youngLookups = 0;
  }

  /** Changes the entry of a key the store holds. */
  private replaceEntry(key: string, entry: number): void {
    const young = this.young;
    if (young === null) {
      this.index.set(key, entry);
      return;
    }
    if (young.has(key)) young.set(key, entry);
    else this.index.set(key, entry);
    this.countYoungLookup(young);
  }

  private deleteEntry(key: string): void {
    if (!this.index.delete(key)) this.young?.delete(key);
  }

  private liveSlot(key: string): number | undefined {
    const entry = this.entryFor(key);
    if (entry === undefined) return undefined;
    const i = entry >> this.listBits;
    if (this.expires !== null && this.isExpired(i)) {
      this.removeSlot(i, this.listAt(entry), "expired");
      return undefined;
    }
    return i;
  }

  protected isExpired(i: number): boolean {
    const at = this.expires![i]!;
    return at !== 0 && at <= this.clock();
  }

  private checkedSizeOf(value: V): number {
    const valueSize = this.sizeOf(value);
    if (valueSize !== valueSize >>> 0) {
      throw invalidArgument(`sizeOf must return a whole number of bytes below 2^32, got ${valueSize}`);
    }
    return valueSize;
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
      const sizes = this.sizes;
      const full = this.counts[list]! + 1 > this.maxCounts[list]! || this.listBytes[list]! + size > this.maxListBytes[list]!;
      if (
        full &&
        tail !== NIL &&
        this.counts[list]! <= this.maxCounts[list]! &&
        (sizes === null || this.listBytes[list]! - sizes[tail]! + size <= this.maxListBytes[list]!)
      ) {
        return this.replaceTail(tail, list, key, value, size, expiry);
      }
      while (this.counts[list]! + 1 > this.maxCounts[list]! || this.listBytes[list]! + size > this.maxListBytes[list]!) {
        this.removeSlot(this.tails[list]!, list, "capacity");
      }
    }
    const i = this.allocSlot();
    this.fillSlot(i, key, value);
    this.addEntry(key, this.entryOf(i, list));
    this.linkHead(i, list);
    this.totalBytes += size;
    const sizes = this.sizes;
    if (sizes !== null) {
      sizes[i] = size;
      this.listBytes[list] = this.listBytes[list]! + size;
    }
    if (expiry !== 0) this.setExpiry(i, expiry);
    return true;
  }

  /**
   * The steady state of a full store: evicting the tail alone makes room, so
   * the new entry takes the tail's slot over in place (no unlink, free-list
   * round trip and relink), as a reused slot in the same list.
   */
  private replaceTail(i: number, list: number, key: string, value: V, size: number, expiry: number): boolean {
    const evictedKey = this.keyAt(i)!;
    const evictedValue = this.valueAt(i) as V;
    const delta = size - this.entrySize(i);
    this.deleteEntry(evictedKey);
    if (this.expires !== null) {
      if (this.expires[i] !== 0) {
        this.expires[i] = 0;
        this.liveWithTtl--;
      }
      // Invalidates any heap entry still pointing at this slot.
      this.gens![i]!++;
    }
    this.totalBytes += delta;
    const sizes = this.sizes;
    if (sizes !== null) {
      sizes[i] = size;
      this.listBytes[list] = this.listBytes[list]! + delta;
    }
    this.fillSlot(i, key, value);
    this.addEntry(key, this.entryOf(i, list));
    this.moveTailToHead(i, list);
    if (expiry !== 0) this.setExpiry(i, expiry);
    if (this.onEvict !== null) this.onEvict(evictedKey, evictedValue, "capacity");
    return true;
  }

  private update(i: number, list: number, key: string, value: V, valueSize: number, expiry: number): boolean {
    const old = this.valueAt(i) as V;
    const oldValueSize = this.sizeOf(old);
    // The key is unchanged, so its byte count is the entry size minus the old value's.
    const sizes = this.sizes;
    const size = (sizes === null ? utf8Length(key) : sizes[i]! - oldValueSize) + valueSize;
    if (size > this.maxListBytes[list]! || size > MAX_ENTRY_BYTES) {
      // Too large for the list it lives in: start over as a new key (which may not fit either).
      this.removeSlot(i, list, "replaced");
      return this.insert(key, value, size, expiry);
    }
    this.setValueAt(i, value);
    const delta = valueSize - oldValueSize;
    this.totalBytes += delta;
    if (sizes !== null) {
      sizes[i] = size;
      this.listBytes[list] = this.listBytes[list]! + delta;
    }
    this.setExpiry(i, expiry);
    this.moveToHead(i, list);
    this.trim(list);
    if (old !== value && this.onEvict !== null) this.onEvict(key, old, "replaced");
    return true;
  }

  /** Evicts tails until `list` is within its bounds. The head always fits alone. */
  private trim(list: number): void {
    while (this.counts[list]! > this.maxCounts[list]! || this.listBytes[list]! > this.maxListBytes[list]!) {
      this.removeSlot(this.tails[list]!, list, "capacity");
    }
  }

  /** Moves the tail `i` of `list` to its head: the steady-state eviction path, one branch shorter than `moveToHead`. */
  private moveTailToHead(i: number, list: number): void {
    const head = this.heads[list]!;
    if (head === i) return;
    const links = this.links;
    const p = links[(i << 1) | 1]!;
    links[p << 1] = NIL;
    this.tails[list] = p;
    links[(i << 1) | 1] = NIL;
    links[i << 1] = head;
    links[(head << 1) | 1] = i;
    this.heads[list] = i;
  }

  /** Links slot `i` in at the head of `list`; byte accounting is the caller's. */
  private linkHead(i: number, list: number): void {
    const head = this.heads[list]!;
    const links = this.links;
    links[(i << 1) | 1] = NIL;
    links[i << 1] = head;
    if (head === NIL) this.tails[list] = i;
    else links[(head << 1) | 1] = i;
    this.heads[list] = i;
    if (this.listOf !== null) this.listOf[i] = list;
    this.counts[list]!++;
  }

  /** Unlinks slot `i` from `list`; byte accounting is the caller's. */
  private unlink(i: number, list: number): void {
    const links = this.links;
    const p = links[(i << 1) | 1]!;
    const n = links[i << 1]!;
    if (p === NIL) this.heads[list] = n;
    else links[p << 1] = n;
    if (n === NIL) this.tails[list] = p;
    else links[(n << 1) | 1] = p;
    this.counts[list]!--;
  }

  /** Bytes of the entry in slot `i`, recomputed when no per-slot sizes are kept. */
  private entrySize(i: number): number {
    const sizes = this.sizes;
    return sizes !== null ? sizes[i]! : utf8Length(this.keyAt(i)!) + this.sizeOf(this.valueAt(i) as V);
  }

  /** Removes slot `i`, which is in `list`. */
  protected removeSlot(i: number, list: number, reason: EvictReason): void {
    const key = this.keyAt(i)!;
    const value = this.valueAt(i) as V;
    const size = this.entrySize(i);
    this.totalBytes -= size;
    if (this.sizes !== null) this.listBytes[list] = this.listBytes[list]! - size;
    this.unlink(i, list);
    this.deleteEntry(key);
    this.fillSlot(i, undefined, undefined);
    if (this.expires !== null) {
      if (this.expires[i] !== 0) {
        this.expires[i] = 0;
        this.liveWithTtl--;
      }
      // Invalidates any heap entry still pointing at this slot.
      this.gens![i]!++;
    }
    this.links[i << 1] = this.freeHead;
    this.freeHead = i;
    if (this.onEvict !== null) this.onEvict(key, value, reason);
  }

  private allocSlot(): number {
    const free = this.freeHead;
    if (free !== NIL) {
      this.freeHead = this.links[free << 1]!;
      return free;
    }
    if (this.neverUsed === this.capacity) this.grow();
    return this.neverUsed++;
  }

  private grow(): void {
    const capacity = Math.min(this.capacity * 2, this.slotLimit + 1);
    if (capacity <= this.capacity) throw new RangeError("store slot pool exhausted");
    this.links = resized(this.links, 2 * capacity);
    if (this.sizes !== null) this.sizes = resized(this.sizes, capacity);
    if (this.listOf !== null) this.listOf = resized(this.listOf, capacity);
    if (this.expires !== null) this.expires = resized(this.expires, capacity);
    if (this.gens !== null) this.gens = resized(this.gens, capacity);
    growChunks(this.keyChunks, this.capacity, capacity);
    growChunks(this.valueChunks, this.capacity, capacity);
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
    for (const map of [this.index, this.young]) {
      if (map === null) continue;
      for (const entry of map.values()) {
        const i = entry >> this.listBits;
        const at = expires[i]!;
        if (at !== 0) yield [at, i, gens[i]!] as const;
      }
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

/** Extends chunked slots from `from` to `to` slots: the last chunk up to full length, then new chunks. */
function growChunks<T>(chunks: (T | undefined)[][], from: number, to: number): void {
  let slots = from;
  if (slots % CHUNK_SLOTS !== 0) {
    const last = chunks[chunks.length - 1]!;
    while (last.length < CHUNK_SLOTS && slots < to) {
      last.push(undefined);
      slots++;
    }
  }
  while (slots < to) {
    const length = Math.min(CHUNK_SLOTS, to - slots);
    chunks.push(new Array<T | undefined>(length).fill(undefined));
    slots += length;
  }
}

function resized<T extends Uint8Array | Uint16Array | Uint32Array | Float64Array>(array: T, length: number): T {
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
