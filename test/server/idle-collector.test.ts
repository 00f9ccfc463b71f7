import { afterEach, describe, expect, test } from "bun:test";
import { _IdleCollector, startIdleCollector, type IdleCollector } from "../../src/server/idle-collector.ts";
import { GCacheError } from "../../src/errors.ts";
import { waitFor } from "../_support/wait.ts";

/** CPU time the test decides: while `busy`, every read adds a second of work. */
class FakeRuntime {
  cpu = 0;
  busy = false;
  reads = 0;
  /** CPU a collection itself burns. */
  collectionCost = 0;
  collected = 0;
  readonly deps = {
    collect: () => {
      this.collected++;
      this.cpu += this.collectionCost;
    },
    cpuMicros: () => {
      this.reads++;
      if (this.busy) this.cpu += 1_000_000;
      return this.cpu;
    },
  };
}

const collectors: IdleCollector[] = [];
afterEach(() => {
  for (const collector of collectors.splice(0)) collector.stop();
});

function collector(runtime: FakeRuntime, quietMs = 20, maxQuietShare = 0.05): _IdleCollector {
  const c = new _IdleCollector(runtime.deps, quietMs, maxQuietShare);
  collectors.push(c);
  return c;
}

describe("idle collector", () => {
  test("an idle process is never collected", async () => {
    const runtime = new FakeRuntime();
    const c = collector(runtime, 10);
    await waitFor(() => runtime.reads >= 4, 5_000, "a few checks");
    expect(runtime.collected).toBe(0);
    expect(c.collections).toBe(0);
  });

  test("collects once when work stops, and not again until there was work again", async () => {
    const runtime = new FakeRuntime();
    const c = collector(runtime);
    runtime.busy = true;
    await waitFor(() => runtime.reads >= 4, 5_000, "busy checks");
    // Never while the work goes on.
    expect(runtime.collected).toBe(0);
    runtime.busy = false;
    await waitFor(() => runtime.collected === 1, 5_000, "the collection after the work stopped");
    const reads = runtime.reads;
    await waitFor(() => runtime.reads >= reads + 2, 5_000, "more quiet checks");
    expect(runtime.collected).toBe(1);
    runtime.busy = true;
    await waitFor(() => runtime.reads >= reads + 4, 5_000, "busy again");
    runtime.busy = false;
    await waitFor(() => runtime.collected === 2, 5_000, "the second collection");
    expect(c.collections).toBe(2);
  });

  test("the CPU a collection burns does not count as work", async () => {
    const runtime = new FakeRuntime();
    runtime.collectionCost = 10_000_000;
    collector(runtime);
    runtime.cpu += 1_000_000;
    await waitFor(() => runtime.collected === 1, 5_000, "the collection");
    const reads = runtime.reads;
    await waitFor(() => runtime.reads >= reads + 3, 5_000, "checks after it");
    expect(runtime.collected).toBe(1);
  });

  test("CPU below the quiet share of a check counts as quiet", async () => {
    const runtime = new FakeRuntime();
    // 50 ms checks (quietMs 200) with a 50 % share: up to 25 ms of CPU per check is quiet.
    collector(runtime, 200, 0.5);
    runtime.cpu += 1_000_000;
    runtime.deps.cpuMicros = () => {
      runtime.reads++;
      return (runtime.cpu += 20_000);
    };
    await waitFor(() => runtime.collected === 1, 5_000, "a collection while only a little CPU is used");
  });

  test("stopped, it checks no more", async () => {
    const runtime = new FakeRuntime();
    const c = collector(runtime, 10);
    expect(c.active).toBe(true);
    c.stop();
    expect(c.active).toBe(false);
    const reads = runtime.reads;
    // Another collector's checks measure the time that passed.
    const witness = new FakeRuntime();
    collector(witness, 10);
    await waitFor(() => witness.reads >= 5, 5_000, "five witness checks");
    expect(runtime.reads).toBe(reads);
  });

  test("on Bun, startIdleCollector runs a real full collection after work", async () => {
    const c = await startIdleCollector({ quietMs: 50 });
    collectors.push(c);
    expect(c.active).toBe(true);
    // Work: well over 5 % of a core for a check or two.
    const until = performance.now() + 120;
    let garbage: unknown[] = [];
    while (performance.now() < until) garbage = Array.from({ length: 1_000 }, (_, i) => ({ i }));
    expect(garbage.length).toBe(1_000);
    await waitFor(() => c.collections >= 1, 5_000, "a full collection once quiet");
    c.stop();
    expect(c.active).toBe(false);
  });

  test("quietMs 0 gives an inactive collector; invalid options are refused with ERR_INVALID_OPTION", async () => {
    const off = await startIdleCollector({ quietMs: 0 });
    expect(off.active).toBe(false);
    expect(off.collections).toBe(0);
    off.stop();
    for (const options of [{ quietMs: -1 }, { quietMs: Infinity }, { quietMs: Number.NaN }, { maxQuietShare: 0 }, { maxQuietShare: 1.5 }, { maxQuietShare: Number.NaN }]) {
      const error = await startIdleCollector(options).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(GCacheError);
      expect((error as GCacheError).code).toBe("ERR_INVALID_OPTION");
    }
  });
});
