/**
 * Collapses concurrent calls for the same key into one: while a call for a key
 * is in flight, later callers share its promise instead of starting another.
 * The key is freed as soon as the call settles (success or failure), so a
 * failure is never cached and a later call runs again.
 */
export class SingleFlight<T> {
  private readonly inFlight = new Map<string, Promise<T>>();
  private deduped = 0;

  /**
   * Runs `fn` unless a call for `key` is already in flight, in which case its
   * result is shared. A synchronous throw from `fn` behaves like a rejection.
   */
  do(key: string, fn: () => T | PromiseLike<T>): Promise<T> {
    const pending = this.inFlight.get(key);
    if (pending !== undefined) {
      this.deduped++;
      return pending;
    }
    const call = this.run(key, fn);
    this.inFlight.set(key, call);
    return call;
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

  private async run(key: string, fn: () => T | PromiseLike<T>): Promise<T> {
    // Yield once so `do` registers the call before `fn` runs; otherwise a
    // synchronous throw would reach `finally` before the registration and
    // leave a settled promise under the key for good.
    await undefined;
    try {
      return await fn();
    } finally {
      this.inFlight.delete(key);
    }
  }
}
