/**
 * Throughput and memory of the in-process stores against lru-cache.
 *
 *   bun run bench:store             # capacities 10k and 1M, 1M ops per run, 7 rounds (1-2 min)
 *   bun run bench:store --quick     # capacities 10k and 100k, 300k ops per run, 5 rounds (under 20 s)
 *
 * Options (flags win over environment variables):
 *   --sizes=10000,1000000   BENCH_SIZES    capacities in entries
 *   --ops=N                 BENCH_OPS      operations per timed run
 *   --rounds=N              BENCH_ROUNDS   timed rounds per workload (the median is reported)
 *   --seed=N                BENCH_SEED     trace seed
 *   --verbose                              also print every timed run
 *   --only=LRUStore,lru-cache              run a subset (lru-cache is required)
 *
 * Contenders: LRUStore, LRU2Store (default buckets and level-1 share) and
 * lru-cache `new LRUCache({ max })`, all bounded by entry count, timed in the
 * same process. For each capacity C the keys are pre-built strings for 2C ids and
 * every operation picks its key from the same Zipf(0.99) trace, with the same
 * shared 64-byte value, so the contenders see identical requests.
 *
 * Per capacity:
 *   - bytes/entry: JS heap growth (after a full GC) from creating a store and
 *     prefilling it (see `createFilled`), divided by the entries it then
 *     holds; measured in a fresh child process per contender, after an
 *     untimed first fill. Key strings and the value exist beforehand, so this
 *     is the store's own overhead (index, links, slots, preallocated arrays).
 *   - young GC ms: in the same child, the median young collection after 100
 *     sets of keys the store does not hold: what the store's layout adds to
 *     every young collection of a process that keeps writing.
 *   - get-heavy: stores prefilled with the C hottest keys, then 100 % `get`
 *     (ids beyond the cache miss; each store's hit ratio is printed too).
 *   - mixed: 90 % `get`, 10 % `set`, mixed by a seeded draw.
 *   - set-heavy: 100 % `set`; keys outside the cache cause evictions.
 * The workloads run in that order on the same store instances. Each contender
 * runs every workload once untimed (warm-up), then `rounds` timed rounds; the
 * contenders take turns within a round, starting with a different one each
 * round, after a full GC. Reported: median ops/s, spread (max-min)/median, and
 * the ratio to lru-cache (>1 means faster), taken within each round and then
 * the median, so drifts in machine speed cancel out. Every result feeds a
 * checksum that is printed, so no loop can be optimised away.
 */
import { edenGC, heapStats } from "bun:jsc";
import { parseArgs } from "node:util";
import { LRUCache } from "lru-cache";
import { LRU2Store, LRUStore } from "../../src/store/index.ts";
import { buildKeys, Rng, Zipf } from "./traces.ts";

type Value = Uint8Array;

/** Everything the loops consume; built once per capacity. */
interface Workload {
  keys: readonly string[];
  ids: Uint32Array;
  /** Mixed workload: 1 = set, 0 = get. */
  isSet: Uint8Array;
  value: Value;
}

let sink = 0;
let verbose = false;

// One loop per contender and operation, so every call site in a timed loop
// sees a single receiver class.

function getLRU(s: LRUStore<Value>, w: Workload): number {
  const { keys, ids } = w;
  let hits = 0;
  for (let i = 0; i < ids.length; i++) if (s.get(keys[ids[i]!]!) !== undefined) hits++;
  return hits;
}
function getLRU2(s: LRU2Store<Value>, w: Workload): number {
  const { keys, ids } = w;
  let hits = 0;
  for (let i = 0; i < ids.length; i++) if (s.get(keys[ids[i]!]!) !== undefined) hits++;
  return hits;
}
function getLRUCache(s: LRUCache<string, Value>, w: Workload): number {
  const { keys, ids } = w;
  let hits = 0;
  for (let i = 0; i < ids.length; i++) if (s.get(keys[ids[i]!]!) !== undefined) hits++;
  return hits;
}

function setLRU(s: LRUStore<Value>, w: Workload): number {
  const { keys, ids, value } = w;
  for (let i = 0; i < ids.length; i++) s.set(keys[ids[i]!]!, value);
  return s.size;
}
function setLRU2(s: LRU2Store<Value>, w: Workload): number {
  const { keys, ids, value } = w;
  for (let i = 0; i < ids.length; i++) s.set(keys[ids[i]!]!, value);
  return s.size;
}
function setLRUCache(s: LRUCache<string, Value>, w: Workload): number {
  const { keys, ids, value } = w;
  for (let i = 0; i < ids.length; i++) s.set(keys[ids[i]!]!, value);
  return s.size;
}

function mixedLRU(s: LRUStore<Value>, w: Workload): number {
  const { keys, ids, isSet, value } = w;
  let hits = 0;
  for (let i = 0; i < ids.length; i++) {
    const key = keys[ids[i]!]!;
    if (isSet[i] === 1) s.set(key, value);
    else if (s.get(key) !== undefined) hits++;
  }
  return hits;
}
function mixedLRU2(s: LRU2Store<Value>, w: Workload): number {
  const { keys, ids, isSet, value } = w;
  let hits = 0;
  for (let i = 0; i < ids.length; i++) {
    const key = keys[ids[i]!]!;
    if (isSet[i] === 1) s.set(key, value);
    else if (s.get(key) !== undefined) hits++;
  }
  return hits;
}
function mixedLRUCache(s: LRUCache<string, Value>, w: Workload): number {
  const { keys, ids, isSet, value } = w;
  let hits = 0;
  for (let i = 0; i < ids.length; i++) {
    const key = keys[ids[i]!]!;
    if (isSet[i] === 1) s.set(key, value);
    else if (s.get(key) !== undefined) hits++;
  }
  return hits;
}

const WORKLOADS = ["get-heavy", "mixed 90/10", "set-heavy"] as const;
type WorkloadName = (typeof WORKLOADS)[number];

interface Filled {
  /** Entries held after the prefill. */
  held: number;
  close(): void;
  /** Makes this the instance the timed workloads run on. */
  use(): void;
  set(key: string, value: Value): void;
}

interface Contender {
  name: string;
  /**
   * Creates a store and prefills it with the C hottest keys: set all of them
   * (coldest first), read the hotter half, set the colder half again. An LRU
   * ends up holding all C; an LRU-2 holds the hotter half in level 2 and the
   * colder half in level 1, as after a long read-through warm-up.
   */
  createFilled(capacity: number, keys: readonly string[], value: Value): Filled;
  run: Record<WorkloadName, (w: Workload) => number>;
  release(): void;
}

function lruContender(): Contender {
  let store: LRUStore<Value> | null = null;
  const s = (): LRUStore<Value> => store ?? fail("store not created");
  return {
    name: "LRUStore",
    createFilled(capacity, keys, value) {
      const created = new LRUStore<Value>({ maxEntries: capacity, sweepIntervalMs: 0 });
      const half = capacity >>> 1;
      for (let i = capacity - 1; i >= 0; i--) created.set(keys[i]!, value);
      for (let i = half - 1; i >= 0; i--) created.get(keys[i]!);
      for (let i = capacity - 1; i >= half; i--) created.set(keys[i]!, value);
      return {
        held: created.size,
        close: () => created.close(),
        use: () => (store = created),
        set: (key, v) => created.set(key, v),
      };
    },
    run: {
      "get-heavy": (w) => getLRU(s(), w),
      "mixed 90/10": (w) => mixedLRU(s(), w),
      "set-heavy": (w) => setLRU(s(), w),
    },
    release() {
      store?.close();
      store = null;
    },
  };
}

function lru2Contender(): Contender {
  let store: LRU2Store<Value> | null = null;
  const s = (): LRU2Store<Value> => store ?? fail("store not created");
  return {
    name: "LRU2Store",
    createFilled(capacity, keys, value) {
      const created = new LRU2Store<Value>({ maxEntries: capacity, sweepIntervalMs: 0 });
      const half = capacity >>> 1;
      for (let i = capacity - 1; i >= 0; i--) created.set(keys[i]!, value);
      for (let i = half - 1; i >= 0; i--) created.get(keys[i]!);
      for (let i = capacity - 1; i >= half; i--) created.set(keys[i]!, value);
      return {
        held: created.size,
        close: () => created.close(),
        use: () => (store = created),
        set: (key, v) => created.set(key, v),
      };
    },
    run: {
      "get-heavy": (w) => getLRU2(s(), w),
      "mixed 90/10": (w) => mixedLRU2(s(), w),
      "set-heavy": (w) => setLRU2(s(), w),
    },
    release() {
      store?.close();
      store = null;
    },
  };
}

function lruCacheContender(): Contender {
  let store: LRUCache<string, Value> | null = null;
  const s = (): LRUCache<string, Value> => store ?? fail("store not created");
  return {
    name: "lru-cache",
    createFilled(capacity, keys, value) {
      const created = new LRUCache<string, Value>({ max: capacity });
      const half = capacity >>> 1;
      for (let i = capacity - 1; i >= 0; i--) created.set(keys[i]!, value);
      for (let i = half - 1; i >= 0; i--) created.get(keys[i]!);
      for (let i = capacity - 1; i >= half; i--) created.set(keys[i]!, value);
      return {
        held: created.size,
        close: () => created.clear(),
        use: () => (store = created),
        set: (key, v) => created.set(key, v),
      };
    },
    run: {
      "get-heavy": (w) => getLRUCache(s(), w),
      "mixed 90/10": (w) => mixedLRUCache(s(), w),
      "set-heavy": (w) => setLRUCache(s(), w),
    },
    release() {
      store?.clear();
      store = null;
    },
  };
}

function fail(message: string): never {
  throw new Error(message);
}

/** Heap bytes after a full collection. Includes typed-array storage. */
function heapBytes(): number {
  Bun.gc(true);
  return heapStats().heapSize;
}

/**
 * Runs in a child process: heap growth from creating one store and prefilling
 * it, per entry held, printed as JSON. A first store is filled and kept
 * untimed so one-time costs (compiled code, shapes) stay out of the sample;
 * nothing is dropped between the two heap readings. (In a long-running
 * process, a dropped store that the conservative stack scan keeps alive in
 * the baseline and frees later made samples jump by tens of bytes per entry.)
 */
function memoryChild(contender: Contender, capacity: number): void {
  const keys = buildKeys(2 * capacity, "key:");
  const value = new Uint8Array(64);
  const first = contender.createFilled(capacity, keys, value);
  const before = heapBytes();
  const second = contender.createFilled(capacity, keys, value);
  const after = heapBytes();
  const youngGcMs = youngCollectionAfterSets(second, keys, capacity);
  console.log(JSON.stringify({ bytesPerEntry: (after - before) / second.held, held: second.held, youngGcMs }));
  first.close();
  second.close();
}

const SETS_BETWEEN_COLLECTIONS = 100;
const COLLECTION_SAMPLES = 41;

/**
 * Median time of a young collection that follows 100 sets of keys the store
 * does not hold (each evicts one), with some request-like garbage in between.
 * A generational collector revisits an old object whole once a reference is
 * stored into it, so this shows what a store's layout costs every young
 * collection of a process that keeps writing; the store is old by now.
 */
function youngCollectionAfterSets(store: Filled, keys: readonly string[], capacity: number): number {
  const times: number[] = [];
  let next = capacity;
  for (let sample = 0; sample < COLLECTION_SAMPLES; sample++) {
    for (let i = 0; i < SETS_BETWEEN_COLLECTIONS; i++) {
      store.set(keys[next]!, new Uint8Array(64));
      next = next + 1 < keys.length ? next + 1 : capacity;
    }
    let garbage = 0;
    for (let i = 0; i < 10_000; i++) garbage += { i }.i;
    sink += garbage;
    const t0 = Bun.nanoseconds();
    edenGC();
    times.push((Bun.nanoseconds() - t0) / 1e6);
  }
  return median(times);
}

function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >>> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

interface SizeResult {
  capacity: number;
  bytesPerEntry: Map<string, number>;
  /** Entries held after the prefill. */
  held: Map<string, number>;
  /** See `youngCollectionAfterSets`. */
  youngGcMs: Map<string, number>;
  opsPerSec: Map<WorkloadName, Map<string, number[]>>;
  getHitRatio: Map<string, number>;
}

function benchSize(
  capacity: number,
  opsPerRun: number,
  rounds: number,
  seed: number,
  contenders: readonly Contender[],
): SizeResult {
  const universe = 2 * capacity;
  const keys = buildKeys(universe, "key:");
  const rng = new Rng(seed);
  const ids = new Zipf(universe, 0.99).fill(rng, opsPerRun);
  const isSet = new Uint8Array(opsPerRun);
  for (let i = 0; i < opsPerRun; i++) isSet[i] = rng.float() < 0.1 ? 1 : 0;
  const workload: Workload = { keys, ids, isSet, value: new Uint8Array(64) };

  // Memory: each contender in a fresh child process (see `memoryChild`).
  const bytesPerEntry = new Map<string, number>();
  const held = new Map<string, number>();
  const youngGcMs = new Map<string, number>();
  for (const c of contenders) {
    const child = Bun.spawnSync([process.execPath, import.meta.path, `--memory-child=${c.name}`, `--sizes=${capacity}`], {
      stdout: "pipe",
      stderr: "inherit",
    });
    const out = child.stdout.toString().trim();
    if (child.exitCode !== 0) throw new Error(`memory measurement for ${c.name} failed: ${out}`);
    const parsed = JSON.parse(out) as { bytesPerEntry: number; held: number; youngGcMs: number };
    bytesPerEntry.set(c.name, parsed.bytesPerEntry);
    held.set(c.name, parsed.held);
    youngGcMs.set(c.name, parsed.youngGcMs);
  }

  // Throughput on one prefilled instance per contender.
  for (const c of contenders) c.createFilled(capacity, keys, workload.value).use();
  const opsPerSec = new Map<WorkloadName, Map<string, number[]>>();
  const getHitRatio = new Map<string, number>();
  for (const name of WORKLOADS) {
    const perContender = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
    opsPerSec.set(name, perContender);
    for (const c of contenders) sink += c.run[name](workload); // warm-up, untimed
    for (let r = 0; r < rounds; r++) {
      Bun.gc(true);
      for (let k = 0; k < contenders.length; k++) {
        const c = contenders[(r + k) % contenders.length]!;
        const t0 = Bun.nanoseconds();
        const result = c.run[name](workload);
        const elapsed = Bun.nanoseconds() - t0;
        sink += result;
        perContender.get(c.name)!.push((opsPerRun * 1e9) / elapsed);
        if (name === "get-heavy") getHitRatio.set(c.name, result / opsPerRun);
      }
    }
  }
  for (const c of contenders) c.release();
  return { capacity, bytesPerEntry, held, youngGcMs, opsPerSec, getHitRatio };
}

function printSize(result: SizeResult, contenders: readonly Contender[], opsPerRun: number, rounds: number): void {
  const reference = "lru-cache";
  const ours = contenders.filter((c) => c.name !== reference).map((c) => c.name);
  const names = contenders.map((c) => c.name);
  const header = [
    "workload".padEnd(12),
    ...names.map((n) => n.padStart(16)),
    ...ours.map((n) => `${n}/${reference}`.padStart(20)),
  ];
  console.log(
    `\ncapacity ${fmtInt(result.capacity)} entries; keys: Zipf 0.99 over ${fmtInt(2 * result.capacity)} ids; ` +
      `${fmtInt(opsPerRun)} ops per run; median of ${rounds} rounds (± spread)`,
  );
  console.log(header.join(" "));
  console.log(header.map((h) => "-".repeat(h.length)).join(" "));
  for (const name of WORKLOADS) {
    const per = result.opsPerSec.get(name)!;
    const med = new Map<string, number>([...per].map(([n, xs]) => [n, median(xs)]));
    const refRuns = per.get(reference)!;
    // Ratios are taken within a round (runs adjacent in time), then the median.
    const ratio = (n: string): number => median(per.get(n)!.map((x, r) => x / refRuns[r]!));
    if (verbose) {
      for (const [n, xs] of per) console.log(`  ${name} ${n}: ${xs.map(fmtOps).join(", ")}`);
    }
    const cells = [
      name.padEnd(12),
      ...names.map((n) => {
        const xs = per.get(n)!;
        const m = med.get(n)!;
        const spread = (100 * (Math.max(...xs) - Math.min(...xs))) / m;
        return `${fmtOps(m)} ±${spread.toFixed(0)}%`.padStart(16);
      }),
      ...ours.map((n) => `${ratio(n).toFixed(2)}x`.padStart(20)),
    ];
    console.log(cells.join(" "));
  }
  // One figure per store, and ours against the reference.
  const printRow = (label: string, figures: Map<string, number>, digits: number): void => {
    console.log(
      [
        label.padEnd(12),
        ...names.map((n) => figures.get(n)!.toFixed(digits).padStart(16)),
        ...ours.map((n) => `${(figures.get(n)! / figures.get(reference)!).toFixed(2)}x`.padStart(20)),
      ].join(" "),
    );
  };
  printRow("bytes/entry", result.bytesPerEntry, 1);
  printRow("young GC ms", result.youngGcMs, 2);
  console.log(`young GC ms: median young collection after ${SETS_BETWEEN_COLLECTIONS} sets of new keys (lower is better)`);
  console.log(`entries held after prefill: ${names.map((n) => `${n} ${fmtInt(result.held.get(n)!)}`).join(", ")}`);
  console.log(
    `get-heavy hit ratio: ${names.map((n) => `${n} ${(100 * result.getHitRatio.get(n)!).toFixed(1)}%`).join(", ")}`,
  );
}

function fmtOps(x: number): string {
  return x >= 1e6 ? `${(x / 1e6).toFixed(2)} M/s` : `${(x / 1e3).toFixed(0)} k/s`;
}

function fmtInt(n: number): string {
  return n.toLocaleString("en-US");
}

function intOption(name: string, flag: string | undefined, env: string | undefined, fallback: number): number {
  const raw = flag ?? env;
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw.replaceAll("_", ""));
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${name} must be a positive integer, got ${raw}`);
  return n;
}

function main(): void {
  const { values } = parseArgs({
    args: Bun.argv.slice(2),
    options: {
      quick: { type: "boolean", default: false },
      sizes: { type: "string" },
      ops: { type: "string" },
      rounds: { type: "string" },
      seed: { type: "string" },
      verbose: { type: "boolean", default: false },
      only: { type: "string" },
      "memory-child": { type: "string" },
    },
    strict: true,
  });
  verbose = values.verbose === true;
  const quick = values.quick === true;
  const env = process.env;
  const sizesRaw = values.sizes ?? env.BENCH_SIZES ?? (quick ? "10000,100000" : "10000,1000000");
  const sizes = sizesRaw.split(",").map((s) => intOption("sizes", s.trim(), undefined, 0));
  const opsPerRun = intOption("ops", values.ops, env.BENCH_OPS, quick ? 300_000 : 1_000_000);
  const rounds = intOption("rounds", values.rounds, env.BENCH_ROUNDS, quick ? 5 : 7);
  const seed = intOption("seed", values.seed, env.BENCH_SEED, 1);

  const all = [lruContender(), lru2Contender(), lruCacheContender()];
  const only = values.only?.split(",").map((n) => n.trim());
  const memoryOf = values["memory-child"];
  if (memoryOf !== undefined) {
    const c = all.find((x) => x.name === memoryOf) ?? fail(`unknown contender ${memoryOf}`);
    memoryChild(c, sizes[0]!);
    return;
  }
  console.log(
    `store throughput and memory: Bun ${Bun.version}, ${process.platform}/${process.arch}` + (quick ? " (quick)" : ""),
  );
  const started = performance.now();
  const contenders = only === undefined ? all : all.filter((c) => only.includes(c.name));
  if (!contenders.some((c) => c.name === "lru-cache")) throw new RangeError("--only must include lru-cache");
  for (const capacity of sizes) {
    const result = benchSize(capacity, opsPerRun, rounds, seed, contenders);
    printSize(result, contenders, opsPerRun, rounds);
  }
  console.log(`\nchecksum ${sink}; total ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

if (import.meta.main) main();
