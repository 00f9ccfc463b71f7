import { describe, expect, test } from "bun:test";
import { GCacheError } from "../../src/errors.ts";
import { createStore, type EvictReason, type LRU2StoreOptions, type Store, type StoreKind } from "../../src/store/index.ts";
import { FakeClock } from "../_support/clock.ts";
import { randomInt, seededRandom } from "../_support/random.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined) => (value === undefined ? undefined : new TextDecoder().decode(value));

type Event = [key: string, value: string | undefined, reason: EvictReason];

function make(kind: StoreKind, options: LRU2StoreOptions = {}) {
  const clock = new FakeClock();
  const events: Event[] = [];
  const store: Store = createStore(kind, {
    maxEntries: 1000,
    buckets: 1,
    clock: clock.read,
    sweepIntervalMs: 0,
    onEvict: (key, value, reason) => events.push([key, text(value), reason]),
    ...options,
  });
  return { store, clock, events };
}

function errorOf(fn: () => unknown): GCacheError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(GCacheError);
    return error as GCacheError;
  }
  throw new Error("expected a GCacheError, nothing was thrown");
}

for (const kind of ["lru", "lru2"] as const) {
  describe(`${kind} store contract`, () => {
    test("get returns what set stored; missing keys are undefined", () => {
      const { store } = make(kind);
      expect(store.get("a")).toBeUndefined();
      expect(store.set("a", bytes("1"))).toBe(true);
      expect(text(store.get("a"))).toBe("1");
      expect(text(store.peek("a"))).toBe("1");
      expect(store.has("a")).toBe(true);
      expect(store.has("b")).toBe(false);
      expect(store.size).toBe(1);
    });

    test("replacing reports the old value once; storing the same value again reports nothing", () => {
      const { store, events } = make(kind);
      const v2 = bytes("2");
      store.set("a", bytes("1"));
      store.set("a", v2);
      store.set("a", v2);
      expect(events).toEqual([["a", "1", "replaced"]]);
      expect(text(store.get("a"))).toBe("2");
      expect(store.size).toBe(1);
    });

    test("delete removes a live key once and reports it", () => {
      const { store, events } = make(kind);
      store.set("a", bytes("1"));
      expect(store.delete("a")).toBe(true);
      expect(store.delete("a")).toBe(false);
      expect(store.get("a")).toBeUndefined();
      expect(events).toEqual([["a", "1", "deleted"]]);
      expect(store.size).toBe(0);
      expect(store.bytes).toBe(0);
    });

    test("clear reports every entry, empties the store and leaves it usable", () => {
      const { store, events } = make(kind);
      store.set("a", bytes("1"));
      store.set("b", bytes("2"), { ttlMs: 1000 });
      store.clear();
      expect(events.sort()).toEqual([
        ["a", "1", "cleared"],
        ["b", "2", "cleared"],
      ]);
      expect(store.size).toBe(0);
      expect(store.bytes).toBe(0);
      expect(store.get("a")).toBeUndefined();
      store.set("c", bytes("3"));
      expect(text(store.get("c"))).toBe("3");
      expect(store.size).toBe(1);
    });

    test("bytes counts UTF-8 key bytes plus value bytes", () => {
      const { store } = make(kind);
      store.set("ab", new Uint8Array(10)); // 2 + 10
      store.set("é", new Uint8Array(1)); // 2 + 1
      store.set("😀", new Uint8Array(0)); // 4 + 0
      store.set("水", new Uint8Array(5)); // 3 + 5
      expect(store.bytes).toBe(12 + 3 + 4 + 8);
      store.set("ab", new Uint8Array(1));
      expect(store.bytes).toBe(3 + 3 + 4 + 8);
      store.delete("水");
      store.delete("é");
      store.delete("😀");
      store.delete("ab");
      expect(store.bytes).toBe(0);
    });

    test("a TTL expires at its time, lazily on read, and is reported as expired", () => {
      const { store, clock, events } = make(kind);
      store.set("a", bytes("1"), { ttlMs: 100 });
      expect(store.expiresAt("a")).toBe(clock.now + 100);
      clock.advance(99);
      expect(text(store.get("a"))).toBe("1");
      clock.advance(1);
      expect(store.get("a")).toBeUndefined();
      expect(store.has("a")).toBe(false);
      expect(events).toEqual([["a", "1", "expired"]]);
    });

    test("no TTL and a TTL of 0 both mean the entry never expires", () => {
      const { store, clock } = make(kind);
      store.set("none", bytes("1"));
      store.set("zero", bytes("2"), { ttlMs: 0 });
      store.set("absolute-zero", bytes("3"), { expiresAt: 0 });
      expect(store.expiresAt("none")).toBe(0);
      expect(store.expiresAt("zero")).toBe(0);
      clock.advance(100 * 365 * 24 * 3600 * 1000);
      expect(store.purgeExpired()).toBe(0);
      expect(text(store.get("none"))).toBe("1");
      expect(text(store.get("zero"))).toBe("2");
      expect(text(store.get("absolute-zero"))).toBe("3");
      expect(store.size).toBe(3);
    });

    test("setting without a TTL removes an earlier TTL", () => {
      const { store, clock } = make(kind);
      store.set("a", bytes("1"), { ttlMs: 10 });
      store.set("a", bytes("2"));
      clock.advance(1000);
      expect(text(store.get("a"))).toBe("2");
      expect(store.purgeExpired()).toBe(0);
    });

    test("a new TTL replaces the old one in both directions", () => {
      const { store, clock } = make(kind);
      store.set("short-then-long", bytes("1"), { ttlMs: 10 });
      store.set("short-then-long", bytes("1"), { ttlMs: 1000 });
      store.set("long-then-short", bytes("2"), { ttlMs: 1000 });
      store.set("long-then-short", bytes("2"), { ttlMs: 10 });
      clock.advance(10);
      expect(store.purgeExpired()).toBe(1);
      expect(store.has("short-then-long")).toBe(true);
      expect(store.has("long-then-short")).toBe(false);
    });

    test("defaultTtlMs applies when set gives none", () => {
      const { store, clock } = make(kind, { defaultTtlMs: 50 });
      store.set("a", bytes("1"));
      store.set("b", bytes("2"), { ttlMs: 0 });
      clock.advance(50);
      expect(store.has("a")).toBe(false);
      expect(store.has("b")).toBe(true);
    });

    test("expiresAt keeps an absolute expiry; one already past stores nothing and drops the old value", () => {
      const { store, clock, events } = make(kind);
      store.set("a", bytes("1"), { expiresAt: clock.now + 500 });
      expect(store.expiresAt("a")).toBe(clock.now + 500);
      expect(store.set("a", bytes("2"), { expiresAt: clock.now })).toBe(false);
      expect(store.get("a")).toBeUndefined();
      expect(events).toEqual([["a", "1", "replaced"]]);
    });

    test("invalid TTLs are rejected with ERR_INVALID_ARGUMENT", () => {
      const { store } = make(kind);
      for (const ttlMs of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
        const error = errorOf(() => store.set("a", bytes("1"), { ttlMs }));
        expect(error.code).toBe("ERR_INVALID_ARGUMENT");
        expect(error.message).toContain("ttlMs");
      }
      expect(errorOf(() => store.set("a", bytes("1"), { expiresAt: -5 })).message).toContain("expiresAt");
      expect(store.size).toBe(0);
    });

    test("purgeExpired drops exactly the expired entries; size and bytes never count them", () => {
      const { store, clock, events } = make(kind);
      for (let i = 0; i < 100; i++) store.set(`k${i}`, new Uint8Array(1), { ttlMs: (i % 10) * 10 + 10 });
      store.set("forever", new Uint8Array(1));
      clock.advance(30);
      expect(store.size).toBe(71); // ttl 10, 20, 30 are gone: 30 keys
      expect(events.length).toBe(30);
      expect(events.every(([, , reason]) => reason === "expired")).toBe(true);
      clock.advance(1000);
      expect(store.purgeExpired()).toBe(70);
      expect(store.size).toBe(1);
      expect(store.bytes).toBe("forever".length + 1);
    });

    test("repeated TTL updates of one key do not pile up work (stale heap entries are bounded)", () => {
      const { store, clock } = make(kind);
      for (let i = 0; i < 100_000; i++) store.set("hot", new Uint8Array(1), { ttlMs: 1000 + (i % 7) });
      const heap = (store as unknown as { heap: { length: number } }).heap;
      expect(heap.length).toBeLessThan(2 * 1 + 1024 + 2);
      clock.advance(2000);
      expect(store.purgeExpired()).toBe(1);
      expect(store.size).toBe(0);
    });

    test("the background sweep drops expired entries without any read", async () => {
      const expired = Promise.withResolvers<string>();
      const store = createStore(kind, {
        maxEntries: 10,
        buckets: 1,
        sweepIntervalMs: 5,
        onEvict: (key, _value, reason) => {
          if (reason === "expired") expired.resolve(key);
        },
      });
      try {
        store.set("a", bytes("1"), { ttlMs: 10 });
        expect(await expired.promise).toBe("a");
      } finally {
        store.close();
      }
    });

    test("after close the store is empty and inert", () => {
      const { store, events } = make(kind);
      store.set("a", bytes("1"), { ttlMs: 10 });
      store.close();
      expect(events).toEqual([["a", "1", "cleared"]]);
      expect(store.get("a")).toBeUndefined();
      expect(store.set("b", bytes("2"))).toBe(false);
      expect(store.size).toBe(0);
      store.close();
    });

    test("bad keys, bad sizes and unsizable values are clear errors that change nothing", () => {
      const { store } = make(kind);
      expect(errorOf(() => store.set(42 as unknown as string, bytes("1"))).message).toContain("key must be a string");
      const objects = createStore<object>(kind, { maxEntries: 10, buckets: 1 });
      expect(errorOf(() => objects.set("a", {})).message).toContain("sizeOf");
      const negative = createStore<object>(kind, { maxEntries: 10, buckets: 1, sizeOf: () => -1 });
      expect(errorOf(() => negative.set("a", {})).message).toContain("sizeOf must return");
      expect(store.size + objects.size + negative.size).toBe(0);
    });

    test("options are validated", () => {
      expect(errorOf(() => createStore(kind, {})).code).toBe("ERR_INVALID_OPTION");
      for (const maxEntries of [0, -1, 1.5, Number.NaN]) {
        expect(errorOf(() => createStore(kind, { maxEntries })).message).toContain("maxEntries");
      }
      expect(errorOf(() => createStore(kind, { maxBytes: 0 })).message).toContain("maxBytes");
      expect(errorOf(() => createStore(kind, { maxBytes: 10, defaultTtlMs: -1 })).message).toContain("defaultTtlMs");
    });

    test("a value that can never fit is refused and no stale value survives", () => {
      const { store, events } = make(kind, { maxEntries: undefined, maxBytes: 100 });
      store.set("k", bytes("small"));
      expect(store.set("k", new Uint8Array(1000))).toBe(false);
      expect(store.get("k")).toBeUndefined();
      expect(events).toEqual([["k", "small", "replaced"]]);
      expect(store.set("other", new Uint8Array(1000))).toBe(false);
      expect(store.bytes).toBe(0);
    });

    test("mixed value sizes never push bytes or entries past their bounds", () => {
      const maxBytes = 20_000;
      const { store } = make(kind, { maxEntries: 300, maxBytes, buckets: 4 });
      const random = seededRandom(7);
      for (let i = 0; i < 20_000; i++) {
        const key = `key-${randomInt(random, 2000)}`;
        const size = random() < 0.1 ? randomInt(random, 2000) : randomInt(random, 100);
        store.set(key, new Uint8Array(size));
        if (random() < 0.3) store.get(`key-${randomInt(random, 2000)}`);
        expect(store.bytes).toBeLessThanOrEqual(maxBytes);
        expect(store.size).toBeLessThanOrEqual(300);
      }
      expect(store.bytes).toBeGreaterThan(maxBytes / 2);
    });
  });
}

test("createStore names the unknown kind and the accepted ones", () => {
  const error = errorOf(() => createStore("arc", { maxEntries: 10 }));
  expect(error.code).toBe("ERR_INVALID_OPTION");
  expect(error.message).toContain('"arc"');
  expect(error.message).toContain("lru, lru2");
});
