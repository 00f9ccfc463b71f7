/**
 * Guards against http2 stream starvation: with several calls in flight on one
 * connection and responses of a few KB, Bun's http2 server can leave some
 * streams waiting until the load stops, unless the client side opens a large
 * flow-control window. Every call must make steady progress, through a
 * client's channel and through a peer's.
 *
 * A single burst of calls ends quickly whatever happens (a starved stream is
 * served once the others are done), so each case also keeps 64 calls in
 * flight for a while: a starved call then waits for the whole period, far
 * above the limit.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { GCacheClient } from "../../src/client.ts";
import type { GroupOptions } from "../../src/group.ts";
import { CacheNode } from "../../src/node.ts";
import { keyOwnedBy, startCluster, type TestCluster } from "../_support/cluster.ts";

const VALUE_BYTES = 10 * 1024;
const CONCURRENCY = 64;
const SLOWEST_ALLOWED_MS = 1_000;
/** How long the sustained phase keeps every worker busy; must exceed SLOWEST_ALLOWED_MS. */
const SUSTAIN_MS = 2_000;

/** A 10 KB value that depends on the key, so a mixed-up response is caught. */
function valueOf(key: string): Uint8Array {
  const value = new Uint8Array(VALUE_BYTES);
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) >>> 0;
  for (let i = 0; i < value.length; i++) {
    h = (h * 1103515245 + 12345) >>> 0;
    value[i] = h >>> 24;
  }
  return value;
}

function group(extra: Partial<GroupOptions> = {}): GroupOptions {
  return { name: "g", loader: (key) => valueOf(key), ...extra };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

/** Runs all gets at once; returns each call's latency in ms, checking every value. */
async function timedGets(client: GCacheClient, keys: string[]): Promise<number[]> {
  const calls = keys.map(async (key) => {
    const started = performance.now();
    const value = await client.get("g", key, { timeoutMs: 10_000 });
    const ms = performance.now() - started;
    if (!sameBytes(value, valueOf(key))) throw new Error(`wrong value for ${key}`);
    return ms;
  });
  return Promise.all(calls);
}

/**
 * `keys.length` workers, each running `call(key)` again and again until
 * SUSTAIN_MS have passed, so that many calls stay in flight all along.
 * Returns every call's latency in ms.
 */
async function sustained(keys: string[], call: (key: string) => Promise<void>): Promise<number[]> {
  const latencies: number[] = [];
  const end = performance.now() + SUSTAIN_MS;
  await Promise.all(
    keys.map(async (key) => {
      while (performance.now() < end) {
        const started = performance.now();
        await call(key);
        latencies.push(performance.now() - started);
      }
    }),
  );
  return latencies;
}

function sustainedGets(client: GCacheClient, keys: string[]): Promise<number[]> {
  return sustained(keys, async (key) => {
    const value = await client.get("g", key, { timeoutMs: 10_000 });
    if (!sameBytes(value, valueOf(key))) throw new Error(`wrong value for ${key}`);
  });
}

/** Sets (10 KB requests, tiny responses) kept in flight, then checks the last value of every key. */
async function expectSetsProgress(client: GCacheClient, keys: string[]): Promise<void> {
  const latencies = await sustained(keys, async (key) => {
    await client.set("g", key, valueOf(`set-${key}`), { timeoutMs: 10_000 });
  });
  for (const key of keys) expect(sameBytes(await client.get("g", key), valueOf(`set-${key}`))).toBe(true);
  expectNoStarvation(latencies);
}

function summary(latencies: number[]): string {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!.toFixed(0);
  return `p50 ${at(0.5)} ms, p90 ${at(0.9)} ms, max ${at(1)} ms`;
}

/**
 * The slowest call must finish within 1 s. A machine too busy to run the test
 * at speed slows every call alike, starvation slows a few calls by the whole
 * period: so the limit only grows when the median call is itself slow (3x the
 * median), which a starved call, waiting out SUSTAIN_MS, still exceeds.
 */
function expectNoStarvation(latencies: number[]): void {
  expect(latencies.length).toBeGreaterThanOrEqual(CONCURRENCY);
  const sorted = [...latencies].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  const limit = Math.max(SLOWEST_ALLOWED_MS, 3 * median);
  const slowest = sorted[sorted.length - 1]!;
  // The summary goes into the failure message.
  expect(`${slowest < limit ? "ok" : "starved"}: ${summary(latencies)}, limit ${limit.toFixed(0)} ms`).toStartWith("ok:");
}

async function expectSteadyProgress(client: GCacheClient, keys: string[]): Promise<void> {
  expectNoStarvation(await sustainedGets(client, keys));
}

describe("64 concurrent gets of 10 KB values on one channel", () => {
  let node: CacheNode;
  let client: GCacheClient;

  beforeAll(async () => {
    node = new CacheNode({ port: 0, groups: [group()] });
    await node.start();
    client = new GCacheClient(node.address);
  });

  afterAll(async () => {
    client?.close();
    await node?.close();
  });

  test("cold (loaded) and warm (cached) bursts: the slowest call finishes within 1 s", async () => {
    const keys = Array.from({ length: CONCURRENCY }, (_, i) => `local-${i}`);
    expectNoStarvation(await timedGets(client, keys));
    expectNoStarvation(await timedGets(client, keys));
    expectNoStarvation(await timedGets(client, keys));
  });

  test("64 calls kept in flight for 2 s: the slowest call finishes within 1 s", async () => {
    const keys = Array.from({ length: CONCURRENCY }, (_, i) => `sustained-${i}`);
    await expectSteadyProgress(client, keys);
  });

  // The same starvation in the other direction: 10 KB requests, tiny responses.
  test("64 sets of 10 KB values kept in flight for 2 s: the slowest call finishes within 1 s", async () => {
    const keys = Array.from({ length: CONCURRENCY }, (_, i) => `set-${i}`);
    await expectSetsProgress(client, keys);
  });
});

describe("64 concurrent gets of 10 KB values across the peer hop", () => {
  let cluster: TestCluster;

  beforeAll(async () => {
    // No hot cache: every get on the entry node crosses to the owner, not only the first.
    cluster = await startCluster(["n1", "n2", "n3"], () => [group({ hotCacheShare: 0 })]);
  });

  afterAll(async () => {
    await cluster?.close();
  });

  test("keys owned by one other node, through one client channel and one peer channel", async () => {
    const [entry, owner] = cluster.nodes as [CacheNode, CacheNode, CacheNode];
    const client = cluster.clients[0]!;
    const keys = Array.from({ length: CONCURRENCY }, (_, i) => keyOwnedBy(entry, owner.name, `peer-${i}`));
    expect(new Set(keys).size).toBe(CONCURRENCY);

    const before = entry.stats().g!.peerLoads;
    expectNoStarvation(await timedGets(client, keys));
    expectNoStarvation(await timedGets(client, keys));
    expectNoStarvation(await timedGets(client, keys));
    // Every one of those gets was answered by the owner over the peer channel.
    expect(entry.stats().g!.peerLoads - before).toBe(3 * CONCURRENCY);

    await expectSteadyProgress(client, keys);
    expect(entry.stats().g!.fallbackLoads).toBe(0);
    expect(entry.stats().g!.localLoads).toBe(0);
  });

  test("64 sets of 10 KB values forwarded to the owner, kept in flight for 2 s: the slowest finishes within 1 s", async () => {
    const [entry, owner] = cluster.nodes as [CacheNode, CacheNode, CacheNode];
    const keys = Array.from({ length: CONCURRENCY }, (_, i) => keyOwnedBy(entry, owner.name, `peer-set-${i}`));
    await expectSetsProgress(cluster.clients[0]!, keys);
  });

  test("keys owned by both other nodes, 64 in flight on each of the three clients at once", async () => {
    const keysFor = cluster.clients.map((_, i) => {
      const self = cluster.nodes[i]!;
      const others = cluster.nodes.filter((n) => n !== self);
      return Array.from({ length: CONCURRENCY }, (_, j) => keyOwnedBy(self, others[j % others.length]!.name, `mixed-${i}-${j}`));
    });
    const bursts = await Promise.all(cluster.clients.map((client, i) => timedGets(client, keysFor[i]!)));
    for (const latencies of bursts) expectNoStarvation(latencies);
    // Every node now serves as entry and as owner, each peer channel carrying calls both ways.
    await Promise.all(cluster.clients.map((client, i) => expectSteadyProgress(client, keysFor[i]!)));
  });
});
