/**
 * The owner's side of peer links (see ../wire/link.ts): a TCP listener whose
 * connections each carry one batch stream, served by the same code as the
 * gRPC streams. A connection must open with a HELLO that shows the node's
 * ticket; anything else closes it.
 */
import type { Socket, TCPSocketListener } from "bun";
import { _nodeCrypto } from "../auth.ts";
import { GCacheError } from "../errors.ts";
import type { BatchGetRequest, BatchGetResponse, Codec, WriteBatch, WriteBatchResponse } from "../wire/messages.ts";
import { _errorPayload, _FrameReader, _maxFrameBytes, _FrameWriter, _LINK_CODECS, LINK_HEADER_BYTES, LINK_TICKET_BYTES, LINK_VERSION, LinkFrame, LinkStream } from "../wire/link.ts";
import { toStatus } from "../wire/status.ts";
import { InvalidMessage, type _StreamCall } from "./service.ts";

export interface LinkStreamHandlers {
  [LinkStream.BATCH_GET]: (call: _StreamCall<BatchGetRequest, BatchGetResponse>) => void;
  [LinkStream.WRITE]: (call: _StreamCall<WriteBatch, WriteBatchResponse>) => void;
}

export interface LinkServerOptions {
  host: string;
  /** 0 picks a free one. */
  port: number;
  /** Largest message a frame may carry. */
  maxMessageBytes: number;
  streams: LinkStreamHandlers;
}

/** A connection that has not shown its ticket by then is closed. */
const HELLO_TIMEOUT_SECONDS = 10;
/**
 * Batches taken while answers wait for the caller to read them are held up
 * to this many bytes; past it the stream fails and the caller sends its
 * batches as calls.
 */
const MAX_HELD_BYTES = 64 * 1024 * 1024;


export class _LinkServer {
  /** What a sender must show in its HELLO; handed out by the PeerLink call. */
  readonly ticket: Uint8Array = crypto.getRandomValues(new Uint8Array(LINK_TICKET_BYTES));
  private readonly listener: TCPSocketListener<LinkConnection>;
  private readonly connections = new Set<LinkConnection>();

  constructor(private readonly options: LinkServerOptions) {
    this.listener = Bun.listen<LinkConnection>({
      hostname: options.host,
      port: options.port,
      socket: {
        open: (socket) => {
          const connection = new LinkConnection(socket, this);
          socket.data = connection;
          this.connections.add(connection);
          socket.timeout(HELLO_TIMEOUT_SECONDS);
        },
        data: (socket, chunk) => socket.data.receive(chunk),
        drain: (socket) => socket.data.drained(),
        end: (socket) => socket.data.peerEnded(),
        timeout: (socket) => socket.data.timedOut(),
        close: (socket) => this.forget(socket.data),
        error: (socket) => this.forget(socket.data),
      },
    });
  }

  get port(): number {
    return this.listener.port;
  }

  /** Connections that showed the ticket and carry a stream now. */
  get openStreams(): number {
    let open = 0;
    for (const connection of this.connections) if (connection.streaming) open++;
    return open;
  }

  /** @internal for connections */
  get maxFrameBytes(): number {
    return _maxFrameBytes(this.options.maxMessageBytes);
  }

  /** @internal for connections */
  accepts(ticket: Uint8Array): boolean {
    return ticket.byteLength === this.ticket.byteLength && _nodeCrypto().timingSafeEqual(ticket, this.ticket);
  }

  /** @internal for connections */
  serve(stream: LinkStream, call: LinkConnection): void {
    if (stream === LinkStream.BATCH_GET) this.options.streams[LinkStream.BATCH_GET](call as _StreamCall<BatchGetRequest, BatchGetResponse>);
    else this.options.streams[LinkStream.WRITE](call as _StreamCall<WriteBatch, WriteBatchResponse>);
  }

  /** Stops listening and cuts every connection (their streams were ended first, by the node). */
  close(): void {
    this.listener.stop(true);
    for (const connection of [...this.connections]) connection.terminate();
    this.connections.clear();
  }

  private forget(connection: LinkConnection | undefined): void {
    if (connection === undefined) return;
    this.connections.delete(connection);
    connection.gone();
  }
}

class LinkConnection implements _StreamCall<unknown, unknown> {
  private readonly reader: _FrameReader;
  private readonly writer: _FrameWriter;
  private codec: { request: Codec<unknown>; response: Codec<unknown> } | null = null;
  private dataListener: ((request: unknown) => void) | null = null;
  private endListener: (() => void) | null = null;
  private goneListener: (() => void) | null = null;
  private drainListeners: (() => void)[] = [];
  private paused = false;
  /** Batches (and the caller's END, as null) taken while paused. */
  private held: (Buffer | null)[] = [];
  private heldBytes = 0;
  private ending = false;
  private over = false;

  constructor(
    private readonly socket: Socket<LinkConnection>,
    private readonly server: _LinkServer,
  ) {
    this.reader = new _FrameReader(server.maxFrameBytes, (type, payload) => this.frame(type, payload));
    this.writer = new _FrameWriter(socket);
  }

  /** It showed the ticket, and its stream is not over. */
  get streaming(): boolean {
    return this.codec !== null && !this.over;
  }

  receive(chunk: Buffer): void {
    const problem = this.reader.push(chunk);
    if (problem !== null) this.refuse(new GCacheError("ERR_INVALID_ARGUMENT", problem));
  }

  private frame(type: number, payload: Buffer): void {
    if (this.codec === null) {
      this.hello(type, payload);
      return;
    }
    if (type === LinkFrame.MESSAGE) {
      if (this.paused) this.hold(Buffer.from(payload));
      else this.dispatch(payload);
    } else if (type === LinkFrame.END) {
      if (this.paused) this.hold(null);
      else this.endListener?.();
    } else {
      // The caller failed its side (ERROR), or spoke out of turn (a second HELLO): nothing more is for it.
      this.terminate();
    }
  }

  private hello(type: number, payload: Buffer): void {
    const stream = payload[1] as LinkStream;
    if (type !== LinkFrame.HELLO || payload.byteLength < 2 || payload[0] !== LINK_VERSION || _LINK_CODECS[stream] === undefined) {
      this.refuse(new GCacheError("ERR_INVALID_ARGUMENT", "peer link: the first frame must be a HELLO this node speaks"));
      return;
    }
    if (!this.server.accepts(payload.subarray(2))) {
      this.refuse(new GCacheError("ERR_UNAUTHENTICATED", "peer link: unknown ticket (ask PeerLink again)"));
      return;
    }
    this.socket.timeout(0);
    this.codec = _LINK_CODECS[stream];
    this.writer.frame(LinkFrame.HELLO, HELLO_ACCEPTED);
    this.server.serve(stream, this);
  }

  private dispatch(payload: Buffer): void {
    let request: unknown;
    try {
      request = this.codec!.request.decode(payload);
    } catch (error) {
      request = new InvalidMessage(error);
    }
    this.dataListener?.(request);
  }

  private hold(payload: Buffer | null): void {
    this.held.push(payload);
    this.heldBytes += payload?.byteLength ?? 0;
    if (this.heldBytes > MAX_HELD_BYTES) this.fail(new GCacheError("ERR_UNAVAILABLE", "peer link: batches pile up unanswered"));
  }

  /** Refuses what came (no HELLO it takes, or bytes that are no frames): an ERROR, then the connection ends. */
  private refuse(error: GCacheError): void {
    this.reader.stop();
    this.writeError(error);
    this.closeWhenSent();
  }

  // _StreamCall

  write(response: unknown): boolean {
    if (this.over) return true;
    return this.writer.message(this.codec!.response.encodeTransient(response, LINK_HEADER_BYTES));
  }

  fail(error: GCacheError): void {
    if (this.over) return;
    this.over = true;
    this.reader.stop();
    this.writeError(error);
    this.closeWhenSent();
  }

  end(): void {
    if (this.over) return;
    this.over = true;
    this.writer.frame(LinkFrame.END, EMPTY);
    this.closeWhenSent();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    while (!this.paused && this.held.length > 0) {
      const payload = this.held.shift()!;
      if (payload === null) {
        this.endListener?.();
        continue;
      }
      this.heldBytes -= payload.byteLength;
      this.dispatch(payload);
    }
  }

  onceDrained(listener: () => void): void {
    this.drainListeners.push(listener);
  }

  onData(listener: (request: unknown) => void): void {
    this.dataListener = listener;
  }

  onEnd(listener: () => void): void {
    this.endListener = listener;
  }

  onGone(listener: () => void): void {
    this.goneListener = listener;
  }

  // socket events

  drained(): void {
    if (!this.writer.drain()) return;
    if (this.ending) {
      this.socket.end();
      return;
    }
    const listeners = this.drainListeners;
    this.drainListeners = [];
    for (const listener of listeners) listener();
  }

  peerEnded(): void {
    // The caller closed its side without an END: it is gone.
    this.terminate();
  }

  timedOut(): void {
    if (this.codec === null) this.terminate();
  }

  gone(): void {
    this.reader.stop();
    this.writer.close();
    const listener = this.goneListener;
    this.goneListener = null;
    this.over = true;
    listener?.();
  }

  terminate(): void {
    this.socket.terminate();
    this.gone();
  }

  private writeError(error: GCacheError): void {
    const status = toStatus(error);
    this.writer.frame(LinkFrame.ERROR, _errorPayload(status.code ?? 13, status.details ?? error.message));
  }

  private closeWhenSent(): void {
    this.ending = true;
    if (!this.writer.backedUp) this.socket.end();
  }
}

const EMPTY = new Uint8Array(0);
/** The HELLO a node answers a ticket it takes with. */
const HELLO_ACCEPTED = new Uint8Array([LINK_VERSION]);
