/**
 * A gRPC client for unary calls, written for load generation: HTTP/2 spoken
 * directly on one of Bun's TCP sockets. The grpc-js client on Bun spends
 * more CPU per call than the servers it loads (about 90 µs against their
 * 60-75 on two shared cores), so under it both servers of a comparison wait
 * on the generator. This one spends 15-30 µs per call, which leaves the
 * servers the bottleneck and their calls/s a measure of their own cost.
 *
 * What it leaves out, on purpose: HPACK decoding. A call succeeds when its
 * response carries a gRPC message before the trailers end the stream; a
 * response with no message (the trailers-only form every gRPC error takes),
 * a reset stream, a GOAWAY or a closed connection fails it. Requests go out
 * with header blocks built once (static-table names, literal values), and
 * the calls started while one read is handled go out in one write.
 *
 * Flow control: the connection's send window is kept (requests wait when it
 * is spent), and the receive windows are opened to 16 MiB, the connection's
 * topped up as responses are read. Every call has a deadline
 * (`grpc-timeout` to the server, and a sweep here that fails and resets a
 * call past it).
 */
import type { Socket } from "bun";
import { _SocketWriter } from "../../../src/wire/socket-writer.ts";
import { ACK, END_HEADERS, END_STREAM, FRAME_HEAD_BYTES, H2, H2FrameReader, h2Frame, indexedNameHeader, literalHeader, PADDED, writeFrameHead, type H2FrameHead } from "./h2-frames.ts";

export type UnaryDone = (error: string | null, response?: Buffer) => void;

const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
const RECEIVE_WINDOW = 16 * 1024 * 1024;
const DEFAULT_WINDOW = 65_535;
const CANCEL = 0x8;
const SWEEP_MS = 50;
/** Odd stream ids up to 2^31 - 1: a connection that nears the end fails new calls rather than wrap. */
const LAST_STREAM_ID = 0x7fff_fff0;

interface Call {
  start: number;
  done: UnaryDone;
  /** gRPC message bytes received so far (DATA payloads, in order). */
  data: Buffer[] | null;
  dataBytes: number;
}

/** A queued request waiting for send window: its stream's frames. */
interface Waiting {
  frames: Buffer;
  dataBytes: number;
}

export interface RawUnaryOptions {
  /** `host:port`. */
  address: string;
  /** The method's full path, e.g. `/pb.GCache/Get`. */
  path: string;
  /** A call not answered within this long fails (and its stream is reset). */
  timeoutMs: number;
}

export class RawUnaryChannel {
  private socket: Socket<undefined> | null = null;
  /** What the socket has not taken yet waits here, in order, until it drains. */
  private writer: _SocketWriter | null = null;
  private readonly calls = new Map<number, Call>();
  private nextStreamId = 1;
  private readonly headerBlock: Buffer;
  private sendWindow = DEFAULT_WINDOW;
  private maxStreams = Infinity;
  private readonly waiting: Waiting[] = [];
  private out: Buffer[] = [];
  private flushQueued = false;
  private unacknowledged = 0;
  private failure: string | null = null;
  private readonly sweep: ReturnType<typeof setInterval>;
  private readonly reader = new H2FrameReader({
    onHead: (head) => {
      if (head.type === H2.DATA) this.received(head.length);
    },
    onData: (head, piece) => this.data(head.streamId, piece),
    onFrame: (head, payload) => this.frameDone(head, payload),
  });

  private constructor(private readonly options: RawUnaryOptions) {
    this.headerBlock = Buffer.concat([
      Buffer.from([0x83, 0x86]), // static table: :method POST, :scheme http
      indexedNameHeader(4, options.path),
      indexedNameHeader(1, options.address),
      literalHeader("content-type", "application/grpc"),
      literalHeader("te", "trailers"),
      literalHeader("grpc-timeout", `${Math.max(1, Math.ceil(options.timeoutMs))}m`),
    ]);
    this.sweep = setInterval(() => this.expire(), SWEEP_MS);
  }

  /** Connects and sends the connection preface; resolves once the server's SETTINGS came. */
  static async connect(options: RawUnaryOptions): Promise<RawUnaryChannel> {
    const channel = new RawUnaryChannel(options);
    const colon = options.address.lastIndexOf(":");
    const ready = new Promise<void>((resolve, reject) => {
      channel.ready = (error) => (error === null ? resolve() : reject(new Error(error)));
    });
    try {
      channel.socket = await Bun.connect({
        hostname: options.address.slice(0, colon),
        port: Number(options.address.slice(colon + 1)),
        socket: {
          data: (_socket, chunk) => channel.reader.push(chunk),
          drain: () => {
            if (channel.writer !== null && !channel.writer.drain() && channel.writer.closed) channel.fail("the socket refused a write");
          },
          close: () => channel.fail("connection closed"),
          error: (_socket, error) => channel.fail(`connection error: ${error.message}`),
        },
      });
    } catch (error) {
      clearInterval(channel.sweep);
      throw error;
    }
    channel.writer = new _SocketWriter(channel.socket);
    const settings = Buffer.allocUnsafe(12);
    settings.writeUInt16BE(0x2, 0); // SETTINGS_ENABLE_PUSH: off
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 6);
    settings.writeUInt32BE(RECEIVE_WINDOW, 8);
    const connectionWindow = Buffer.allocUnsafe(4);
    connectionWindow.writeUInt32BE(RECEIVE_WINDOW - DEFAULT_WINDOW);
    channel.send(
      Buffer.concat([
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"),
        h2Frame(H2.SETTINGS, 0, 0, settings),
        h2Frame(H2.WINDOW_UPDATE, 0, 0, connectionWindow),
      ]),
    );
    const timer = setTimeout(() => channel.fail(`no HTTP/2 SETTINGS from ${options.address} within ${options.timeoutMs} ms`), options.timeoutMs);
    try {
      await ready;
    } catch (error) {
      channel.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return channel;
  }

  /** Settles `connect` on the server's first SETTINGS, or on a failure before them. */
  private ready: ((error: string | null) => void) | null = null;

  /**
   * Starts one call with `message` (already protobuf-encoded); `done` runs
   * exactly once, never before this returns: a closed loop that starts the
   * next call from `done` must not spin here, or starve the timers that end
   * its run, when every call fails.
   */
  call(message: Uint8Array, done: UnaryDone): void {
    const refusal =
      this.failure ??
      (this.calls.size >= this.maxStreams
        ? `more than the server's ${this.maxStreams} concurrent streams`
        : this.nextStreamId > LAST_STREAM_ID
          ? "stream ids used up on this connection"
          : null);
    if (refusal !== null) {
      setImmediate(() => done(refusal));
      return;
    }
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    this.calls.set(id, { start: performance.now(), done, data: null, dataBytes: 0 });
    const dataBytes = 5 + message.byteLength;
    const frames = Buffer.allocUnsafe(FRAME_HEAD_BYTES * 2 + this.headerBlock.byteLength + dataBytes);
    writeFrameHead(frames, 0, this.headerBlock.byteLength, H2.HEADERS, END_HEADERS, id);
    this.headerBlock.copy(frames, FRAME_HEAD_BYTES);
    let at = FRAME_HEAD_BYTES + this.headerBlock.byteLength;
    writeFrameHead(frames, at, dataBytes, H2.DATA, END_STREAM, id);
    at += FRAME_HEAD_BYTES;
    frames[at] = 0; // not compressed
    frames.writeUInt32BE(message.byteLength, at + 1);
    frames.set(message, at + 5);
    if (this.waiting.length > 0 || this.sendWindow < dataBytes) this.waiting.push({ frames, dataBytes });
    else {
      this.sendWindow -= dataBytes;
      this.send(frames);
    }
  }

  /** Calls started and not yet answered. */
  get inFlight(): number {
    return this.calls.size;
  }

  close(): void {
    clearInterval(this.sweep);
    this.fail("channel closed");
    this.socket?.end();
  }

  private send(bytes: Buffer): void {
    this.out.push(bytes);
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** What the calls of one turn wrote, in one write. */
  private flush(): void {
    this.flushQueued = false;
    const writer = this.writer;
    if (writer === null || this.out.length === 0) return;
    const bytes = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out);
    this.out = [];
    // The bytes are not written over later: what the socket does not take waits as a view of them.
    if (!writer.write(bytes, bytes.byteLength, false) && writer.closed) this.fail("the socket refused a write");
  }

  /** Tops up the connection's receive window once a quarter of it has been used. */
  private received(bytes: number): void {
    this.unacknowledged += bytes;
    if (this.unacknowledged >= RECEIVE_WINDOW / 4) {
      const increment = Buffer.allocUnsafe(4);
      increment.writeUInt32BE(this.unacknowledged);
      this.unacknowledged = 0;
      this.send(h2Frame(H2.WINDOW_UPDATE, 0, 0, increment));
    }
  }

  private data(streamId: number, piece: Buffer): void {
    const call = this.calls.get(streamId);
    if (call === undefined || piece.length === 0) return;
    (call.data ??= []).push(piece);
    call.dataBytes += piece.length;
  }

  private frameDone({ type, flags, streamId }: H2FrameHead, payload: Buffer): void {
    switch (type) {
      case H2.DATA:
        if ((flags & PADDED) !== 0 && payload.length > 0) this.data(streamId, payload.subarray(1, payload.length - payload[0]!));
        if ((flags & END_STREAM) !== 0) this.complete(streamId);
        return;
      case H2.HEADERS:
        if ((flags & END_STREAM) !== 0) this.complete(streamId);
        return;
      case H2.RST_STREAM:
        this.finishCall(streamId, `stream reset by the server (code ${payload.length >= 4 ? payload.readUInt32BE(0) : "?"})`);
        return;
      case H2.SETTINGS:
        if ((flags & ACK) !== 0) return;
        this.applySettings(payload);
        this.send(h2Frame(H2.SETTINGS, ACK, 0, new Uint8Array(0)));
        this.ready?.(null);
        this.ready = null;
        return;
      case H2.PING:
        if ((flags & ACK) === 0) this.send(h2Frame(H2.PING, ACK, 0, payload));
        return;
      case H2.GOAWAY:
        this.fail(`GOAWAY from the server (code ${payload.length >= 8 ? payload.readUInt32BE(4) : "?"})`);
        return;
      case H2.WINDOW_UPDATE:
        if (streamId === 0 && payload.length >= 4) {
          this.sendWindow += payload.readUInt32BE(0) & 0x7fff_ffff;
          this.sendWaiting();
        }
        return;
    }
  }

  private applySettings(payload: Buffer): void {
    for (let at = 0; at + 6 <= payload.length; at += 6) {
      const id = payload.readUInt16BE(at);
      const value = payload.readUInt32BE(at + 2);
      if (id === SETTINGS_MAX_CONCURRENT_STREAMS) this.maxStreams = value;
    }
  }

  private sendWaiting(): void {
    while (this.waiting.length > 0 && this.waiting[0]!.dataBytes <= this.sendWindow) {
      const next = this.waiting.shift()!;
      this.sendWindow -= next.dataBytes;
      this.send(next.frames);
    }
  }

  /** The server ended the stream: a call with a message succeeded (its gRPC framing checked). */
  private complete(id: number): void {
    const call = this.calls.get(id);
    if (call === undefined) return;
    if (call.data === null) {
      this.finishCall(id, "no message before the trailers (a gRPC error status)");
      return;
    }
    const bytes = call.data.length === 1 ? call.data[0]! : Buffer.concat(call.data, call.dataBytes);
    if (bytes.length < 5 || bytes[0] !== 0 || bytes.readUInt32BE(1) !== bytes.length - 5) {
      this.finishCall(id, `malformed gRPC message framing (${bytes.length} bytes)`);
      return;
    }
    this.calls.delete(id);
    call.done(null, bytes.subarray(5));
  }

  private finishCall(id: number, error: string): void {
    const call = this.calls.get(id);
    if (call === undefined) return;
    this.calls.delete(id);
    call.done(error);
  }

  /** Fails calls past their deadline and resets their streams. */
  private expire(): void {
    const now = performance.now();
    for (const [id, call] of this.calls) {
      if (now - call.start < this.options.timeoutMs) continue;
      const code = Buffer.allocUnsafe(4);
      code.writeUInt32BE(CANCEL);
      this.send(h2Frame(H2.RST_STREAM, 0, id, code));
      this.finishCall(id, `deadline of ${this.options.timeoutMs} ms exceeded`);
    }
  }

  private fail(reason: string): void {
    this.failure ??= reason;
    clearInterval(this.sweep);
    this.waiting.length = 0;
    this.ready?.(this.failure);
    this.ready = null;
    const calls = [...this.calls.values()];
    this.calls.clear();
    for (const call of calls) call.done(this.failure);
  }
}
