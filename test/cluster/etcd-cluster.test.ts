/** Nodes that find each other through a real etcd: agreement, joins, graceful leaves, duplicates, etcd outages. */
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { GCacheClient } from "../../src/client.ts";
import { GCacheError } from "../../src/errors.ts";
import { CacheNode, type NodeOptions } from "../../src/node.ts";
import { bytes, text } from "../_support/cluster.ts";
import { describeEtcd, startEtcd, type EtcdServer } from "../_support/etcd.ts";
import { waitFor } from "../_support/wait.ts";

const SAMPLE_KEYS = Array.from({ length: 10_000 }, (_, i) => `sample-${i}`);

function owners(node: CacheNode): string[] {
  return SAMPLE_KEYS.map((key) => node.ownerOf(key));
}

function membersOf(node: CacheNode): string {
  return node
    .members()
    .map((m) => m.name)
    .join(",");
}

describeEtcd("cluster over etcd", () => {
  let etcd: EtcdServer;
  let service = 0;
  const started: CacheNode[] = [];
  const clients: GCacheClient[] = [];

  beforeAll(async () => {
    etcd = await startEtcd();
  }, 30_000);

  afterAll(async () => {
    await etcd?.stop();
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) client.close();
    await Promise.all(started.splice(0).map((node) => node.close()));
  });

  async function startNode(name: string, extra: Partial<NodeOptions> = {}): Promise<CacheNode> {
    const node = new CacheNode({
      name,
      port: 0,
      etcd: { endpoints: [etcd.endpoint], service: `svc${service}`, leaseTtlSeconds: 2 },
      groups: [{ name: "g", loader: async (key) => bytes(`origin:${key}`) }],
      ...extra,
    });
    started.push(node);
    await node.start();
    return node;
  }

  async function startNodes(names: string[]): Promise<CacheNode[]> {
    service++;
    return Promise.all(names.map((name) => startNode(name)));
  }

  async function converged(nodes: CacheNode[], expected: string, timeoutMs: number): Promise<void> {
    await waitFor(() => nodes.every((node) => membersOf(node) === expected), timeoutMs, `every node to see ${expected}`);
  }

  test("three nodes agree on the member set and on the owner of 10k keys within 1 s", async () => {
    const nodes = await startNodes(["A", "B", "C"]);
    const since = performance.now();
    await converged(nodes, "A,B,C", 1_000);
    expect(performance.now() - since).toBeLessThan(1_000);
    const reference = owners(nodes[0]!);
    for (const node of nodes.slice(1)) expect(owners(node)).toEqual(reference);
    expect(new Set(reference)).toEqual(new Set(["A", "B", "C"]));
  });

  test("a joining node takes about 1/(n+1) of the keys and every node agrees", async () => {
    const nodes = await startNodes(["A", "B", "C"]);
    await converged(nodes, "A,B,C", 2_000);
    const before = owners(nodes[0]!);
    nodes.push(await startNode("D"));
    await converged(nodes, "A,B,C,D", 2_000);
    const after = owners(nodes[0]!);
    for (const node of nodes.slice(1)) expect(owners(node)).toEqual(after);
    let moved = 0;
    for (let i = 0; i < before.length; i++) {
      if (before[i] !== after[i]) {
        moved++;
        expect(after[i]).toBe("D");
      }
    }
    const share = moved / before.length;
    expect(share).toBeGreaterThan(0.25 * 0.7);
    expect(share).toBeLessThan(0.25 * 1.3);
  });

  test("a graceful stop removes the node everywhere within 1 s, with no failed get meanwhile", async () => {
    const nodes = await startNodes(["A", "B", "C"]);
    await converged(nodes, "A,B,C", 2_000);
    for (const node of nodes.slice(0, 2)) clients.push(new GCacheClient(node.address));
    let failures = 0;
    let done = 0;
    let stop = false;
    const load = (async () => {
      for (let i = 0; !stop && i < 100_000; i++) {
        await Promise.all(
          clients.map((client, c) =>
            client.get("g", `load-${(i * 7 + c) % 500}`, { timeoutMs: 2_000 }).then(
              () => done++,
              () => failures++,
            ),
          ),
        );
      }
    })();
    await waitFor(() => done > 200, 5_000, "load to start");
    const stopping = performance.now();
    await nodes[2]!.close();
    await converged(nodes.slice(0, 2), "A,B", 1_000);
    expect(performance.now() - stopping).toBeLessThan(1_000 + 500);
    const at = done;
    await waitFor(() => done > at + 200, 5_000, "load to go on");
    stop = true;
    await load;
    expect(failures).toBe(0);
  });

  test("a second node with a taken name fails to start with a clear message; the first is untouched", async () => {
    const [first] = await startNodes(["A"]);
    await converged([first!], "A", 2_000);
    const error = await startNode("A").then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(GCacheError);
    expect((error as GCacheError).code).toBe("ERR_CONFLICT");
    expect((error as GCacheError).message).toContain('node name "A" is already registered');
    expect(first!.serving).toBe(true);
    expect(first!.registered).toBe(true);
    expect(membersOf(first!)).toBe("A");
    clients.push(new GCacheClient(first!.address));
    expect(text(await clients[0]!.get("g", "still-serving"))).toBe("origin:still-serving");
  });

  test("etcd down for longer than the lease: nodes keep serving, then re-register and agree again", async () => {
    const nodes = await startNodes(["A", "B", "C"]);
    await converged(nodes, "A,B,C", 2_000);
    for (const node of nodes) clients.push(new GCacheClient(node.address));
    await etcd.kill();
    try {
      const until = Date.now() + 3_500;
      for (let i = 0; Date.now() < until; i++) {
        const values = await Promise.all(clients.map((client) => client.get("g", `outage-${i % 50}`, { timeoutMs: 2_000 })));
        expect(values.map(text)).toEqual(values.map(() => `origin:outage-${i % 50}`));
      }
    } finally {
      await etcd.restart();
    }
    await waitFor(() => nodes.every((node) => node.registered), 15_000, "every node to re-register");
    await converged(nodes, "A,B,C", 10_000);
    const reference = owners(nodes[0]!);
    for (const node of nodes.slice(1)) expect(owners(node)).toEqual(reference);
  }, 40_000);
});
