/** A call's deadline and signal: the signal is made only when read, and then behaves as one made up front. */
import { afterEach, describe, expect, test } from "bun:test";
import { _startCall } from "../src/call.ts";
import { GCacheError } from "../src/errors.ts";
import { countAbortControllers } from "./_support/abort-count.ts";
import { waitFor } from "./_support/wait.ts";

let restore: (() => void) | null = null;
afterEach(() => {
  restore?.();
  restore = null;
});

describe("_startCall", () => {
  test("makes no AbortController until its signal is read; the context carries the deadline and the caller's own signal", () => {
    const counter = countAbortControllers();
    restore = counter.restore;
    const caller = new AbortController();
    const before = counter.made;
    const call = _startCall({ timeoutMs: 1_000, signal: caller.signal }, 5_000);
    expect(counter.made).toBe(before);
    expect(call.context.signal).toBe(caller.signal);
    expect(call.context.deadline).toBe(call.deadline);
    expect(_startCall({ timeoutMs: 1_000 }, 5_000).context).toEqual({ deadline: expect.any(Number) });
    void call.signal;
    expect(counter.made).toBe(before + 1);
    void call.signal;
    expect(counter.made).toBe(before + 1);
    call.dispose();
  });

  test("a signal read late still aborts at the deadline, with the call's budget in the error", async () => {
    const call = _startCall({ timeoutMs: 30 }, 5_000);
    await Bun.sleep(10);
    const signal = call.signal;
    expect(signal.aborted).toBe(false);
    await waitFor(() => signal.aborted, 2_000, "the deadline");
    expect(Date.now()).toBeGreaterThanOrEqual(call.deadline);
    expect(signal.reason).toBeInstanceOf(GCacheError);
    expect((signal.reason as GCacheError).code).toBe("ERR_DEADLINE_EXCEEDED");
    expect((signal.reason as GCacheError).message).toContain("30 ms");
    call.dispose();
    // Read only after its deadline, it is aborted at once.
    const late = _startCall({ timeoutMs: 5 }, 5_000);
    await Bun.sleep(15);
    expect(late.signal.aborted).toBe(true);
    expect((late.signal.reason as GCacheError).code).toBe("ERR_DEADLINE_EXCEEDED");
    late.dispose();
  });

  test("the caller's cancellation reaches the signal, whether it came before the read or after", () => {
    const early = new AbortController();
    const first = _startCall({ signal: early.signal }, 5_000);
    early.abort(new GCacheError("ERR_CANCELLED", "early"));
    expect(first.signal.aborted).toBe(true);
    expect((first.signal.reason as GCacheError).message).toBe("early");
    first.dispose();

    const late = new AbortController();
    const second = _startCall({ signal: late.signal }, 5_000);
    const signal = second.signal;
    expect(signal.aborted).toBe(false);
    late.abort();
    expect(signal.aborted).toBe(true);
    expect((signal.reason as GCacheError).code).toBe("ERR_CANCELLED");
    second.dispose();
  });

  test("once disposed, the signal stays quiet: no timer fires, and the caller's listener is gone", async () => {
    const caller = new AbortController();
    const call = _startCall({ timeoutMs: 20, signal: caller.signal }, 5_000);
    const signal = call.signal;
    call.dispose();
    caller.abort();
    await Bun.sleep(60);
    expect(signal.aborted).toBe(false);
    const unread = _startCall({ timeoutMs: 20 }, 5_000);
    unread.dispose();
    await Bun.sleep(40);
    expect(unread.signal.aborted).toBe(false);
  });
});
