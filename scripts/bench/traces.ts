/**
 * Deterministic request traces shared by the benchmarks in this folder.
 *
 * Nothing here runs on its own; `store.ts` and `hitratio.ts` import it.
 *
 * - `Rng`: seeded xoshiro128** (seeded through splitmix32), so every run of a
 *   benchmark replays exactly the same requests.
 * - `Zipf`: Zipf(s) over ranks 0..n-1 (rank 0 is the most popular), sampled by
 *   inverting a precomputed CDF: a guide table narrows the range, binary
 *   search finishes. Works for any s >= 0 and n up to a few million (8 bytes
 *   of CDF per item).
 * - Trace builders return `Uint32Array`s of item ids. Ids equal Zipf ranks, so
 *   id 0 is the hottest item and ids near `n` are the coldest.
 * - `buildKeys` turns ids into pre-built, flattened strings so the benchmarks
 *   never measure string building.
 */

/** A trace: item ids in request order, plus the id space they are drawn from. */
export interface Trace {
  readonly name: string;
  readonly ids: Uint32Array;
  /** One more than the largest id that may appear; size `buildKeys` with it. */
  readonly universe: number;
}

/** xoshiro128** with a splitmix32 seeder. Fast, 32-bit, deterministic. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** Uniform unsigned 32-bit integer. */
  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  float(): number {
    const hi = this.u32() >>> 5; // 27 bits
    const lo = this.u32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.float() * n);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Zipf(s) over ranks 0..n-1: P(rank r) proportional to 1 / (r + 1)^s. */
export class Zipf {
  readonly n: number;
  readonly s: number;
  /** cdf[r] = sum of weights of ranks 0..r (not normalised). */
  private readonly cdf: Float64Array;
  private readonly total: number;
  /** guide[j] = smallest r with cdf[r] > j * total / guideSize; guide[guideSize] = n - 1. */
  private readonly guide: Uint32Array;
  private readonly guideSize: number;

  constructor(n: number, s: number) {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`Zipf: n must be a positive integer, got ${n}`);
    if (!(s >= 0) || !Number.isFinite(s)) throw new RangeError(`Zipf: s must be finite and >= 0, got ${s}`);
    this.n = n;
    this.s = s;
    const cdf = new Float64Array(n);
    let acc = 0;
    for (let r = 0; r < n; r++) {
      acc += 1 / Math.pow(r + 1, s);
      cdf[r] = acc;
    }
    this.cdf = cdf;
    this.total = acc;
    const guideSize = Math.min(n, 1 << 16);
    const guide = new Uint32Array(guideSize + 1);
    let r = 0;
    for (let j = 0; j < guideSize; j++) {
      const threshold = (j * acc) / guideSize;
      while (r < n - 1 && (cdf[r] as number) <= threshold) r++;
      guide[j] = r;
    }
    guide[guideSize] = n - 1;
    this.guide = guide;
    this.guideSize = guideSize;
  }

  /** Probability of rank r. */
  p(r: number): number {
    const hi = this.cdf[r] ?? 0;
    const lo = r > 0 ? (this.cdf[r - 1] ?? 0) : 0;
    return (hi - lo) / this.total;
  }

  /** Share of requests that go to ranks 0..k-1. */
  headMass(k: number): number {
    if (k <= 0) return 0;
    return (this.cdf[Math.min(k, this.n) - 1] ?? 0) / this.total;
  }

  /** One rank, drawn with `rng`. */
  sample(rng: Rng): number {
    const f = rng.float();
    const u = f * this.total;
    const cdf = this.cdf;
    // Smallest r with cdf[r] > u; it lies between the guide entries around u.
    const j = Math.floor(f * this.guideSize);
    let lo = this.guide[j] as number;
    let hi = this.guide[j + 1] as number;
    if (lo > 0 && (cdf[lo - 1] as number) > u) lo = 0; // rounding at a guide boundary
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cdf[mid] as number) > u) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** `length` ranks in a fresh array. */
  fill(rng: Rng, length: number): Uint32Array {
    const out = new Uint32Array(length);
    for (let i = 0; i < length; i++) out[i] = this.sample(rng);
    return out;
  }
}

/** Independent Zipf(s) requests over n items. */
export function zipfTrace(n: number, s: number, length: number, seed = 1): Trace {
  return { name: `zipf${s}`, ids: new Zipf(n, s).fill(new Rng(seed), length), universe: n };
}

export interface ScanOptions {
  /** Zipf requests between the starts of two scans. */
  every: number;
  /** Requests per scan (ids in increasing order). */
  scanLength: number;
  /**
   * `fresh` (default): every scan reads ids never requested before or after
   * (ids n, n+1, ...), like a batch job walking a table the cache never
   * serves again. `cold`: scans walk the coldest half of the Zipf universe,
   * continuing where the previous scan stopped and wrapping around.
   */
  kind?: "fresh" | "cold";
  seed?: number;
}

/**
 * Zipf(s) requests with a sequential scan spliced in after every `every` of
 * them. `length` counts all requests, scans included.
 */
export function zipfWithScans(n: number, s: number, length: number, options: ScanOptions): Trace {
  const { every, scanLength } = options;
  const kind = options.kind ?? "fresh";
  if (every < 1 || scanLength < 0) throw new RangeError("zipfWithScans: every must be >= 1 and scanLength >= 0");
  if (kind === "cold" && scanLength > n - Math.floor(n / 2)) {
    throw new RangeError("zipfWithScans: a cold scan cannot be longer than the cold half of the universe");
  }
  const zipf = new Zipf(n, s);
  const rng = new Rng(options.seed ?? 1);
  const ids = new Uint32Array(length);
  const coldStart = Math.floor(n / 2);
  const coldSpan = n - coldStart;
  let nextFresh = n;
  let coldCursor = 0;
  let i = 0;
  while (i < length) {
    for (let z = 0; z < every && i < length; z++) ids[i++] = zipf.sample(rng);
    for (let k = 0; k < scanLength && i < length; k++) {
      if (kind === "fresh") {
        ids[i++] = nextFresh++;
      } else {
        ids[i++] = coldStart + coldCursor;
        coldCursor = coldCursor + 1 === coldSpan ? 0 : coldCursor + 1;
      }
    }
  }
  const universe = kind === "fresh" ? nextFresh : n;
  return { name: `zipf${s}+scan(${kind})`, ids, universe };
}

/** Cyclic access 0, 1, ..., k-1, 0, 1, ... (LRU's worst case once k exceeds the cache). */
export function loopTrace(k: number, length: number): Trace {
  const ids = new Uint32Array(length);
  let id = 0;
  for (let i = 0; i < length; i++) {
    ids[i] = id;
    id = id + 1 === k ? 0 : id + 1;
  }
  return { name: `loop(${k})`, ids, universe: k };
}

/**
 * Keys for ids 0..universe-1, built once. Concatenated strings may start as
 * ropes; they are flattened here so the first lookup in a benchmark does not
 * pay for it.
 */
export function buildKeys(universe: number, prefix = "item:"): string[] {
  const keys = new Array<string>(universe);
  let check = 0;
  for (let i = 0; i < universe; i++) {
    const key = `${prefix}${i}`;
    check += key.charCodeAt(key.length - 1);
    keys[i] = key;
  }
  if (check < 0) throw new Error("unreachable");
  return keys;
}

/** Distinct ids in a trace (compulsory misses of any cache). */
export function distinctCount(trace: Trace): number {
  const seen = new Uint8Array(trace.universe);
  let distinct = 0;
  for (const id of trace.ids) {
    if (seen[id] === 0) {
      seen[id] = 1;
      distinct++;
    }
  }
  return distinct;
}
