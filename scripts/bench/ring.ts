/**
 * Measures the hash ring, to pick `DEFAULT_RING_OPTIONS` by data:
 *
 *  1. Candidate hashes: speed on short, long and non-ASCII keys, avalanche
 *     bias, and the balance each gives the ring.
 *  2. For each `replicas` and member count: balance (max/mean and min/mean
 *     keys per member over 100k keys), key movement on a join (n -> n+1) and
 *     on a leave (n+1 -> n) relative to the ideal 1/(n+1), lookup cost, build
 *     time and point memory. Balance and movement are averaged over several
 *     member-name sets, because one set can be lucky or unlucky.
 *
 * Run: bun run scripts/bench/ring.ts [--trials N] [--keys N]   (about 10 s with the defaults, 5 and 100000)
 */

import { parseArgs } from "node:util";
import { type HashFn, hash32 } from "../../src/cluster/hash.ts";
import { DEFAULT_RING_OPTIONS, HashRing } from "../../src/cluster/ring.ts";

const { values: args } = parseArgs({
  options: { trials: { type: "string", default: "5" }, keys: { type: "string", default: "100000" } },
});
const TRIALS = Math.max(1, Number(args.trials));
// More keys shrink the sampling noise in max/mean (about +5% at 50 members and 100k keys), leaving the ring's own imbalance.
const KEYS = Math.max(1000, Number(args.keys));
const REPLICAS = [16, 32, 64, 128, 160, 256, 512];
const MEMBERS = [3, 10, 50];

// ---------------------------------------------------------------- candidates

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The candidates below hash the UTF-8 bytes, like `hash32`, encoded into one reused buffer. */
const scratch = new Uint8Array(4096);
const encoder = new TextEncoder();

function utf8(key: string): number {
  // Keys in this bench are far below the scratch size.
  return encoder.encodeInto(key, scratch).written;
}

function fnv1aBytes(n: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < n; i++) h = Math.imul(h ^ scratch[i]!, 0x01000193);
  return h >>> 0;
}

const fnv1a: HashFn = (key) => fnv1aBytes(utf8(key));
const fnv1aFmix: HashFn = (key) => fmix32(fnv1aBytes(utf8(key)));

/** Murmur3 over bytes from `TextEncoder.encodeInto`: the obvious alternative to encoding on the fly. */
const murmurEncodeInto: HashFn = (key) => {
  const n = utf8(key);
  let h = 0;
  const blocks = n & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = scratch[i]! | (scratch[i + 1]! << 8) | (scratch[i + 2]! << 16) | (scratch[i + 3]! << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  for (let i = n - 1; i >= blocks; i--) k = (k << 8) | scratch[i]!;
  if (n > blocks) {
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  return fmix32(h ^ n);
};

const HASHES: [string, HashFn][] = [
  ["murmur3 (hash32, default)", hash32],
  ["murmur3 via encodeInto", murmurEncodeInto],
  ["fnv1a + fmix32", fnv1aFmix],
  ["fnv1a (no finalizer)", fnv1a],
];

// ---------------------------------------------------------------- helpers

let sink = 0;

function nsPerOp(keys: string[], fn: (key: string) => number | string | undefined, rounds = 3): number {
  for (const k of keys) fn(k); // warm up
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    for (let i = 0; i < keys.length; i++) {
      const v = fn(keys[i]!);
      sink ^= typeof v === "number" ? v : (v?.length ?? 0);
    }
    best = Math.min(best, performance.now() - t0);
  }
  return (best * 1e6) / keys.length;
}

function memberNames(n: number, trial: number): string[] {
  return Array.from({ length: n }, (_, i) => `10.${trial}.${i >> 8}.${i & 255}:7000`);
}

function ownersOf(ring: HashRing, keys: string[]): string[] {
  return keys.map((k) => ring.owner(k)!);
}

function spread(owners: string[], members: string[]): { max: number; min: number } {
  const counts = new Map<string, number>(members.map((m) => [m, 0]));
  for (const o of owners) counts.set(o, (counts.get(o) ?? 0) + 1);
  const mean = owners.length / members.length;
  let max = 0;
  let min = Infinity;
  for (const c of counts.values()) {
    max = Math.max(max, c);
    min = Math.min(min, c);
  }
  return { max: max / mean, min: min / mean };
}

function moved(a: string[], b: string[]): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n / a.length;
}

const fmt = (x: number, digits = 2) => x.toFixed(digits);
const row = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;

// ---------------------------------------------------------------- 1. hashes

const shortKeys = Array.from({ length: KEYS }, (_, i) => `user:${i}`);
const longKeys = Array.from({ length: KEYS }, (_, i) => `tenant-42/catalog/products/sku-${i}/variants?locale=en-GB&v=3`);
const unicodeKeys = Array.from({ length: KEYS }, (_, i) => `usuário:${i}:東京`);

/** Worst |P(output bit j flips when input bit i flips) - 1/2| over 16-char ASCII keys, flipping bits 0–5 of each char. */
function avalancheBias(fn: HashFn, samples: number): number {
  const flips = new Float64Array(16 * 6 * 32);
  // xorshift32, taking the top bits: an LCG's low bits repeat too soon and fake a bias.
  let seed = 0x9e3779b9;
  const rnd = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const codes = new Array<number>(16);
  for (let s = 0; s < samples; s++) {
    for (let c = 0; c < 16; c++) codes[c] = 0x40 + (rnd() >>> 26);
    const base = fn(String.fromCharCode(...codes));
    for (let c = 0; c < 16; c++) {
      for (let b = 0; b < 6; b++) {
        const saved = codes[c]!;
        codes[c] = saved ^ (1 << b);
        const diff = (base ^ fn(String.fromCharCode(...codes))) >>> 0;
        codes[c] = saved;
        for (let j = 0; j < 32; j++) if ((diff >>> j) & 1) flips[(c * 6 + b) * 32 + j]!++;
      }
    }
  }
  let worst = 0;
  for (const f of flips) worst = Math.max(worst, Math.abs(f / samples - 0.5));
  return worst;
}

console.log(`# gcache hash ring bench (${typeof Bun === "undefined" ? `node ${process.version}` : `bun ${Bun.version}`}, ${TRIALS} member-name sets, ${KEYS} keys)\n`);
console.log("## Hash candidates\n");
console.log("ns/op per key; avalanche = worst bit bias over 16x6 input x 32 output bits (0 ideal; sampling noise alone gives about 0.025); balance = max/mean of a 50-member ring at the default replicas, averaged over the name sets\n");
console.log(row(["hash", "short ns", "long ns", "non-ASCII ns", "avalanche", "balance max/mean"]));
console.log(row(["---", "---", "---", "---", "---", "---"]));
for (const [name, fn] of HASHES) {
  let bal = 0;
  for (let t = 0; t < TRIALS; t++) {
    const ring = new HashRing({ hash: fn });
    const members = memberNames(50, t);
    ring.setMembers(members);
    bal += spread(ownersOf(ring, shortKeys), members).max;
  }
  console.log(
    row([
      name,
      fmt(nsPerOp(shortKeys, fn), 1),
      fmt(nsPerOp(longKeys, fn), 1),
      fmt(nsPerOp(unicodeKeys, fn), 1),
      fmt(avalancheBias(fn, 5000), 3),
      fmt(bal / TRIALS, 3),
    ]),
  );
}

// ---------------------------------------------------------------- 2. ring

console.log("\n## Ring (hash32)\n");
console.log("max/min = keys of the most/least loaded member over the mean (avg, worst over name sets); join/leave = keys moved / ideal 1/(n+1); stray = keys that moved anywhere but to the joiner / from the leaver\n");
console.log(row(["replicas", "members", "max/mean avg", "max/mean worst", "min/mean avg", "join/ideal", "leave/ideal", "stray", "lookup ns", "build ms", "points KiB"]));
console.log(row(["---", "---", "---", "---", "---", "---", "---", "---", "---", "---", "---"]));
const started = performance.now();
for (const replicas of REPLICAS) {
  for (const n of MEMBERS) {
    let maxAvg = 0;
    let maxWorst = 0;
    let minAvg = 0;
    let join = 0;
    let leave = 0;
    let stray = 0;
    let lookup = Infinity;
    let build = Infinity;
    let points = 0;
    for (let t = 0; t < TRIALS; t++) {
      const members = memberNames(n + 1, t);
      const base = members.slice(0, n);
      const joiner = members[n]!;
      const leaver = members[0]!;
      const ring = new HashRing({ replicas });

      const t0 = performance.now();
      ring.setMembers(base);
      build = Math.min(build, performance.now() - t0);
      points = ring.pointCount;

      const before = ownersOf(ring, shortKeys);
      const s = spread(before, base);
      maxAvg += s.max;
      minAvg += s.min;
      maxWorst = Math.max(maxWorst, s.max);
      lookup = Math.min(lookup, nsPerOp(shortKeys, (k) => ring.owner(k), 1));

      ring.add(joiner);
      const joined = ownersOf(ring, shortKeys);
      join += moved(before, joined) * (n + 1);
      for (let i = 0; i < KEYS; i++) if (before[i] !== joined[i] && joined[i] !== joiner) stray++;

      ring.remove(leaver);
      const left = ownersOf(ring, shortKeys);
      leave += moved(joined, left) * (n + 1);
      for (let i = 0; i < KEYS; i++) if (joined[i] !== left[i] && joined[i] !== leaver) stray++;
    }
    console.log(
      row([
        replicas === DEFAULT_RING_OPTIONS.replicas ? `${replicas} (default)` : replicas,
        n,
        fmt(maxAvg / TRIALS, 3),
        fmt(maxWorst, 3),
        fmt(minAvg / TRIALS, 3),
        fmt(join / TRIALS),
        fmt(leave / TRIALS),
        stray,
        fmt(lookup, 0),
        fmt(build, 2),
        fmt((points * 8) / 1024, 1),
      ]),
    );
  }
}
// Printing the checksum keeps the timed loops from being optimised away.
console.log(`\nring section: ${fmt((performance.now() - started) / 1000, 1)} s (checksum ${sink >>> 0})`);
