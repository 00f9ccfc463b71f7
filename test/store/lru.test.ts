import { describe, expect, test } from "bun:test";
import { LRUStore } from "../../src/store/index.ts";
import { FakeClock } from "../_support/clock.ts";

function recorded(options: ConstructorParameters<typeof LRUStore<Uint8Array>>[0]) {
  const evicted: string[] = [];
  const store = new LRUStore<Uint8Array>({
    sweepIntervalMs: 0,
    onEvict: (key, _value, reason) => evicted.push(`${key}:${reason}`),
    ...options,
  });
  return { store, evicted };
}

const one = new Uint8Array(1);

describe("LRUStore", () => {
  test("evicts the least recently used entry first; reads and writes refresh recency", () => {
    const { store, evicted } = recorded({ maxEntries: 3 });
    store.set("a", one);
    store.set("b", one);
    store.set("c", one);
    store.get("a"); // order (old→new): b c a
    store.set("b", new Uint8Array(1)); // order: c a b
    store.set("d", one); // evicts c
    store.set("e", one); // evicts a
    expect(evicted).toEqual(["b:replaced", "c:capacity", "a:capacity"]);
    expect([..."abcde"].filter((k) => store.has(k))).toEqual(["b", "d", "e"]);
  });

  test("peek and has do not refresh recency", () => {
    const { store, evicted } = recorded({ maxEntries: 2 });
    store.set("a", one);
    store.set("b", one);
    store.peek("a");
    store.has("a");
    store.set("c", one);
    expect(evicted).toEqual(["a:capacity"]);
  });

  test("a byte bound evicts as many tail entries as a large value needs, and no more", () => {
    const { store, evicted } = recorded({ maxBytes: 100 });
    for (const key of ["a", "b", "c", "d", "e"]) store.set(key, new Uint8Array(19)); // 20 bytes each
    expect(store.bytes).toBe(100);
    store.set("f", new Uint8Array(49)); // 50 bytes: a, b and c must go
    expect(evicted).toEqual(["a:capacity", "b:capacity", "c:capacity"]);
    expect(store.bytes).toBe(90);
    expect(store.size).toBe(3);
  });

  test("growing a value in place evicts others, never the value itself", () => {
    const { store, evicted } = recorded({ maxBytes: 50 });
    store.set("a", new Uint8Array(9));
    store.set("b", new Uint8Array(9));
    store.set("c", new Uint8Array(9));
    store.set("a", new Uint8Array(39)); // a is now the newest, 40 bytes
    expect(evicted).toEqual(["b:capacity", "a:replaced"]);
    expect(store.has("a")).toBe(true);
    expect(store.has("c")).toBe(true);
    expect(store.bytes).toBe(50);
  });

  test("expired entries are evicted before live ones when room is needed", () => {
    const clock = new FakeClock();
    const { store, evicted } = recorded({ maxEntries: 3, clock: clock.read });
    store.set("old-live", one);
    store.set("mortal", one, { ttlMs: 10 });
    store.set("newer", one);
    clock.advance(10);
    store.set("incoming", one);
    expect(evicted).toEqual(["mortal:expired"]);
    expect(store.has("old-live")).toBe(true);
  });

  test("the slot pool grows past its first allocation when only bytes bound the store", () => {
    const store = new LRUStore<Uint8Array>({ maxBytes: 10_000_000, sweepIntervalMs: 0 });
    for (let i = 0; i < 50_000; i++) store.set(`k${i}`, one);
    expect(store.size).toBe(50_000);
    for (let i = 0; i < 50_000; i += 997) expect(store.get(`k${i}`)).toBe(one);
  });

  test("links are 16-bit up to 65,535 entries and 32-bit from 65,536; both keep LRU order", () => {
    for (const [maxEntries, links] of [
      [65_535, Uint16Array],
      [65_536, Uint32Array],
    ] as const) {
      const { store, evicted } = recorded({ maxEntries });
      expect((store as unknown as { links: unknown }).links).toBeInstanceOf(links);
      for (let i = 0; i < maxEntries; i++) store.set(`k${i}`, one);
      // The first and the last slot both work as heads and tails.
      expect(store.get("k0")).toBe(one);
      store.set("new1", one);
      store.set("new2", one);
      expect(evicted).toEqual(["k1:capacity", "k2:capacity"]);
      expect(store.size).toBe(maxEntries);
      expect(store.get(`k${maxEntries - 1}`)).toBe(one);
      for (let i = 3; i < 100; i++) store.delete(`k${i}`);
      for (let i = 0; i < 97; i++) store.set(`again${i}`, one);
      expect(store.size).toBe(maxEntries);
      expect(evicted.length).toBe(2 + 97);
      expect(store.has("k0")).toBe(true);
      expect(store.bytes).toBe(
        [...store.keys()].reduce((sum, key) => sum + key.length + 1, 0),
      );
    }
  });

  test("a store bounded by bytes only grows past 65,536 slots on 32-bit links", () => {
    const n = 70_000;
    const keys = Array.from({ length: n }, (_, i) => `k${i}`);
    const maxBytes = keys.reduce((sum, key) => sum + key.length + 1, 0);
    const { store, evicted } = recorded({ maxBytes });
    expect((store as unknown as { links: unknown }).links).toBeInstanceOf(Uint32Array);
    for (const key of keys) store.set(key, one);
    expect(store.size).toBe(n);
    expect(store.bytes).toBe(maxBytes);
    expect(evicted).toEqual([]);
    store.get("k0"); // k0 becomes the newest; k1 the oldest
    for (let i = 1; i < n; i += 997) expect(store.peek(`k${i}`)).toBe(one);
    store.set("big", new Uint8Array(11)); // 14 bytes: k1 to k5 (3 bytes each) must go
    expect(evicted).toEqual(["k1:capacity", "k2:capacity", "k3:capacity", "k4:capacity", "k5:capacity"]);
    expect(store.has("k0")).toBe(true);
    expect(store.bytes).toBe(maxBytes - 1);
  });

  test("a million-entry store grows past its preallocated slots and finds, evicts and deletes keys in both index maps", () => {
    // Beyond 32,768 entries new keys wait in a second map and move over in batches;
    // beyond 2^20 slots the chunked slot arrays grow from a partial last chunk.
    const n = (1 << 20) + 3000;
    const { store, evicted } = recorded({ maxEntries: n });
    for (let i = 0; i < n; i++) store.set(`k${i}`, one);
    expect(store.size).toBe(n);
    expect(evicted).toEqual([]);
    for (let i = 0; i < n; i += 4099) expect(store.peek(`k${i}`)).toBe(one);
    for (let i = n - 50; i < n; i++) expect(store.has(`k${i}`)).toBe(true);
    expect(store.delete(`k${n - 1}`)).toBe(true); // among the newest keys
    expect(store.delete("k5")).toBe(true); // among the oldest
    expect(store.delete(`k${n - 1}`)).toBe(false);
    expect(store.size).toBe(n - 2);
    store.get("k0"); // k0 becomes the newest; k1 the oldest
    for (let i = 0; i < 4; i++) store.set(`new${i}`, one);
    expect(evicted).toEqual([`k${n - 1}:deleted`, "k5:deleted", "k1:capacity", "k2:capacity"]);
    const keys = store.keys();
    expect(keys.length).toBe(n);
    expect(new Set(keys).size).toBe(n);
    expect(store.get("new3")).toBe(one);
    expect(store.get("k0")).toBe(one);
    expect(store.get("k2")).toBeUndefined();
    store.clear();
    expect(store.size).toBe(0);
    expect(store.get(`k${n - 2}`)).toBeUndefined();
    store.set("again", one);
    expect(store.keys()).toEqual(["again"]);
  });

  test("a store bounded by entries only keeps bytes exact without per-entry sizes", () => {
    const { store } = recorded({ maxEntries: 2 });
    store.set("a", new Uint8Array(10));
    store.set("é", new Uint8Array(5)); // a 2-byte key
    expect(store.bytes).toBe(11 + 7);
    store.set("a", new Uint8Array(3)); // replaced in place
    expect(store.bytes).toBe(4 + 7);
    store.set("c", new Uint8Array(1)); // evicts é
    expect(store.bytes).toBe(4 + 2);
    store.delete("a");
    expect(store.bytes).toBe(2);
  });

  test("freed slots are reused and never alias a live key", () => {
    const store = new LRUStore<string>({ maxEntries: 4, sweepIntervalMs: 0 });
    for (let round = 0; round < 1000; round++) {
      store.set(`k${round}`, `v${round}`);
      if (round % 3 === 0) store.delete(`k${round - 1}`);
      for (let back = 0; back < 4; back++) {
        const value = store.get(`k${round - back}`);
        if (value !== undefined) expect(value).toBe(`v${round - back}`);
      }
    }
  });
  test("a moved byte bound evicts least recently used entries down to it, and lets the store grow again", () => {
    const { store, evicted } = recorded({ maxBytes: 100 });
    for (let i = 0; i < 10; i++) store.set(`a${i}`, new Uint8Array(8)); // 10 bytes each
    store.get("a0");
    store._setMaxBytes(50);
    expect(store.bytes).toBe(50);
    expect(evicted).toEqual(["a1:capacity", "a2:capacity", "a3:capacity", "a4:capacity", "a5:capacity"]);
    expect(store.has("a0")).toBe(true);
    store.set("b0", new Uint8Array(8));
    expect(store.bytes).toBe(50);
    expect(store.has("a6")).toBe(false);
    store._setMaxBytes(100);
    for (let i = 1; i < 6; i++) store.set(`b${i}`, new Uint8Array(8));
    expect(store.bytes).toBe(100);
    expect(store.size).toBe(10);
    expect(() => new LRUStore({ maxEntries: 4 })._setMaxBytes(10)).toThrow(/without a byte bound/);
  });
});
