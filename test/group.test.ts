/** Group logic with in-process fake peers: routing decisions, load bookkeeping, errors. */
import { describe, expect, test } from "bun:test";
import type { Entry, Membership, Peer } from "../src/cluster/peer.ts";
import { type ErrorCode, GCacheError, NotFoundError } from "../src/errors.ts";
import { Group, type GroupOptions } from "../src/group.ts";
import { FakeClock } from "./_support/clock.ts";
import { bytes, text } from "./_support/cluster.ts";
import { countAbortControllers } from "./_support/abort-count.ts";
import { waitFor } from "./_support/wait.ts";

class FakePeer implements Peer {
  readonly address: string;
  gets = 0;
  invalidations: (string | null)[] = [];
  constructor(
    readonly name: string,
    private readonly answer: (key: string) => Promise<Entry>,
  ) {
    this.address = `${name}:1`;
  }
  get(_group: string, key: string): Promise<Entry> {
    this.gets++;
    return this.answer(key);
  }
  async set(_group: string, _key: string, _value: Uint8Array): Promise<void> {}
  async delete(): Promise<boolean> {
    return true;
  }
  async invalidate(_group: string, key: string | null): Promise<void> {
    this.invalidations.push(key);
  }
  close(): void {}
}

function routeAllTo(peer: Peer | null, others: Peer[] = peer === null ? [] : [peer]): Membership {
  return { ownerOf: () => peer, peers: () => others, dropsDeadMembers: false };
}

function group(options: Partial<GroupOptions> = {}): Group {
  return new Group({ name: "g", maxBytes: 8 * 1024 * 1024, ...options });
}

const errorOf = async (promise: Promise<unknown>) => {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(GCacheError);
  return error as GCacheError;
};

describe("Group", () => {
  test("loads a miss once, caches it, and serves hits without the loader", async () => {
    let loads = 0;
    const g = group({ loader: async (key) => bytes(`v:${key}:${++loads}`) });
    expect(text(await g.get("a"))).toBe("v:a:1");
    expect(text(await g.get("a"))).toBe("v:a:1");
    const stats = g.stats();
    expect(stats).toMatchObject({ gets: 2, cacheHits: 1, loads: 1, loadsDeduped: 1, localLoads: 1 });
    expect(stats.caches.main.items).toBe(1);
  });

  test("without a loader, a key nobody set is ERR_NOT_FOUND", async () => {
    const g = group();
    expect((await errorOf(g.get("a"))).code).toBe("ERR_NOT_FOUND");
    await g.set("a", bytes("1"));
    expect(text(await g.get("a"))).toBe("1");
  });

  test("loader failures are not cached; sync throws, rejections and bad values all become ERR_LOAD_FAILED", async () => {
    let calls = 0;
    const behaviours: (() => unknown)[] = [
      () => {
        throw new Error("sync boom");
      },
      () => Promise.reject(new Error("async boom")),
      () => "not bytes",
      () => bytes("finally"),
    ];
    const g = group({ loader: () => behaviours[calls++]!() as Uint8Array });
    expect((await errorOf(g.get("k"))).message).toContain("sync boom");
    expect((await errorOf(g.get("k"))).message).toContain("async boom");
    expect((await errorOf(g.get("k"))).message).toContain("no Uint8Array");
    expect(text(await g.get("k"))).toBe("finally");
    expect(g.stats()).toMatchObject({ localLoadErrors: 3, localLoads: 1 });
  });

  test("a loader's NotFoundError reaches the caller as ERR_NOT_FOUND and is not cached", async () => {
    let calls = 0;
    const g = group({
      loader: () => {
        calls++;
        throw new NotFoundError("no such user");
      },
    });
    const error = await errorOf(g.get("u"));
    expect(error.code).toBe("ERR_NOT_FOUND");
    expect(error.message).toBe("no such user");
    await errorOf(g.get("u"));
    expect(calls).toBe(2);
  });

  test("a load that a write overtook returns its value to its callers but never caches it", async () => {
    const gate = Promise.withResolvers<void>();
    const started = Promise.withResolvers<void>();
    const g = group({
      loader: async () => {
        started.resolve();
        await gate.promise;
        return bytes("old-from-origin");
      },
    });
    const pending = g.get("k");
    await started.promise;
    await g.set("k", bytes("new"));
    gate.resolve();
    expect(text(await pending)).toBe("old-from-origin");
    expect(text(await g.get("k"))).toBe("new");
  });

  test("loaded values carry their own TTL; the group's TTL applies otherwise", async () => {
    const clock = new FakeClock();
    const g = group({
      clock: clock.read,
      ttlMs: 1000,
      loader: async (key) => (key === "short" ? { value: bytes("s"), ttlMs: 10 } : bytes("l")),
    });
    expect((await g.getEntry("short")).expiresAt).toBe(clock.now + 10);
    expect((await g.getEntry("long")).expiresAt).toBe(clock.now + 1000);
    clock.advance(10);
    expect(g.cachedEntry("short")).toBeUndefined();
    expect(g.cachedEntry("long")).toBeDefined();
  });

  test("when every caller gives up, the loader's signal aborts and nothing is cached", async () => {
    const aborted = Promise.withResolvers<unknown>();
    const g = group({
      loader: (_key, { signal }) =>
        new Promise<Uint8Array>((_resolve, reject) => {
          signal.addEventListener("abort", () => {
            aborted.resolve(signal.reason);
            reject(signal.reason);
          });
        }),
    });
    const first = new AbortController();
    const a = g.get("k", { signal: first.signal });
    const b = g.get("k", { timeoutMs: 30 });
    first.abort();
    expect((await errorOf(a)).code).toBe("ERR_CANCELLED");
    expect((await errorOf(b)).code).toBe("ERR_DEADLINE_EXCEEDED");
    expect(await aborted.promise).toBeInstanceOf(GCacheError);
    expect(g.stats().caches.main.items).toBe(0);
  });

  test("a loader that ignores its signal still cannot hold the caller past the deadline", async () => {
    const g = group({ loader: () => new Promise<Uint8Array>(() => {}), timeoutMs: 40 });
    const started = performance.now();
    expect((await errorOf(g.get("k"))).code).toBe("ERR_DEADLINE_EXCEEDED");
    expect(performance.now() - started).toBeLessThan(1000);
  });

  test("a peer-owned key is fetched from the owner once, kept hot with the owner's expiry", async () => {
    const peer = new FakePeer("B", async (key) => ({ value: bytes(`from-B:${key}`), expiresAt: 4_000_000_000_000 }));
    const g = group({ loader: async () => bytes("local"), hotCacheAdmission: 1 });
    g._attach(routeAllTo(peer));
    const results = await Promise.all(Array.from({ length: 20 }, () => g.getEntry("k")));
    expect(new Set(results.map((r) => text(r.value)))).toEqual(new Set(["from-B:k"]));
    expect(results[0]!.expiresAt).toBe(4_000_000_000_000);
    expect(peer.gets).toBe(1);
    expect(text(await g.get("k"))).toBe("from-B:k");
    expect(peer.gets).toBe(1);
    expect(g.stats()).toMatchObject({ peerLoads: 1, hotHits: 1, localLoads: 0 });
    expect(g.stats().caches.hot.items).toBe(1);
    expect(g.stats().caches.main.items).toBe(0);
  });

  test("a fetched value is copied into the hot cache by chance, drawn for each fetch", async () => {
    const peer = new FakePeer("B", async (key) => ({ value: bytes(`from-B:${key}`), expiresAt: 0 }));
    const draws = [0.5, 0.1, 0.099];
    const g = group({ random: () => draws.shift()!, loader: async () => bytes("local") });
    g._attach(routeAllTo(peer));
    // The default admits a draw below 0.1: the first two fetches leave no copy, the third does.
    for (const fetches of [1, 2, 3]) {
      expect(text(await g.get("k"))).toBe("from-B:k");
      expect(peer.gets).toBe(fetches);
    }
    expect(draws).toEqual([]);
    expect(g.stats().caches.hot.items).toBe(1);
    expect(text(await g.get("k"))).toBe("from-B:k");
    expect(peer.gets).toBe(3);
    expect(g.stats()).toMatchObject({ peerLoads: 3, hotHits: 1 });
  });

  test("hotCacheAdmission 0 copies nothing and draws nothing; it must be from 0 to 1", async () => {
    const peer = new FakePeer("B", async (key) => ({ value: bytes(`from-B:${key}`), expiresAt: 0 }));
    const g = group({
      hotCacheAdmission: 0,
      random: () => {
        throw new Error("no draw expected");
      },
    });
    g._attach(routeAllTo(peer));
    for (let i = 0; i < 3; i++) expect(text(await g.get("k"))).toBe("from-B:k");
    expect(peer.gets).toBe(3);
    expect(g.stats().caches.hot.items).toBe(0);
    for (const admission of [-0.1, 1.5, Number.NaN]) expect(() => group({ hotCacheAdmission: admission })).toThrow("hotCacheAdmission");
  });

  test("the main cache uses whatever bytes the hot cache leaves, and makes room as copies arrive", async () => {
    const maxBytes = 64 * 1024;
    const peer = new FakePeer("B", async () => ({ value: new Uint8Array(1000), expiresAt: 0 }));
    const g = group({ maxBytes, hotCacheShare: 0.25, hotCacheAdmission: 1, maxValueBytes: 1000, store: "lru" });
    // Keys starting with "p" are B's; the rest are this node's own.
    g._attach({ ownerOf: (key) => (key.startsWith("p") ? peer : null), peers: () => [peer], dropsDeadMembers: false });
    const caches = () => g.stats().caches;
    const withinBudget = () => expect(caches().main.bytes + caches().hot.bytes).toBeLessThanOrEqual(maxBytes);

    for (let i = 0; i < 80; i++) await g.set(`m${i}`, new Uint8Array(1000));
    withinBudget();
    // No copies yet: the main cache holds more than its fixed three quarters would.
    expect(caches().hot.items).toBe(0);
    expect(caches().main.bytes).toBeGreaterThan(maxBytes - 1024);

    for (let i = 0; i < 16; i++) {
      await g.get(`p${i}`);
      withinBudget();
    }
    expect(caches().hot.items).toBe(16);
    const crowded = caches().main.items;
    expect(crowded).toBeLessThanOrEqual(Math.floor((maxBytes - caches().hot.bytes) / 1003));
    expect(g.stats().caches.main.evictions).toBeGreaterThan(0);

    // Dropped copies give their bytes back.
    for (let i = 0; i < 8; i++) g.invalidateLocal(`p${i}`);
    expect(caches().hot.items).toBe(8);
    for (let i = 80; i < 100; i++) await g.set(`m${i}`, new Uint8Array(1000));
    withinBudget();
    expect(caches().main.items).toBeGreaterThanOrEqual(crowded + 7);
    g.invalidateLocal(null);
    for (let i = 0; i < 80; i++) await g.set(`m${i}`, new Uint8Array(1000));
    expect(caches().main.bytes).toBeGreaterThan(maxBytes - 1024);
    withinBudget();
  });

  test("an unreachable owner means a local fallback load; a not-found or failed owner does not", async () => {
    let loads = 0;
    const loader = async () => bytes(`local-${++loads}`);
    const down = new FakePeer("B", () => Promise.reject(new GCacheError("ERR_UNAVAILABLE", "connection refused")));
    const g = group({ loader });
    g._attach(routeAllTo(down));
    expect(text(await g.get("k"))).toBe("local-1");
    expect(g.stats()).toMatchObject({ peerErrors: 1, fallbackLoads: 1, localLoads: 1 });

    const notFound = new FakePeer("B", () => Promise.reject(new GCacheError("ERR_NOT_FOUND", "gone")));
    const h = group({ loader });
    h._attach(routeAllTo(notFound));
    expect((await errorOf(h.get("k"))).code).toBe("ERR_NOT_FOUND");
    expect(h.stats().fallbackLoads).toBe(0);
  });

  test("a write behind a stuck write to the same key waits at most until its own deadline; other keys do not wait", async () => {
    let release!: () => void;
    const stuck = new Promise<void>((resolve) => (release = resolve));
    const applied: string[] = [];
    class SlowOwner extends FakePeer {
      override async set(_group: string, key: string): Promise<void> {
        if (key === "k") await stuck;
        applied.push(`set ${key}`);
      }
      override async delete(_group?: string, key?: string): Promise<boolean> {
        applied.push(`delete ${key}`);
        return true;
      }
    }
    const g = group();
    g._attach(routeAllTo(new SlowOwner("B", () => Promise.reject(new Error("unused")))));
    const first = g.set("k", bytes("1"));
    const started = performance.now();
    expect((await errorOf(g.delete("k", { timeoutMs: 40 }))).code).toBe("ERR_DEADLINE_EXCEEDED");
    expect(performance.now() - started).toBeLessThan(1000);
    await g.delete("other");
    const queued = g.delete("k");
    release();
    await Promise.all([first, queued]);
    expect(applied).toEqual(["delete other", "set k", "delete k"]);
  });

  test("requests from peers are served locally, never forwarded", async () => {
    const peer = new FakePeer("B", async () => ({ value: bytes("remote"), expiresAt: 0 }));
    const g = group({ loader: async () => bytes("local") });
    g._attach(routeAllTo(peer));
    expect(text((await g.getEntry("k", undefined, true)).value)).toBe("local");
    expect(peer.gets).toBe(0);
    expect(g.stats()).toMatchObject({ serverRequests: 1, localLoads: 1 });
    await g.delete("k", undefined, true);
    await g.set("k2", bytes("v"), undefined, true);
    expect(peer.invalidations).toEqual([]);
  });

  test("writes invalidate every other peer and report the ones that did not answer", async () => {
    const good = new FakePeer("B", async () => ({ value: bytes("x"), expiresAt: 0 }));
    const bad = new FakePeer("C", async () => ({ value: bytes("x"), expiresAt: 0 }));
    bad.invalidate = () => Promise.reject(new GCacheError("ERR_UNAVAILABLE", "down"));
    const g = group();
    g._attach(routeAllTo(null, [good, bad]));
    expect(await g.set("k", bytes("v"))).toEqual({ unreachablePeers: ["C"] });
    expect(await g.delete("k")).toEqual({ deleted: true, unreachablePeers: ["C"] });
    expect(await g.clear()).toEqual({ unreachablePeers: ["C"] });
    expect(good.invalidations).toEqual(["k", "k", null]);
  });

  describe("a write whose owner cannot be reached", () => {
    /** A ring whose owner can be swapped, as discovery does when a lease expires. */
    function movableRing(first: Peer, dropsDeadMembers: boolean) {
      const ring = { owner: first as Peer | null, others: [first] as Peer[] };
      const membership: Membership = { ownerOf: () => ring.owner, peers: () => ring.others, dropsDeadMembers };
      return { ring, membership };
    }
    function deadPeer(name: string, code: ErrorCode = "ERR_UNAVAILABLE"): FakePeer & { writes: number } {
      const peer = Object.assign(new FakePeer(name, () => Promise.reject(new GCacheError(code, "connection refused"))), { writes: 0 });
      peer.set = () => {
        peer.writes++;
        return Promise.reject(new GCacheError(code, "connection refused"));
      };
      peer.delete = peer.set as unknown as FakePeer["delete"];
      return peer;
    }

    test("under discovery it waits for the ring to drop the owner and goes to the new one", async () => {
      const dead = deadPeer("C");
      const stored: string[] = [];
      const heir = new FakePeer("B", async () => ({ value: bytes("x"), expiresAt: 0 }));
      heir.set = async (_group: string, key: string, value: Uint8Array) => {
        stored.push(`${key}=${text(value)}`);
      };
      const { ring, membership } = movableRing(dead, true);
      const g = group();
      g._attach(membership);
      const write = g.set("k", bytes("v1"), { timeoutMs: 2_000 });
      await waitFor(() => dead.writes === 1);
      ring.owner = heir;
      ring.others = [heir];
      g._membershipChanged();
      expect(await write).toEqual({ unreachablePeers: [] });
      expect(stored).toEqual(["k=v1"]);
      expect(g.stats().writesRerouted).toBe(1);
    });

    test("when this node inherits the key, the write is stored here", async () => {
      const dead = deadPeer("C", "ERR_CLOSED");
      const { ring, membership } = movableRing(dead, true);
      const g = group();
      g._attach(membership);
      const write = g.set("k", bytes("mine"), { timeoutMs: 2_000 });
      const removal = g.delete("gone", { timeoutMs: 2_000 });
      await waitFor(() => dead.writes === 2);
      ring.owner = null;
      ring.others = [];
      g._membershipChanged();
      expect(await write).toEqual({ unreachablePeers: [] });
      expect(await removal).toEqual({ deleted: false, unreachablePeers: [] });
      expect(text(await g.get("k"))).toBe("mine");
    });

    test("it fails with the owner's error at its deadline if the ring never changes", async () => {
      const dead = deadPeer("C");
      const g = group();
      g._attach(movableRing(dead, true).membership);
      const started = Date.now();
      expect((await errorOf(g.set("k", bytes("v"), { timeoutMs: 150 }))).code).toBe("ERR_UNAVAILABLE");
      expect(Date.now() - started).toBeGreaterThanOrEqual(140);
      expect(g.stats().writesRerouted).toBe(0);
    });

    test("with a static member list, or for a refusal that is not about reachability, it fails at once", async () => {
      const dead = deadPeer("C");
      const g = group();
      g._attach(movableRing(dead, false).membership);
      const started = Date.now();
      expect((await errorOf(g.set("k", bytes("v"), { timeoutMs: 5_000 }))).code).toBe("ERR_UNAVAILABLE");
      const refusing = deadPeer("D", "ERR_UNAUTHENTICATED");
      const h = group();
      h._attach(movableRing(refusing, true).membership);
      expect((await errorOf(h.delete("k", { timeoutMs: 5_000 }))).code).toBe("ERR_UNAUTHENTICATED");
      expect(Date.now() - started).toBeLessThan(1_000);
    });
  });

  test("a load a peer's batch started hands a failure to the Get that follows it, and to no later one", async () => {
    let calls = 0;
    let fail: (error: Error) => void = () => {};
    const g = group({
      loader: () => {
        calls++;
        return new Promise<Uint8Array>((_, reject) => (fail = reject));
      },
    });
    // The failure comes before the peer's Get: the Get takes it without a second load.
    expect(g._batchLookup("k", undefined)).toBeUndefined();
    await waitFor(() => calls === 1);
    fail(new Error("origin down"));
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect((await errorOf(g._loadMissed("k", undefined, true))).code).toBe("ERR_LOAD_FAILED");
    expect(calls).toBe(1);
    // A later Get is not handed that old failure: it loads.
    const later = g._loadMissed("k", undefined, true);
    await waitFor(() => calls === 2);
    fail(new Error("still down"));
    expect((await errorOf(later)).message).toContain("still down");

    // The peer's Get arrives while the load runs: it joins it, and nothing is kept for anyone after.
    expect(g._batchLookup("j", undefined)).toBeUndefined();
    await waitFor(() => calls === 3);
    const joined = g._loadMissed("j", undefined, true);
    fail(new Error("once"));
    expect((await errorOf(joined)).message).toContain("once");
    const next = g._loadMissed("j", undefined, true);
    await waitFor(() => calls === 4);
    fail(new Error("twice"));
    expect((await errorOf(next)).message).toContain("twice");
  });

  test("a key a peer's batch missed counts one cache lookup, made by the Get that follows", async () => {
    let calls = 0;
    let release: (value: Uint8Array) => void = () => {};
    const g = group({
      loader: () => {
        calls++;
        return new Promise<Uint8Array>((resolve) => (release = resolve));
      },
    });
    expect(g._batchLookup("k", undefined)).toBeUndefined();
    await waitFor(() => calls === 1);
    expect(g.stats().caches.main).toMatchObject({ gets: 0, hits: 0, misses: 0 });
    // The peer's Get, as the service makes it: a look in the caches, then the load it joins.
    expect(g.cachedEntry("k", true)).toBeUndefined();
    const joined = g._loadMissed("k", undefined, true);
    release(bytes("v"));
    expect(text((await joined).value)).toBe("v");
    expect(g.stats().caches.main).toMatchObject({ gets: 1, hits: 0, misses: 1 });
    expect(g.stats()).toMatchObject({ gets: 1, cacheHits: 0, loads: 1 });
    expect(calls).toBe(1);
    // A hit in a batch counts as one, in the caches as in the group.
    expect(text(g._batchLookup("k", undefined)!.value)).toBe("v");
    expect(g.stats().caches.main).toMatchObject({ gets: 2, hits: 1, misses: 1 });
    expect(g.stats()).toMatchObject({ gets: 2, cacheHits: 1 });
  });

  test("a fetch from an owner that never answers ends at the caller's deadline, with no signal needed", async () => {
    const silent = new FakePeer("B", () => new Promise<Entry>(() => {}));
    const g = group();
    g._attach(routeAllTo(silent));
    const started = Date.now();
    const outcomes = await Promise.all([g.get("k", { timeoutMs: 100 }), g.get("k", { timeoutMs: 100 })].map((p) => errorOf(p)));
    expect(outcomes.map((e) => e.code)).toEqual(["ERR_DEADLINE_EXCEEDED", "ERR_DEADLINE_EXCEEDED"]);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(silent.gets).toBe(1);
    // Nothing is left behind: the next get asks again.
    await errorOf(g.get("k", { timeoutMs: 50 }));
    expect(silent.gets).toBe(2);
  });

  test("a time limit beyond what a timer takes (about 24.8 days) does not fail a fetch at once", async () => {
    const slow = new FakePeer("B", async (key) => {
      await Bun.sleep(30);
      return { value: bytes(`v:${key}`), expiresAt: 0 };
    });
    const g = group();
    g._attach(routeAllTo(slow));
    const days = 30 * 24 * 3_600_000;
    // The first caller starts the fetch; the second, less patient, leaves early only at its own (also distant) deadline.
    const [first, second] = await Promise.all([g.get("k", { timeoutMs: 2 * days }), g.get("k", { timeoutMs: days })]);
    expect([text(first), text(second)]).toEqual(["v:k", "v:k"]);
    expect(text(await g.get("another", { timeoutMs: days }).catch(() => bytes("failed")))).toBe("v:another");
    expect(slow.gets).toBe(2);
  });

  test("a write makes no AbortController unless it waits; a load makes one only if its loader reads the signal", async () => {
    const owner = new FakePeer("B", async () => ({ value: bytes("b"), expiresAt: 0 }));
    const other = new FakePeer("C", async () => ({ value: bytes("c"), expiresAt: 0 }));
    const remote = group();
    remote._attach(routeAllTo(owner, [owner, other]));
    let loaderSignal: AbortSignal | undefined;
    const local = group({
      loader: async (key, { signal }) => {
        loaderSignal = signal;
        return bytes(key);
      },
    });
    let deadlineSeen = 0;
    const quiet = group({
      name: "quiet",
      loader: async (key, context) => {
        deadlineSeen = context.deadline;
        await Bun.sleep(1);
        return bytes(key);
      },
    });
    const counter = countAbortControllers();
    try {
      await remote.set("k", bytes("v"));
      await remote.delete("k");
      expect(other.invalidations).toEqual(["k", "k"]);
      expect(counter.made).toBe(0);
      expect(text(await quiet.get("y"))).toBe("y");
      expect(deadlineSeen).toBeGreaterThan(Date.now());
      expect(counter.made).toBe(0);
      expect(text(await local.get("x"))).toBe("x");
      expect(counter.made).toBe(1);
      expect(loaderSignal?.aborted).toBe(false);
    } finally {
      counter.restore();
    }
  });

  test("bad keys, values and options are clear errors", async () => {
    const g = group({ maxValueBytes: 100, maxKeyBytes: 8 });
    expect((await errorOf(g.get(""))).code).toBe("ERR_INVALID_ARGUMENT");
    expect((await errorOf(g.get("123456789"))).message).toContain("maximum of 8 bytes");
    expect((await errorOf(g.set("k", new Uint8Array(101)))).code).toBe("ERR_VALUE_TOO_LARGE");
    expect((await errorOf(g.set("k", bytes("v"), { ttlMs: -1 }))).code).toBe("ERR_INVALID_ARGUMENT");
    expect(() => group({ name: "" })).toThrow("non-empty name");
    expect(() => group({ maxBytes: 1000, maxValueBytes: 1000 })).toThrow("room for at least two");
    expect(() => group({ hotCacheShare: 1 })).toThrow("hotCacheShare");
  });

  test("a value as large as maxValueBytes is always storable, even in a small group", async () => {
    const g = group({ maxBytes: 64 * 1024, maxValueBytes: 16 * 1024, maxKeyBytes: 64 });
    for (let i = 0; i < 20; i++) await g.set(`k${i}`, new Uint8Array(16 * 1024));
    expect((await g.get("k19")).length).toBe(16 * 1024);
  });
});

test("loads beyond maxConcurrentLoads are refused with a retryable ERR_UNAVAILABLE, never queued without bound", async () => {
  const gate = Promise.withResolvers<void>();
  const g = new Group({
    name: "g",
    maxBytes: 8 * 1024 * 1024,
    maxConcurrentLoads: 2,
    loader: async (key) => {
      await gate.promise;
      return bytes(key);
    },
  });
  const first = [g.get("a"), g.get("b")];
  const refused = await g.get("c").then(
    () => null,
    (e: GCacheError) => e,
  );
  expect(refused?.code).toBe("ERR_UNAVAILABLE");
  expect(refused?.retryable).toBe(true);
  gate.resolve();
  expect((await Promise.all(first)).map(text)).toEqual(["a", "b"]);
  expect(text(await g.get("c"))).toBe("c");
});
