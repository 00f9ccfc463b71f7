/**
 * SIGKILL one of three gcache-node processes under a steady mixed load: no
 * get or set sent to the survivors fails (writes for the dead node's keys wait
 * for its lease to expire and go to the new owner), the survivors drop the
 * dead node within its lease, and no read returns a value an acknowledged set
 * had replaced.
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
    "gets and sets sent to the survivors never fail, the ring converges within the lease TTL + 1 s, and no read is stale",
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
        // Writes to the dead node's keys wait for its lease to expire and go to the
        // new owner: a deadline above the lease TTL lets them, so no request may fail.
        timeoutMs: (LEASE_TTL_S + 4) * 1000,
        seed: 1,
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
        // A final sweep with no write in flight: every key through every survivor.
        await load.stopAndSweep();

        const sets = load.allSets();
        const failedGets = load.gets.filter((get) => get.error !== undefined);
        const failedSets = sets.filter((set) => !set.acked);
        // A value stored only on the killed node is gone: sets sent before it died to keys it owned.
        const mayBeLost = (set: { key: string; start: number }) => ownerAmong(NAMES, set.key) === VICTIM && set.start < deadAt;
        const stale = staleReads(load, mayBeLost);
        const unreachable = tally(sets.filter((set) => set.acked), (set) => set.unreachablePeers.join(",") || "(none)");
        const setsToVictimKeys = sets.filter((set) => ownerAmong(NAMES, set.key) === VICTIM && set.start >= killedAt && set.start < convergedAt);
        console.info(
          JSON.stringify({
            fault: "SIGKILL",
            requests: load.gets.length + sets.length,
            gets: load.gets.length,
            sets: sets.length,
            failedGets: failedGets.length,
            failedSets: failedSets.length,
            setsToVictimKeysBeforeConvergence: setsToVictimKeys.length,
            slowestOfThoseMs: Math.round(Math.max(0, ...setsToVictimKeys.map((set) => set.end - set.start))),
            ackedSetsByUnreachablePeers: unreachable,
            convergeMs: Math.round(convergeMs),
            originReads: load.gets.filter((g) => g.value?.startsWith("origin:")).length,
            staleReads: stale.length,
          }),
        );

        // The load must have hit the window this test is about: writes to the dead node's keys before the ring moved them.
        expect(setsToVictimKeys.length).toBeGreaterThan(0);
        expect(failedGets.map((get) => `${get.key} via #${get.via}: ${get.error}`)).toEqual([]);
        expect(failedSets.map((set) => `${set.key} via #${set.via} ${Math.round(set.start - killedAt)} ms after the kill: ${set.error}`)).toEqual([]);
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
