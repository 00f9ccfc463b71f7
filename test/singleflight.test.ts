import { describe, expect, test } from "bun:test";
import type { _CancelToken } from "../src/call.ts";
import { SingleFlight } from "../src/singleflight.ts";
import { countAbortControllers } from "./_support/abort-count.ts";
import { waitFor } from "./_support/wait.ts";

/** Work that never settles, and what each run of it was given. */
function neverSettling<Given>(): { seen: Given[]; hang: (given: Given) => Promise<string> } {
  const seen: Given[] = [];
  return {
    seen,
    hang: (given) => {
      seen.push(given);
      return new Promise<string>(() => {});
    },
  };
}

describe("SingleFlight", () => {
  test("concurrent calls for one key run the function once and share its result", async () => {
    const flight = new SingleFlight<string>();
    const gate = Promise.withResolvers<void>();
    let runs = 0;
    const fn = async () => {
      runs++;
      await gate.promise;
      return "value";
    };
    const calls = Array.from({ length: 100 }, () => flight.do("k", fn));
    expect(flight.has("k")).toBe(true);
    gate.resolve();
    expect(await Promise.all(calls)).toEqual(Array(100).fill("value"));
    expect(runs).toBe(1);
    expect(flight.dedupedCount).toBe(99);
    expect(flight.size).toBe(0);
  });

  test("different keys run independently", async () => {
    const flight = new SingleFlight<string>();
    const seen: string[] = [];
    const results = await Promise.all(
      ["a", "b", "a"].map((key) =>
        flight.do(key, async () => {
          seen.push(key);
          return key.toUpperCase();
        }),
      ),
    );
    expect(results).toEqual(["A", "B", "A"]);
    expect(seen.sort()).toEqual(["a", "b"]);
  });

  test("a rejection reaches every waiter and frees the key", async () => {
    const flight = new SingleFlight<string>();
    const gate = Promise.withResolvers<void>();
    const failing = async () => {
      await gate.promise;
      throw new Error("origin down");
    };
    const calls = Array.from({ length: 10 }, () => flight.do("k", failing).catch((e: Error) => e.message));
    gate.resolve();
    expect(await Promise.all(calls)).toEqual(Array(10).fill("origin down"));
    expect(flight.has("k")).toBe(false);
    expect(await flight.do("k", async () => "recovered")).toBe("recovered");
  });

  test("a synchronous throw behaves like a rejection and never wedges the key", async () => {
    const flight = new SingleFlight<string>();
    const thrower = (): string => {
      throw new Error("sync boom");
    };
    const first = flight.do("k", thrower);
    const second = flight.do("k", thrower);
    expect(await first.catch((e: Error) => e.message)).toBe("sync boom");
    expect(await second.catch((e: Error) => e.message)).toBe("sync boom");
    expect(flight.size).toBe(0);
    expect(await flight.do("k", () => "fine")).toBe("fine");
  });

  test("a call that starts after the previous one settled runs again", async () => {
    const flight = new SingleFlight<number>();
    let runs = 0;
    await flight.do("k", async () => ++runs);
    await flight.do("k", async () => ++runs);
    expect(runs).toBe(2);
    expect(flight.dedupedCount).toBe(0);
  });

  test("a caller that aborts leaves at once; the shared call goes on for the others", async () => {
    const flight = new SingleFlight<string>();
    const gate = Promise.withResolvers<void>();
    let sharedSignal: AbortSignal | undefined;
    const fn = async (signal: AbortSignal) => {
      sharedSignal = signal;
      await gate.promise;
      return "done";
    };
    const leaving = new AbortController();
    const first = flight.do("k", fn, leaving.signal);
    const second = flight.do("k", fn, new AbortController().signal);
    leaving.abort(new Error("caller went away"));
    expect(await first.catch((e: Error) => e.message)).toBe("caller went away");
    gate.resolve();
    expect(await second).toBe("done");
    expect(sharedSignal?.aborted).toBe(false);
  });

  test("when every caller has left, the call's signal aborts and the key is free for a fresh call", async () => {
    const flight = new SingleFlight<string>();
    const { seen, hang } = neverSettling<AbortSignal>();
    const a = new AbortController();
    const b = new AbortController();
    const calls = [flight.do("k", hang, a.signal), flight.do("k", hang, b.signal)];
    await waitFor(() => seen.length === 1);
    a.abort();
    expect(seen[0]!.aborted).toBe(false);
    b.abort();
    await Promise.allSettled(calls);
    expect(seen[0]!.aborted).toBe(true);
    expect(flight.has("k")).toBe(false);
    expect(await flight.do("k", () => "fresh")).toBe("fresh");
  });

  test("a caller without a signal keeps the call alive", async () => {
    const flight = new SingleFlight<string>();
    const gate = Promise.withResolvers<void>();
    let sharedSignal: AbortSignal | undefined;
    const fn = async (signal: AbortSignal) => {
      sharedSignal = signal;
      await gate.promise;
      return "kept";
    };
    const patient = flight.do("k", fn);
    const impatient = new AbortController();
    const leaving = flight.do("k", fn, impatient.signal);
    impatient.abort();
    await leaving.catch(() => {});
    gate.resolve();
    expect(await patient).toBe("kept");
    expect(sharedSignal?.aborted).toBe(false);
  });
});

describe("SingleFlight._doUntil: callers that leave at a deadline, on a timer", () => {
  const expired = () => new Error("expired");
  const cancelled = (signal: AbortSignal) => new Error(`cancelled: ${String(signal.reason)}`);

  test("a caller leaves at its deadline with `expired()`; the others keep waiting and share the value", async () => {
    const flight = new SingleFlight<string>();
    const gate = Promise.withResolvers<string>();
    const fn = () => gate.promise;
    const hurried = flight._doUntil("k", fn, Date.now() + 20, expired, undefined, cancelled);
    const patient = flight._doUntil("k", fn, Date.now() + 10_000, expired, undefined, cancelled);
    const started = Date.now();
    expect(await hurried.catch((e: Error) => e.message)).toBe("expired");
    expect(Date.now() - started).toBeGreaterThanOrEqual(15);
    gate.resolve("shared");
    expect(await patient).toBe("shared");
  });

  test("a caller whose signal aborts leaves at once with `cancelled(signal)`, also when it was aborted before", async () => {
    const flight = new SingleFlight<string>();
    const hang = () => new Promise<string>(() => {});
    const caller = new AbortController();
    const leaving = flight._doUntil("k", hang, Date.now() + 10_000, expired, caller.signal, cancelled);
    caller.abort("bye");
    expect(await leaving.catch((e: Error) => e.message)).toBe("cancelled: bye");
    const gone = new AbortController();
    gone.abort("before");
    expect(await flight._doUntil("j", hang, Date.now() + 10_000, expired, gone.signal, cancelled).catch((e: Error) => e.message)).toBe("cancelled: before");
  });

  test("when every caller has left, by deadline or signal, the shared call's signal aborts and the key is free", async () => {
    const flight = new SingleFlight<string>();
    const { seen, hang } = neverSettling<_CancelToken>();
    const caller = new AbortController();
    const calls = [
      flight._doUntil("k", hang, Date.now() + 30, expired, undefined, cancelled),
      flight._doUntil("k", hang, Date.now() + 10_000, expired, caller.signal, cancelled),
    ];
    await waitFor(() => seen.length === 1);
    caller.abort();
    expect(seen[0]!.cancelled).toBe(false);
    await Promise.allSettled(calls);
    expect(seen[0]!.cancelled).toBe(true);
    // Read only now, the signal is made aborted, with the reason the work was cancelled for.
    expect(seen[0]!.signal.aborted).toBe(true);
    expect((seen[0]!.signal.reason as Error).message).toBe("every caller of this call gave up");
    expect(flight.has("k")).toBe(false);
  });

  test("an answer before the deadline settles the caller once: no late rejection, no leaving", async () => {
    const flight = new SingleFlight<string>();
    let shared: _CancelToken | undefined;
    const fn = async (token: _CancelToken) => {
      shared = token;
      await Bun.sleep(5);
      return "in time";
    };
    const caller = new AbortController();
    expect(await flight._doUntil("k", fn, Date.now() + 40, expired, caller.signal, cancelled)).toBe("in time");
    caller.abort();
    await Bun.sleep(60);
    expect(shared?.cancelled).toBe(false);
    expect(flight.has("k")).toBe(false);
  });

  test("neither the callers nor the work make an AbortController unless the work reads its signal", async () => {
    const flight = new SingleFlight<string>();
    const counted = countAbortControllers();
    try {
      const quiet = async (_token: _CancelToken) => {
        await Bun.sleep(1);
        return "v";
      };
      const caller = new AbortController();
      const made = counted.made;
      expect(await Promise.all([flight._doUntil("k", quiet, Date.now() + 1_000, expired, caller.signal, cancelled), flight._doUntil("k", quiet, Date.now() + 1_000, expired, undefined, cancelled)])).toEqual(["v", "v"]);
      expect(counted.made - made).toBe(0);
      const reading = async (token: _CancelToken) => {
        expect(token.signal.aborted).toBe(false);
        return "read";
      };
      expect(await flight._doUntil("j", reading, Date.now() + 1_000, expired, undefined, cancelled)).toBe("read");
      expect(counted.made - made).toBe(1);
    } finally {
      counted.restore();
    }
  });
});
