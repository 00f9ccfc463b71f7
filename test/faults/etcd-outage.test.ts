/**
 * etcd dies (SIGKILL) under a steady mixed load and comes back after a while:
 * the nodes keep serving on the membership they had, not one request fails,
 * and afterwards every node is registered again and all agree on the ring.
 *
 * The outage lasts GCACHE_FAULT_ETCD_DOWN_S seconds (default 30; far longer
 * than the 2 s lease TTL, so every lease runs out on the nodes' clocks).
 */
import { expect, test } from "bun:test";
import { GCacheClient } from "../../src/client.ts";
import type { CliNode } from "../_support/cli.ts";
import { describeEtcd } from "../_support/etcd.ts";
import { waitFor } from "../_support/wait.ts";
import { httpAddressOf, LEASE_TTL_S, Load, nodeArgs, staleReads, startNodes, tally, waitForMembers, useFaultCluster } from "./_support.ts";

const NAMES = ["A", "B", "C"];
const KEYS = Array.from({ length: 300 }, (_, i) => `k-${i}`);
const DOWN_S = Number(process.env.GCACHE_FAULT_ETCD_DOWN_S ?? "30");

async function ring(node: CliNode): Promise<string> {
  const response = await fetch(`http://${httpAddressOf(node)}/v1/ring`, { signal: AbortSignal.timeout(2_000) });
  const body = (await response.json()) as { members: { name: string }[] };
  return body.members.map((m) => m.name).join(",");
}

async function ready(node: CliNode): Promise<boolean> {
  const response = await fetch(`http://${httpAddressOf(node)}/readyz`, { signal: AbortSignal.timeout(2_000) });
  await response.body?.cancel();
  return response.status === 200;
}

describeEtcd("fault: etcd down under load", () => {
  const env = useFaultCluster();

  test(
    `etcd killed for ${DOWN_S} s: no request fails; afterwards every node is registered and all agree`,
    async () => {
      if (!(DOWN_S > 0 && DOWN_S <= 300)) throw new Error(`GCACHE_FAULT_ETCD_DOWN_S must be 1-300, got ${process.env.GCACHE_FAULT_ETCD_DOWN_S}`);
      env.nodes = await startNodes(NAMES, (name) => nodeArgs(name, env.etcd, env.origin));
      await waitForMembers(env.nodes, NAMES, 10_000);
      for (const node of env.nodes) env.clients.push(new GCacheClient(node.address));

      const load = new Load({ clients: env.clients, keys: KEYS, concurrency: 64, setShare: 0.1, timeoutMs: 3_000, seed: 3, maxDurationMs: (DOWN_S + 60) * 1000 });
      load.start();
      try {
        await waitFor(() => load.completed >= 1_500, 15_000, "the load to warm up");
        const logsBefore = env.nodes.map((node) => node.errorLines.length);

        await env.etcd.kill();
        const killedAt = performance.now();
        const beforeOutage = load.completed;
        // The outage itself: etcd stays down for the configured time while the load runs.
        await new Promise((resolve) => setTimeout(resolve, DOWN_S * 1000));
        const duringOutage = load.completed - beforeOutage;
        await env.etcd.restart();
        const restartedAt = performance.now();

        // Every node re-registered (readyz needs the registration) and every ring lists A, B, C.
        await waitFor(
          async () => (await Promise.all(env.nodes.map(async (node) => (await ready(node)) && (await ring(node)) === "A,B,C"))).every(Boolean),
          (LEASE_TTL_S + 15) * 1000,
          "every node to be registered again with the full ring",
        );
        const recoveredMs = performance.now() - restartedAt;
        const registered = await env.etcd.client().getAll().prefix("/services/gcache/").keys();

        const after = load.completed;
        await waitFor(() => load.completed >= after + 2_000, 20_000, "the load to go on after etcd came back");
        await load.stopAndSweep();

        const sets = load.allSets();
        const failed = load.failures();
        // No node died: no acknowledged value may be lost.
        const stale = staleReads(load, () => false);
        const outageLogs = env.nodes.map((node, i) =>
          tally(
            node.logs().slice(logsBefore[i]).filter((log) => log.level !== "debug"),
            (log) => log.msg,
          ),
        );
        console.info(
          JSON.stringify({
            fault: "etcd down",
            downS: DOWN_S,
            requests: load.gets.length + sets.length,
            requestsDuringOutage: duringOutage,
            failed: failed.length,
            failedExamples: failed.slice(0, 5),
            recoveredMsAfterRestart: Math.round(recoveredMs),
            outageMs: Math.round(restartedAt - killedAt),
            registered: registered.sort(),
            membersAfter: env.nodes.map((node) => node.members()?.join(",")),
            ackedSetsByUnreachablePeers: tally(sets.filter((set) => set.acked), (set) => set.unreachablePeers.join(",") || "(none)"),
            logsSinceOutage: outageLogs,
            staleReads: stale.length,
            staleExamples: stale.slice(0, 5),
          }),
        );
        expect(failed).toEqual([]);
        // Every node moved its key to a new lease before the old one ran out: no node saw
        // another leave, and none discarded its cache as one that had been dropped.
        expect(outageLogs.map((logs) => [logs["membership changed"] ?? 0, logs["rejoined after every other node had dropped this one: cached values discarded"] ?? 0])).toEqual(
          env.nodes.map(() => [0, 0]),
        );
        expect(registered.sort()).toEqual(NAMES.map((name) => `/services/gcache/${name}`));
        for (const node of env.nodes) expect(node.members()).toEqual(NAMES);
        expect(stale).toEqual([]);
      } finally {
        await load.stop();
      }
    },
    (DOWN_S + 90) * 1000,
  );
});
