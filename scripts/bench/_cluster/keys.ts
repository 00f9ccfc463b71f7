/**
 * Key sets of the cluster benchmark, chosen by owner with the same ring the
 * nodes build (256 virtual nodes per member, Murmur3, members A, B, C with
 * weight 1). The benchmark checks from the nodes' own counters that the keys
 * took the path they were chosen for.
 */
import { HashRing } from "../../../src/cluster/ring.ts";

/** `count` keys `<prefix><i>` owned by one of `owners`, in order of i. */
export function keysOwnedBy(members: readonly string[], owners: readonly string[], prefix: string, count: number): string[] {
  const ring = new HashRing();
  ring.setMembers(members);
  const wanted = new Set(owners);
  const keys: string[] = [];
  for (let i = 0; keys.length < count; i++) {
    if (i > count * 100 + 1_000) throw new Error(`too few keys owned by ${owners.join(",")}`);
    const key = `${prefix}${i}`;
    if (wanted.has(ring.owner(key)!)) keys.push(key);
  }
  return keys;
}

/** The owner of every key. */
export function ownersOf(members: readonly string[], keys: readonly string[]): string[] {
  const ring = new HashRing();
  ring.setMembers(members);
  return keys.map((key) => ring.owner(key)!);
}
