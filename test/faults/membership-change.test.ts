/**
 * Nodes learn of a membership change one after another (each from its own etcd
 * watch). In between they disagree about who owns a key. In-process nodes
 * whose membership the test sets one by one make that window as wide as
 * needed: what a node caches inside the window must not outlive it.
 */
import { afterEach, expect, test } from "bun:test";
import { bytes, startCluster, text, type TestCluster } from "../_support/cluster.ts";
import { keysOwnedBy, ownerAmong } from "./_support.ts";

let cluster: TestCluster | null = null;

afterEach(async () => {
  await cluster?.close();
  cluster = null;
});

test("a value loaded while the node still routed to a dead owner is not served once the node catches up", async () => {
  cluster = await startCluster(["A", "B", "C"], () => [{ name: "g", loader: (key) => bytes(`origin:${key}`) }]);
  const [a, b, c] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0], typeof cluster.nodes[0]];
  // A key C owns, which A takes over when C is gone.
  const key = keysOwnedBy(["A", "B", "C"], "C", 20, "moving").find((k) => ownerAmong(["A", "B"], k) === "A")!;
  expect(a.ownerOf(key)).toBe("C");
  const [viaA, viaB] = cluster.clients as [typeof cluster.clients[0], typeof cluster.clients[0]];

  // C dies. A learns of it first; B still routes the key to C.
  await c.close();
  a.setPeers([a, b].map((n) => ({ name: n.name, address: n.address })));
  expect(a.ownerOf(key)).toBe("A");
  const write = await viaA.set("g", key, bytes("written"), { timeoutMs: 2_000 });
  expect(write.unreachablePeers).toEqual([]);
  // Inside the window B cannot know better than to load the key itself (a fallback).
  const insideWindow = text(await viaB.get("g", key, { timeoutMs: 2_000 }));

  // B catches up: from now on both agree that A owns the key, and A holds "written".
  b.setPeers([a, b].map((n) => ({ name: n.name, address: n.address })));
  const afterWindow = text(await viaB.get("g", key, { timeoutMs: 2_000 }));
  const stats = b.stats().g!;
  console.info(JSON.stringify({ insideWindow, afterWindow, bFallbackLoads: stats.fallbackLoads, bHotItems: stats.caches.hot.items }));
  expect(afterWindow).toBe("written");
});
