/**
 * One `get` as a server makes it: the key a fresh string cut from the
 * request's bytes, and the store's memory cold, because between two gets the
 * kernel's socket calls and the rest of the request ran on the same core.
 * bench:store times gets back to back, with the store's lines in the CPU's
 * caches; this times each get alone after pushing them out.
 *
 *   bun run bench:store-cold                 # 10,000 and 100,000 entries, 5 rounds (about a minute)
 *
 * Options:
 *   --sizes=10000,100000   entries held (keys "key-1" .. "key-N", 100-byte values)
 *   --gets=N               gets per contender per round (default 50,000)
 *   --rounds=N             rounds; contenders take turns within each (default 5)
 *   --evict-kib=N          bytes touched between two gets, one write per 64-byte line (default 2048)
 *
 * Contenders: `LRUStore`, `LRU2Store`, lru-cache (`new LRUCache({ max })`), a
 * bare `Map` of the same keys (one hash lookup, nothing else) and "key only"
 * (the key cut from the bytes, no lookup: the floor every contender pays,
 * the timer included). Every get is timed alone with `performance.now()`; the
 * table gives the median over rounds of the mean ns per get, and the ratio to
 * lru-cache (below 1: cheaper), taken within each round, then the median.
 */
import { parseArgs } from "node:util";
import { LRUCache } from "lru-cache";
import { LRU2Store, LRUStore } from "../../src/store/index.ts";
import { median, wholeNumber } from "./_cluster/util.ts";

const { values: flags } = parseArgs({
  options: {
    sizes: { type: "string", default: "10000,100000" },
    gets: { type: "string", default: "50000" },
    rounds: { type: "string", default: "5" },
    "evict-kib": { type: "string", default: "2048" },
  },
});

const sizes = flags.sizes.split(",").map((s) => wholeNumber(s.trim(), 0, 1, "sizes"));
const gets = wholeNumber(flags.gets, 50_000, 1, "gets");
const rounds = wholeNumber(flags.rounds, 5, 1, "rounds");
const evictBytes = wholeNumber(flags["evict-kib"], 2048, 0, "evict-kib") * 1024;

type Get = (key: string) => Uint8Array | undefined;
const CONTENDERS = ["key only", "Map", "LRUStore", "LRU2Store", "lru-cache"] as const;
type Contender = (typeof CONTENDERS)[number];

let sink = 0;
const evictee = new Uint8Array(Math.max(64, evictBytes));

/** Writes one byte per cache line of `evictee`: the lines the get will need are pushed out. */
function evict(): void {
  for (let i = 0; i < evictBytes; i += 64) evictee[i]!++;
}

function build(contender: Contender, entries: number): Get {
  const value = (i: number) => new Uint8Array(100).fill(i & 255);
  switch (contender) {
    case "key only":
      return (key) => {
        sink += key.length;
        return undefined;
      };
    case "Map": {
      const map = new Map<string, Uint8Array>();
      for (let i = 1; i <= entries; i++) map.set(`key-${i}`, value(i));
      return (key) => map.get(key);
    }
    case "LRUStore": {
      const store = new LRUStore<Uint8Array>({ maxEntries: entries, maxBytes: entries * 1024 });
      for (let i = 1; i <= entries; i++) store.set(`key-${i}`, value(i));
      return (key) => store.get(key);
    }
    case "LRU2Store": {
      const store = new LRU2Store<Uint8Array>({ maxEntries: entries * 2, maxBytes: entries * 2048 });
      for (let i = 1; i <= entries; i++) store.set(`key-${i}`, value(i));
      // Read once: level 2 holds them, as it holds a server's hot keys.
      for (let i = 1; i <= entries; i++) store.get(`key-${i}`);
      return (key) => store.get(key);
    }
    case "lru-cache": {
      const cache = new LRUCache<string, Uint8Array>({ max: entries });
      for (let i = 1; i <= entries; i++) cache.set(`key-${i}`, value(i));
      return (key) => cache.get(key);
    }
  }
}

/** Buffer's latin1Slice, untyped in Node's and Bun's types: what the gateway cuts keys with. */
type Latin1Sliceable = Buffer & { latin1Slice(start: number, end: number): string };

/** Request lines as they arrive; a get cuts its key out of one, as the gateway does. */
function requestLines(entries: number): Latin1Sliceable[] {
  const lines: Latin1Sliceable[] = [];
  for (let i = 1; i <= entries; i++) lines.push(Buffer.from(`GET /v1/groups/default/keys/key-${i} HTTP/1.1\r\n\r\n`, "latin1") as Latin1Sliceable);
  return lines;
}
const KEY_AT = "GET /v1/groups/default/keys/".length;

/** Mean ns per get over `gets` gets of keys spread over all entries, each after an eviction. */
function timeGets(get: Get, lines: Latin1Sliceable[], expectHits: boolean): number {
  let total = 0;
  // A stride prime to the key count: every key in turn, neighbours far apart.
  const stride = 7919;
  for (let j = 0; j < gets; j++) {
    const line = lines[(j * stride) % lines.length]!;
    evict();
    const started = performance.now();
    const key = line.latin1Slice(KEY_AT, line.indexOf(32, KEY_AT));
    const value = get(key);
    total += performance.now() - started;
    if (value !== undefined) sink += value[0]!;
    else if (expectHits) throw new Error(`missing key ${key}`);
  }
  return (total * 1e6) / gets;
}

console.log(`store-cold: ${gets.toLocaleString("en-US")} gets per run, ${rounds} rounds, ${evictBytes / 1024} KiB touched between gets; Bun ${Bun.version}\n`);
for (const entries of sizes) {
  const lines = requestLines(entries);
  const getters = new Map(CONTENDERS.map((c) => [c, build(c, entries)] as const));
  for (const [c, get] of getters) timeGets(get, lines.slice(0, 1000), c !== "key only"); // warm-up: the JIT, not the caches
  const ns = new Map<Contender, number[]>(CONTENDERS.map((c) => [c, []]));
  for (let round = 0; round < rounds; round++) {
    // A different contender goes first each round.
    const order = CONTENDERS.map((_, i) => CONTENDERS[(i + round) % CONTENDERS.length]!);
    for (const c of order) ns.get(c)!.push(timeGets(getters.get(c)!, lines, c !== "key only"));
  }
  const reference = ns.get("lru-cache")!;
  console.log(`${entries.toLocaleString("en-US")} entries`);
  console.log(`  ${"contender".padEnd(10)} ${"ns/get".padStart(8)}  ${"over key only".padStart(13)}  ${"/ lru-cache".padStart(11)}  rounds`);
  const floor = median(ns.get("key only")!);
  for (const c of CONTENDERS) {
    const runs = ns.get(c)!;
    const ratio = median(runs.map((x, i) => x / reference[i]!));
    const m = median(runs);
    console.log(
      `  ${c.padEnd(10)} ${m.toFixed(0).padStart(8)}  ${(c === "key only" ? "-" : (m - floor).toFixed(0)).padStart(13)}  ${ratio.toFixed(3).padStart(11)}  [${runs.map((x) => x.toFixed(0)).join(" ")}]`,
    );
  }
  console.log();
}
console.log(`checksum ${sink}`);
