/**
 * Randomized model test: a million random operations against each store and
 * against a deliberately naive reference model (ordered Maps, linear scans),
 * comparing every observable result: returned values, sizes, byte counts,
 * expiry times and the eviction events each operation caused.
 */
import { expect, test } from "bun:test";
import { hash32 } from "../../src/cluster/hash.ts";
import type { _StoreInternals } from "../../src/store/_linked-store.ts";
import { createStore, type LRU2StoreOptions, type Store } from "../../src/store/index.ts";
import { FakeClock } from "../_support/clock.ts";
import { randomInt, seededRandom } from "../_support/random.ts";

interface Limits {
  maxEntries: number;
  maxBytes: number;
}

interface ModelEntry {
  value: Uint8Array;
  size: number;
  expiry: number;
}

/** The behaviour both stores promise, written as plainly as possible. */
class Model {
  /** One Map per recency list, iterated oldest first. */
  private readonly lists: Map<string, ModelEntry>[];
  private readonly where = new Map<string, number>();

  constructor(
    private readonly limits: Limits[],
    private readonly listFor: (key: string) => number,
    private readonly twoLevels: boolean,
    /** LRU-2 only: a level-2 victim moves to level 1's head (or is dropped). */
    private readonly demote: boolean,
    private readonly clock: FakeClock,
    private readonly events: string[],
  ) {
    this.lists = limits.map(() => new Map());
  }

  get(key: string): Uint8Array | undefined {
    const entry = this.live(key);
    if (entry === undefined) return undefined;
    const list = this.where.get(key)!;
    const promote = this.twoLevels && list % 2 === 0 && entry.size <= this.limits[list + 1]!.maxBytes;
    this.lists[list]!.delete(key);
    const target = promote ? list + 1 : list;
    this.lists[target]!.set(key, entry);
    this.where.set(key, target);
    if (promote && this.demote) this.spill(target, list);
    else this.trim(target);
    return entry.value;
  }

  peek(key: string): Uint8Array | undefined {
    return this.live(key)?.value;
  }

  expiresAt(key: string): number | undefined {
    return this.live(key)?.expiry;
  }

  set(key: string, value: Uint8Array, size: number, expiry: number): boolean {
    if (expiry !== 0 && expiry <= this.clock.now) {
      if (this.where.has(key)) this.remove(key, "replaced");
      return false;
    }
    const list = this.where.get(key);
    if (list !== undefined) {
      const old = this.lists[list]!.get(key)!;
      if (size <= this.limits[list]!.maxBytes) {
        this.lists[list]!.delete(key);
        this.lists[list]!.set(key, { value, size, expiry });
        this.trim(list);
        if (old.value !== value) this.events.push(`${key}:replaced`);
        return true;
      }
      this.remove(key, "replaced");
    }
    const target = this.listFor(key);
    const limit = this.limits[target]!;
    if (size > limit.maxBytes) return false;
    const fits = () => this.lists[target]!.size + 1 <= limit.maxEntries && this.bytesOf(target) + size <= limit.maxBytes;
    if (!fits()) {
      this.purge();
      while (!fits()) this.remove(this.lists[target]!.keys().next().value!, "capacity");
    }
    this.lists[target]!.set(key, { value, size, expiry });
    this.where.set(key, target);
    return true;
  }

  delete(key: string): boolean {
    const list = this.where.get(key);
    if (list === undefined) return false;
    if (this.expired(this.lists[list]!.get(key)!)) {
      this.remove(key, "expired");
      return false;
    }
    this.remove(key, "deleted");
    return true;
  }

  clear(): void {
    for (const key of [...this.where.keys()]) this.remove(key, "cleared");
  }

  purge(): number {
    let purged = 0;
    for (const list of this.lists) {
      for (const [key, entry] of [...list]) {
        if (this.expired(entry)) {
          this.remove(key, "expired");
          purged++;
        }
      }
    }
    return purged;
  }

  size(): number {
    this.purge();
    return this.where.size;
  }

  keys(): string[] {
    return [...this.where.keys()];
  }

  bytes(): number {
    this.purge();
    return this.lists.reduce((sum, _list, i) => sum + this.bytesOf(i), 0);
  }

  private live(key: string): ModelEntry | undefined {
    const list = this.where.get(key);
    if (list === undefined) return undefined;
    const entry = this.lists[list]!.get(key)!;
    if (this.expired(entry)) {
      this.remove(key, "expired");
      return undefined;
    }
    return entry;
  }

  private expired(entry: ModelEntry): boolean {
    return entry.expiry !== 0 && entry.expiry <= this.clock.now;
  }

  private bytesOf(list: number): number {
    let sum = 0;
    for (const entry of this.lists[list]!.values()) sum += entry.size;
    return sum;
  }

  private trim(list: number): void {
    const limit = this.limits[list]!;
    while (this.lists[list]!.size > limit.maxEntries || this.bytesOf(list) > limit.maxBytes) {
      this.remove(this.lists[list]!.keys().next().value!, "capacity");
    }
  }

  /** Moves `from`'s oldest entries beyond its bounds to `to` (trimmed after each); one too large for `to` leaves. */
  private spill(from: number, to: number): void {
    const limit = this.limits[from]!;
    while (this.lists[from]!.size > limit.maxEntries || this.bytesOf(from) > limit.maxBytes) {
      const [key, entry] = this.lists[from]!.entries().next().value!;
      if (entry.size > this.limits[to]!.maxBytes) {
        this.remove(key, "capacity");
        continue;
      }
      this.lists[from]!.delete(key);
      this.lists[to]!.set(key, entry);
      this.where.set(key, to);
      this.trim(to);
    }
  }

  private remove(key: string, reason: string): void {
    const list = this.where.get(key)!;
    this.lists[list]!.delete(key);
    this.where.delete(key);
    this.events.push(`${key}:${reason}`);
  }
}

interface Scenario {
  name: string;
  operations: number;
  seed: number;
  keys: number;
  largeValue: number;
  build(clock: FakeClock, onEvict: (key: string, reason: string) => void): Store;
  limits: Limits[];
  listFor(key: string): number;
  twoLevels: boolean;
  /** LRU-2 scenarios built with `level2Victims: "drop"`. */
  drop?: boolean;
}

function lru2Limits(buckets: number, level1: Limits, level2: Limits): Limits[] {
  return Array.from({ length: buckets * 2 }, (_, i) => (i % 2 === 0 ? level1 : level2));
}

/** An LRUStore under `bounds` (`Infinity`: no such bound), 300,000 operations over 300 keys. */
function lruScenario(what: string, bounds: Limits, seed: number): Scenario {
  return {
    name: `LRUStore (${what})`,
    operations: 300_000,
    seed,
    keys: 300,
    largeValue: 1200,
    build: (clock, onEvict) =>
      createStore("lru", {
        ...(bounds.maxEntries === Infinity ? {} : { maxEntries: bounds.maxEntries }),
        ...(bounds.maxBytes === Infinity ? {} : { maxBytes: bounds.maxBytes }),
        clock: clock.read,
        sweepIntervalMs: 0,
        onEvict: (key, _v, reason) => onEvict(key, reason),
      }),
    limits: [bounds],
    listFor: () => 0,
    twoLevels: false,
  };
}

/**
 * An LRU-2 store bounded by bytes only (so its slot count is unbounded and
 * list numbers cannot be packed into index entries), each bucket split half
 * and half between its levels.
 */
function lru2BytesOnly(what: string, shape: { buckets: number; bytesPerBucket: number; seed: number; keys: number }): Scenario {
  const { buckets, bytesPerBucket } = shape;
  const level: Limits = { maxEntries: Infinity, maxBytes: bytesPerBucket / 2 };
  return {
    name: `LRU2Store (${buckets} buckets, bytes bounded only: ${what})`,
    operations: 300_000,
    seed: shape.seed,
    keys: shape.keys,
    largeValue: 600,
    build: (clock, onEvict) =>
      createStore("lru2", {
        maxBytes: buckets * bytesPerBucket,
        buckets,
        clock: clock.read,
        sweepIntervalMs: 0,
        onEvict: (key, _v, reason) => onEvict(key, reason),
      }),
    limits: lru2Limits(buckets, level, level),
    listFor: (key) => (hash32(key) & (buckets - 1)) * 2,
    twoLevels: true,
  };
}

/** LRU-2 over 4 buckets of 32 entries and 1000 bytes each, split half and half. */
function evenLevels(victims: "demoted" | "dropped", operations: number, seed: number): Scenario {
  const drop = victims === "dropped";
  return {
    name: `LRU2Store (4 buckets, even levels, level-2 victims ${victims})`,
    operations,
    seed,
    keys: 300,
    largeValue: 600,
    build: (clock, onEvict) =>
      createStore("lru2", {
        maxEntries: 128,
        maxBytes: 4000,
        buckets: 4,
        level2Victims: drop ? "drop" : "demote",
        clock: clock.read,
        sweepIntervalMs: 0,
        onEvict: (key, _v, reason) => onEvict(key, reason),
      }),
    limits: lru2Limits(4, { maxEntries: 16, maxBytes: 500 }, { maxEntries: 16, maxBytes: 500 }),
    listFor: (key) => (hash32(key) & 3) * 2,
    twoLevels: true,
    drop,
  };
}

const scenarios: Scenario[] = [
  {
    name: "LRUStore (entries and bytes bounded)",
    operations: 1_000_000,
    seed: 1,
    keys: 300,
    largeValue: 1200,
    build: (clock, onEvict) =>
      createStore("lru", {
        maxEntries: 100,
        maxBytes: 3000,
        clock: clock.read,
        sweepIntervalMs: 0,
        onEvict: (key, _v, reason) => onEvict(key, reason),
      }),
    limits: [{ maxEntries: 100, maxBytes: 3000 }],
    listFor: () => 0,
    twoLevels: false,
  },
  evenLevels("demoted", 1_000_000, 2),
  evenLevels("dropped", 300_000, 11),
  {
    // Level 2's byte share is three times level 1's: a value grown in level 2 may not fit level 1 when demoted.
    name: "LRU2Store (2 buckets, a quarter for level 1)",
    operations: 250_000,
    seed: 3,
    keys: 200,
    largeValue: 700,
    build: (clock, onEvict) =>
      createStore("lru2", {
        maxEntries: 64,
        maxBytes: 2000,
        buckets: 2,
        level1Share: 0.25,
        clock: clock.read,
        sweepIntervalMs: 0,
        onEvict: (key, _v, reason) => onEvict(key, reason),
      }),
    // Per bucket: 32 entries (8 + 24) and 1000 bytes (250 + 750).
    limits: lru2Limits(2, { maxEntries: 8, maxBytes: 250 }, { maxEntries: 24, maxBytes: 750 }),
    listFor: (key) => (hash32(key) & 1) * 2,
    twoLevels: true,
  },
  lruScenario("entries bounded only: sizes recomputed on removal", { maxEntries: 100, maxBytes: Infinity }, 4),
  lruScenario("bytes bounded only: 32-bit links", { maxEntries: Infinity, maxBytes: 3000 }, 5),
  {
    name: "LRU2Store (256 buckets, list numbers packed into index entries, entries bounded only)",
    operations: 300_000,
    seed: 6,
    keys: 3000,
    largeValue: 600,
    build: (clock, onEvict) =>
      createStore("lru2", {
        maxEntries: 1024,
        buckets: 256,
        clock: clock.read,
        sweepIntervalMs: 0,
        onEvict: (key, _v, reason) => onEvict(key, reason),
      }),
    // Per bucket: 4 entries, split half and half.
    limits: lru2Limits(256, { maxEntries: 2, maxBytes: Infinity }, { maxEntries: 2, maxBytes: Infinity }),
    listFor: (key) => (hash32(key) & 255) * 2,
    twoLevels: true,
  },
  lru2BytesOnly("too many slots to pack, list numbers kept per slot", { buckets: 4, bytesPerBucket: 1000, seed: 7, keys: 300 }),
  lru2BytesOnly("16-bit list numbers kept per slot", { buckets: 512, bytesPerBucket: 200, seed: 8, keys: 3000 }),
  {
    // From 64 entries on, new keys go to the young map, which moves over every 2-3 new keys.
    name: "LRUStore (young index from 64 entries, entries and bytes bounded)",
    operations: 300_000,
    seed: 9,
    keys: 400,
    largeValue: 1200,
    build: (clock, onEvict) => createStore("lru", youngIndexed(64, { maxEntries: 200, maxBytes: 6000, clock, onEvict })),
    limits: [{ maxEntries: 200, maxBytes: 6000 }],
    listFor: () => 0,
    twoLevels: false,
  },
  {
    name: "LRU2Store (young index from 64 entries, 4 buckets, bytes bounded only: slots grow past a chunk)",
    operations: 300_000,
    seed: 10,
    keys: 3000,
    largeValue: 600,
    build: (clock, onEvict) =>
      createStore("lru2", youngIndexed(64, { maxBytes: 4 * 12_000, buckets: 4, clock, onEvict })),
    limits: lru2Limits(4, { maxEntries: Infinity, maxBytes: 6000 }, { maxEntries: Infinity, maxBytes: 6000 }),
    listFor: (key) => (hash32(key) & 3) * 2,
    twoLevels: true,
  },
];

/** Store options with the young index switched on from `from` entries (see `YOUNG_INDEX_FROM`). */
function youngIndexed(
  from: number,
  shape: Pick<LRU2StoreOptions, "maxEntries" | "maxBytes" | "buckets"> & {
    clock: FakeClock;
    onEvict: (key: string, reason: string) => void;
  },
): LRU2StoreOptions & _StoreInternals {
  const { clock, onEvict, ...bounds } = shape;
  return {
    ...bounds,
    clock: clock.read,
    sweepIntervalMs: 0,
    onEvict: (key, _v, reason) => onEvict(key, reason),
    _youngIndexFrom: from,
  };
}

for (const scenario of scenarios) {
  test(`${scenario.name} matches the reference model over ${scenario.operations} random operations`, () => {
    const clock = new FakeClock();
    const storeEvents: string[] = [];
    const modelEvents: string[] = [];
    const store = scenario.build(clock, (key, reason) => storeEvents.push(`${key}:${reason}`));
    const model = new Model(scenario.limits, scenario.listFor, scenario.twoLevels, scenario.drop !== true, clock, modelEvents);
    const random = seededRandom(scenario.seed);
    const keys = Array.from({ length: scenario.keys }, (_, i) => (i % 7 === 0 ? `ключ-${i}` : `key-${i}`));
    const totalMaxEntries = scenario.limits.reduce((s, l) => s + l.maxEntries, 0);
    const totalMaxBytes = scenario.limits.reduce((s, l) => s + l.maxBytes, 0);
    const lastValue = new Map<string, Uint8Array>();
    let mismatches = 0;

    const check = (op: number, what: string, actual: unknown, expected: unknown) => {
      if (actual !== expected && mismatches++ < 5) {
        expect(`op ${op} ${what}: ${String(actual)}`).toBe(`op ${op} ${what}: ${String(expected)}`);
      }
    };

    for (let op = 0; op < scenario.operations; op++) {
      const key = keys[randomInt(random, keys.length)]!;
      const r = random();
      if (r < 0.35) {
        check(op, `get ${key}`, store.get(key), model.get(key));
      } else if (r < 0.4) {
        check(op, `peek ${key}`, store.peek(key), model.peek(key));
      } else if (r < 0.45) {
        check(op, `has ${key}`, store.has(key), model.peek(key) !== undefined);
      } else if (r < 0.5) {
        check(op, `expiresAt ${key}`, store.expiresAt(key), model.expiresAt(key));
      } else if (r < 0.8) {
        const reuse = random() < 0.05 ? lastValue.get(key) : undefined;
        const length = random() < 0.05 ? randomInt(random, scenario.largeValue) : randomInt(random, 30);
        const value = reuse ?? new Uint8Array(length);
        lastValue.set(key, value);
        const size = new TextEncoder().encode(key).length + value.length;
        const t = random();
        const ttlMs = t < 0.5 ? undefined : t < 0.6 ? 0 : 1 + randomInt(random, 200);
        const expiry = ttlMs === undefined || ttlMs === 0 ? 0 : clock.now + ttlMs;
        check(op, `set ${key}`, store.set(key, value, ttlMs === undefined ? undefined : { ttlMs }), model.set(key, value, size, expiry));
      } else if (r < 0.9) {
        check(op, `delete ${key}`, store.delete(key), model.delete(key));
      } else if (r < 0.95) {
        clock.advance(randomInt(random, 40));
      } else if (r < 0.96) {
        check(op, "purgeExpired", store.purgeExpired(), model.purge());
      } else if (r < 0.99) {
        check(op, "size", store.size, model.size());
        check(op, "bytes", store.bytes, model.bytes());
      } else if (r < 0.99002) {
        store.clear();
        model.clear();
      }
      if (op % 1000 === 0) {
        check(op, "purgeExpired", store.purgeExpired(), model.purge());
        check(op, "keys", store.keys().sort().join(" "), model.keys().sort().join(" "));
        check(op, "size", store.size, model.size());
        check(op, "bytes", store.bytes, model.bytes());
        expect(store.size).toBeLessThanOrEqual(totalMaxEntries);
        expect(store.bytes).toBeLessThanOrEqual(totalMaxBytes);
      }
      if (storeEvents.length !== 0 || modelEvents.length !== 0) {
        // Entries expiring together may be reported in any order: compare as sets per operation.
        check(op, "evictions", storeEvents.sort().join(" "), modelEvents.sort().join(" "));
        storeEvents.length = 0;
        modelEvents.length = 0;
      }
    }
    expect(mismatches).toBe(0);
    store.close();
  }, 120_000);
}
