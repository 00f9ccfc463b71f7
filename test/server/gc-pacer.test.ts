import { afterEach, describe, expect, test } from "bun:test";
import { _GcPacer, startGcPacer, type GcPacer } from "../../src/server/gc-pacer.ts";
import { GCacheError } from "../../src/errors.ts";
import { waitFor } from "../_support/wait.ts";

/** CPU time the test decides: `busy` makes every read look like a full interval of work. */
class FakeRuntime {
  cpu = 0;
  busy = false;
  /** CPU a collection itself burns. */
  collectionCost = 0;
  /** How long a collection takes on the pacer's clock, which only collections move. */
  collectionMs = 0;
  clockMs = 0;
  collected = 0;
  readonly deps = {
    collect: () => {
      this.collected++;
      this.cpu += this.collectionCost;
      this.clockMs += this.collectionMs;
    },
    cpuMicros: () => {
      if (this.busy) this.cpu += 1_000_000;
      return this.cpu;
    },
    nowMs: () => this.clockMs,
  };
}

const pacers: GcPacer[] = [];
afterEach(() => {
  for (const pacer of pacers.splice(0)) pacer.stop();
});

function pace(runtime: FakeRuntime, intervalMs = 2, minBusyShare = 0.05, maxCollectShare = 0.03): _GcPacer {
  const pacer = new _GcPacer(runtime.deps, intervalMs, minBusyShare, maxCollectShare);
  pacers.push(pacer);
  return pacer;
}

describe("GC pacer", () => {
  test("collects on beats after CPU was used and leaves an idle process alone", async () => {
    const runtime = new FakeRuntime();
    const pacer = pace(runtime);
    await waitFor(() => pacer.beats >= 5, 5_000, "five idle beats");
    expect(pacer.collections).toBe(0);
    expect(runtime.collected).toBe(0);
    runtime.busy = true;
    await waitFor(() => pacer.collections >= 3, 5_000, "three busy beats");
    runtime.busy = false;
    const collected = runtime.collected;
    const beats = pacer.beats;
    await waitFor(() => pacer.beats >= beats + 5, 5_000, "five more idle beats");
    expect(runtime.collected).toBe(collected);
    expect(pacer.collections).toBe(runtime.collected);
  });

  test("the CPU a collection burns does not make the next beat look busy", async () => {
    const runtime = new FakeRuntime();
    runtime.collectionCost = 10_000_000;
    const pacer = pace(runtime);
    runtime.cpu += 1_000_000;
    await waitFor(() => pacer.collections === 1, 5_000, "the first collection");
    const beats = pacer.beats;
    await waitFor(() => pacer.beats >= beats + 5, 5_000, "five more beats");
    expect(pacer.collections).toBe(1);
  });

  test("CPU below the busy share of an interval counts as idle", async () => {
    const runtime = new FakeRuntime();
    // 10 ms beats with a 50 % share: 4 ms of CPU since the last beat is idle, 6 ms busy.
    const pacer = pace(runtime, 10, 0.5);
    const usePerBeat = (micros: number) => {
      runtime.deps.cpuMicros = () => (runtime.cpu += micros);
    };
    usePerBeat(4_000);
    await waitFor(() => pacer.beats >= 3, 5_000, "three light beats");
    expect(pacer.collections).toBe(0);
    usePerBeat(6_000);
    await waitFor(() => pacer.collections >= 2, 5_000, "busy beats");
  });

  test("an idle process is looked at far less often than a busy one", async () => {
    const busyRuntime = new FakeRuntime();
    busyRuntime.busy = true;
    const busy = pace(busyRuntime);
    const idle = pace(new FakeRuntime());
    await waitFor(() => busy.beats >= 60, 5_000, "sixty busy beats");
    // Ten times slower when idle; timer lateness, the same for both, narrows it a little.
    expect(idle.beats).toBeLessThanOrEqual(busy.beats / 4);
    expect(idle.beats).toBeGreaterThan(0);
    expect(idle.collections).toBe(0);
  });

  test("collections that take long are spaced out to stay within their share of the time", async () => {
    const cheapRuntime = new FakeRuntime();
    cheapRuntime.busy = true;
    cheapRuntime.collectionMs = 0.01;
    const costlyRuntime = new FakeRuntime();
    costlyRuntime.busy = true;
    // 1 ms per collection within a 10 % share: beats 10 ms apart instead of every 2 ms.
    costlyRuntime.collectionMs = 1;
    const cheap = pace(cheapRuntime, 2, 0.05, 0.1);
    const costly = pace(costlyRuntime, 2, 0.05, 0.1);
    await waitFor(() => cheap.collections >= 60, 5_000, "sixty cheap collections");
    expect(costly.collections).toBeGreaterThan(0);
    // Five times fewer; timer lateness, the same for both, narrows it a little.
    expect(costly.collections).toBeLessThanOrEqual(cheap.collections / 3);
  });

  test("however long collections take, a busy process is collected at least every ten intervals", async () => {
    const runtime = new FakeRuntime();
    runtime.busy = true;
    runtime.collectionMs = 1_000;
    const costly = pace(runtime, 2, 0.05, 0.01);
    // Uncapped, the second collection would come 100 s after the first; capped, 20 ms.
    await waitFor(() => costly.collections >= 3, 5_000, "three collections");
    expect(costly.beats).toBe(costly.collections);
  });

  test("stop ends the beats", async () => {
    const runtime = new FakeRuntime();
    runtime.busy = true;
    const pacer = pace(runtime);
    await waitFor(() => pacer.collections >= 1, 5_000, "a collection");
    pacer.stop();
    expect(pacer.active).toBe(false);
    const beats = pacer.beats;
    // A second pacer's beats measure the time that passed.
    const witness = pace(new FakeRuntime());
    await waitFor(() => witness.beats >= 10, 5_000, "ten witness beats");
    expect(pacer.beats).toBe(beats);
  });

  test("on Bun, startGcPacer runs real young collections and can be stopped", async () => {
    const pacer = await startGcPacer({ intervalMs: 2, minBusyShare: 0 });
    pacers.push(pacer);
    expect(pacer.active).toBe(true);
    let garbage: unknown[] = [];
    await waitFor(
      () => {
        // Work between beats: some CPU and garbage for the collector.
        garbage = Array.from({ length: 10_000 }, (_, i) => ({ i }));
        return pacer.collections >= 3;
      },
      5_000,
      "three collections",
    );
    expect(garbage.length).toBe(10_000);
    pacer.stop();
    expect(pacer.active).toBe(false);
  });

  test("interval 0 gives an inactive pacer; invalid options are refused with ERR_INVALID_OPTION", async () => {
    const off = await startGcPacer({ intervalMs: 0 });
    expect(off.active).toBe(false);
    expect(off.collections).toBe(0);
    off.stop();
    for (const options of [{ intervalMs: -1 }, { intervalMs: Infinity }, { intervalMs: Number.NaN }, { minBusyShare: 2 }, { minBusyShare: -0.1 }, { maxCollectShare: 0 }, { maxCollectShare: 1.5 }, { maxCollectShare: Number.NaN }]) {
      const error = await startGcPacer(options).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(GCacheError);
      expect((error as GCacheError).code).toBe("ERR_INVALID_OPTION");
    }
  });
});
