/**
 * A unary method served on its HTTP/2 stream directly, next to grpc-js.
 *
 * grpc-js's server runs every call through its interceptor machinery: a
 * call object, a listener, metadata parsed from all headers, a stream
 * decoder, a read queue, promises and a deadline timer. On Bun that costs
 * about 12 µs of a bare grpc-js server's 33 µs per call, where a bare
 * `node:http2` responder spends about 20 (docs/benchmarks.md, "gRPC Get on
 * the stream"). For the cache's hottest method the server answers on the
 * stream itself, with the same handler, the same codecs and the same
 * statuses, headers and trailers as grpc-js sends. Everything else (other
 * methods, compressed requests, anything not plainly gRPC) goes to grpc-js.
 */
import { Metadata, status, type MethodDefinition, type ServerUnaryCall, type sendUnaryData, type StatusObject } from "@grpc/grpc-js";
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";

/** A unary method the server answers on the stream, and its grpc-js handler. */
export interface _DirectUnary {
  readonly definition: MethodDefinition<unknown, unknown>;
  readonly handler: (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void;
}

export interface _DirectLimits {
  /** grpc.max_receive_message_length: larger requests are refused. */
  maxReceiveBytes: number;
  /** grpc.max_send_message_length: larger answers become RESOURCE_EXHAUSTED. */
  maxSendBytes: number;
}

/** The headers and trailers grpc-js sends (its defaults, server-interceptors.js). */
const OK_HEADERS = {
  ":status": 200,
  "content-type": "application/grpc+proto",
  "grpc-accept-encoding": "identity,deflate,gzip",
  "grpc-encoding": "identity",
};
const OK_TRAILERS = { "grpc-status": "0", "grpc-message": "OK" };
const FRAME_HEADER_BYTES = 5;
/** grpc-timeout, as grpc-js reads it. */
const TIMEOUT_PATTERN = /(\d{1,8})\s*([HMSmun])/;
const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 };

/**
 * Whether the stream is one a direct method can take: plainly gRPC and not
 * compressed. grpc-js takes the rest, and answers them as it always has.
 */
export function _takesDirectly(headers: IncomingHttpHeaders): boolean {
  const contentType = headers["content-type"];
  if (typeof contentType !== "string" || !contentType.startsWith("application/grpc")) return false;
  const encoding = headers["grpc-encoding"];
  return encoding === undefined || encoding === "identity";
}

/** Serves one call of `method` on `stream`: reads the request, runs the handler, answers. */
export function _serveDirectly(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, method: _DirectUnary, limits: _DirectLimits): void {
  new DirectCall(stream, headers, method, limits);
}

/**
 * The part of grpc-js's ServerUnaryCall the cache service reads (request,
 * metadata, deadline, cancellation), and the writing of its answer.
 */
class DirectCall {
  request: unknown = undefined;
  cancelled = false;
  private answered = false;
  private readonly deadline: number;
  private received: Buffer | null = null;
  private cancelListeners: (() => void)[] | null = null;
  private requestMetadata: Metadata | null = null;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly method: _DirectUnary,
    private readonly limits: _DirectLimits,
  ) {
    // An error event comes with a close event, which is where a call learns it was cancelled.
    stream.on("error", ignore);
    stream.on("close", () => this.onClose());
    const timeout = headers["grpc-timeout"];
    this.deadline = timeout === undefined ? Infinity : this.deadlineOf(timeout);
    if (this.answered) return;
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.on("end", () => this.onEnd());
  }

  get metadata(): Metadata {
    // Made only when read (an auth check): a call without one parses no headers.
    return (this.requestMetadata ??= requestMetadataOf(this.headers));
  }

  getDeadline(): number {
    return this.deadline;
  }

  once(event: string, listener: () => void): this {
    if (event === "cancelled") (this.cancelListeners ??= []).push(listener);
    return this;
  }

  private deadlineOf(header: string | string[]): number {
    const match = TIMEOUT_PATTERN.exec(String(header));
    if (match === null) {
      this.fail(status.INTERNAL, `Invalid grpc-timeout value "${String(header)}"`);
      return Infinity;
    }
    return Date.now() + ((Number(match[1]) * TIMEOUT_UNIT_MS[match[2]!]!) | 0);
  }

  private onData(chunk: Buffer): void {
    if (this.answered) return;
    // Almost always one chunk: a unary request comes in one DATA frame.
    const received = (this.received = this.received === null ? chunk : Buffer.concat([this.received, chunk]));
    // Refused as soon as its header says it is too large, as grpc-js does, and never held beyond the limit.
    const max = this.limits.maxReceiveBytes;
    const declared = received.length >= FRAME_HEADER_BYTES ? received.readUInt32BE(1) : 0;
    if (declared > max || received.length > max + FRAME_HEADER_BYTES) {
      this.received = null;
      this.fail(status.RESOURCE_EXHAUSTED, `Received message larger than max (${Math.max(declared, received.length - FRAME_HEADER_BYTES)} vs ${max})`);
    }
  }

  private onEnd(): void {
    if (this.answered) return;
    const bytes = this.received;
    this.received = null;
    const path = this.method.definition.path;
    const length = bytes !== null && bytes.length >= FRAME_HEADER_BYTES ? bytes.readUInt32BE(1) : -1;
    if (length < 0 || bytes!.length < FRAME_HEADER_BYTES + length) {
      this.fail(status.UNIMPLEMENTED, `Received no request message for server streaming method ${path}`);
      return;
    }
    if (length > this.limits.maxReceiveBytes) {
      this.fail(status.RESOURCE_EXHAUSTED, `Received message larger than max (${length} vs ${this.limits.maxReceiveBytes})`);
      return;
    }
    if (bytes!.length > FRAME_HEADER_BYTES + length) {
      this.fail(status.UNIMPLEMENTED, `Received a second request message for server streaming method ${path}`);
      return;
    }
    try {
      this.request = this.method.definition.requestDeserialize(bytes!.subarray(FRAME_HEADER_BYTES));
    } catch {
      this.fail(status.INTERNAL, "Error deserializing request");
      return;
    }
    try {
      this.method.handler(this as unknown as ServerUnaryCall<unknown, unknown>, (error, value) => this.answer(error, value));
    } catch {
      this.fail(status.UNKNOWN, "Server method handler threw error");
    }
  }

  private answer(error: Partial<StatusObject> | Error | null, value: unknown): void {
    if (error !== null && error !== undefined) {
      const given = error as Partial<StatusObject> & { message?: string };
      const code = typeof given.code === "number" ? given.code : status.UNKNOWN;
      this.fail(code, given.details ?? given.message ?? "Unknown Error", given.metadata ?? null);
      return;
    }
    if (this.answered) return;
    let message: Buffer;
    try {
      message = this.method.definition.responseSerialize(value);
    } catch {
      this.fail(status.INTERNAL, "Error serializing response");
      return;
    }
    if (message.length > this.limits.maxSendBytes) {
      this.fail(status.RESOURCE_EXHAUSTED, `Sent message larger than max (${message.length + FRAME_HEADER_BYTES} vs. ${this.limits.maxSendBytes})`);
      return;
    }
    this.answered = true;
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + message.length);
    frame[0] = 0;
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, FRAME_HEADER_BYTES);
    stream.respond(OK_HEADERS, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
    stream.end(frame);
  }

  /** A trailers-only answer, as grpc-js sends a status before any message. */
  private fail(code: status, details: string, metadata: Metadata | null = null): void {
    if (this.answered) return;
    this.answered = true;
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    stream.respond(
      {
        "grpc-status": String(code),
        "grpc-message": encodeURI(details),
        ":status": 200,
        "content-type": "application/grpc+proto",
        ...metadata?.toHttp2Headers(),
      },
      { endStream: true },
    );
  }

  private onClose(): void {
    if (this.answered || this.cancelled) return;
    this.cancelled = true;
    this.answered = true;
    const listeners = this.cancelListeners;
    this.cancelListeners = null;
    if (listeners !== null) for (const listener of listeners) listener();
  }
}

function ignore(): void {}

/** The request's metadata as grpc-js hands it to a handler: the transport's own headers left out. */
function requestMetadataOf(headers: IncomingHttpHeaders): Metadata {
  const metadata = Metadata.fromHttp2Headers(headers);
  for (const name of ["grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "accept-encoding", "te", "content-type"]) metadata.remove(name);
  return metadata;
}
