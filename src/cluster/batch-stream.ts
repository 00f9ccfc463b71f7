/**
 * Batches to one peer over one long-lived BatchGetStream instead of one
 * BatchGet call each. Under load the peer hop is bound by per-call cost:
 * grpc-js builds a chain of call objects, metadata and an HTTP/2 stream for
 * every call, on both nodes; a message on an open stream costs a fraction of
 * that. Each batch carries an id and its own time budget, and the peer answers
 * it at once from its cache (keys it must load come back "ask alone").
 *
 * The stream is only a faster road, never a different answer. Whatever it
 * cannot carry goes as a plain BatchGet call, whose status then says what
 * went wrong exactly as before: batches in flight when a stream breaks or
 * ends (the peer restarting or draining), batches the peer hands back
 * (`use_call`: unknown group, node draining, oversized batch), and every
 * batch to a peer that does not have the method.
 */
import { status, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import { GCacheError } from "../errors.ts";
import type { CallContext } from "../wire/connection.ts";
import type { _Connection } from "../wire/connection.ts";
import { GCACHE_SERVICE, type BatchGetRequest, type BatchGetResponse } from "../wire/messages.ts";

export const DEFAULT_BATCH_STREAM_OPTIONS = {
  /**
   * Deadline of one stream (every RPC has one). New batches move to a fresh
   * stream once the current one is half this old, so a batch never meets
   * the stream's deadline.
   */
  maxAgeMs: 10 * 60_000,
  /** After a stream failed before answering anything, batches use calls for this long. */
  retryAfterMs: 1_000,
} as const;

/** The unary fallback: one BatchGet call. */
export type BatchCall = (request: BatchGetRequest, context: CallContext) => Promise<BatchGetResponse>;

interface InFlight {
  request: BatchGetRequest;
  context: CallContext;
  resolve(response: BatchGetResponse): void;
  reject(error: unknown): void;
  timer: ReturnType<typeof setTimeout>;
  onAbort: (() => void) | null;
}

/** Ids wrap below 2^32 (a uint32 on the wire). */
const MAX_ID = 0xffffffff;

class OpenStream {
  readonly inFlight = new Map<number, InFlight>();
  answered = false;
  ended = false;
  constructor(
    readonly call: ClientDuplexStream<BatchGetRequest, BatchGetResponse>,
    readonly openedAt: number,
  ) {}
}

export class _BatchStream {
  private stream: OpenStream | null = null;
  /** The peer lacks BatchGetStream: calls only, for the life of the connection. */
  private unsupported = false;
  private callsUntil = 0;
  private nextId = 0;
  private readonly what: string;

  constructor(
    private readonly connection: _Connection,
    private readonly call: BatchCall,
    private readonly options: { maxAgeMs: number; retryAfterMs: number } = DEFAULT_BATCH_STREAM_OPTIONS,
  ) {
    this.what = `/pb.GCache/BatchGetStream on ${connection.address}`;
  }

  /** Sends one batch; settles by `context.deadline` at the latest. */
  send(request: BatchGetRequest, context: CallContext): Promise<BatchGetResponse> {
    const now = Date.now();
    const budget = context.deadline - now;
    if (this.unsupported || now < this.callsUntil || budget <= 0 || context.signal?.aborted) return this.call(request, context);
    const stream = this.streamFor(now);
    if (stream === null) return this.call(request, context);
    const id = this.nextId === MAX_ID ? (this.nextId = 1) : ++this.nextId;
    return new Promise<BatchGetResponse>((resolve, reject) => {
      const pending: InFlight = {
        request,
        context,
        resolve,
        reject,
        timer: setTimeout(() => this.fail(stream, id, new GCacheError("ERR_DEADLINE_EXCEEDED", `${this.what}: deadline exceeded`)), budget),
        onAbort: null,
      };
      const signal = context.signal;
      if (signal !== undefined) {
        pending.onAbort = () => this.fail(stream, id, new GCacheError("ERR_CANCELLED", `${this.what}: cancelled`, { cause: signal.reason }));
        signal.addEventListener("abort", pending.onAbort, { once: true });
      }
      stream.inFlight.set(id, pending);
      stream.call.write({ group: request.group, keys: request.keys, id, timeoutMs: Math.min(Math.ceil(budget), MAX_ID) });
    });
  }

  /** Cancels the stream; batches still on it finish as calls (which fail once the connection is closed). */
  close(): void {
    const stream = this.stream;
    this.stream = null;
    if (stream === null) return;
    this.ended(stream, null);
    stream.call.cancel();
  }

  private streamFor(now: number): OpenStream | null {
    const current = this.stream;
    if (current !== null && now - current.openedAt < this.options.maxAgeMs / 2) return current;
    if (current !== null) {
      // Retire it: the peer answers what it already has, then ends the stream.
      this.stream = null;
      current.call.end();
    }
    const call = this.connection.duplex(GCACHE_SERVICE.BatchGetStream, now + this.options.maxAgeMs);
    if (call === null) return null;
    const stream = new OpenStream(call, now);
    call.on("data", (response: BatchGetResponse) => this.answered(stream, response));
    call.on("error", (error: ServiceError) => this.ended(stream, error));
    call.on("end", () => this.ended(stream, null));
    this.stream = stream;
    return stream;
  }

  private answered(stream: OpenStream, response: BatchGetResponse): void {
    stream.answered = true;
    const id = response.id ?? 0;
    const pending = stream.inFlight.get(id);
    if (pending === undefined) return; // it timed out or was cancelled meanwhile
    this.forget(stream, id, pending);
    if (response.useCall === true) this.call(pending.request, pending.context).then(pending.resolve, pending.reject);
    else pending.resolve(response);
  }

  private fail(stream: OpenStream, id: number, error: GCacheError): void {
    const pending = stream.inFlight.get(id);
    if (pending === undefined) return;
    this.forget(stream, id, pending);
    pending.reject(error);
  }

  private forget(stream: OpenStream, id: number, pending: InFlight): void {
    stream.inFlight.delete(id);
    clearTimeout(pending.timer);
    if (pending.onAbort !== null) pending.context.signal?.removeEventListener("abort", pending.onAbort);
  }

  /** The stream is over, cleanly or not: what it still carried goes as calls. */
  private ended(stream: OpenStream, error: ServiceError | null): void {
    if (stream.ended) return;
    stream.ended = true;
    if (this.stream === stream) this.stream = null;
    if (error !== null) {
      if (error.code === status.UNIMPLEMENTED) this.unsupported = true;
      else if (!stream.answered) this.callsUntil = Date.now() + this.options.retryAfterMs;
    } else {
      stream.call.end();
    }
    for (const [id, pending] of stream.inFlight) {
      this.forget(stream, id, pending);
      this.call(pending.request, pending.context).then(pending.resolve, pending.reject);
    }
  }
}
