/**
 * Batches to one peer over one long-lived stream (BatchGetStream for gets,
 * WriteStream for writes) instead of one call each. Under load the peer hop
 * and the writes are bound by per-call cost: grpc-js builds a chain of call
 * objects, metadata and an HTTP/2 stream for every call, on both nodes; a
 * message on an open stream costs a fraction of that. Each batch carries an
 * id and its own time budget, and the peer answers it by id.
 *
 * The stream is only a faster road, never a different answer. Whatever it
 * cannot carry goes as the matching call, whose status then says what
 * went wrong exactly as before: batches in flight when a stream breaks or
 * ends (the peer restarting or draining), batches the peer hands back
 * (`use_call`: unknown group, node draining, oversized batch), and every
 * batch to a peer that does not have the method. A batch that goes as a
 * call after its stream broke may be applied twice: harmless for gets, and
 * for writes too, since the sender holds back later writes of the same key
 * until this one is answered, so a repeat applies the same thing again.
 *
 * A batch may also take later answers by its id (`LaterAnswers`: gets whose
 * keys the owner must load). Those parts are the sender's to finish when the
 * stream ends before they come; the rest of the batch was answered already.
 */
import { status, type MethodDefinition } from "@grpc/grpc-js";
import { _Deadlines, type _Expiring } from "../deadlines.ts";
import { GCacheError } from "../errors.ts";
import type { CallContext } from "../wire/connection.ts";
import type { _Connection } from "../wire/connection.ts";

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

/** What a stream's batches carry besides their content. */
export interface StreamedRequest {
  id?: number;
  timeoutMs?: number;
}
export interface StreamedResponse {
  id?: number;
  useCall?: boolean;
}

/**
 * A batch whose first answer may leave parts to come later on the stream, by
 * the same id (BatchGetStream's deferred loads). Once its first answer is in,
 * a batch can no longer be cancelled: its callers leave on their own.
 */
export interface LaterAnswers<Res> {
  /** After the first answer: how many later answers are still to come (0: the batch is done). */
  expected(first: Res): number;
  /** One later answer; returns how many are still to come. */
  received(later: Res): number;
  /** The rest cannot come: the batch's time ran out (`error`), or the stream ended (null; ask again another way). */
  lost(error: GCacheError | null): void;
}

/**
 * What carries a stream's batches: a grpc-js stream, or a peer link's
 * connection shaped like one (see peer-link.ts).
 */
export interface BatchDuplex<Req, Res> {
  on(event: "data", listener: (response: Res) => void): unknown;
  on(event: "error", listener: (error: { code: number }) => void): unknown;
  on(event: "end", listener: () => void): unknown;
  write(request: Req): unknown;
  /** No more batches; the peer answers what it has and ends the stream. */
  end(): unknown;
  cancel(): void;
}

/** Opens the stream on another road than the connection's (a peer link), or returns null. */
export type StreamRoute<Req, Res> = (deadline: number) => BatchDuplex<Req, Res> | null;

/** The unary fallback: the batch as one call. */
export type BatchCall<Req, Res> = (request: Req, context: CallContext) => Promise<Res>;

interface InFlight<Req, Res> extends _Expiring {
  request: Req;
  context: CallContext;
  resolve(response: Res): void;
  reject(error: unknown): void;
  onAbort: (() => void) | null;
  later: LaterAnswers<Res> | undefined;
  /** The first answer is in; later ones are awaited. */
  following: boolean;
}

/** Ids wrap below 2^32 (a uint32 on the wire). */
const MAX_ID = 0xffffffff;

class OpenStream<Req, Res> {
  readonly inFlight = new Map<number, InFlight<Req, Res>>();
  answered = false;
  ended = false;
  constructor(
    readonly call: BatchDuplex<Req, Res>,
    public openedAt: number,
  ) {}
}

export class _BatchStream<Req extends StreamedRequest, Res extends StreamedResponse> {
  private stream: OpenStream<Req, Res> | null = null;
  /** The peer lacks the method: calls only, for the life of the connection. */
  private unsupported = false;
  private callsUntil = 0;
  private nextId = 0;
  private readonly what: string;
  /** The batches' deadlines, on one timer rather than one each. */
  private readonly deadlines = new _Deadlines();

  constructor(
    private readonly connection: _Connection,
    private readonly method: MethodDefinition<Req, Res>,
    private readonly call: BatchCall<Req, Res>,
    private readonly options: { maxAgeMs: number; retryAfterMs: number } = DEFAULT_BATCH_STREAM_OPTIONS,
    private readonly route: StreamRoute<Req, Res> | null = null,
  ) {
    this.what = `${method.path} on ${connection.address}`;
  }

  /**
   * Sends one batch (its `id` and `timeoutMs` are set here); settles by
   * `context.deadline` at the latest. With `later`, answers after the first
   * that carry the batch's id go to it until it expects no more.
   */
  send(request: Req, context: CallContext, later?: LaterAnswers<Res>): Promise<Res> {
    const now = Date.now();
    const budget = context.deadline - now;
    if (this.unsupported || now < this.callsUntil || budget <= 0 || context.signal?.aborted) return this.call(request, context);
    const stream = this.streamFor(now);
    if (stream === null) return this.call(request, context);
    const id = this.nextId === MAX_ID ? (this.nextId = 1) : ++this.nextId;
    return new Promise<Res>((resolve, reject) => {
      const pending: InFlight<Req, Res> = {
        request,
        context,
        resolve,
        reject,
        deadline: context.deadline,
        deadlineSlot: -1,
        expire: () => this.fail(stream, id, new GCacheError("ERR_DEADLINE_EXCEEDED", `${this.what}: deadline exceeded`)),
        onAbort: null,
        later,
        following: false,
      };
      const signal = context.signal;
      if (signal !== undefined) {
        pending.onAbort = () => this.fail(stream, id, new GCacheError("ERR_CANCELLED", `${this.what}: cancelled`, { cause: signal.reason }));
        signal.addEventListener("abort", pending.onAbort, { once: true });
      }
      stream.inFlight.set(id, pending);
      this.deadlines.add(pending);
      request.id = id;
      request.timeoutMs = Math.min(Math.ceil(budget), MAX_ID);
      stream.call.write(request);
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

  /** New batches go on a new stream (the peer link became known): the current one is retired. */
  reopen(): void {
    if (this.stream !== null) this.stream.openedAt = -Infinity;
  }

  private streamFor(now: number): OpenStream<Req, Res> | null {
    const current = this.stream;
    if (current !== null && now - current.openedAt < this.options.maxAgeMs / 2) return current;
    if (current !== null) {
      // Retire it: the peer answers what it already has, then ends the stream.
      this.stream = null;
      current.call.end();
    }
    const deadline = now + this.options.maxAgeMs;
    const call: BatchDuplex<Req, Res> | null = this.route?.(deadline) ?? this.connection.duplex(this.method, deadline);
    if (call === null) return null;
    const stream = new OpenStream<Req, Res>(call, now);
    call.on("data", (response: Res) => this.answered(stream, response));
    call.on("error", (error: { code: number }) => this.ended(stream, error));
    call.on("end", () => this.ended(stream, null));
    this.stream = stream;
    return stream;
  }

  private answered(stream: OpenStream<Req, Res>, response: Res): void {
    stream.answered = true;
    const id = response.id ?? 0;
    const pending = stream.inFlight.get(id);
    if (pending === undefined) return; // it timed out or was cancelled meanwhile
    if (pending.following) {
      if (pending.later!.received(response) <= 0) this.forget(stream, id, pending);
      return;
    }
    if (response.useCall === true) {
      this.forget(stream, id, pending);
      this.call(pending.request, pending.context).then(pending.resolve, pending.reject);
      return;
    }
    if (pending.later !== undefined && pending.later.expected(response) > 0) {
      pending.following = true;
      this.stopListening(pending);
    } else {
      this.forget(stream, id, pending);
    }
    pending.resolve(response);
  }

  private fail(stream: OpenStream<Req, Res>, id: number, error: GCacheError): void {
    const pending = stream.inFlight.get(id);
    if (pending === undefined) return;
    this.forget(stream, id, pending);
    if (pending.following) pending.later!.lost(error);
    else pending.reject(error);
  }

  private forget(stream: OpenStream<Req, Res>, id: number, pending: InFlight<Req, Res>): void {
    stream.inFlight.delete(id);
    this.deadlines.delete(pending);
    this.stopListening(pending);
  }

  private stopListening(pending: InFlight<Req, Res>): void {
    if (pending.onAbort === null) return;
    pending.context.signal?.removeEventListener("abort", pending.onAbort);
    pending.onAbort = null;
  }

  /** The stream is over, cleanly or not: what it still carried goes as calls. */
  private ended(stream: OpenStream<Req, Res>, error: { code: number } | null): void {
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
      if (pending.following) pending.later!.lost(null);
      else this.call(pending.request, pending.context).then(pending.resolve, pending.reject);
    }
  }
}
