/** Three nodes in one process, real gRPC over loopback: routing, consistency and failure semantics. */
import { afterEach, describe, expect, test } from "bun:test";
import { status } from "@grpc/grpc-js";
import { _grpcTarget, SelfAddress } from "../../src/cluster/address.ts";
import { GCacheError, NotFoundError } from "../../src/errors.ts";
import type { GroupOptions } from "../../src/group.ts";
import { GCacheClient } from "../../src/client.ts";
import { CacheNode } from "../../src/node.ts";
import { FakeClock } from "../_support/clock.ts";
import { bytes, keyOwnedBy, startCluster, text, type TestCluster } from "../_support/cluster.ts";

let cluster: TestCluster | null = null;
afterEach(async () => {
  await cluster?.close();
  cluster = null;
});

interface LoadLog {
  calls: string[];
  loader: GroupOptions["loader"];
}

function loadLog(delayMs = 0): LoadLog {
  const calls: string[] = [];
  return {
    calls,
    loader: async (key) => {
      calls.push(key);
      if (delayMs > 0) await Bun.sleep(delayMs);
      return bytes(`origin:${key}`);
    },
  };
}

async function errorOf(promise: Promise<unknown>): Promise<GCacheError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(GCacheError);
  return error as GCacheError;
}

describe("in-process cluster", () => {
  test("300 concurrent gets of one cold key over three nodes call the loader exactly once", async () => {
    const log = loadLog(50);
    cluster = await startCluster(["A", "B", "C"], () => [{ name: "g", loader: log.loader }]);
    const { clients } = cluster;
    const results = await Promise.all(Array.from({ length: 300 }, (_, i) => clients[i % 3]!.get("g", "cold")));
    expect(new Set(results.map(text))).toEqual(new Set(["origin:cold"]));
    expect(log.calls).toEqual(["cold"]);
  });

  test("a cold miss on a peer-owned key costs about one loader latency", async () => {
    const log = loadLog(200);
    cluster = await startCluster(["A", "B", "C"], () => [{ name: "g", loader: log.loader }]);
    const key = keyOwnedBy(cluster.nodes[0]!, "B");
    const client = cluster.clients[0]!;
    await client.get("g", "warm-up-connection").catch(() => {});
    const started = performance.now();
    expect(text(await client.get("g", key))).toBe(`origin:${key}`);
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(195);
    expect(elapsed).toBeLessThan(600);
  });

  test("set and delete on any node leave no stale copy anywhere, hot copies included", async () => {
    const log = loadLog();
    // Every fetch is copied, so the non-owners hold the copies a write must drop.
    cluster = await startCluster(["A", "B", "C"], () => [{ name: "g", loader: log.loader, hotCacheAdmission: 1 }]);
    const { nodes, clients } = cluster;
    for (const owner of ["A", "B", "C"]) {
      const key = keyOwnedBy(nodes[0]!, owner, `k-${owner}`);
      // Every node reads it first, so the non-owners hold hot copies.
      const others = nodes.filter((n) => n.name !== owner);
      const copiesBefore = others.map((n) => n.group("g")!.stats().caches.hot.items);
      for (const client of clients) expect(text(await client.get("g", key))).toBe(`origin:${key}`);
      expect(others.map((n) => n.group("g")!.stats().caches.hot.items)).toEqual(copiesBefore.map((items) => items + 1));
      for (const [i, writer] of clients.entries()) {
        const result = await writer.set("g", key, bytes(`v${i}`));
        expect(result.unreachablePeers).toEqual([]);
        for (const reader of clients) expect(text(await reader.get("g", key))).toBe(`v${i}`);
      }
      const deleted = await clients[1]!.delete("g", key);
      expect(deleted).toEqual({ deleted: true, unreachablePeers: [] });
      // After the delete the value comes from the origin again, on every node.
      for (const reader of clients) expect(text(await reader.get("g", key))).toBe(`origin:${key}`);
    }
  });

  test("writes to one key from one node apply in the order they were issued, awaited or not", async () => {
    cluster = await startCluster(["A", "B"], () => [{ name: "g" }]);
    const A = cluster.byName("A").group("g")!;
    const valueAt = (key: string) =>
      cluster!.clients[1]!.get("g", key).then(text, (error: unknown) =>
        error instanceof GCacheError && error.code === "ERR_NOT_FOUND" ? "missing" : Promise.reject(error),
      );
    // Remote owner. A write to another key keeps one kind of batched call busy, so the
    // next write of that kind queues while the other kind finds its line free.
    const [busy, k1, k2] = ["busy", "one", "two"].map((prefix) => keyOwnedBy(cluster!.nodes[0]!, "B", prefix)) as [string, string, string];
    await Promise.all([A.set(busy, bytes("x")), A.set(k1, bytes("queued set")), A.delete(k1)]);
    expect(await valueAt(k1)).toBe("missing");
    await A.set(k2, bytes("old"));
    await Promise.all([A.delete(busy), A.delete(k2), A.set(k2, bytes("new"))]);
    expect(await valueAt(k2)).toBe("new");
    // Local owner.
    const mine = keyOwnedBy(cluster.nodes[0]!, "A", "mine");
    await A.set(mine, bytes("old"));
    await Promise.all([A.delete(mine), A.set(mine, bytes("new"))]);
    expect(await valueAt(mine)).toBe("new");
    await Promise.all([A.set(mine, bytes("newer")), A.delete(mine)]);
    expect(await valueAt(mine)).toBe("missing");
  });

  test("clear empties the group on every node", async () => {
    cluster = await startCluster(["A", "B", "C"], () => [{ name: "g" }]);
    const { nodes, clients } = cluster;
    const keys = ["A", "B", "C"].map((owner) => keyOwnedBy(nodes[0]!, owner));
    for (const key of keys) await clients[0]!.set("g", key, bytes("v"));
    for (const key of keys) for (const client of clients) expect(text(await client.get("g", key))).toBe("v");
    expect(await clients[2]!.clear("g")).toEqual({ unreachablePeers: [] });
    for (const key of keys) {
      for (const client of clients) expect((await errorOf(client.get("g", key))).code).toBe("ERR_NOT_FOUND");
    }
    for (const node of nodes) {
      const stats = node.group("g")!.stats().caches;
      expect(stats.main.items + stats.hot.items).toBe(0);
    }
  });

  test("not-found from the owner's loader reaches the caller and is tried nowhere else", async () => {
    const calls: string[] = [];
    cluster = await startCluster(["A", "B", "C"], (name) => [
      {
        name: "g",
        loader: (key) => {
          calls.push(`${name}:${key}`);
          throw new NotFoundError(`no row for ${key}`);
        },
      },
    ]);
    const key = keyOwnedBy(cluster.nodes[0]!, "C");
    const error = await errorOf(cluster.clients[0]!.get("g", key));
    expect(error.code).toBe("ERR_NOT_FOUND");
    expect(error.message).toContain(`no row for ${key}`);
    expect(calls).toEqual([`C:${key}`]);
  });

  test("with inconsistent peer lists each get costs at most one hop: no loops", async () => {
    const log = loadLog();
    cluster = await startCluster(["A", "B"], () => [{ name: "g", loader: log.loader }]);
    const [a, b] = cluster.nodes as [CacheNode, CacheNode];
    // A sees B as a full member; B sees itself as nearly weightless, so both think the other owns some keys.
    b.setPeers([
      { name: "A", address: a.address },
      { name: "B", address: b.address, weight: 0.01 },
    ]);
    let key = "";
    for (let i = 0; key === ""; i++) {
      if (a.ownerOf(`x${i}`) === "B" && b.ownerOf(`x${i}`) === "A") key = `x${i}`;
    }
    expect(text(await cluster.clients[0]!.get("g", key))).toBe(`origin:${key}`);
    expect(text(await cluster.clients[1]!.get("g", `${key}`))).toBe(`origin:${key}`);
    const sa = a.group("g")!.stats();
    const sb = b.group("g")!.stats();
    // A forwarded once to B, and B served it locally although it believes A owns it.
    expect(sa.peerLoads).toBe(1);
    expect(sb.serverRequests).toBe(1);
    expect(sb.localLoads).toBe(1);
    // B's client get hit B's main cache (it loaded the key for A): no hop at all.
    expect(sb.peerLoads).toBe(0);
    expect(sa.serverRequests).toBe(0);
    expect(log.calls).toEqual([key]);
  });

  test("a copy on a non-owner expires no later than the owner's value", async () => {
    const clock = new FakeClock(Date.now());
    cluster = await startCluster(["A", "B"], () => [{ name: "g", clock: clock.read, hotCacheAdmission: 1 }]);
    const key = keyOwnedBy(cluster.nodes[0]!, "A");
    const [toA, toB] = cluster.clients as [GCacheClient, GCacheClient];
    await toA.set("g", key, bytes("short-lived"), { ttlMs: 5_000 });
    const fromOwner = await toA.getEntry("g", key);
    const fromCopy = await toB.getEntry("g", key);
    expect(fromOwner.expiresAt).toBe(clock.now + 5_000);
    expect(fromCopy.expiresAt).toBeLessThanOrEqual(fromOwner.expiresAt);
    expect(cluster.byName("B").group("g")!.stats().caches.hot.items).toBe(1);
    clock.advance(5_000);
    expect((await errorOf(toB.get("g", key))).code).toBe("ERR_NOT_FOUND");
    expect((await errorOf(toA.get("g", key))).code).toBe("ERR_NOT_FOUND");
  });

  test("a dead owner: gets fall back to local loads without errors; writes report it", async () => {
    const log = loadLog();
    cluster = await startCluster(["A", "B", "C"], () => [{ name: "g", loader: log.loader }]);
    const key = keyOwnedBy(cluster.nodes[0]!, "C");
    await cluster.byName("C").close();
    for (const client of cluster.clients.slice(0, 2)) expect(text(await client.get("g", key))).toBe(`origin:${key}`);
    const a = cluster.byName("A").group("g")!.stats();
    expect(a.fallbackLoads).toBe(1);
    expect(a.peerErrors).toBe(1);
    const other = keyOwnedBy(cluster.nodes[0]!, "A");
    expect(await cluster.clients[0]!.set("g", other, bytes("v"))).toEqual({ unreachablePeers: ["C"] });
    // A write whose owner is down fails loudly instead of landing somewhere it cannot be found.
    const error = await errorOf(cluster.clients[0]!.set("g", key, bytes("v")));
    expect(error.code).toBe("ERR_UNAVAILABLE");
  });

  test("the caller's deadline crosses the hop and cancels the owner's load", async () => {
    const aborted = Promise.withResolvers<void>();
    cluster = await startCluster(["A", "B"], () => [
      {
        name: "g",
        loader: (_key, { signal }) =>
          new Promise<Uint8Array>((_resolve, reject) =>
            signal.addEventListener("abort", () => {
              aborted.resolve();
              reject(signal.reason);
            }),
          ),
      },
    ]);
    const key = keyOwnedBy(cluster.nodes[0]!, "B");
    const started = performance.now();
    const error = await errorOf(cluster.clients[0]!.get("g", key, { timeoutMs: 150 }));
    expect(error.code).toBe("ERR_DEADLINE_EXCEEDED");
    expect(performance.now() - started).toBeLessThan(1_000);
    await aborted.promise;
    expect(cluster.byName("A").group("g")!.stats().fallbackLoads).toBe(0);
  });

  test("membership changes at run time: keys move, the removed peer's keys come home", async () => {
    const log = loadLog();
    cluster = await startCluster(["A", "B", "C"], () => [{ name: "g", loader: log.loader }]);
    const a = cluster.byName("A");
    const key = keyOwnedBy(a, "C");
    a.setPeers(cluster.nodes.filter((n) => n.name !== "C").map((n) => ({ name: n.name, address: n.address })));
    expect(a.ownerOf(key)).not.toBe("C");
    expect(a.members().map((m) => m.name)).toEqual(["A", "B"]);
    expect(text(await cluster.clients[0]!.get("g", key))).toBe(`origin:${key}`);
  });

  test("graceful close finishes in-flight calls, then refuses new ones", async () => {
    const started = Promise.withResolvers<void>();
    cluster = await startCluster(["A"], () => [
      {
        name: "g",
        loader: async () => {
          started.resolve();
          await Bun.sleep(200);
          return bytes("slow");
        },
      },
    ]);
    const node = cluster.nodes[0]!;
    const client = cluster.clients[0]!;
    const pending = client.get("g", "k");
    await started.promise;
    const closing = node.close();
    expect(node.serving).toBe(false);
    expect(text(await pending)).toBe("slow");
    await closing;
    const error = await errorOf(client.get("g", "k", { timeoutMs: 500 }));
    expect(["ERR_UNAVAILABLE", "ERR_DEADLINE_EXCEEDED"]).toContain(error.code);
  });

  test("groups on a node are independent; an unknown group is a clear NOT_FOUND", async () => {
    cluster = await startCluster(["A"], () => [{ name: "users" }, { name: "pages" }]);
    const client = cluster.clients[0]!;
    await client.set("users", "k", bytes("u"));
    expect((await errorOf(client.get("pages", "k"))).code).toBe("ERR_NOT_FOUND");
    const unknown = await errorOf(client.get("nope", "k"));
    expect(unknown.code).toBe("ERR_UNKNOWN_GROUP");
    expect((unknown.cause as { code: number }).code).toBe(status.NOT_FOUND);
  });
});

describe("grpc targets", () => {
  test("IP addresses skip DNS; names and unparsable input go through unchanged", () => {
    expect(_grpcTarget("127.0.0.1:8001")).toBe("ipv4:127.0.0.1:8001");
    expect(_grpcTarget("0.0.0.0:0")).toBe("ipv4:0.0.0.0:0");
    expect(_grpcTarget("[::1]:8001")).toBe("ipv6:[::1]:8001");
    expect(_grpcTarget("[::]:8001")).toBe("ipv6:[::]:8001");
    expect(_grpcTarget("localhost:8001")).toBe("localhost:8001");
    expect(_grpcTarget("node-b.internal:8001")).toBe("node-b.internal:8001");
    expect(_grpcTarget(":8001")).toBe(":8001");
    expect(_grpcTarget("dns:///10.0.0.1:8001")).toBe("dns:///10.0.0.1:8001");
  });

  test("a node on IPv6 loopback serves a client that dials it by IP", async () => {
    const node = new CacheNode({ host: "::1", port: 0, groups: [{ name: "g", maxBytes: 16 << 20 }] });
    await node.start();
    const client = new GCacheClient(node.address);
    try {
      expect(node.address).toMatch(/^\[::1\]:\d+$/);
      await client.set("g", "k", bytes("v"));
      expect(text(await client.get("g", "k"))).toBe("v");
    } finally {
      client.close();
      await node.close();
    }
  });
});

describe("self recognition", () => {
  test("every spelling of a node's own address means the node itself", () => {
    const self = new SelfAddress({ host: "0.0.0.0", port: 8001 }, "10.1.2.3:8001");
    for (const address of [":8001", "0.0.0.0:8001", "127.0.0.1:8001", "localhost:8001", "10.1.2.3:8001", "[::1]:8001"]) {
      expect(`${address} ${self.matches(address)}`).toBe(`${address} true`);
    }
    for (const address of [":8002", "127.0.0.1:8002", "10.1.2.4:8001", "garbage"]) {
      expect(`${address} ${self.matches(address)}`).toBe(`${address} false`);
    }
    const loopbackOnly = new SelfAddress({ host: "127.0.0.1", port: 9000 }, "127.0.0.1:9000");
    expect(loopbackOnly.matches("10.1.2.3:9000")).toBe(false);
    expect(loopbackOnly.matches(":9000")).toBe(true);
  });

  test("a node listed under another spelling of its address never calls itself", async () => {
    const log = loadLog();
    cluster = await startCluster(["A"], () => [{ name: "g", loader: log.loader }]);
    const node = cluster.nodes[0]!;
    node.setPeers([
      { name: "self", address: `:${node.port}` },
      { name: "ghost", address: "127.0.0.1:1" },
    ]);
    expect(node.name).toBe("self");
    const key = keyOwnedBy(node, "self");
    expect(text(await cluster.clients[0]!.get("g", key))).toBe(`origin:${key}`);
    const stats = node.group("g")!.stats();
    expect(stats.serverRequests).toBe(0);
    expect(stats.peerLoads + stats.peerErrors).toBe(0);
  });
});
