/**
 * A slow origin: the loader runs past the caller's deadline. The caller gets
 * DEADLINE_EXCEEDED on time, the origin request is aborted (the origin sees
 * its request's signal fire), and nothing half-loaded is cached: once the
 * origin is fast again the next get loads afresh. Both for a key the node
 * loads itself and for one whose owner is another node (the deadline crosses
 * the peer hop), over gRPC and over the HTTP gateway.
 */
import { expect, test } from "bun:test";
import { text } from "../_support/cluster.ts";
import { describeEtcd } from "../_support/etcd.ts";
import { waitFor } from "../_support/wait.ts";
import { codeOf, httpAddressOf, keysOwnedBy, useFaultCluster } from "./_support.ts";

const NAMES = ["A", "B"];
const DEADLINE_MS = 500;
const MARGIN_MS = 250;
/** The slow origin would answer after this long; --origin-timeout stays at its 5 s default. */
const SLOW_MS = 2_500;

describeEtcd("fault: a loader slower than the deadline", () => {
  const env = useFaultCluster(NAMES);

  const cases = [
    { owner: "A", how: "gRPC" },
    { owner: "B", how: "gRPC" },
    { owner: "A", how: "HTTP" },
    { owner: "B", how: "HTTP" },
  ] as const;

  for (const { owner, how } of cases) {
    test(
      `${how} get via A of a key owned by ${owner}: DEADLINE_EXCEEDED on time, origin request aborted, nothing cached`,
      async () => {
        const key = keysOwnedBy(NAMES, owner, 1, `slow-${how}`)[0]!;
        const abortedBefore = env.origin.aborted;
        const completedBefore = env.origin.slowCompleted;
        env.origin.behaviour = (k) => (k === key ? { delayMs: SLOW_MS, body: `slow:${k}` } : {});

        const start = performance.now();
        let outcome: string;
        if (how === "gRPC") {
          outcome = await env.clients[0]!.get("default", key, { timeoutMs: DEADLINE_MS }).then(text, codeOf);
        } else {
          const response = await fetch(`http://${httpAddressOf(env.nodes[0]!)}/v1/groups/default/keys/${key}?timeout=${DEADLINE_MS}ms`);
          const body = await response.text();
          outcome = response.status === 504 ? (JSON.parse(body) as { error: string }).error : `${response.status} ${body}`;
        }
        const elapsed = performance.now() - start;

        // The origin sees the load give up: its request is aborted, not left running to completion.
        await waitFor(() => env.origin.aborted > abortedBefore && env.origin.inFlight === 0, 2_000, "the origin request to be aborted");
        const abortedMs = performance.now() - start;
        env.origin.behaviour = () => ({});
        const fresh = await env.clients[0]!.get("default", key, { timeoutMs: 2_000 }).then(text, codeOf);
        console.info(JSON.stringify({ fault: "slow loader", how, owner, outcome, elapsedMs: Math.round(elapsed), abortSeenMs: Math.round(abortedMs), fresh }));

        expect(outcome).toBe("ERR_DEADLINE_EXCEEDED");
        expect(elapsed).toBeGreaterThanOrEqual(DEADLINE_MS - 5);
        expect(elapsed).toBeLessThan(DEADLINE_MS + MARGIN_MS);
        expect(env.origin.aborted - abortedBefore).toBe(1);
        expect(env.origin.slowCompleted).toBe(completedBefore);
        expect(fresh).toBe(`origin:${key}`);
        expect(env.origin.requestsFor(key)).toBe(2);
      },
      15_000,
    );
  }

  // Concurrent gets of one key share one load (singleflight). The load must serve
  // every caller to the end of its own deadline: a patient caller that joins the
  // load an impatient one started is not to be failed at the impatient deadline.
  for (const owner of NAMES) {
    test(
      `a patient get joining an impatient get's load of a key owned by ${owner} gets the value`,
      async () => {
        const key = keysOwnedBy(NAMES, owner, 1, `shared-${owner}`)[0]!;
        const SHARED_SLOW_MS = 1_000;
        env.origin.behaviour = (k) => (k === key ? { delayMs: SHARED_SLOW_MS } : {});
        const start = performance.now();
        const impatient = env.clients[0]!.get("default", key, { timeoutMs: 300 }).then(text, codeOf);
        // The patient get is sent once the impatient one's load has reached the origin.
        await waitFor(() => env.origin.requestsFor(key) === 1, 2_000, "the first load to reach the origin");
        const patient = env.clients[0]!.get("default", key, { timeoutMs: 4_000 }).then(text, codeOf);
        const outcomes = { impatient: await impatient, patient: await patient };
        const elapsed = performance.now() - start;
        env.origin.behaviour = () => ({});
        console.info(JSON.stringify({ fault: "shared slow load", owner, outcomes, elapsedMs: Math.round(elapsed), originRequests: env.origin.requestsFor(key) }));

        expect(outcomes.impatient).toBe("ERR_DEADLINE_EXCEEDED");
        expect(outcomes.patient).toBe(`origin:${key}`);
      },
      15_000,
    );
  }
});
