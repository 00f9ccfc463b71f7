import { _CancelToken, _timerDelay } from "./call.ts";
import { GCacheError } from "./errors.ts";

interface Flight<T> {
  promise: Promise<T>;
  /** Cancelled when every caller has left; its signal is made only if the work reads it. */
  readonly token: _CancelToken;
  /** Callers still waiting; a caller without a signal can never leave. */
  waiters: number;
  settled: boolean;
}

/**
 * Collapses concurrent calls for the same key into one: while a call for a key
 * is in flight, later callers share its result instead of starting another.
 * The key is freed as soon as the call settles (success or failure), so a
 * failure is never cached and a later call runs again.
 *
 * Callers may pass an AbortSignal: an aborted caller leaves at once with the
 * signal's reason, and when every caller has left, the shared call's own
 * signal aborts (so a load nobody waits for any more can stop) and the key is
 * freed for a fresh call.
 */
export class SingleFlight<T> {
  private readonly inFlight = new Map<string, Flight<T>>();
  private deduped = 0;

  /**
   * Runs `fn` unless a call for `key` is already in flight, in which case its
   * result is shared. A synchronous throw from `fn` behaves like a rejection.
   */
  do(key: string, fn: (signal: AbortSignal) => T | PromiseLike<T>, signal?: AbortSignal): Promise<T> {
    const flight = this.join(key, (token) => fn(token.signal));
    if (signal === undefined) return flight.promise;
    return this.wait(key, flight, signal, reasonOf, Infinity, null);
  }

  /**
   * @internal `do` for a caller that leaves at `deadline` (rejected with
   * `expired()`) or when `signal` aborts (rejected with `cancelled(signal)`),
   * on a timer. `fn` gets the flight's cancellation, whose signal is made
   * only if read: neither a caller nor the work costs an AbortController
   * unless it needs one, which under load would outlive a young collection
   * and cost every one after it (docs/benchmarks.md, "Young collections
   * after a burst of loads").
   */
  _doUntil(
    key: string,
    fn: (token: _CancelToken) => T | PromiseLike<T>,
    deadline: number,
    expired: () => unknown,
    signal: AbortSignal | undefined,
    cancelled: (signal: AbortSignal) => unknown,
  ): Promise<T> {
    return this.wait(key, this.join(key, fn), signal, cancelled, deadline, expired);
  }

  /** Whether a call for `key` is in flight. */
  has(key: string): boolean {
    return this.inFlight.has(key);
  }

  /** Calls currently in flight. */
  get size(): number {
    return this.inFlight.size;
  }

  /** Calls that joined an in-flight call instead of running their own. */
  get dedupedCount(): number {
    return this.deduped;
  }

  /** The flight for `key`, started if none is in flight, with one more waiter. */
  private join(key: string, fn: (token: _CancelToken) => T | PromiseLike<T>): Flight<T> {
    let flight = this.inFlight.get(key);
    if (flight === undefined) flight = this.start(key, fn);
    else this.deduped++;
    flight.waiters++;
    return flight;
  }

  private start(key: string, fn: (token: _CancelToken) => T | PromiseLike<T>): Flight<T> {
    const token = new _CancelToken();
    const flight: Flight<T> = { token, waiters: 0, settled: false, promise: Promise.resolve() as Promise<T> };
    flight.promise = (async () => {
      // Yield once so the flight is registered before `fn` runs; otherwise a
      // synchronous throw would reach `finally` before the registration and
      // leave a settled promise under the key for good.
      await undefined;
      try {
        return await fn(token);
      } finally {
        flight.settled = true;
        if (this.inFlight.get(key) === flight) this.inFlight.delete(key);
      }
    })();
    this.inFlight.set(key, flight);
    return flight;
  }

  /**
   * A waiter's share of `flight`: it leaves when `signal` aborts (with
   * `cancelled(signal)`) or, when `expired` is given, at `deadline` (with
   * `expired()`, on a timer); it is settled once, however things race.
   */
  private wait(
    key: string,
    flight: Flight<T>,
    signal: AbortSignal | undefined,
    cancelled: (signal: AbortSignal) => unknown,
    deadline: number,
    expired: (() => unknown) | null,
  ): Promise<T> {
    if (signal?.aborted) {
      this.leave(key, flight);
      return Promise.reject(cancelled(signal));
    }
    return new Promise<T>((resolve, reject) => {
      let left = false;
      const end = () => {
        left = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const leaveWith = (reason: unknown) => {
        if (left) return;
        end();
        this.leave(key, flight);
        reject(reason);
      };
      const onAbort = () => leaveWith(cancelled(signal!));
      const timer = expired === null ? undefined : setTimeout(() => leaveWith(expired()), _timerDelay(deadline - Date.now()));
      signal?.addEventListener("abort", onAbort, { once: true });
      flight.promise.then(
        (value) => {
          if (left) return;
          end();
          resolve(value);
        },
        (error: unknown) => {
          if (left) return;
          end();
          reject(error);
        },
      );
    });
  }

  private leave(key: string, flight: Flight<T>): void {
    if (--flight.waiters > 0 || flight.settled) return;
    if (this.inFlight.get(key) === flight) this.inFlight.delete(key);
    flight.token.cancel(new GCacheError("ERR_CANCELLED", "every caller of this call gave up"));
    // Nobody listens to the shared promise any more; keep its rejection from surfacing as unhandled.
    flight.promise.catch(() => {});
  }
}

function reasonOf(signal: AbortSignal): unknown {
  return signal.reason ?? new GCacheError("ERR_CANCELLED", "cancelled");
}
