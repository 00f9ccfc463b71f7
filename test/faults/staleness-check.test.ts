/** The staleness check the fault tests rely on must flag stale reads, or those tests could not fail. */
import { expect, test } from "bun:test";
import { Load, staleReads, type GetRecord, type SetRecord } from "./_support.ts";

function loadWith(sets: Omit<SetRecord, "via" | "error" | "unreachablePeers">[], gets: Omit<GetRecord, "via">[]): Load {
  const load = new Load({ clients: [], keys: [], concurrency: 0, setShare: 0, timeoutMs: 0, seed: 0 });
  for (const set of sets) {
    const list = load.sets.get(set.key) ?? [];
    list.push({ ...set, via: 0, ...(set.acked ? {} : { error: "ERR_UNAVAILABLE" }), unreachablePeers: [] });
    load.sets.set(set.key, list);
  }
  for (const get of gets) load.gets.push({ ...get, via: 0 });
  return load;
}

const never = () => false;

test("a read of the acknowledged value, or of a later write in flight or failed, is fine", () => {
  const load = loadWith(
    [
      { key: "k", value: "set:k:1", start: 0, end: 10, acked: true },
      { key: "k", value: "set:k:2", start: 20, end: 30, acked: false },
      { key: "k", value: "set:k:3", start: 40, end: 60, acked: true },
    ],
    [
      { key: "k", start: 5, end: 6, value: "origin:k" },
      { key: "k", start: 11, end: 12, value: "set:k:1" },
      { key: "k", start: 12, end: 13, value: "set:k:2" },
      { key: "k", start: 50, end: 51, value: "set:k:1" },
      { key: "k", start: 50, end: 52, value: "set:k:3" },
      { key: "k", start: 61, end: 62, value: "set:k:3" },
      { key: "k", start: 61, end: 62, error: "ERR_UNAVAILABLE" },
    ],
  );
  expect(staleReads(load, never)).toEqual([]);
});

test("a read of an overwritten value, of the origin after a live write, or of an unknown value is flagged", () => {
  const load = loadWith(
    [
      { key: "k", value: "set:k:1", start: 0, end: 10, acked: true },
      { key: "k", value: "set:k:2", start: 20, end: 30, acked: true },
    ],
    [
      { key: "k", start: 31, end: 32, value: "set:k:1" },
      { key: "k", start: 31, end: 32, value: "origin:k" },
      { key: "k", start: 31, end: 32, value: "junk" },
    ],
  );
  expect(staleReads(load, never)).toHaveLength(3);
  // A lost last write excuses the origin value, never an older write.
  expect(staleReads(load, (set) => set.value === "set:k:2")).toHaveLength(2);
});
