/**
 * The sender's side of a peer link (see ../wire/link.ts): learns over gRPC
 * where a peer takes links and which ticket to show, then opens each batch
 * stream as a TCP connection of its own. Until the link is known, and for a
 * while after one failed, batch streams go over gRPC as before: the link is
 * only ever a faster road to the same answers.
 */
import { status } from "@grpc/grpc-js";
import type { Socket, TCPSocketConnectOptions } from "bun";
import { parseAddress } from "./address.ts";
import type { _Connection } from "../wire/connection.ts";
import { GCACHE_SERVICE, type Codec } from "../wire/messages.ts";
import {
  _frame,
  _FrameReader,
  _FrameWriter,
  _helloPayload,
  _LINK_CODECS,
  _maxFrameBytes,
  _messageFrame,
  _parseError,
  LINK_HEADER_BYTES,
  LinkFrame,
  LinkStream,
} from "../wire/link.ts";
import type { BatchDuplex } from "./batch-stream.ts";
import { SILENT_LOGGER, type Logger } from "../log.ts";

export interface PeerLinkOptions {
  /** Deadline of the PeerLink call. */
  askTimeoutMs: number;
  /**
   * A link connection not open by then fails (a firewall that drops packets
   * would otherwise hold its batches until their deadlines); they go as calls.
   */
  connectTimeoutMs: number;
  /**
   * After a link failed before answering anything (or the call failed), gRPC
   * streams for this long before asking again; doubled after each failure in
   * a row, up to `maxRetryAfterMs`.
   */
  retryAfterMs: number;
  maxRetryAfterMs: number;
  /** A peer that offers no link is asked again after this long (it may have restarted with one). */
  recheckMs: number;
  /** Opens the TCP connection (tests stand in for an unreachable port). */
  connect: (options: TCPSocketConnectOptions<undefined>) => Promise<Socket<undefined>>;
  /** Told when a link is given up for a while (a firewalled port is slower, not broken: operators should hear of it). */
  logger: Logger;
}

export const DEFAULT_PEER_LINK_OPTIONS: PeerLinkOptions = {
  askTimeoutMs: 2_000,
  connectTimeoutMs: 1_000,
  retryAfterMs: 5_000,
  maxRetryAfterMs: 5 * 60_000,
  recheckMs: 60_000,
  connect: (options) => Bun.connect(options),
  logger: SILENT_LOGGER,
};


type LinkState = "unknown" | "asking" | "ready" | "none" | "closed";

export class _PeerLink {
  private state: LinkState = "unknown";
  private port = 0;
  private ticket: Uint8Array = new Uint8Array(0);
  private retryAt = 0;
  /** Links that failed in a row before answering. */
  private failures = 0;
  private readonly host: string;
  private readonly readyListeners: (() => void)[] = [];
  private readonly calls = new Set<LinkCall<unknown, unknown>>();

  constructor(
    private readonly connection: _Connection,
    private readonly maxMessageBytes: number,
    /** @internal */
    readonly options: PeerLinkOptions = DEFAULT_PEER_LINK_OPTIONS,
  ) {
    this.host = parseAddress(connection.address).host;
  }

  /** Called each time the link becomes usable, so streams opened over gRPC meanwhile can move to it. */
  onReady(listener: () => void): void {
    this.readyListeners.push(listener);
  }

  /** A batch stream on the link, or null for gRPC (the link is not known yet, or failed lately). */
  open<Req, Res>(stream: LinkStream, deadline: number): BatchDuplex<Req, Res> | null {
    if (this.state === "ready") {
      const call = new LinkCall<Req, Res>(this, stream, deadline);
      this.calls.add(call as LinkCall<unknown, unknown>);
      return call;
    }
    if (this.state === "unknown" || (this.state === "none" && Date.now() >= this.retryAt)) this.ask();
    return null;
  }

  close(): void {
    this.state = "closed";
    for (const call of [...this.calls]) call.cancel();
  }

  /** @internal for calls */
  get target(): { host: string; port: number; ticket: Uint8Array; maxFrameBytes: number } {
    return { host: this.host, port: this.port, ticket: this.ticket, maxFrameBytes: _maxFrameBytes(this.maxMessageBytes) };
  }

  /**
   * @internal for calls: a link stream failed. One that had answered lost
   * its connection (the peer may have restarted, with a new port and ticket):
   * the next stream asks again. One that never answered (the port is not
   * reachable, the ticket is refused) sends the streams to gRPC for a while.
   */
  failed(hadAnswered: boolean, why: string): void {
    if (this.state !== "ready") return;
    if (hadAnswered) {
      this.state = "unknown";
      return;
    }
    this.state = "none";
    this.failures++;
    const wait = Math.min(this.options.retryAfterMs * 2 ** (this.failures - 1), this.options.maxRetryAfterMs);
    this.retryAt = Date.now() + wait;
    this.options.logger.warn("peer link unusable: batches go on gRPC streams meanwhile", {
      peer: this.connection.address,
      linkPort: this.port,
      error: why,
      retryInMs: wait,
    });
  }

  /** @internal for calls: a link stream answered. */
  answered(): void {
    this.failures = 0;
  }

  /** @internal for calls */
  forget(call: LinkCall<unknown, unknown>): void {
    this.calls.delete(call);
  }

  private ask(): void {
    this.state = "asking";
    const deadline = Date.now() + this.options.askTimeoutMs;
    this.connection.unary(GCACHE_SERVICE.PeerLink, {}, { deadline }).then(
      (answer) => {
        if (this.state !== "asking") return;
        if (answer.port === 0 || answer.ticket.byteLength === 0) {
          this.state = "none";
          this.retryAt = Date.now() + this.options.recheckMs;
          return;
        }
        this.port = answer.port;
        this.ticket = answer.ticket.slice();
        this.state = "ready";
        for (const listener of this.readyListeners) listener();
      },
      () => {
        if (this.state !== "asking") return;
        // A peer without the call (an older node), or one not reachable now.
        this.state = "none";
        this.retryAt = Date.now() + this.options.retryAfterMs;
      },
    );
  }
}

type Listener<T> = ((value: T) => void) | null;

/** One batch stream on its own TCP connection, shaped as the gRPC stream it stands in for. */
class LinkCall<Req, Res> implements BatchDuplex<Req, Res> {
  private socket: Socket<undefined> | null = null;
  private writer: _FrameWriter | null = null;
  private readonly reader: _FrameReader;
  private readonly codec: { request: Codec<unknown>; response: Codec<unknown> };
  /** Frames written before the connection opened, each in bytes of its own. */
  private queued: Uint8Array[] = [];
  /** The peer took the ticket (its HELLO came back). */
  private accepted = false;
  private answered = false;
  private done = false;
  private readonly timer: ReturnType<typeof setTimeout>;
  private connectTimer: ReturnType<typeof setTimeout> | null;
  private onData: Listener<Res> = null;
  private onError: Listener<{ code: number; details: string }> = null;
  private onEnd: Listener<void> = null;

  constructor(
    private readonly link: _PeerLink,
    stream: LinkStream,
    deadline: number,
  ) {
    this.codec = _LINK_CODECS[stream];
    const target = link.target;
    this.reader = new _FrameReader(target.maxFrameBytes, (type, payload) => this.frame(type, payload));
    this.queued.push(_frame(LinkFrame.HELLO, _helloPayload(stream, target.ticket)));
    this.timer = setTimeout(() => this.fail(status.DEADLINE_EXCEEDED, "peer link: the stream's deadline passed"), Math.max(0, deadline - Date.now()));
    const connectTimeoutMs = link.options.connectTimeoutMs;
    this.connectTimer = setTimeout(() => this.fail(status.UNAVAILABLE, `peer link: not accepted within ${connectTimeoutMs} ms`), connectTimeoutMs);
    link.options.connect({
      data: undefined,
      hostname: target.host,
      port: target.port,
      socket: {
        open: (socket) => this.opened(socket),
        data: (_socket, chunk) => this.receive(chunk),
        drain: () => void this.writer?.drain(),
        end: () => this.fail(status.UNAVAILABLE, "peer link: the peer closed the connection"),
        close: () => this.fail(status.UNAVAILABLE, "peer link: the connection closed"),
        error: (_socket, error) => this.fail(status.UNAVAILABLE, `peer link: ${error.message}`),
        connectError: (_socket, error) => this.fail(status.UNAVAILABLE, `peer link: cannot connect: ${error.message}`),
      },
    }).catch((error: unknown) => this.fail(status.UNAVAILABLE, `peer link: cannot connect: ${String(error)}`));
  }

  on(event: "data", listener: (response: Res) => void): this;
  on(event: "error", listener: (error: { code: number; details: string }) => void): this;
  on(event: "end", listener: () => void): this;
  on(event: "data" | "error" | "end", listener: (value: never) => void): this {
    if (event === "data") this.onData = listener as Listener<Res>;
    else if (event === "error") this.onError = listener as Listener<{ code: number; details: string }>;
    else this.onEnd = listener as Listener<void>;
    return this;
  }

  write(request: Req): boolean {
    if (this.done) return false;
    const encoded = this.codec.request.encodeTransient(request, LINK_HEADER_BYTES);
    if (this.writer !== null) return this.writer.message(encoded);
    this.queued.push(_messageFrame(encoded));
    return true;
  }

  /** No more batches: the peer answers what it has, then ends the stream. */
  end(): void {
    if (this.done) return;
    if (this.writer !== null) this.writer.frame(LinkFrame.END, EMPTY);
    else this.queued.push(_frame(LinkFrame.END, EMPTY));
  }

  cancel(): void {
    this.finish();
    this.socket?.terminate();
  }

  private opened(socket: Socket<undefined>): void {
    if (this.done) {
      socket.terminate();
      return;
    }
    this.socket = socket;
    const writer = new _FrameWriter(socket);
    this.writer = writer;
    for (const frame of this.queued) writer.raw(frame);
    this.queued = [];
  }

  private receive(chunk: Buffer): void {
    const problem = this.reader.push(chunk);
    if (problem !== null) this.fail(status.INTERNAL, problem);
  }

  private frame(type: number, payload: Buffer): void {
    if (this.done) return;
    if (!this.accepted && type !== LinkFrame.ERROR) {
      // Whatever listens there must first take the ticket: anything else is not a node's link.
      if (type === LinkFrame.HELLO) {
        this.accepted = true;
        this.clearConnectTimer();
      } else this.fail(status.UNAVAILABLE, `peer link: frame type ${type} before the peer accepted the link`);
      return;
    }
    if (type === LinkFrame.MESSAGE) {
      let response: Res;
      try {
        response = this.codec.response.decode(payload) as Res;
      } catch (error) {
        this.fail(status.INTERNAL, `peer link: malformed answer: ${error instanceof Error ? error.message : String(error)}`);
        return;
      }
      if (!this.answered) {
        this.answered = true;
        this.link.answered();
      }
      this.onData?.(response);
    } else if (type === LinkFrame.END) {
      const onEnd = this.onEnd;
      this.finish();
      this.socket?.end();
      onEnd?.();
    } else if (type === LinkFrame.ERROR) {
      const { code, details } = _parseError(payload);
      this.fail(code, details);
    } else {
      this.fail(status.INTERNAL, `peer link: unexpected frame type ${type}`);
    }
  }

  private fail(code: number, details: string): void {
    if (this.done) return;
    const onError = this.onError;
    this.link.failed(this.answered, details);
    this.finish();
    this.socket?.terminate();
    onError?.({ code, details });
  }

  private clearConnectTimer(): void {
    if (this.connectTimer === null) return;
    clearTimeout(this.connectTimer);
    this.connectTimer = null;
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.clearConnectTimer();
    this.reader.stop();
    this.writer?.close();
    this.link.forget(this as LinkCall<unknown, unknown>);
  }
}

const EMPTY = new Uint8Array(0);
