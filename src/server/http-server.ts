/**
 * The gateway's HTTP/1.1 server, on Bun's TCP sockets rather than Bun.serve.
 *
 * Bun.serve builds a Request, a Headers, a URL string and a Response for every
 * request; a cache hit needs none of them. Reading the request bytes and
 * writing head and value in one send costs a hit 8-15 % less CPU here
 * (docs/benchmarks.md, "The gateway's own HTTP server"). What the server does
 * (framing, keep-alive, 100-continue, back-pressure, idle timeouts, limits)
 * is kept to what a cache's clients use: no pipelining across a pending
 * response (later requests wait in the buffer, answered in order), no
 * upgrades, no response streaming.
 */
import { _SocketWriter } from "../wire/socket-writer.ts";
import type { Socket, TCPSocketListener } from "bun";
import {
  _CHUNKED,
  _ChunkedBody,
  _HttpError,
  _ByteSink,
  _HttpRequest,
  _readHead,
  type _RequestLimits,
} from "./http-request.ts";

export interface _HttpResponse {
  readonly head: _ResponseHead;
  /** Header lines of this response only ("" for none), each ending in CRLF; content-length and date are added. */
  readonly extraHeaders: string;
  /** Strings are sent as UTF-8. */
  readonly body: Uint8Array | string;
}

/**
 * A response returned (not resolved) is written before the handler is called
 * again, and not kept: a handler may hand back the same object every time.
 * The request, too, is the connection's one object, filled in again for its
 * next request: it is valid until answered, and must not be kept.
 */
export type _HttpHandler = (request: _HttpRequest) => _HttpResponse | Promise<_HttpResponse>;

export interface _HttpServerOptions {
  host: string;
  port: number;
  tls?: { cert: Buffer | string; key: Buffer | string; ca?: Buffer | string; requestCert: boolean };
  /** Largest body read; larger ones get 413 before they are read. */
  maxBodyBytes: number;
  /** Request line plus headers. Default: 16 KiB. */
  maxHeadBytes?: number;
  /**
   * A connection with nothing to do for this long is closed, and a request
   * head must arrive whole within this long of its first bytes (else 408).
   * Default: 10 s.
   */
  idleTimeoutSeconds?: number;
  /** Answers a request the handler threw on (or rejected). */
  internalError: (error: unknown) => _HttpResponse;
  /** Answers a request the server refuses (malformed, too large). */
  refusal: (status: number, message: string) => _HttpResponse;
}

const DEFAULT_MAX_HEAD_BYTES = 16 * 1024;
const DEFAULT_MAX_HEADERS = 100;
const DEFAULT_IDLE_TIMEOUT_SECONDS = 10;
/** Responses up to this size go out in one send from a shared buffer; larger bodies are sent from where they lie. */
const SEND_BUFFER_BYTES = 64 * 1024;
/** Pipelined bytes a connection may hold while its request is being answered. */
const MAX_BUFFERED_BEYOND_BODY = 64 * 1024;
/** How long `close()` waits for requests being answered before it cuts their connections. */
const CLOSE_GRACE_MS = 5_000;

/** Bounds a response's head so it always fits the send buffer. */
const MAX_FIXED_HEADER_BYTES = 4096;
const MAX_EXTRA_HEADER_BYTES = 4096;

const CONTINUE = Buffer.from("HTTP/1.1 100 Continue\r\n\r\n", "latin1");
const CR = 13;
const LF = 10;
const encoder = new TextEncoder();

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  413: "Content Too Large",
  414: "URI Too Long",
  417: "Expectation Failed",
  431: "Request Header Fields Too Large",
  499: "Client Closed Request",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** A status line and header lines (each ending in CRLF), encoded once and shared by the responses that use them. */
export class _ResponseHead {
  readonly bytes: Buffer;

  constructor(
    readonly status: number,
    headers: string,
  ) {
    if (headers.length > MAX_FIXED_HEADER_BYTES) throw new RangeError(`response headers longer than ${MAX_FIXED_HEADER_BYTES} bytes`);
    this.bytes = Buffer.from(`HTTP/1.1 ${status} ${REASONS[status] ?? "Unknown"}\r\n${headers}`, "latin1");
  }

  /** `bytes` and the tail last asked for, as one: a response that adds no header lines is one copy. */
  private lead: Buffer | null = null;
  private leadTail: Buffer | null = null;

  /** @internal `bytes` followed by `tail`; made again when the tail is (once a second). */
  _withTail(tail: Buffer): Buffer {
    if (this.leadTail !== tail) {
      this.lead = Buffer.concat([this.bytes, tail]);
      this.leadTail = tail;
    }
    return this.lead!;
  }
}

/**
 * The header lines every response ends with, up to the content length's
 * digits: the Date header (rebuilt once a second rather than per response),
 * "connection: close" on a connection's last response, and the name of the
 * content-length header. One copy into the send buffer for all of them.
 */
let keepAliveTail = Buffer.alloc(0);
let closeTail = Buffer.alloc(0);
let tailsValidUntil = 0;

function headTail(close: boolean): Buffer {
  const now = Date.now();
  if (now >= tailsValidUntil) {
    const date = `date: ${new Date(now).toUTCString()}\r\n`;
    keepAliveTail = Buffer.from(`${date}content-length: `, "latin1");
    closeTail = Buffer.from(`${date}connection: close\r\ncontent-length: `, "latin1");
    tailsValidUntil = now - (now % 1000) + 1000;
  }
  return close ? closeTail : keepAliveTail;
}

/** Writes `value` (a whole number) in decimal at `at`; returns the end. */
function writeDecimal(buffer: Buffer, at: number, value: number): number {
  let digits = 1;
  for (let rest = value; rest >= 10; rest = Math.floor(rest / 10)) digits++;
  let rest = value;
  for (let i = at + digits - 1; i >= at; i--) {
    buffer[i] = 0x30 + (rest % 10);
    rest = Math.floor(rest / 10);
  }
  return at + digits;
}

/** One shared send buffer: a response is copied in and sent synchronously, and any unsent rest is copied out. */
const sendBuffer = Buffer.allocUnsafe(SEND_BUFFER_BYTES);

/** Writes the head of a response into the send buffer from byte 0, from bytes made beforehand; returns its length. */
function writeHead(response: _HttpResponse, contentLength: number, close: boolean): number {
  const extra = response.extraHeaders;
  const tail = headTail(close);
  // Most responses add no header lines of their own and keep the connection: their head and tail are one copy.
  const merged = extra === "" && !close;
  const lead = merged ? response.head._withTail(tail) : response.head.bytes;
  sendBuffer.set(lead, 0);
  let at = lead.length;
  if (!merged) {
    if (extra !== "") {
      if (extra.length > MAX_EXTRA_HEADER_BYTES) throw new RangeError(`response headers longer than ${MAX_EXTRA_HEADER_BYTES} bytes`);
      at += sendBuffer.write(extra, at, "latin1");
    }
    sendBuffer.set(tail, at);
    at += tail.length;
  }
  at = writeDecimal(sendBuffer, at, contentLength);
  // The end of the content-length line and of the head, byte by byte: cheaper than one more copy.
  sendBuffer[at] = CR;
  sendBuffer[at + 1] = LF;
  sendBuffer[at + 2] = CR;
  sendBuffer[at + 3] = LF;
  return at + 4;
}

export class _HttpServer {
  private readonly listener: TCPSocketListener<_Connection>;
  private readonly connections = new Set<_Connection>();
  private readonly limits: _RequestLimits;
  private closing = false;
  /** Resolves `close()`'s wait once the last connection has closed. */
  private allClosed: (() => void) | null = null;

  constructor(
    private readonly handler: _HttpHandler,
    readonly options: _HttpServerOptions,
  ) {
    this.limits = { maxHeadBytes: options.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES, maxHeaders: DEFAULT_MAX_HEADERS, maxBodyBytes: options.maxBodyBytes };
    const idleTimeout = options.idleTimeoutSeconds ?? DEFAULT_IDLE_TIMEOUT_SECONDS;
    const tls = options.tls;
    this.listener = Bun.listen<_Connection>({
      hostname: options.host,
      port: options.port,
      allowHalfOpen: true,
      ...(tls === undefined
        ? {}
        : {
            tls: {
              cert: tls.cert,
              key: tls.key,
              ...(tls.ca === undefined ? {} : { ca: tls.ca }),
              requestCert: tls.requestCert,
              rejectUnauthorized: tls.requestCert,
            },
          }),
      socket: {
        open: (socket) => {
          const connection = new _Connection(socket, this, idleTimeout);
          socket.data = connection;
          this.connections.add(connection);
          if (this.closing) connection.endWhenIdle();
        },
        data: (socket, chunk) => socket.data.receive(chunk),
        drain: (socket) => socket.data.drain(),
        end: (socket) => socket.data.peerEnded(),
        timeout: (socket) => socket.data.timedOut(),
        close: (socket) => this.forget(socket.data),
        error: (socket) => this.forget(socket.data),
        handshake: (socket, success, authorizationError) => {
          if (!success || (tls?.requestCert === true && authorizationError !== null)) socket.terminate();
        },
      },
    });
  }

  get hostname(): string {
    return this.listener.hostname;
  }

  get port(): number {
    return this.listener.port;
  }

  /** @internal for connections */
  get requestLimits(): _RequestLimits {
    return this.limits;
  }

  /** @internal for connections */
  get isClosing(): boolean {
    return this.closing;
  }

  /** @internal for connections */
  dispatch(request: _HttpRequest): _HttpResponse | Promise<_HttpResponse> {
    try {
      return this.handler(request);
    } catch (error) {
      return this.options.internalError(error);
    }
  }

  /** Stops listening, lets requests being answered finish (up to 5 s), and closes every connection. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.listener.stop(false);
    for (const connection of this.connections) connection.endWhenIdle();
    if (this.connections.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((resolve) => (this.allClosed = resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_GRACE_MS))),
      ]);
      clearTimeout(timer);
    }
    for (const connection of this.connections) connection.terminate();
    this.connections.clear();
  }

  private forget(connection: _Connection | undefined): void {
    if (connection === undefined) return;
    connection.closed();
    this.connections.delete(connection);
    if (this.connections.size === 0) this.allClosed?.();
  }
}

/** One client connection: its unread bytes, the request being read or answered, and unsent output. */
class _Connection {
  /** Bytes received and not used yet. */
  private input: Buffer | null = null;
  /**
   * Bytes received while a response is pending or unsent, joined to `input`
   * once when reading resumes: joined as they came, each read would copy all
   * held before it again (a 128 MiB upload pipelined behind a slow answer
   * took 6 s of CPU instead of 0.4).
   */
  private held: Buffer[] | null = null;
  private heldBytes = 0;
  /** Bytes of `input` already searched for the end of an incomplete head. */
  private headScanned = 0;
  /** When the head being read was first found incomplete (epoch ms); 0 when none is. */
  private headStartedAt = 0;
  /** The request whose body is being read. */
  private request: _HttpRequest | null = null;
  /** Filled in again for each request: one is read only once the one before has been answered. */
  private readonly reusedRequest = new _HttpRequest();
  private chunked: _ChunkedBody | null = null;
  /** A Content-Length body that did not come in one read, copied in as it comes. */
  private partialBody: _ByteSink | null = null;
  /** The handler's answer is pending. */
  private answering = false;
  /** Output, with what the socket did not take yet. */
  private readonly writer: _SocketWriter;
  /** Close once the current response is out. */
  private closeAfterResponse = false;
  private ended = false;
  private peerHasEnded = false;

  constructor(
    private readonly socket: Socket<_Connection>,
    private readonly server: _HttpServer,
    private readonly idleTimeoutSeconds: number,
  ) {
    socket.timeout(idleTimeoutSeconds);
    this.writer = new _SocketWriter(socket);
  }

  receive(chunk: Buffer): void {
    if (this.ended) return;
    if (this.answering || this.writer.backedUp) {
      this.hold(chunk);
      this.limitBuffered();
      return;
    }
    // Behind bytes still held, in order: pump joins them all.
    if (this.held !== null) this.hold(chunk);
    else this.input = this.input === null ? chunk : Buffer.concat([this.input, chunk]);
    this.pump();
  }

  drain(): void {
    if (!this.writer.backedUp) return;
    if (!this.writer.drain()) {
      if (this.writer.closed) this.closed();
      return;
    }
    if (this.closeAfterResponse) this.end();
    else if (!this.answering) this.pump();
  }

  peerEnded(): void {
    this.peerHasEnded = true;
    if (!this.answering && !this.writer.backedUp) this.end();
  }

  timedOut(): void {
    // A slow load is not an idle connection: the handler's own time limit bounds it.
    if (this.answering) this.socket.timeout(this.idleTimeoutSeconds);
    else this.terminate();
  }

  /** Closes at once when nothing is in progress, else after the current response. */
  endWhenIdle(): void {
    this.closeAfterResponse = true;
    if (!this.answering && !this.writer.backedUp && this.request === null) this.end();
  }

  terminate(): void {
    this.ended = true;
    this.socket.terminate();
  }

  closed(): void {
    this.ended = true;
    this.input = null;
    this.dropHeld();
    this.writer.close();
  }

  /** Reads and answers requests while whole ones are buffered and nothing is pending. */
  private pump(): void {
    if (this.held !== null) this.joinHeld();
    try {
      while (!this.ended && !this.answering && !this.writer.backedUp && this.input !== null) {
        const request = this.request ?? this.readHead();
        if (request === null) return;
        if (!this.readBody(request)) return;
        this.request = null;
        this.chunked = null;
        this.answer(request);
      }
    } catch (error) {
      // Anything but a refusal is a defect here; it must cost this connection, not the process.
      this.refuse(error instanceof _HttpError ? this.server.options.refusal(error.status, error.message) : this.server.options.internalError(error));
    }
    if (this.peerHasEnded && !this.answering && !this.writer.backedUp && !this.ended) this.end();
  }

  private readHead(): _HttpRequest | null {
    const input = this.input!;
    const limits = this.server.requestLimits;
    const request = _readHead(input, this.headScanned, limits, this.reusedRequest);
    if (request === null) {
      this.headScanned = input.length;
      this.checkHeadTime();
      return null;
    }
    this.headScanned = 0;
    this.headStartedAt = 0;
    this.consume(request.headLength);
    this.request = request;
    if (request.bodyLength === _CHUNKED) this.chunked = new _ChunkedBody(limits.maxBodyBytes);
    if (request.expectsContinue && this.input === null) this.send(CONTINUE, CONTINUE.length);
    return request;
  }

  /**
   * The idle timeout restarts with every read, so without a limit of its own
   * a head sent a byte at a time, just within it, would hold the connection
   * for hours. A head that arrives whole in one read (nearly all) never
   * reads the clock here.
   */
  private checkHeadTime(): void {
    const now = Date.now();
    if (this.headStartedAt === 0) this.headStartedAt = now;
    else if (now - this.headStartedAt > this.idleTimeoutSeconds * 1000) {
      throw new _HttpError(408, `request head not complete within ${this.idleTimeoutSeconds} s of its first bytes`);
    }
  }

  /** True once the request's whole body is in `request.body`. */
  private readBody(request: _HttpRequest): boolean {
    const length = request.bodyLength;
    if (length === 0) return true;
    const input = this.input;
    if (length === _CHUNKED) {
      if (input === null) return false;
      const chunked = this.chunked!;
      this.consume(chunked.feed(input, 0));
      if (!chunked.done) return false;
      request.body = chunked.body();
      return true;
    }
    let body = this.partialBody;
    if (body === null) {
      if (input !== null && input.length >= length) {
        // A copy (Buffer's slice would share): the value may be kept for long, and must not keep the whole received chunk alive.
        request.body = new Uint8Array(input.subarray(0, length));
        this.consume(length);
        return true;
      }
      body = this.partialBody = new _ByteSink(length);
    }
    if (input !== null) {
      const take = Math.min(length - body.length, input.length);
      body.append(take === input.length ? input : input.subarray(0, take));
      this.consume(take);
    }
    if (body.length < length) return false;
    request.body = body.bytes();
    this.partialBody = null;
    return true;
  }

  private hold(chunk: Buffer): void {
    (this.held ??= []).push(chunk);
    this.heldBytes += chunk.length;
  }

  private joinHeld(): void {
    const held = this.held!;
    if (this.input !== null) held.unshift(this.input);
    this.input = held.length === 1 ? held[0]! : Buffer.concat(held, (this.input?.length ?? 0) + this.heldBytes);
    this.dropHeld();
  }

  private dropHeld(): void {
    this.held = null;
    this.heldBytes = 0;
  }

  private consume(bytes: number): void {
    const input = this.input!;
    this.input = bytes >= input.length ? null : input.subarray(bytes);
  }

  private answer(request: _HttpRequest): void {
    if (!request.keepAlive) this.closeAfterResponse = true;
    const response = this.server.dispatch(request);
    if (!(response instanceof Promise)) {
      this.respond(response, request.method === "HEAD");
      request._release();
      return;
    }
    this.answering = true;
    response.then(
      (answer) => this.answered(answer, request),
      (error: unknown) => this.answered(this.server.options.internalError(error), request),
    );
  }

  private answered(response: _HttpResponse, request: _HttpRequest): void {
    this.answering = false;
    const headOnly = request.method === "HEAD";
    request._release();
    if (this.ended) return;
    this.socket.timeout(this.idleTimeoutSeconds);
    this.respond(response, headOnly);
    if (!this.writer.backedUp && !this.ended) this.pump();
  }

  /** Answers and closes: what follows in the input cannot be framed any more. */
  private refuse(response: _HttpResponse): void {
    this.input = null;
    this.dropHeld();
    this.headScanned = 0;
    this.headStartedAt = 0;
    this.request = null;
    this.chunked = null;
    this.partialBody = null;
    this.closeAfterResponse = true;
    this.respond(response, false);
  }

  private respond(response: _HttpResponse, headOnly: boolean): void {
    const body = typeof response.body === "string" ? encoder.encode(response.body) : response.body;
    const close = this.closeAfterResponse || this.server.isClosing;
    if (close) this.closeAfterResponse = true;
    const headBytes = writeHead(response, body.length, close);
    const bodyBytes = headOnly ? 0 : body.length;
    if (headBytes + bodyBytes <= SEND_BUFFER_BYTES) {
      if (bodyBytes > 0) sendBuffer.set(body, headBytes);
      this.send(sendBuffer, headBytes + bodyBytes);
    } else {
      this.send(sendBuffer, headBytes);
      this.send(body, body.length);
    }
    if (!this.writer.backedUp && this.closeAfterResponse) this.end();
  }

  /**
   * Sends the first `length` bytes of `bytes`. The next response on any
   * connection overwrites the shared send buffer, so what of it the socket
   * does not take now is copied out. Written by offset and length, so a
   * response that goes out whole (nearly all) allocates no view of the buffer.
   */
  private send(bytes: Uint8Array, length: number): void {
    if (this.ended) return;
    this.writer.write(bytes, length, bytes === sendBuffer);
    if (this.writer.closed) this.closed();
  }

  /** Keeps what a client pipelines behind a pending response bounded. */
  private limitBuffered(): void {
    const limits = this.server.requestLimits;
    const buffered = (this.input?.length ?? 0) + this.heldBytes;
    if (buffered > limits.maxBodyBytes + limits.maxHeadBytes + MAX_BUFFERED_BEYOND_BODY) this.terminate();
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.socket.end();
  }
}
