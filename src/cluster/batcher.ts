/**
 * Coalesces concurrent gets to one peer (for one group) into batched RPCs.
 * At most `maxInFlight` batches run at once; while they do, new gets queue
 * and leave together as one batch when a slot frees up. A get that finds a
 * slot free waits only for the end of the event loop's turn (`_EndOfTurn`),
 * and the gets of that turn leave together; at low load that is a batch of
 * one, a few microseconds later. Under load batches grow by themselves.
 *
 * A slot is held only as long as the owner needs to look in its cache: the
 * owner answers a batch at once, and the keys it has to load come "later"
 * (on a stream, in answers of their own once loaded) or "ask alone" (the
 * owner started the load; a plain Get outside the slots joins it). Either
 * way one slow load never holds up the keys behind it.
 */
import { GCacheError } from "../errors.ts";
import type { CallContext } from "../wire/connection.ts";
import { _EndOfTurn } from "./_end-of-turn.ts";
import type { Entry, FetchDone } from "./peer.ts";

/** What a batch answers for one key: its entry, its error, "ask for it alone", or "answered later". */
export type BatchResult = Entry | GCacheError | "alone" | "later";

export interface BatchTransport {
  /** One key, one plain RPC. */
  getOne(key: string, context: CallContext): Promise<Entry>;
  /**
   * Many keys in one RPC; results in key order. A key answered "later" is
   * reported once through `late`, by its index, after the results are in.
   */
  getMany(keys: string[], context: CallContext, late: (index: number, result: Exclude<BatchResult, "later">) => void): Promise<BatchResult[]>;
}

interface Pending {
  key: string;
  deadline: number;
  signal: AbortSignal | undefined;
  report: FetchDone;
  done: boolean;
  onAbort: (() => void) | null;
}

export const DEFAULT_BATCH_OPTIONS = {
  /**
   * Batches in flight to one peer per group before gets start to queue. One:
   * each batch costs a gRPC call, so fewer, larger batches carry the most keys
   * per second (1 slot carried 1.7x the keys/s of 4 through the HTTP gateway).
   */
  maxInFlight: 1,
  /** Keys per batched RPC. */
  maxBatch: 256,
} as const;

export class _GetBatcher {
  private queue: Pending[] = [];
  private inFlight = 0;
  private readonly flushAtEndOfTurn = new _EndOfTurn(() => this.flush());

  constructor(
    private readonly transport: BatchTransport,
    private readonly maxInFlight: number = DEFAULT_BATCH_OPTIONS.maxInFlight,
    private readonly maxBatch: number = DEFAULT_BATCH_OPTIONS.maxBatch,
  ) {}

  get(key: string, context: CallContext): Promise<Entry> {
    return new Promise<Entry>((resolve, reject) => this.fetch(key, context, (entry, error) => (entry !== null ? resolve(entry) : reject(error))));
  }

  /** `get` reporting to a callback: the hop's hot path makes no promise per key here. */
  fetch(key: string, context: CallContext, report: FetchDone): void {
    const pending: Pending = { key, deadline: context.deadline, signal: context.signal, report, done: false, onAbort: null };
    const signal = context.signal;
    if (signal !== undefined) {
      if (signal.aborted) {
        report(null, signal.reason);
        return;
      }
      pending.onAbort = () => this.settle(pending, null, signal.reason);
      signal.addEventListener("abort", pending.onAbort, { once: true });
    }
    this.queue.push(pending);
    if (this.inFlight < this.maxInFlight) this.flushAtEndOfTurn.request();
  }

  /** A key the owner must load travels alone, outside the slots. */
  private alone(pending: Pending): void {
    const context = { deadline: pending.deadline, ...(pending.signal === undefined ? {} : { signal: pending.signal }) };
    this.transport.getOne(pending.key, context).then(
      (entry) => this.settle(pending, entry, null),
      (error: unknown) => this.settle(pending, null, error),
    );
  }

  private flush(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const now = Date.now();
      const batch = this.queue.splice(0, this.maxBatch).filter((p) => {
        // A get whose time ran out while it queued is not sent.
        if (!p.done && p.deadline <= now) this.settle(p, null, new GCacheError("ERR_DEADLINE_EXCEEDED", "deadline exceeded while queued for a batch"));
        return !p.done;
      });
      if (batch.length > 0) void this.sendBatch(batch);
    }
  }

  private async sendBatch(batch: Pending[]): Promise<void> {
    this.inFlight++;
    // The RPC lives as long as its most patient caller.
    const keys = new Array<string>(batch.length);
    let deadline = 0;
    let cancellable = true;
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!;
      keys[i] = p.key;
      if (p.deadline > deadline) deadline = p.deadline;
      if (p.signal === undefined) cancellable = false;
    }
    // It is cancelled once every caller gave up, which only callers with a signal can:
    // the peer hop's shared fetches bring none, and then the batch costs no controller.
    const leave = cancellable ? this.cancelWhenAllLeave(batch) : null;
    try {
      const context = leave === null ? { deadline } : { deadline, signal: leave.signal };
      const results = await this.transport.getMany(keys, context, (i, result) => this.answer(batch[i]!, result));
      for (let i = 0; i < batch.length; i++) {
        const result = results[i];
        if (result === "later") continue;
        this.answer(batch[i]!, result ?? new GCacheError("ERR_INTERNAL", "batch answer is missing an item"));
      }
    } catch (error) {
      for (const p of batch) this.settle(p, null, error);
    } finally {
      leave?.dispose();
      this.inFlight--;
      this.flush();
    }
  }

  private answer(pending: Pending, result: Exclude<BatchResult, "later">): void {
    if (pending.done) return;
    if (result === "alone") this.alone(pending);
    else if (result instanceof GCacheError) this.settle(pending, null, result);
    else this.settle(pending, result, null);
  }

  /** A signal that aborts once every caller of `batch` (each with a signal) aborted. */
  private cancelWhenAllLeave(batch: Pending[]): { signal: AbortSignal; dispose(): void } {
    const controller = new AbortController();
    let open = batch.length;
    const leave = () => {
      if (--open === 0) controller.abort(new GCacheError("ERR_CANCELLED", "every caller in the batch gave up"));
    };
    for (const p of batch) p.signal!.addEventListener("abort", leave, { once: true });
    return {
      signal: controller.signal,
      dispose: () => {
        for (const p of batch) p.signal!.removeEventListener("abort", leave);
      },
    };
  }

  private settle(pending: Pending, entry: Entry | null, error: unknown): void {
    if (pending.done) return;
    pending.done = true;
    if (pending.onAbort !== null) pending.signal?.removeEventListener("abort", pending.onAbort);
    pending.report(entry, error);
  }
}
