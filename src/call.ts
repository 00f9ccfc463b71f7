import { GCacheError } from "./errors.ts";
import type { CallContext } from "./wire/connection.ts";

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
  /** Made on first use (an AbortController, a timer and a listener on the caller's signal): read it only to hand it on. */
  readonly signal: AbortSignal;
  /** Fires at the deadline or on cancellation; made on first use (a timer and a listener on the caller's signal), without an AbortSignal unless `signal` is read. */
  readonly cancellation: _CancelToken;
  /** The deadline and the caller's own signal, for a callee that enforces the deadline itself (a peer call): no signal is made. */
  readonly context: CallContext;
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
  return _cancellationFor(signal.reason);
}

/** The error a cancellation's reason stands for. */
export function _cancellationFor(reason: unknown): GCacheError {
  return reason instanceof GCacheError ? reason : new GCacheError("ERR_CANCELLED", "cancelled by the caller", { cause: reason });
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

/**
 * Starts a call. Its signal is made only when first read: an AbortSignal that
 * lives as long as a call outlives a young collection under load, and every
 * young collection after that revisits it until a full one (docs/benchmarks.md,
 * "Young collections after a burst of loads"), so a write that only hands its
 * deadline to peers makes none.
 */
export function _startCall(options: CallOptions | undefined, defaultTimeoutMs: number): _ActiveCall {
  return new _Call(options, defaultTimeoutMs);
}

class _Call implements _ActiveCall {
  readonly deadline: number;
  readonly context: CallContext;
  private readonly budget: number;
  private readonly parent: AbortSignal | undefined;
  private token: _CancelToken | null = null;
  private onParentAbort: (() => void) | null = null;
  private disposed = false;

  constructor(options: CallOptions | undefined, defaultTimeoutMs: number) {
    const now = Date.now();
    this.deadline = _deadlineOf(options, defaultTimeoutMs, now);
    this.budget = this.deadline - now;
    this.parent = options?.signal;
    this.context = this.parent === undefined ? { deadline: this.deadline } : { deadline: this.deadline, signal: this.parent };
  }

  get cancellation(): _CancelToken {
    return (this.token ??= this.wire());
  }

  get signal(): AbortSignal {
    return this.cancellation.signal;
  }

  dispose(): void {
    this.disposed = true;
    this.token?.dispose();
    if (this.onParentAbort !== null) this.parent!.removeEventListener("abort", this.onParentAbort);
  }

  /** The call's cancellation, at the deadline (whenever it is read) or when the caller's signal aborts. */
  private wire(): _CancelToken {
    const token = new _CancelToken();
    // Read after the work is done, it stays quiet, as one made up front would once its timer was stopped.
    if (this.disposed) return token;
    const budget = this.budget;
    // Read after the deadline, it is cancelled already, as one made up front would be by then.
    token.cancelAt(this.deadline, () => deadlineExceeded(budget));
    const parent = this.parent;
    if (parent !== undefined) {
      const onParentAbort = () => token.cancel(_cancellation(parent));
      if (parent.aborted) onParentAbort();
      else {
        parent.addEventListener("abort", onParentAbort, { once: true });
        this.onParentAbort = onParentAbort;
      }
    }
    return token;
  }
}

/**
 * Cancellation of shared work (a load) whose AbortSignal is made only when
 * something reads `signal`, for the same reason as a call's. Code of our own
 * listens with `onCancel`, which needs no signal; a loader that reads the
 * signal gets one, aborted already if the work was cancelled before.
 */
export class _CancelToken {
  private controller: AbortController | null = null;
  private listeners: ((reason: unknown) => void)[] | null = null;
  private cancelledWith: unknown = undefined;
  private timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private isCancelled = false;

  get cancelled(): boolean {
    return this.isCancelled;
  }

  /** Why the work was cancelled (undefined until it is). */
  get reason(): unknown {
    return this.cancelledWith;
  }

  get signal(): AbortSignal {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.isCancelled) this.controller.abort(this.cancelledWith);
    }
    return this.controller.signal;
  }

  /** Cancels the work once; later calls do nothing. */
  cancel(reason: unknown): void {
    if (this.isCancelled) return;
    this.isCancelled = true;
    this.cancelledWith = reason;
    clearTimeout(this.timer);
    const listeners = this.listeners;
    this.listeners = null;
    if (listeners !== null) for (const listener of listeners) listener(reason);
    this.controller?.abort(reason);
  }

  /** Cancels the work at `deadline` (epoch ms) with `expired()`, unless it is cancelled or disposed first; at once if that is past. */
  cancelAt(deadline: number, expired: () => unknown): void {
    if (this.isCancelled) return;
    clearTimeout(this.timer);
    const remaining = deadline - Date.now();
    if (remaining <= 0) this.cancel(expired());
    else this.timer = setTimeout(() => this.cancel(expired()), _timerDelay(remaining));
  }

  /** Stops the deadline timer; call once the work is done. */
  dispose(): void {
    clearTimeout(this.timer);
  }

  /** Calls `listener` once, on cancellation: at once if the work is cancelled already. */
  onCancel(listener: (reason: unknown) => void): void {
    if (this.isCancelled) return listener(this.cancelledWith);
    (this.listeners ??= []).push(listener);
  }

  offCancel(listener: (reason: unknown) => void): void {
    const listeners = this.listeners;
    if (listeners === null) return;
    const at = listeners.indexOf(listener);
    if (at >= 0) listeners.splice(at, 1);
  }
}
