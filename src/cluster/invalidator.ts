/**
 * Coalesces concurrent invalidations to one peer (for one group) into
 * InvalidateMany calls. Every write tells every other node to drop its copy,
 * so under a write load each peer receives a stream of one-key calls, and a
 * gRPC call costs far more than the drop it carries. At most one call is in
 * flight per peer and group; keys that come meanwhile queue and leave together
 * when it returns. At low load nothing waits: a key finds no call in flight
 * and goes at once, as a batch of one.
 *
 * A peer without InvalidateMany (an older node) answers UNIMPLEMENTED: its
 * keys go as plain Invalidate calls from then on, each on its own.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { GCacheError } from "../errors.ts";
import type { CallContext } from "../wire/connection.ts";

export interface InvalidateTransport {
  /** Drops one key: a plain Invalidate call. */
  one(key: string, context: CallContext): Promise<void>;
  /** Drops many keys in one InvalidateMany call. */
  many(keys: string[], context: CallContext): Promise<void>;
}

interface Pending {
  key: string;
  deadline: number;
  signal: AbortSignal | undefined;
  resolve(): void;
  reject(error: unknown): void;
  done: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  onAbort: (() => void) | null;
}

export const DEFAULT_INVALIDATE_BATCH_OPTIONS = {
  /** Keys per InvalidateMany call (the server takes up to 1024). */
  maxBatch: 512,
} as const;

export class _InvalidateBatcher {
  private queue: Pending[] = [];
  private inFlight = false;
  private unsupported = false;

  constructor(
    private readonly transport: InvalidateTransport,
    private readonly maxBatch: number = DEFAULT_INVALIDATE_BATCH_OPTIONS.maxBatch,
  ) {}

  /** Resolves once the peer dropped `key`; rejects by `context.deadline` at the latest. */
  invalidate(key: string, context: CallContext): Promise<void> {
    if (this.unsupported) return this.transport.one(key, context);
    const signal = context.signal;
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    return new Promise<void>((resolve, reject) => {
      const pending: Pending = { key, deadline: context.deadline, signal, resolve, reject, done: false, timer: undefined, onAbort: null };
      if (signal !== undefined) {
        pending.onAbort = () => this.settle(pending, cancelled(signal));
        signal.addEventListener("abort", pending.onAbort, { once: true });
      }
      this.queue.push(pending);
      if (!this.inFlight) this.flush();
      // Still queued behind a call in flight: it must not wait past its own deadline.
      else this.leaveByDeadline(pending);
    });
  }

  private flush(): void {
    const now = Date.now();
    const batch = this.queue.splice(0, this.maxBatch).filter((p) => {
      if (!p.done && p.deadline <= now) this.settle(p, deadlineExceeded());
      return !p.done;
    });
    if (batch.length === 0) {
      if (this.queue.length > 0) this.flush();
      return;
    }
    this.inFlight = true;
    void this.send(batch);
  }

  private async send(batch: Pending[]): Promise<void> {
    const keys = new Array<string>(batch.length);
    // The call lives as long as its most patient caller; the others leave by their own timers.
    let deadline = 0;
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!;
      keys[i] = p.key;
      if (p.deadline > deadline) deadline = p.deadline;
    }
    for (const p of batch) if (p.timer === undefined && p.deadline < deadline) this.leaveByDeadline(p);
    try {
      await this.transport.many(keys, { deadline });
      for (const p of batch) this.settle(p, null);
    } catch (error) {
      if (isUnimplemented(error)) {
        this.unsupported = true;
        for (const p of batch) this.alone(p);
        for (const p of this.queue.splice(0)) this.alone(p);
      } else {
        for (const p of batch) this.settle(p, error);
      }
    } finally {
      this.inFlight = false;
      if (this.queue.length > 0) this.flush();
    }
  }

  private leaveByDeadline(pending: Pending): void {
    pending.timer = setTimeout(() => this.settle(pending, deadlineExceeded()), Math.max(0, pending.deadline - Date.now()));
  }

  private alone(pending: Pending): void {
    if (pending.done) return;
    const context = { deadline: pending.deadline, ...(pending.signal === undefined ? {} : { signal: pending.signal }) };
    this.transport.one(pending.key, context).then(
      () => this.settle(pending, null),
      (error: unknown) => this.settle(pending, error),
    );
  }

  private settle(pending: Pending, error: unknown): void {
    if (pending.done) return;
    pending.done = true;
    if (pending.timer !== undefined) clearTimeout(pending.timer);
    if (pending.onAbort !== null) pending.signal?.removeEventListener("abort", pending.onAbort);
    if (error === null) pending.resolve();
    else pending.reject(error);
  }
}

function isUnimplemented(error: unknown): boolean {
  return error instanceof GCacheError && (error.cause as ServiceError | undefined)?.code === status.UNIMPLEMENTED;
}

function deadlineExceeded(): GCacheError {
  return new GCacheError("ERR_DEADLINE_EXCEEDED", "deadline exceeded while queued to invalidate");
}

function cancelled(signal: AbortSignal): GCacheError {
  const reason: unknown = signal.reason;
  return reason instanceof GCacheError ? reason : new GCacheError("ERR_CANCELLED", "invalidation cancelled by the caller", { cause: reason });
}
