import { GCacheError } from "./errors.ts";

/** How long a call may take and how to cancel it. */
export interface CallOptions {
  /** Give up after this many milliseconds. Default: the callee's own limit. */
  timeoutMs?: number;
  /** Give up at this absolute time (epoch ms or Date). The earlier of this and `timeoutMs` wins. */
  deadline?: number | Date;
  /** Cancels the call. */
  signal?: AbortSignal;
}

/** A call in progress: its absolute deadline and a signal that fires at the deadline or on cancellation. */
export interface _ActiveCall {
  readonly deadline: number;
  readonly signal: AbortSignal;
  /** Stops the deadline timer; call once the work is done. */
  dispose(): void;
}

/** The absolute deadline (epoch ms) of a call: the earlier of its deadline and now + its timeout. */
export function _deadlineOf(options: CallOptions | undefined, defaultTimeoutMs: number, now = Date.now()): number {
  const given = options?.deadline;
  return Math.min(
    given === undefined ? Infinity : typeof given === "number" ? given : given.getTime(),
    now + (options?.timeoutMs ?? defaultTimeoutMs),
  );
}

export function deadlineExceeded(budgetMs: number): GCacheError {
  return new GCacheError("ERR_DEADLINE_EXCEEDED", `deadline exceeded after ${Math.round(budgetMs)} ms`);
}

/** The error a caller's aborted signal stands for. */
export function _cancellation(signal: AbortSignal): GCacheError {
  return signal.reason instanceof GCacheError
    ? signal.reason
    : new GCacheError("ERR_CANCELLED", "cancelled by the caller", { cause: signal.reason });
}

/** The longest delay setTimeout takes: it runs anything longer after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A delay for setTimeout from a time budget: at least 0, and within what it
 * takes. A budget past about 24.8 days (a caller's "no real limit") would
 * otherwise fire at once, and fail the call with its deadline far ahead.
 */
export function _timerDelay(budgetMs: number): number {
  return Math.min(Math.max(0, budgetMs), MAX_TIMER_MS);
}

export function _startCall(options: CallOptions | undefined, defaultTimeoutMs: number): _ActiveCall {
  const now = Date.now();
  const deadline = _deadlineOf(options, defaultTimeoutMs, now);
  const controller = new AbortController();
  const budget = deadline - now;
  const timer = setTimeout(() => controller.abort(deadlineExceeded(budget)), _timerDelay(budget));
  const parent = options?.signal;
  const onParentAbort = () => controller.abort(_cancellation(parent!));
  if (parent !== undefined) {
    if (parent.aborted) onParentAbort();
    else parent.addEventListener("abort", onParentAbort, { once: true });
  }
  return {
    deadline,
    signal: controller.signal,
    dispose() {
      clearTimeout(timer);
      parent?.removeEventListener("abort", onParentAbort);
    },
  };
}
