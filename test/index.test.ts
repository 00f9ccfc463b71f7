import { expect, test } from "bun:test";
import * as gcache from "../src/index.ts";

test("the public API exports the documented names and nothing internal", () => {
  const names = Object.keys(gcache).sort();
  expect(names).toEqual(
    [
      "Cache",
      "CacheNode",
      "DEFAULT_CACHE_OPTIONS",
      "DEFAULT_CLIENT_OPTIONS",
      "DEFAULT_GC_PACER_OPTIONS",
      "DEFAULT_GROUP_OPTIONS",
      "DEFAULT_LRU2_OPTIONS",
      "DEFAULT_NODE_OPTIONS",
      "DEFAULT_RING_OPTIONS",
      "DEFAULT_STORE_OPTIONS",
      "GCacheClient",
      "GCacheError",
      "Group",
      "HashRing",
      "LRU2Store",
      "LRUStore",
      "NotFoundError",
      "STORE_KINDS",
      "SingleFlight",
      "createStore",
      "hash32",
      "startGcPacer",
      "startIdleCollector",
      "DEFAULT_IDLE_COLLECTOR_OPTIONS",
      "isGCacheError",
    ].sort(),
  );
  expect(names.some((name) => name.startsWith("_"))).toBe(false);
});
