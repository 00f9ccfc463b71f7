/**
 * Hit ratio of the store policies against the offline optimum.
 *
 *   bun run bench:hitratio            # full: 1M-item universe, 2M requests per trace (70-80 s)
 *   bun run bench:hitratio --quick    # 200k-item universe, 400k requests (under 10 s)
 *
 * Options: --universe=N  --length=N  --seed=N  (override the mode's defaults).
 *
 * Replays each synthetic trace with read-through semantics (`get`; on a miss,
 * `set` the key) against:
 *   - LRUStore  (exact LRU),
 *   - LRU2Store (two-level LRU, default buckets and level-1 share),
 *   - lru-cache `new LRUCache({ max })`, a reference exact LRU: its hits must
 *     equal LRUStore's, and the table says whether they do,
 *   - Bélády's optimum (farthest next use leaves; may decline to admit),
 *     computed offline on the same trace. No policy can beat it.
 * Traces: Zipf 0.8, Zipf 0.99, Zipf 0.99 with periodic sequential scans
 * (scan-polluted: after every 5 %-of-universe Zipf requests, a scan of 2 % of
 * the universe, either over ids never seen again or walking the cold half of
 * the universe), and a loop over 10 % more items than the cache holds.
 * Cache sizes: 0.1 %, 1 % and 10 % of the Zipf universe (loop: per size).
 * Caches that hold most of what is read: Zipf 0.99 over a universe a
 * hundredth as large, with caches of 20 %, 50 % and 80 % of it (the regime of
 * a cluster's owners whose share of the keys nearly fits).
 * Hit ratio counts every request, cold-start misses included.
 *
 * Checked goal: LRU-2 beats LRU on every scan-polluted row (PASS/FAIL per
 * row). The exit code is 1 when a goal row fails, lru-cache disagrees with
 * LRUStore, or a policy beats the optimum.
 */
import { parseArgs } from "node:util";
import { LRUCache } from "lru-cache";
import { LRU2Store, LRUStore } from "../../src/store/index.ts";
import { buildKeys, loopTrace, zipfTrace, zipfWithScans, type Trace } from "./traces.ts";

/**
 * Hits of Bélády's optimal policy on `ids` with room for `capacity` items.
 * Offline: a backward pass records each request's next use; the cache keeps a
 * max-heap keyed by next use (lazy deletion, compacted when stale entries pile
 * up), so a run costs O(N log C). On a miss with a full cache the item used
 * farthest in the future leaves; that may be the requested item itself, which
 * is then not admitted (the optimum with bypass, an upper bound for any policy).
 */
export function beladyHits(ids: Uint32Array, universe: number, capacity: number): number {
  const n = ids.length;
  if (capacity < 1) return 0;
  if (n + universe > 0x7fffffff) throw new RangeError("beladyHits: trace too long");
  // next[i]: index of the next request for ids[i], or n + id when there is none.
  // Every value names exactly one item: ids[v] when v < n, v - n otherwise.
  const next = new Int32Array(n);
  const last = new Int32Array(universe).fill(-1);
  for (let i = n - 1; i >= 0; i--) {
    const id = ids[i] as number;
    const l = last[id] as number;
    next[i] = l === -1 ? n + id : l;
    last[id] = i;
  }
  // cur[id]: next use of a cached item, the value of its one live heap entry; -1 when not cached.
  const cur = last.fill(-1);
  const heapCap = 2 * capacity + 64;
  const heap = new Int32Array(heapCap);
  let len = 0;
  let size = 0;
  let hits = 0;
  const owner = (v: number): number => (v < n ? (ids[v] as number) : v - n);
  const siftDown = (start: number): void => {
    const v = heap[start] as number;
    let c = start;
    for (;;) {
      let child = 2 * c + 1;
      if (child >= len) break;
      const right = child + 1;
      if (right < len && (heap[right] as number) > (heap[child] as number)) child = right;
      const cv = heap[child] as number;
      if (cv <= v) break;
      heap[c] = cv;
      c = child;
    }
    heap[c] = v;
  };
  const push = (v: number): void => {
    if (len === heapCap) {
      // At least half the entries are stale: keep the live ones and re-heapify.
      let w = 0;
      for (let r = 0; r < len; r++) {
        const e = heap[r] as number;
        if (cur[owner(e)] === e) heap[w++] = e;
      }
      len = w;
      for (let p = (len >>> 1) - 1; p >= 0; p--) siftDown(p);
    }
    let c = len++;
    while (c > 0) {
      const p = (c - 1) >>> 1;
      const pv = heap[p] as number;
      if (pv >= v) break;
      heap[c] = pv;
      c = p;
    }
    heap[c] = v;
  };
  const popTop = (): void => {
    len--;
    if (len > 0) {
      heap[0] = heap[len] as number;
      siftDown(0);
    }
  };
  for (let i = 0; i < n; i++) {
    const id = ids[i] as number;
    const nu = next[i] as number;
    if (cur[id] !== -1) {
      hits++;
      cur[id] = nu; // the entry with value i is stale from now on
      push(nu);
      continue;
    }
    if (size < capacity) {
      size++;
      cur[id] = nu;
      push(nu);
      continue;
    }
    let top = heap[0] as number;
    while (cur[owner(top)] !== top) {
      popTop();
      top = heap[0] as number;
    }
    if (top > nu) {
      cur[owner(top)] = -1;
      popTop();
      cur[id] = nu;
      push(nu);
    }
  }
  return hits;
}

interface ReadThrough {
  get(key: string): unknown;
  set(key: string, value: Uint8Array): unknown;
}

/** Hits of `cache` when every miss is filled (read-through). */
function replay(cache: ReadThrough, ids: Uint32Array, keys: readonly string[], value: Uint8Array): number {
  let hits = 0;
  for (let i = 0; i < ids.length; i++) {
    const key = keys[ids[i] as number] as string;
    if (cache.get(key) !== undefined) hits++;
    else cache.set(key, value);
  }
  return hits;
}

interface Row {
  trace: string;
  capacity: number;
  sizeLabel: string;
  lru: number;
  lru2: number;
  lruCache: number;
  opt: number;
  scanPolluted: boolean;
}

function main(): void {
  const { values } = parseArgs({
    args: Bun.argv.slice(2),
    options: {
      quick: { type: "boolean", default: false },
      universe: { type: "string" },
      length: { type: "string" },
      seed: { type: "string" },
    },
    strict: true,
  });
  const quick = values.quick === true;
  const universe = intArg("universe", values.universe, quick ? 200_000 : 1_000_000);
  const length = intArg("length", values.length, quick ? 400_000 : 2_000_000);
  const seed = intArg("seed", values.seed, 1);
  // Scans: after every `scanEvery` Zipf requests, `scanLength` sequential ids (5 % and 2 % of the universe).
  const scanEvery = Math.max(1, Math.round(universe * 0.05));
  const scanLength = Math.max(1, Math.round(universe * 0.02));
  const capacities = [0.001, 0.01, 0.1].map((f) => ({
    capacity: Math.max(2, Math.round(universe * f)),
    label: `${(f * 100).toString()} %`,
  }));

  const started = performance.now();
  const zipfTraces: { trace: Trace; scanPolluted: boolean }[] = [
    { trace: zipfTrace(universe, 0.8, length, seed), scanPolluted: false },
    { trace: zipfTrace(universe, 0.99, length, seed + 1), scanPolluted: false },
    {
      trace: zipfWithScans(universe, 0.99, length, { every: scanEvery, scanLength, kind: "fresh", seed: seed + 2 }),
      scanPolluted: true,
    },
    {
      trace: zipfWithScans(universe, 0.99, length, { every: scanEvery, scanLength, kind: "cold", seed: seed + 3 }),
      scanPolluted: true,
    },
  ];
  const smallUniverse = Math.max(100, Math.round(universe / 100));
  const small = zipfTrace(smallUniverse, 0.99, length, seed + 4);
  const nearlyFits = {
    trace: { ...small, name: `zipf0.99 of ${fmtInt(smallUniverse)}` },
    capacities: [0.2, 0.5, 0.8].map((f) => ({ capacity: Math.round(smallUniverse * f), label: `${f * 100} %` })),
  };
  let maxUniverse = small.universe;
  for (const { trace } of zipfTraces) maxUniverse = Math.max(maxUniverse, trace.universe);
  for (const { capacity } of capacities) maxUniverse = Math.max(maxUniverse, loopSize(capacity));
  const keys = buildKeys(maxUniverse);
  const value = new Uint8Array(16);
  const setup = performance.now() - started;

  console.log(
    `hit ratio, read-through; universe ${fmtInt(universe)} items, ${fmtInt(length)} requests per trace, seed ${seed}` +
      (quick ? " (quick)" : ""),
  );
  console.log(
    `scans: ${fmtInt(scanLength)} sequential ids after every ${fmtInt(scanEvery)} Zipf requests ` +
      `(${((100 * scanLength) / (scanLength + scanEvery)).toFixed(1)} % of requests)`,
  );
  console.log(`traces and keys built in ${(setup / 1000).toFixed(1)} s\n`);

  const rows: Row[] = [];
  /** Per capacity: LRU2Store buckets and the most entries it held at the end of a trace. */
  const lru2Sizes = new Map<number, { buckets: number; held: number }>();
  const run = (trace: Trace, capacity: number, sizeLabel: string, scanPolluted: boolean): void => {
    const lruStore = new LRUStore<Uint8Array>({ maxEntries: capacity, sweepIntervalMs: 0 });
    const lru2Store = new LRU2Store<Uint8Array>({ maxEntries: capacity, sweepIntervalMs: 0 });
    const reference = new LRUCache<string, Uint8Array>({ max: capacity });
    const row: Row = {
      trace: trace.name,
      capacity,
      sizeLabel,
      lru: replay(lruStore, trace.ids, keys, value),
      lru2: replay(lru2Store, trace.ids, keys, value),
      lruCache: replay(reference, trace.ids, keys, value),
      opt: beladyHits(trace.ids, trace.universe, capacity),
      scanPolluted,
    };
    const seen = lru2Sizes.get(capacity);
    lru2Sizes.set(capacity, { buckets: lru2Store.buckets, held: Math.max(seen?.held ?? 0, lru2Store.size) });
    lruStore.close();
    lru2Store.close();
    reference.clear();
    rows.push(row);
    printRow(row, trace.ids.length);
  };

  printHeader();
  for (const { trace, scanPolluted } of zipfTraces) {
    for (const { capacity, label } of capacities) run(trace, capacity, label, scanPolluted);
  }
  for (const { capacity, label } of nearlyFits.capacities) run(nearlyFits.trace, capacity, label, false);
  for (const { capacity, label } of capacities) {
    run(loopTrace(loopSize(capacity), length), capacity, label, false);
  }

  const goalRows = rows.filter((r) => r.scanPolluted);
  const goalFailures = goalRows.filter((r) => !(r.lru2 > r.lru)).length;
  const mismatches = rows.filter((r) => r.lruCache !== r.lru).length;
  const overOpt = rows.filter((r) => Math.max(r.lru, r.lru2, r.lruCache) > r.opt).length;
  console.log("");
  console.log(
    `goal (LRU-2 > LRU on every scan-polluted row): ${goalFailures === 0 ? "PASS" : "FAIL"} ` +
      `(${goalRows.length - goalFailures}/${goalRows.length} rows)`,
  );
  console.log(
    `lru-cache hits equal LRUStore hits: ${mismatches === 0 ? "yes, every row" : `NO, ${mismatches} rows differ`}`,
  );
  console.log(`no policy above Bélády: ${overOpt === 0 ? "yes" : `NO, ${overOpt} rows`}`);
  const held = [...lru2Sizes].map(([c, l]) => `${fmtInt(c)} → ${fmtInt(l.held)} (${l.buckets} buckets)`);
  console.log(`LRU2Store, most entries held at the end of a trace: ${held.join("; ")}`);
  console.log(`total ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (goalFailures > 0 || mismatches > 0 || overOpt > 0) process.exitCode = 1;
}

/** Loop length for a cache of `capacity` entries: 10 % more items than fit. */
function loopSize(capacity: number): number {
  return capacity + Math.max(1, Math.round(capacity / 10));
}

const COLUMNS = [
  ["trace", 22],
  ["cache", 16],
  ["LRU", 7],
  ["LRU-2", 7],
  ["lru-cache", 11],
  ["Bélády", 7],
  ["LRU-2 − LRU", 12],
  ["goal", 5],
] as const;

function printHeader(): void {
  const cells = COLUMNS.map(([title, width], i) => (i < 2 ? title.padEnd(width) : title.padStart(width)));
  console.log(cells.join(" "));
  console.log(COLUMNS.map(([, width]) => "-".repeat(width)).join(" "));
}

function printRow(r: Row, requests: number): void {
  const pct = (hits: number): string => `${((100 * hits) / requests).toFixed(2)}%`;
  const diff = (100 * (r.lru2 - r.lru)) / requests;
  const cells = [
    r.trace,
    `${fmtInt(r.capacity)} (${r.sizeLabel})`,
    pct(r.lru),
    pct(r.lru2),
    `${pct(r.lruCache)} ${r.lruCache === r.lru ? "=" : "≠"}`,
    pct(r.opt),
    `${diff >= 0 ? "+" : ""}${diff.toFixed(2)} pt`,
    r.scanPolluted ? (r.lru2 > r.lru ? "PASS" : "FAIL") : "-",
  ];
  console.log(
    cells.map((c, i) => (i < 2 ? c.padEnd(COLUMNS[i]![1]) : c.padStart(COLUMNS[i]![1]))).join(" "),
  );
}

function intArg(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw.replaceAll("_", ""));
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`--${name} must be a positive integer, got ${raw}`);
  return n;
}

function fmtInt(n: number): string {
  return n.toLocaleString("en-US");
}

if (import.meta.main) main();
