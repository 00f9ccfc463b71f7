/**
 * Coalesces concurrent writes to one peer (for one group) into batched calls:
 * invalidations into InvalidateMany, stores and deletes at the owner into
 * SetMany and DeleteMany. Every write tells every other node to drop its copy
 * and most writes go to another node's store, so under a write load each peer
 * receives a stream of one-item calls, and a gRPC call costs far more than
 * the work it carries. At most one call is in flight per peer and group;
 * items that come meanwhile queue and leave together when it returns. An
 * item that finds no call in flight waits only for the end of the event
 * loop's turn (`_EndOfTurn`), and the items of that turn leave together; at
 * low load that is a batch of one, a few microseconds later.
 *
 * A peer without the batched method (an older node) answers UNIMPLEMENTED:
 * its items go as plain calls from then on, each on its own.
 */
import { status, type ServiceError } from "@grpc/grpc-js";
import { _cancellation, _timerDelay } from "../call.ts";
import { GCacheError } from "../errors.ts";
import type { CallContext } from "../wire/connection.ts";
import { _EndOfTurn } from "./_end-of-turn.ts";

/** `Result`: what the peer answers for an item it applied (nothing for sets and invalidations; for deletes, whether it held the key). */
export interface BatchedCalls<Item, Result = void> {
  /** One item, one plain call. */
  one(item: Item, context: CallContext): Promise<Result>;
  /** Many items in one call; per item, in order, its result or the error the peer gave it. */
  many(items: Item[], context: CallContext): Promise<(Result | GCacheError)[]>;
}

export interface CallBatcherOptions<Item> {
  /** Items per call. */
  maxItems: number;
  /** Bytes per call, as `bytesOf` counts them; an item larger than this goes alone. Default: no limit. */
  maxBytes?: number;
  bytesOf?: (item: Item) => number;
}

interface Pending<Item, Result> {
  item: Item;
  deadline: number;
  signal: AbortSignal | undefined;
  resolve(result: Result): void;
  reject(error: unknown): void;
  done: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  onAbort: (() => void) | null;
}

export class _CallBatcher<Item, Result = void> {
  private queue: Pending<Item, Result>[] = [];
  private inFlight = false;
  private readonly flushAtEndOfTurn = new _EndOfTurn(() => this.flush());
  private unsupported = false;
  private readonly maxItems: number;
  private readonly maxBytes: number;
  private readonly bytesOf: ((item: Item) => number) | null;

  constructor(
    private readonly calls: BatchedCalls<Item, Result>,
    options: CallBatcherOptions<Item>,
  ) {
    this.maxItems = options.maxItems;
    this.maxBytes = options.maxBytes ?? Infinity;
    this.bytesOf = options.bytesOf ?? null;
  }

  /** Resolves with the peer's result once it applied `item`; rejects by `context.deadline` at the latest. */
  submit(item: Item, context: CallContext): Promise<Result> {
    if (this.unsupported) return this.calls.one(item, context);
    const signal = context.signal;
    if (signal?.aborted) return Promise.reject(_cancellation(signal));
    return new Promise<Result>((resolve, reject) => {
      const pending: Pending<Item, Result> = { item, deadline: context.deadline, signal, resolve, reject, done: false, timer: undefined, onAbort: null };
      if (signal !== undefined) {
        pending.onAbort = () => this.settle(pending, _cancellation(signal));
        signal.addEventListener("abort", pending.onAbort, { once: true });
      }
      this.queue.push(pending);
      // Queued behind a call in flight, it must not wait past its own deadline.
      if (this.inFlight) this.leaveByDeadline(pending);
      else this.flushAtEndOfTurn.request();
    });
  }

  private flush(): void {
    const batch = this.take();
    if (batch.length === 0) return;
    this.inFlight = true;
    void this.send(batch);
    // What did not fit in the call now waits behind it, and must not wait past its own deadline.
    for (const pending of this.queue) if (pending.timer === undefined && !pending.done) this.leaveByDeadline(pending);
  }

  /** The next batch: live items from the head of the queue, within the item and byte bounds. */
  private take(): Pending<Item, Result>[] {
    const now = Date.now();
    const batch: Pending<Item, Result>[] = [];
    let bytes = 0;
    let taken = 0;
    while (taken < this.queue.length && batch.length < this.maxItems) {
      const p = this.queue[taken]!;
      if (!p.done && p.deadline <= now) this.settle(p, deadlineExceeded());
      if (p.done) {
        taken++;
        continue;
      }
      const size = this.bytesOf === null ? 0 : this.bytesOf(p.item);
      if (batch.length > 0 && bytes + size > this.maxBytes) break;
      bytes += size;
      batch.push(p);
      taken++;
    }
    this.queue.splice(0, taken);
    return batch;
  }

  private async send(batch: Pending<Item, Result>[]): Promise<void> {
    const items = new Array<Item>(batch.length);
    // The call lives as long as its most patient caller; the others leave by their own timers.
    let deadline = 0;
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!;
      items[i] = p.item;
      if (p.deadline > deadline) deadline = p.deadline;
    }
    for (const p of batch) if (p.timer === undefined && p.deadline < deadline) this.leaveByDeadline(p);
    try {
      const outcomes = await this.calls.many(items, { deadline });
      batch.forEach((p, i) => {
        if (i >= outcomes.length) this.settle(p, new GCacheError("ERR_INTERNAL", "batch answer is missing an item"));
        else if (outcomes[i] instanceof GCacheError) this.settle(p, outcomes[i]);
        else this.settle(p, null, outcomes[i] as Result);
      });
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

  private leaveByDeadline(pending: Pending<Item, Result>): void {
    pending.timer = setTimeout(() => this.settle(pending, deadlineExceeded()), _timerDelay(pending.deadline - Date.now()));
  }

  private alone(pending: Pending<Item, Result>): void {
    if (pending.done) return;
    const context = { deadline: pending.deadline, ...(pending.signal === undefined ? {} : { signal: pending.signal }) };
    this.calls.one(pending.item, context).then(
      (result) => this.settle(pending, null, result),
      (error: unknown) => this.settle(pending, error),
    );
  }

  /** Ends `pending`: with `result` when `error` is null, else with the error. */
  private settle(pending: Pending<Item, Result>, error: unknown, result?: Result): void {
    if (pending.done) return;
    pending.done = true;
    if (pending.timer !== undefined) clearTimeout(pending.timer);
    if (pending.onAbort !== null) pending.signal?.removeEventListener("abort", pending.onAbort);
    if (error === null) pending.resolve(result as Result);
    else pending.reject(error);
  }
}

function isUnimplemented(error: unknown): boolean {
  return error instanceof GCacheError && (error.cause as ServiceError | undefined)?.code === status.UNIMPLEMENTED;
}

function deadlineExceeded(): GCacheError {
  return new GCacheError("ERR_DEADLINE_EXCEEDED", "deadline exceeded while queued for a batched call");
}
