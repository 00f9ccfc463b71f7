/** gcache-node processes over a real etcd: a node killed with SIGKILL leaves the ring within its lease, and nobody notices. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { GCacheClient } from "../../src/client.ts";
import { text } from "../_support/cluster.ts";
import { CliNode } from "../_support/cli.ts";
import { describeEtcd, startEtcd, type EtcdServer } from "../_support/etcd.ts";
import { waitFor } from "../_support/wait.ts";

const LEASE_TTL_S = 2;

describeEtcd("gcache-node processes over etcd", () => {
  let etcd: EtcdServer;
  let origin: ReturnType<typeof Bun.serve>;
  const nodes: CliNode[] = [];
  const clients: GCacheClient[] = [];

  beforeAll(async () => {
    etcd = await startEtcd();
    origin = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (request) => new Response(`origin:${decodeURIComponent(new URL(request.url).pathname.split("/").at(-1)!)}`),
    });
  }, 30_000);

  afterAll(async () => {
    for (const client of clients) client.close();
    await Promise.all(nodes.map((node) => node.stop()));
    await origin?.stop(true);
    await etcd?.stop();
  });

  test(
    "SIGKILL one node: the others drop it within lease TTL + 1 s and answer every get meanwhile",
    async () => {
      const args = (name: string) => [
        "--port=0",
        `--node=${name}`,
        `--etcd=${etcd.endpoint}`,
        `--lease-ttl=${LEASE_TTL_S}s`,
        `--origin=http://127.0.0.1:${origin.port}/{group}/{key}`,
      ];
      nodes.push(...(await Promise.all(["A", "B", "C"].map((name) => CliNode.start(name, args(name))))));
      await waitFor(() => nodes.every((node) => node.members()?.join(",") === "A,B,C"), 5_000, "all three nodes to agree");
      for (const node of nodes.slice(0, 2)) clients.push(new GCacheClient(node.address));

      const failures: string[] = [];
      let answered = 0;
      let stop = false;
      const load = (async () => {
        for (let i = 0; !stop && i < 1_000_000; i++) {
          await Promise.all(
            clients.map((client, c) => {
              const key = `k-${(i * 13 + c) % 300}`;
              return client.get("default", key, { timeoutMs: 3_000 }).then(
                (value) => {
                  if (text(value) === `origin:${key}`) answered++;
                  else failures.push(`${key}: wrong value ${text(value)}`);
                },
                (error: Error) => failures.push(`${key}: ${error.message}`),
              );
            }),
          );
        }
      })();
      await waitFor(() => answered > 300, 10_000, "load to start");

      const killedAt = performance.now();
      nodes[2]!.kill("SIGKILL");
      await waitFor(
        () => nodes.slice(0, 2).every((node) => node.members()?.join(",") === "A,B"),
        (LEASE_TTL_S + 3) * 1000,
        "the survivors to drop C",
      );
      const dropMs = performance.now() - killedAt;
      const at = answered;
      await waitFor(() => answered > at + 300, 10_000, "load to go on after the drop");
      stop = true;
      await load;
      expect(failures).toEqual([]);
      expect(dropMs).toBeLessThan((LEASE_TTL_S + 1) * 1000);
    },
    40_000,
  );
});
