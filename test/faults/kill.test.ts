/**
 * SIGKILL one of three gcache-node processes under a steady mixed load: gets
 * sent to the survivors never fail, the survivors drop the dead node within
 * its lease, and no read returns a value an acknowledged set had replaced.
 */
import { expect, test } from "bun:test";
import { GCacheClient } from "../../src/client.ts";
import { describeEtcd } from "../_support/etcd.ts";
import { waitFor } from "../_support/wait.ts";
import {
  LEASE_TTL_S,
  Load,
  nodeArgs,
  
  ownerAmong,
  staleReads,
  startNodes,
  tally,
  waitForMembers,
  useFaultCluster,
} from "./_support.ts";

const NAMES = ["A", "B", "C"];
const VICTIM = "C";
const KEYS = Array.from({ length: 300 }, (_, i) => `k-${i}`);

describeEtcd("fault: SIGKILL a node under load", () => {
  const env = useFaultCluster();

  test(
    "gets to the survivors never fail, the ring converges within the lease TTL + 1 s, and no read is stale",
    async () => {
      env.nodes = await startNodes(NAMES, (name) => nodeArgs(name, env.etcd, env.origin));
      await waitForMembers(env.nodes, NAMES, 10_000);
      const victim = env.nodes.find((node) => node.name === VICTIM)!;
      const survivors = env.nodes.filter((node) => node !== victim);
      // Clients talk only to the env.nodes that stay alive.
      for (const node of survivors) env.clients.push(new GCacheClient(node.address));

      const load = new Load({
        clients: env.clients,
        keys: KEYS,
        concurrency: 64,
        setShare: 0.1,
        timeoutMs: 3_000,
        seed: 1,
        // A set whose owner was killed fails (ERR_UNAVAILABLE) until the ring drops it: retry those.
        retrySetsForMs: (LEASE_TTL_S + 3) * 1000,
      });
      load.start();
      try {
        await waitFor(() => load.completed >= 1_500, 15_000, "the load to warm up");

        const killedAt = performance.now();
        victim.kill("SIGKILL");
        await victim.waitExit(5_000);
        const deadAt = performance.now();
        await waitForMembers(survivors, ["A", "B"], (LEASE_TTL_S + 4) * 1000, "the survivors to drop C");
        const convergedAt = performance.now();
        const convergeMs = convergedAt - killedAt;

        const after = load.completed;
        await waitFor(() => load.completed >= after + 3_000, 20_000, "the load to go on after the ring converged");
        await load.stop();

        // A final sweep with no write in flight: every key through every survivor.
        for (const key of KEYS) {
          for (let via = 0; via < env.clients.length; via++) await load.getOnce(via, key);
        }

        const sets = [...load.sets.values()].flat();
        const failedGets = load.gets.filter((get) => get.error !== undefined);
        const failedSets = sets.filter((set) => !set.acked);
        const retriedSets = sets.filter((set) => set.failures.length > 0);
        // A value stored only on the killed node is gone: sets sent before it died to keys it owned.
        const mayBeLost = (set: { key: string; start: number }) => ownerAmong(NAMES, set.key) === VICTIM && set.start < deadAt;
        const stale = staleReads(load, mayBeLost);
        const unreachable = tally(sets.filter((set) => set.acked), (set) => set.unreachablePeers.join(",") || "(none)");
        const firstFailures = retriedSets.map((set) => ({
          owner: ownerAmong(NAMES, set.key),
          code: set.failures[0]!,
          sentMsAfterKill: Math.round(set.start - killedAt),
          failedMsAfterKill: Math.round(set.firstFailureAt - killedAt),
        }));
        console.info(
          JSON.stringify({
            fault: "SIGKILL",
            requests: load.gets.length + sets.length,
            gets: load.gets.length,
            sets: sets.length,
            failedGets: failedGets.length,
            failedSets: failedSets.length,
            setsThatNeededRetries: retriedSets.length,
            retriedSetFirstErrors: tally(firstFailures, (f) => `${f.code} owner=${f.owner}`),
            retriedSetsSentMsAfterKill: firstFailures.length === 0 ? null : [Math.min(...firstFailures.map((f) => f.sentMsAfterKill)), Math.max(...firstFailures.map((f) => f.sentMsAfterKill))],
            ackedSetsByUnreachablePeers: unreachable,
            convergeMs: Math.round(convergeMs),
            originReads: load.gets.filter((g) => g.value?.startsWith("origin:")).length,
            staleReads: stale.length,
          }),
        );

        expect(failedGets.map((get) => `${get.key} via #${get.via}: ${get.error}`)).toEqual([]);
        expect(failedSets.map((set) => `${set.key}: ${set.failures.join(" ")}`)).toEqual([]);
        // The only sets that needed a retry are those routed to the dead owner before the ring dropped it.
        for (const failure of firstFailures) {
          expect(`${failure.code} owner=${failure.owner}`).toBe(`ERR_UNAVAILABLE owner=${VICTIM}`);
          expect(failure.failedMsAfterKill).toBeGreaterThanOrEqual(0);
          expect(failure.sentMsAfterKill).toBeLessThan(convergeMs + 1_000);
        }
        // The survivors could always reach each other: only the dead node may be missing from an invalidation.
        for (const peers of Object.keys(unreachable)) expect(["(none)", VICTIM]).toContain(peers);
        expect(convergeMs).toBeLessThan((LEASE_TTL_S + 1) * 1000);
        expect(stale).toEqual([]);
      } finally {
        await load.stop();
      }
    },
    60_000,
  );
});
