import { describe, expect, test } from "bun:test";
import { hash32 } from "../../src/cluster/hash.ts";
import { LRU2Store, type LRU2StoreOptions } from "../../src/store/index.ts";

function recorded(options: LRU2StoreOptions<string>) {
  const evicted: string[] = [];
  const store = new LRU2Store<string>({
    buckets: 1,
    sweepIntervalMs: 0,
    onEvict: (key, _value, reason) => evicted.push(`${key}:${reason}`),
    ...options,
  });
  return { store, evicted };
}

describe("LRU2Store", () => {
  test("a new key enters level 1; a read hit promotes it to level 2", () => {
    const { store } = recorded({ maxEntries: 8 });
    store.set("k", "v");
    expect(store._levelOf("k")).toBe(1);
    expect(store.get("k")).toBe("v");
    expect(store._levelOf("k")).toBe(2);
    store.get("k");
    expect(store._levelOf("k")).toBe(2);
    expect(store._levelOf("missing")).toBeUndefined();
  });

  test("peek and has never promote", () => {
    const { store } = recorded({ maxEntries: 8 });
    store.set("k", "v");
    store.peek("k");
    store.has("k");
    expect(store._levelOf("k")).toBe(1);
  });

  test("level 1 evicts its own least recently used entry and leaves level 2 alone", () => {
    const { store, evicted } = recorded({ maxEntries: 4 }); // 2 + 2
    store.set("p", "p");
    store.get("p"); // level 2: p
    for (const key of ["a", "b", "c", "d"]) store.set(key, key);
    expect(evicted).toEqual(["a:capacity", "b:capacity"]);
    expect(store.get("p")).toBe("p");
    expect(store.size).toBe(3);
  });

  test("level 2's victim goes back to the head of level 1, where level 1's own tail makes room for it", () => {
    const { store, evicted } = recorded({ maxEntries: 4 }); // 2 + 2
    for (const key of ["a", "b"]) {
      store.set(key, key);
      store.get(key);
    }
    store.get("a"); // level 2 order (old→new): b a
    store.set("c", "c");
    store.get("c"); // promoting c pushes b down to level 1, which has room
    expect(evicted).toEqual([]);
    expect(store._levelOf("b")).toBe(1);
    expect(store._levelOf("a")).toBe(2);
    expect(store._levelOf("c")).toBe(2);
    store.set("d", "d"); // level 1 order: b d
    store.set("e", "e"); // b is level 1's least recent
    expect(evicted).toEqual(["b:capacity"]);
    expect(store.get("b")).toBeUndefined();
    store.get("d"); // promoted; level 2's least recent (a) comes down
    expect(store._levelOf("a")).toBe(1);
    expect(store.get("a")).toBe("a"); // read again, it climbs back
    expect(store._levelOf("a")).toBe(2);
    expect(store.size).toBe(4);
  });

  test("reads alone never shrink a full store: level 1 and level 2 trade places", () => {
    const { store, evicted } = recorded({ maxEntries: 100 }); // 50 + 50
    for (let i = 0; i < 100; i++) store.set(`k${i}`, "v");
    expect(store.size).toBe(50); // level 1 only: the first 50 were pushed out
    for (let round = 0; round < 3; round++) for (let i = 50; i < 100; i++) expect(store.get(`k${i}`)).toBe("v");
    for (let i = 100; i < 150; i++) store.set(`k${i}`, "v"); // refill level 1
    for (let i = 100; i < 150; i++) store.get(`k${i}`); // each promotion demotes one
    expect(store.size).toBe(100);
    for (let i = 50; i < 150; i++) expect(store.has(`k${i}`)).toBe(true);
    expect(evicted.length).toBe(50);
  });

  test('level2Victims "drop" keeps the reference design\'s rule: the victim is gone, not demoted', () => {
    const { store, evicted } = recorded({ maxEntries: 4, level2Victims: "drop" }); // 2 + 2
    for (const key of ["a", "b"]) {
      store.set(key, key);
      store.get(key);
    }
    store.get("a"); // level 2 order (old→new): b a
    store.set("c", "c");
    store.get("c"); // promoting c pushes b out of level 2
    expect(evicted).toEqual(["b:capacity"]);
    expect(store.has("b")).toBe(false);
    expect(store._levelOf("a")).toBe(2);
    expect(store._levelOf("c")).toBe(2);
  });

  test("level2Victims other than demote or drop is refused", () => {
    expect(() => new LRU2Store({ maxEntries: 4, level2Victims: "keep" as "drop" })).toThrow(/level2Victims/);
  });

  test("a demoted entry too large for level 1 leaves the store instead", () => {
    const { store, evicted } = recorded({ maxBytes: 1000, level1Share: 0.25 }); // level 1 250 bytes, level 2 750
    store.set("grown", "x".repeat(99)); // 100 bytes
    store.get("grown");
    store.set("grown", "x".repeat(399)); // 400 bytes, in level 2, now too large for level 1
    for (const key of ["p", "q"]) {
      store.set(key, "x".repeat(199));
      store.get(key); // level 2: 400 + 200 + 200 = 800 > 750 on q: grown is the victim
    }
    expect(evicted).toEqual(["grown:replaced", "grown:capacity"]);
    expect(store._levelOf("p")).toBe(2);
    expect(store._levelOf("q")).toBe(2);
  });

  test("after evictions every key still maps to its own value (the original's wrong-slot bug)", () => {
    const { store, evicted } = recorded({ maxEntries: 8 }); // 4 + 4
    for (let i = 1; i <= 5; i++) store.set(`k${i}`, `v${i}`);
    expect(evicted).toEqual(["k1:capacity"]);
    expect(store.get("k1")).toBeUndefined();
    for (let i = 2; i <= 5; i++) expect(store.get(`k${i}`)).toBe(`v${i}`);
  });

  test("a scan of one-off keys cannot flush keys that were read twice", () => {
    const { store } = recorded({ maxEntries: 200 }); // 100 + 100
    for (let i = 0; i < 50; i++) {
      store.set(`hot${i}`, "h");
      store.get(`hot${i}`);
    }
    for (let i = 0; i < 10_000; i++) store.set(`scan${i}`, "s");
    for (let i = 0; i < 50; i++) expect(store.get(`hot${i}`)).toBe("h");
  });

  test("updating a key keeps it in its level and counts it once", () => {
    const { store, evicted } = recorded({ maxEntries: 8 });
    store.set("k", "v1");
    store.get("k");
    store.set("k", "v2");
    expect(store._levelOf("k")).toBe(2);
    expect(store.get("k")).toBe("v2");
    expect(store.size).toBe(1);
    expect(evicted).toEqual(["k:replaced"]);
  });

  test("with default options a read-through fill holds exactly maxEntries (no bucket left short)", () => {
    const fill = (options: LRU2StoreOptions<string>) => {
      const store = new LRU2Store<string>({ maxEntries: 10_000, sweepIntervalMs: 0, ...options });
      for (let i = 0; i < 5_000; i++) store.set(`hot${i}`, "v");
      for (let i = 0; i < 5_000; i++) store.get(`hot${i}`);
      for (let i = 0; i < 5_000; i++) store.set(`cold${i}`, "v");
      return store;
    };
    const store = fill({});
    expect(store.size).toBe(10_000);
    for (let i = 0; i < 5_000; i++) expect(store._levelOf(`hot${i}`)).toBe(2);
    for (let i = 0; i < 5_000; i++) expect(store._levelOf(`cold${i}`)).toBe(1);
    // Hashing keys over buckets fills some levels before others: what the default avoids.
    expect(fill({ buckets: 16 }).size).toBeLessThan(10_000);
  });

  test("bucket count is rounded up to a power of two and lowered for tiny stores", () => {
    expect(new LRU2Store({ maxEntries: 10_000, buckets: 10 }).buckets).toBe(16);
    expect(new LRU2Store({ maxEntries: 10_000 }).buckets).toBe(1);
    expect(new LRU2Store({ maxEntries: 10_000, buckets: 16 }).buckets).toBe(16);
    expect(new LRU2Store({ maxEntries: 9, buckets: 16 }).buckets).toBe(4);
    expect(new LRU2Store({ maxEntries: 2, buckets: 16 }).buckets).toBe(1);
    expect(new LRU2Store({ maxBytes: 1 << 20, buckets: 16 }).buckets).toBe(16);
    expect(() => new LRU2Store({ maxEntries: 1 })).toThrow("maxEntries >= 2");
    expect(() => new LRU2Store({ maxEntries: 100, buckets: 0 })).toThrow("buckets");
    expect(() => new LRU2Store({ maxEntries: 100, level1Share: 1 })).toThrow("level1Share");
  });

  test("keys are spread over buckets by hash; each bucket level holds its share", () => {
    const buckets = 4;
    const { store } = recorded({ maxEntries: 4 * buckets, buckets }); // 2 + 2 per bucket
    const byBucket = new Map<number, string[]>();
    for (let i = 0; byBucket.size < buckets || [...byBucket.values()].some((k) => k.length < 5); i++) {
      const key = `key${i}`;
      const bucket = hash32(key) & (buckets - 1);
      const keys = byBucket.get(bucket) ?? [];
      keys.push(key);
      byBucket.set(bucket, keys);
    }
    for (const keys of byBucket.values()) for (const key of keys.slice(0, 5)) store.set(key, key);
    // Five keys entered each bucket's level 1 of two slots: the last two of each bucket survive.
    for (const keys of byBucket.values()) {
      expect(keys.slice(0, 5).filter((k) => store.has(k))).toEqual(keys.slice(3, 5));
    }
    expect(store.size).toBe(2 * buckets);
  });

  test("byte bounds apply per level: level 1 gets level1Share of each bucket's bytes", () => {
    const sized = new LRU2Store<Uint8Array>({ maxBytes: 1000, buckets: 1, level1Share: 0.25, sweepIntervalMs: 0 });
    // Level 1 holds 250 bytes, level 2 750.
    expect(sized.set("big", new Uint8Array(300))).toBe(false);
    expect(sized.set("a", new Uint8Array(199))).toBe(true); // 200 bytes
    expect(sized.set("b", new Uint8Array(99))).toBe(true); // pushes a out of level 1
    expect(sized.has("a")).toBe(false);
    sized.get("b"); // promoted: level 2 now holds b
    for (const key of ["c", "d"]) {
      sized.set(key, new Uint8Array(199));
      sized.get(key);
    }
    expect(sized.bytes).toBeLessThanOrEqual(1000);
    expect(sized._levelOf("b")).toBe(2);
    sized.set("e", new Uint8Array(199));
    sized.get("e"); // level 2 would hold 100 + 200 * 3 = 700: fits
    sized.set("f", new Uint8Array(199));
    // 900 > 750: b (least recent) and then c go down to level 1, whose 250
    // bytes then hold c alone, so b leaves.
    sized.get("f");
    expect(sized.has("b")).toBe(false);
    expect(sized._levelOf("c")).toBe(1);
    expect(sized._levelOf("f")).toBe(2);
    expect(sized.bytes).toBe(800);
  });

  test("list numbers packed into index entries and kept per slot behave alike, up to the highest slots", () => {
    // 65,535 entries: 16,384 buckets of 3, slot numbers up to 49,152 packed with a 15-bit list number.
    // 65,536 entries: 32,768 buckets of 2, too many slots to pack a 16-bit list number.
    for (const maxEntries of [65_535, 65_536]) {
      let now = 0;
      let wrong = 0;
      const store = new LRU2Store<string>({
        maxEntries,
        buckets: 32_768,
        clock: () => now,
        sweepIntervalMs: 0,
        onEvict: (key, value) => {
          if (key !== value) wrong++;
        },
      });
      const keys = Array.from({ length: 4 * maxEntries }, (_, i) => `k${i}`);
      keys.forEach((key, i) => store.set(key, key, i % 2 === 1 ? { ttlMs: 10 } : undefined));
      const held = keys.filter((key) => store.has(key));
      expect(held.length).toBe(store.size);
      expect(held.length).toBeGreaterThan(maxEntries / 3);
      for (const key of held) if (store.peek(key) !== key || store._levelOf(key) !== 1) wrong++;
      for (const key of held) {
        const value = store.get(key);
        if (value !== undefined && (value !== key || store._levelOf(key) !== 2)) wrong++;
      }
      const live = keys.filter((key) => store.has(key));
      now += 10;
      expect(store.purgeExpired()).toBe(live.filter((key) => Number(key.slice(1)) % 2 === 1).length);
      for (const key of live) {
        const even = Number(key.slice(1)) % 2 === 0;
        if (store.get(key) !== (even ? key : undefined) || (even && store._levelOf(key) !== 2)) wrong++;
      }
      for (const key of live) store.delete(key);
      expect(wrong).toBe(0);
      expect(store.size).toBe(0);
      expect(store.bytes).toBe(0);
    }
  });

  test("a moved byte bound keeps each level's share and evicts each level's least recently used entries", () => {
    const { store, evicted } = recorded({ maxBytes: 200, level1Share: 0.25 }); // level 1 50 bytes, level 2 150
    for (let i = 0; i < 10; i++) {
      store.set(`p${i}`, "x".repeat(8)); // 10 bytes each
      store.get(`p${i}`);
    }
    for (let i = 0; i < 5; i++) store.set(`n${i}`, "x".repeat(8));
    expect(store.bytes).toBe(150);
    store._setMaxBytes(100); // level 1 25 bytes, level 2 75
    expect(evicted).toEqual(["n0:capacity", "n1:capacity", "n2:capacity", "p0:capacity", "p1:capacity", "p2:capacity"]);
    expect(store.bytes).toBe(90);
    store._setMaxBytes(200);
    for (let i = 5; i < 10; i++) store.set(`n${i}`, "x".repeat(8));
    expect(store.bytes).toBe(120); // level 1 back to 50 bytes; level 2 keeps its 70
  });

  test("an entry too large for level 2 stays in level 1 instead of being lost on a read", () => {
    const sized = new LRU2Store<Uint8Array>({ maxBytes: 1000, buckets: 1, level1Share: 0.75, sweepIntervalMs: 0 });
    expect(sized.set("big", new Uint8Array(499))).toBe(true); // 500 bytes: fits level 1 (750), not level 2 (250)
    expect(sized.get("big")?.length).toBe(499);
    expect(sized._levelOf("big")).toBe(1);
  });
});
