/**
 * Coalesces concurrent gets to one peer (for one group) into batched RPCs.
 * At most `maxInFlight` RPCs run at once; while they do, new gets queue and
 * leave together as one batch when a slot frees up. At low load nothing
 * waits: a get finds a free slot and goes out alone, as a plain Get, so
 * batching never adds latency; under load batches grow by themselves.
 */
import { GCacheError } from "../errors.ts";
import type { CallContext } from "../wire/connection.ts";
import type { Entry } from "./peer.ts";

export interface BatchTransport {
  /** One key, one plain RPC. */
  getOne(key: string, context: CallContext): Promise<Entry>;
  /** Many keys in one RPC; results in key order, each an entry or an error (or "ask alone"). */
  getMany(keys: string[], context: CallContext): Promise<(Entry | GCacheError | "alone")[]>;
}

interface Pending {
  key: string;
  deadline: number;
  signal: AbortSignal | undefined;
  resolve(entry: Entry): void;
  reject(error: unknown): void;
  done: boolean;
  onAbort: (() => void) | null;
}

export const DEFAULT_BATCH_OPTIONS = {
  /** RPCs in flight to one peer per group before gets start to queue. */
  maxInFlight: 4,
  /** Keys per batched RPC. */
  maxBatch: 256,
} as const;

export class _GetBatcher {
  private queue: Pending[] = [];
  private inFlight = 0;

  constructor(
    private readonly transport: BatchTransport,
    private readonly maxInFlight: number = DEFAULT_BATCH_OPTIONS.maxInFlight,
    private readonly maxBatch: number = DEFAULT_BATCH_OPTIONS.maxBatch,
  ) {}

  get(key: string, context: CallContext): Promise<Entry> {
    if (this.inFlight < this.maxInFlight && this.queue.length === 0) return this.alone(key, context);
    return new Promise<Entry>((resolve, reject) => {
      const pending: Pending = { key, deadline: context.deadline, signal: context.signal, resolve, reject, done: false, onAbort: null };
      const signal = context.signal;
      if (signal !== undefined) {
        if (signal.aborted) {
          reject(signal.reason);
          return;
        }
        pending.onAbort = () => this.settle(pending, null, signal.reason);
        signal.addEventListener("abort", pending.onAbort, { once: true });
      }
      this.queue.push(pending);
    });
  }

  private async alone(key: string, context: CallContext): Promise<Entry> {
    this.inFlight++;
    try {
      return await this.transport.getOne(key, context);
    } finally {
      this.inFlight--;
      this.flush();
    }
  }

  private flush(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch).filter((p) => !p.done);
      if (batch.length === 1) {
        const only = batch[0]!;
        this.alone(only.key, { deadline: only.deadline, ...(only.signal === undefined ? {} : { signal: only.signal }) }).then(
          (entry) => this.settle(only, entry, null),
          (error: unknown) => this.settle(only, null, error),
        );
      } else if (batch.length > 1) {
        void this.sendBatch(batch);
      }
    }
  }

  private async sendBatch(batch: Pending[]): Promise<void> {
    this.inFlight++;
    // The RPC lives as long as its most patient caller; it is cancelled once every caller gave up.
    const controller = new AbortController();
    const deadline = Math.max(...batch.map((p) => p.deadline));
    let open = batch.length;
    const leave = () => {
      if (--open === 0) controller.abort(new GCacheError("ERR_CANCELLED", "every caller in the batch gave up"));
    };
    for (const p of batch) p.signal?.addEventListener("abort", leave, { once: true });
    try {
      const results = await this.transport.getMany(
        batch.map((p) => p.key),
        { deadline, signal: controller.signal },
      );
      batch.forEach((p, i) => {
        const result = results[i];
        if (result === "alone") {
          this.alone(p.key, { deadline: p.deadline, ...(p.signal === undefined ? {} : { signal: p.signal }) }).then(
            (entry) => this.settle(p, entry, null),
            (error: unknown) => this.settle(p, null, error),
          );
        } else if (result instanceof GCacheError) {
          this.settle(p, null, result);
        } else if (result === undefined) {
          this.settle(p, null, new GCacheError("ERR_INTERNAL", "batch answer is missing an item"));
        } else {
          this.settle(p, result, null);
        }
      });
    } catch (error) {
      for (const p of batch) this.settle(p, null, error);
    } finally {
      for (const p of batch) p.signal?.removeEventListener("abort", leave);
      this.inFlight--;
      this.flush();
    }
  }

  private settle(pending: Pending, entry: Entry | null, error: unknown): void {
    if (pending.done) return;
    pending.done = true;
    if (pending.onAbort !== null) pending.signal?.removeEventListener("abort", pending.onAbort);
    if (entry !== null) pending.resolve(entry);
    else pending.reject(error);
  }
}
