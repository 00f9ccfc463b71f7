/**
 * A cluster of three real node processes on loopback: cluster-wide
 * singleflight, the latency of a peer hop, and surviving a node that dies
 * without a goodbye (SIGKILL).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { GCacheClient } from "../../src/client.ts";
import { text } from "../_support/cluster.ts";
import { startProcessCluster, type ProcessCluster } from "../_support/processes.ts";

const LOADER_DELAY_MS = 200;
const NAMES = ["a", "b", "c"] as const;

function configs() {
  return NAMES.map((name) => ({ name, loaderDelayMs: LOADER_DELAY_MS }));
}

function count<T>(items: readonly T[], item: T): number {
  return items.filter((x) => x === item).length;
}

describe("three node processes", () => {
  let cluster: ProcessCluster;
  let clients: GCacheClient[] = [];

  beforeAll(async () => {
    cluster = await startProcessCluster(configs());
    clients = cluster.nodes.map((node) => new GCacheClient(node.address));
  });

  afterAll(async () => {
    for (const client of clients) client.close();
    await cluster?.close();
  });

  test("300 concurrent gets of one cold key over all nodes run the loader once, on the owner", async () => {
    const key = "stampede";
    const gets = Array.from({ length: 300 }, (_, i) => clients[i % clients.length]!.get("g", key));
    const values = await Promise.all(gets);
    expect(new Set(values.map(text))).toEqual(new Set([`value-of-${key}`]));

    await cluster.sync();
    const loads = cluster.loads();
    const total = [...loads.values()].reduce((sum, keys) => sum + count(keys, key), 0);
    expect(total).toBe(1);
    expect(count(loads.get(cluster.ownerOf(key))!, key)).toBe(1);
  });

  test("a cold miss for a key a peer owns costs about one loader latency", async () => {
    // Connect every client and every peer channel first: this measures the miss, not connection setup.
    await Promise.all(
      clients.flatMap((client, i) =>
        NAMES.map((owner) => client.get("g", cluster.keysOwnedBy(owner, 1, `warm-${i}`)[0]!)),
      ),
    );

    for (const [i, entry] of NAMES.entries()) {
      const owner = NAMES[(i + 1) % NAMES.length]!;
      const key = cluster.keysOwnedBy(owner, 1, `cold-via-${entry}`)[0]!;
      const started = performance.now();
      const value = await clients[i]!.get("g", key);
      const elapsed = performance.now() - started;
      expect(text(value)).toBe(`value-of-${key}`);
      // The loader ran (it waits 200 ms) and nothing waited for a timeout or a second load.
      expect(elapsed).toBeGreaterThanOrEqual(LOADER_DELAY_MS - 5);
      expect(elapsed).toBeLessThan(2 * LOADER_DELAY_MS);

      await cluster.sync();
      const loads = cluster.loads();
      expect(count(loads.get(owner)!, key)).toBe(1);
      expect(count(loads.get(entry)!, key)).toBe(0);
    }
  });

  test("SIGTERM closes a node gracefully (exit 0) and the others still serve its keys", async () => {
    const victim = cluster.byName("c");
    const key = cluster.keysOwnedBy("c", 1, "after-term")[0]!;
    expect(await victim.stop()).toBe(0);
    for (const client of clients.slice(0, 2)) expect(text(await client.get("g", key))).toBe(`value-of-${key}`);
  });
});

describe("a node killed with SIGKILL", () => {
  let cluster: ProcessCluster | undefined;
  let clients: GCacheClient[] = [];

  afterAll(async () => {
    for (const client of clients) client.close();
    await cluster?.close();
  });

  test("gets for its keys on the live nodes keep succeeding, loaded locally", async () => {
    cluster = await startProcessCluster(configs());
    const victim = cluster.byName("c");
    const live = [cluster.byName("a"), cluster.byName("b")];
    clients = live.map((node) => new GCacheClient(node.address));

    // Loads in flight on the victim when it dies.
    const inFlightKeys = cluster.keysOwnedBy("c", 4, "inflight");
    const inFlight = inFlightKeys.flatMap((key) => clients.map((client) => client.get("g", key).then(text)));
    const settledInFlight = Promise.allSettled(inFlight);
    await Promise.all(inFlightKeys.map((key) => victim.waitForLine((line) => line === `LOAD ${key}`, `LOAD ${key}`)));
    victim.kill("SIGKILL");
    await victim.waitExit();
    expect(victim.code).not.toBe(0);

    const inFlightResults = await settledInFlight;
    const inFlightErrors = inFlightResults.flatMap((r) => (r.status === "rejected" ? [String(r.reason)] : []));
    expect(inFlightErrors).toEqual([]);
    expect(inFlightResults.map((r) => (r.status === "fulfilled" ? r.value : null))).toEqual(
      inFlightKeys.flatMap((key) => [`value-of-${key}`, `value-of-${key}`]),
    );

    // Gets that start after the death: twice each, from both live nodes, all at once.
    const afterKeys = cluster.keysOwnedBy("c", 10, "after");
    const timed = afterKeys.flatMap((key) =>
      [0, 1].flatMap(() =>
        clients.map(async (client) => {
          const started = performance.now();
          const value = text(await client.get("g", key));
          return { key, value, ms: performance.now() - started };
        }),
      ),
    );
    const results = await Promise.allSettled(timed);
    const errors = results.flatMap((r) => (r.status === "rejected" ? [String(r.reason)] : []));
    expect(errors).toEqual([]);
    for (const r of results) {
      if (r.status !== "fulfilled") continue;
      expect(r.value.value).toBe(`value-of-${r.value.key}`);
      // A dead peer is noticed at once (connection refused), not after a timeout.
      expect(r.value.ms).toBeLessThan(2_000);
    }

    // Each live node loaded each key itself, once: concurrent gets merged, the copy kept.
    await cluster.sync();
    for (const node of live) {
      const loads = node.loads();
      for (const key of afterKeys) expect(`${node.name}:${key}:${count(loads, key)}`).toBe(`${node.name}:${key}:1`);
    }

    // And the next round is served from those copies without loading again.
    const again = await Promise.all(afterKeys.flatMap((key) => clients.map((client) => client.get("g", key).then(text))));
    expect(again).toEqual(afterKeys.flatMap((key) => [`value-of-${key}`, `value-of-${key}`]));
    await cluster.sync();
    for (const node of live) expect(node.loads().filter((k) => afterKeys.includes(k)).length).toBe(afterKeys.length);
  });
});
