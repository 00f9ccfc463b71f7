/**
 * Consistent-hash ring: decides which member owns a key.
 *
 * Every node builds its own ring from the member list it learns through
 * discovery, and nodes never exchange ring state, so the ring must be a pure
 * function of the member set: the same `{name, weight}` pairs give the same
 * owner for every key whatever order they were added in, on every node and
 * runtime. Hence the layout is rebuilt from scratch on each membership change
 * (members are sorted first, so insertion order cannot leak in) and points
 * with equal hashes are ordered by member name.
 */

import { invalidArgument, invalidOption } from "../errors.ts";
import { type HashFn, hash32 } from "./hash.ts";

export interface RingOptions {
  /**
   * Virtual nodes per unit of weight. More points even out each member's share
   * of the key space (the spread shrinks roughly as 1/sqrt(replicas)) at the
   * cost of memory (8 bytes a point), rebuild time and a slightly deeper
   * binary search.
   */
  replicas?: number;
  /**
   * Hash for both keys and virtual-node labels. Must return an unsigned 32-bit
   * integer (other numbers are coerced with `>>> 0`) and must be identical on
   * every node of the cluster.
   */
  hash?: HashFn;
}

/**
 * Defaults for `RingOptions`.
 *
 * `replicas: 256` comes from `scripts/bench/ring.ts --keys 1000000 --trials 8`
 * (enough keys that sampling noise does not hide the ring's own imbalance).
 * A member's share spreads as about 1/sqrt(replicas), so there is no knee,
 * only a price: the most loaded of 50 members carries 1.19x the mean share
 * at 160, 1.15x at 256 and 1.10x at 512 (10 members: 1.13x, 1.11x, 1.06x).
 * 256 kept every name set measured under 1.2x at 50 members, while a
 * 50-member ring still builds in about 2 ms and takes 100 KiB; 512 doubles
 * both and adds about 8 ns to every lookup for the last few percent.
 * Membership changes are rare, lookups are not.
 *
 * `hash: hash32` (Murmur3): see `hash32` for why.
 */
export const DEFAULT_RING_OPTIONS: Readonly<Required<RingOptions>> = Object.freeze({
  replicas: 256,
  hash: hash32,
});

/** A member by name (weight 1) or with an explicit weight. */
export type RingMember = string | { name: string; weight?: number };

/**
 * Points are sorted as `hash * MEMBER_SPAN + memberIndex` in a Float64Array,
 * which orders by hash and then by member name (indices follow name order)
 * without a comparator. Exact while the product stays below 2^53, which
 * bounds the member count to 2^21.
 */
const MEMBER_SPAN = 2 ** 21;

/** Upper bound on total virtual nodes, so a bad weight cannot exhaust memory. */
const MAX_POINTS = 2 ** 24;

export class HashRing {
  readonly #replicas: number;
  readonly #hash: HashFn;
  #weights = new Map<string, number>();
  /** Member names in code-unit order; `#owners` holds indices into it. */
  #names: string[] = [];
  /** Virtual-node positions, ascending. */
  #points: Uint32Array = new Uint32Array(0);
  /** `#owners[i]` is the member index of `#points[i]`. */
  #owners: Uint32Array = new Uint32Array(0);
  /** Scratch for `owners()`: `#seen[m] === #epoch` marks member m as taken. */
  #seen: Uint32Array = new Uint32Array(0);
  #epoch = 0;

  constructor(options: RingOptions = {}) {
    const replicas = options.replicas ?? DEFAULT_RING_OPTIONS.replicas;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_POINTS) {
      throw invalidOption(`replicas must be an integer in [1, ${MAX_POINTS}], got ${String(replicas)}`);
    }
    const hash = options.hash ?? DEFAULT_RING_OPTIONS.hash;
    if (typeof hash !== "function") throw invalidOption("hash must be a function");
    this.#replicas = replicas;
    this.#hash = hash;
  }

  /** Virtual nodes per unit of weight. */
  get replicas(): number {
    return this.#replicas;
  }

  /** Number of members. */
  get size(): number {
    return this.#names.length;
  }

  /** Number of virtual nodes on the ring. */
  get pointCount(): number {
    return this.#points.length;
  }

  /** Member names in ascending code-unit order. */
  members(): string[] {
    return this.#names.slice();
  }

  has(name: string): boolean {
    return this.#weights.has(name);
  }

  /** The member's weight, or `undefined` when it is not a member. */
  weight(name: string): number | undefined {
    return this.#weights.get(name);
  }

  /**
   * Replaces the whole membership at once. Everything is validated before
   * anything changes, so on a throw the ring is left as it was.
   */
  setMembers(members: Iterable<RingMember>): void {
    const next = new Map<string, number>();
    for (const member of members) {
      const name = typeof member === "string" ? member : member?.name;
      const weight = typeof member === "string" ? 1 : (member?.weight ?? 1);
      checkName(name);
      checkWeight(name, weight);
      if (next.has(name)) throw invalidArgument(`duplicate ring member ${JSON.stringify(name)}`);
      next.set(name, weight);
    }
    this.#commit(next);
  }

  /**
   * Adds a member, or changes its weight. Returns `false` when it was already
   * present with that weight (the ring is untouched then).
   */
  add(name: string, weight = 1): boolean {
    checkName(name);
    checkWeight(name, weight);
    if (this.#weights.get(name) === weight) return false;
    const next = new Map(this.#weights);
    next.set(name, weight);
    this.#commit(next);
    return true;
  }

  /** Removes a member; `false` when it was not one. */
  remove(name: string): boolean {
    if (!this.#weights.has(name)) return false;
    const next = new Map(this.#weights);
    next.delete(name);
    this.#commit(next);
    return true;
  }

  /** The member owning `key`, or `undefined` when the ring is empty. */
  owner(key: string): string | undefined {
    if (this.#points.length === 0) return undefined;
    return this.#names[this.#owners[this.#locate(this.#hash(key) >>> 0)]!];
  }

  /**
   * Up to `n` distinct members for `key`, walking clockwise from its owner:
   * the owner first, then the members that would take over if it left (a
   * replica list). Fewer than `n` when the ring has fewer members.
   */
  owners(key: string, n: number): string[] {
    if (!Number.isInteger(n) || n < 0) throw invalidArgument(`n must be a non-negative integer, got ${String(n)}`);
    const names = this.#names;
    const want = Math.min(n, names.length);
    const out: string[] = [];
    if (want === 0) return out;
    const points = this.#points.length;
    const owners = this.#owners;
    const seen = this.#seen;
    const epoch = this.#nextEpoch();
    // Every member has at least one point, so one lap finds all of them.
    for (let i = this.#locate(this.#hash(key) >>> 0); out.length < want; i = i + 1 === points ? 0 : i + 1) {
      const m = owners[i]!;
      if (seen[m] !== epoch) {
        seen[m] = epoch;
        out.push(names[m]!);
      }
    }
    return out;
  }

  /** Index of the first point at or after `h`, wrapping past the top to 0. */
  #locate(h: number): number {
    const points = this.#points;
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return lo === points.length ? 0 : lo;
  }

  #nextEpoch(): number {
    if (this.#epoch === 0xffffffff) {
      this.#seen.fill(0);
      this.#epoch = 0;
    }
    return ++this.#epoch;
  }

  /**
   * Builds the layout for `weights` and only then swaps it in, so a throw
   * (capacity, or a throwing custom hash) leaves the ring as it was.
   */
  #commit(weights: Map<string, number>): void {
    this.#checkCapacity(weights);
    const names = [...weights.keys()].sort(); // code-unit order: locale-independent, so every node agrees
    const { points, owners } = this.#layout(names, weights);
    this.#weights = weights;
    this.#names = names;
    this.#points = points;
    this.#owners = owners;
    this.#seen = new Uint32Array(names.length);
    this.#epoch = 0;
  }

  #checkCapacity(weights: Map<string, number>): void {
    if (weights.size > MEMBER_SPAN) throw invalidArgument(`a ring holds at most ${MEMBER_SPAN} members`);
    let total = 0;
    for (const w of weights.values()) total += pointsFor(this.#replicas, w);
    if (total > MAX_POINTS) {
      throw invalidArgument(`ring would need ${total} virtual nodes, more than ${MAX_POINTS}; lower weights or replicas`);
    }
  }

  #layout(names: string[], weights: Map<string, number>): { points: Uint32Array; owners: Uint32Array } {
    const counts = names.map((name) => pointsFor(this.#replicas, weights.get(name)!));
    const total = counts.reduce((a, b) => a + b, 0);
    const packed = new Float64Array(total);
    const hash = this.#hash;
    let p = 0;
    for (let m = 0; m < names.length; m++) {
      const name = names[m]!;
      const count = counts[m]!;
      for (let i = 0; i < count; i++) packed[p++] = (hash(`${name}#${i}`) >>> 0) * MEMBER_SPAN + m;
    }
    packed.sort();
    const points = new Uint32Array(total);
    const owners = new Uint32Array(total);
    for (let j = 0; j < total; j++) {
      const v = packed[j]!;
      const m = v % MEMBER_SPAN;
      points[j] = (v - m) / MEMBER_SPAN;
      owners[j] = m;
    }
    return { points, owners };
  }
}

/** Virtual nodes for a member; at least one, so a tiny weight never silently drops a member. */
function pointsFor(replicas: number, weight: number): number {
  return Math.max(1, Math.round(replicas * weight));
}

function checkName(name: unknown): asserts name is string {
  if (typeof name !== "string" || name.length === 0) {
    throw invalidArgument(`ring member name must be a non-empty string, got ${JSON.stringify(name) ?? String(name)}`);
  }
}

function checkWeight(name: string, weight: unknown): asserts weight is number {
  if (typeof weight !== "number" || !Number.isFinite(weight) || weight <= 0) {
    throw invalidArgument(`weight of ring member ${JSON.stringify(name)} must be a finite number > 0, got ${String(weight)}`);
  }
}
