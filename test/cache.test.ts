import { describe, expect, test } from "bun:test";
import { Cache } from "../src/cache.ts";
import { FakeClock } from "./_support/clock.ts";

const value = (n: number) => new Uint8Array(n);

describe("Cache", () => {
  for (const store of ["lru", "lru2"] as const) {
    test(`counts gets, hits, misses, evictions and expirations (${store})`, () => {
      const clock = new FakeClock();
      const reasons: string[] = [];
      const cache = new Cache({
        store,
        maxEntries: 2,
        buckets: 1,
        clock: clock.read,
        sweepIntervalMs: 0,
        onEvict: (_k, _v, reason) => reasons.push(reason),
      });
      cache.set("a", value(3));
      expect(cache.get("a")?.length).toBe(3);
      expect(cache.get("missing")).toBeUndefined();
      cache.set("t", value(1), { ttlMs: 5 });
      clock.advance(5);
      expect(cache.get("t")).toBeUndefined();
      // lru2 with two entries has one slot per level: "a" was promoted, so "b" and "c" share level 1.
      cache.set("b", value(1));
      cache.set("c", value(1));
      cache.set("d", value(1));
      const stats = cache.stats();
      expect(stats.gets).toBe(3);
      expect(stats.hits).toBe(1);
      expect(stats.misses).toBe(2);
      expect(stats.expirations).toBe(1);
      expect(stats.evictions).toBe(reasons.filter((r) => r === "capacity").length);
      expect(stats.evictions).toBeGreaterThan(0);
      expect(stats.items).toBe(2);
      expect(stats.bytes).toBe(cache.bytes);
      expect(reasons).toContain("expired");
    });
  }

  test("peek does not count as a get", () => {
    const cache = new Cache({ maxEntries: 10 });
    cache.set("a", value(1));
    cache.peek("a");
    expect(cache.stats().gets).toBe(0);
  });

  test("uses lru2 by default", () => {
    const cache = new Cache({ maxEntries: 10, buckets: 1 });
    // Two reads promote "a" into level 2 (5 slots); a scan of 5 new keys fills level 1 only.
    cache.set("a", value(1));
    cache.get("a");
    for (let i = 0; i < 5; i++) cache.set(`scan${i}`, value(1));
    expect(cache.has("a")).toBe(true);
    const lru = new Cache({ store: "lru", maxEntries: 5 });
    lru.set("a", value(1));
    lru.get("a");
    for (let i = 0; i < 5; i++) lru.set(`scan${i}`, value(1));
    expect(lru.has("a")).toBe(false);
  });

  test("after close: reads miss uncounted, writes store nothing, close is idempotent", () => {
    const cache = new Cache({ maxEntries: 10 });
    cache.set("a", value(1));
    cache.close();
    expect(cache.get("a")).toBeUndefined();
    expect(cache.set("b", value(1))).toBe(false);
    expect(cache.delete("a")).toBe(false);
    expect(cache.size).toBe(0);
    expect(cache.stats()).toMatchObject({ gets: 0, items: 0, bytes: 0 });
    cache.close();
  });

  test("an unknown store kind is refused", () => {
    expect(() => new Cache({ store: "fifo" as "lru", maxEntries: 1 })).toThrow('unknown store kind "fifo"');
  });
});
