/**
 * The peer link's wire format: a node's batch streams (BatchGetStream,
 * WriteStream) carried on a plain TCP connection instead of HTTP/2. The
 * messages are the same protobuf messages; what the link leaves out is
 * everything HTTP/2 and grpc-js add around each one (frames, flow control,
 * a chain of stream objects), which on the peer hop costs more than the
 * lookups themselves.
 *
 * Every frame is `[u32 length][u8 type][payload]`, big-endian, the length
 * counting the type byte and the payload. The first frame a connection
 * carries is the sender's HELLO: the stream it opens and the ticket the
 * owner handed out over gRPC (`PeerLink`), so only a node that passed the
 * gRPC server's checks can use the link. The owner answers a ticket it
 * takes with a HELLO of its own (`[u8 version]`), and one it refuses with
 * an ERROR; a sender gives up on a link that does neither within a second.
 */
import { codecs, type Codec } from "./messages.ts";
import { _SocketWriter, type _WritableSocket } from "./socket-writer.ts";

/** The link is built on Bun's sockets: under Node.js a node offers none and its peers keep to gRPC. */
export const _linkAvailable = typeof Bun !== "undefined";

export const LinkFrame = {
  /** One protobuf message of the stream. */
  MESSAGE: 0,
  /** The sender sends no more messages (a half-close). */
  END: 1,
  /** The stream failed: `[u32 gRPC status code][UTF-8 message]`; the connection closes after it. */
  ERROR: 2,
  /** The first frame: `[u8 version][u8 stream][ticket]` from the sender, `[u8 version]` back from the owner. */
  HELLO: 3,
} as const;

/** The streams a link can carry, as HELLO names them. */
export const LinkStream = { BATCH_GET: 1, WRITE: 2 } as const;
export type LinkStream = (typeof LinkStream)[keyof typeof LinkStream];

/** What each stream's frames carry: the gRPC stream's request and response messages. */
export const _LINK_CODECS: Record<LinkStream, { request: Codec<unknown>; response: Codec<unknown> }> = {
  [LinkStream.BATCH_GET]: { request: codecs.BatchGetRequest, response: codecs.BatchGetResponse },
  [LinkStream.WRITE]: { request: codecs.WriteBatch, response: codecs.WriteBatchResponse },
} as Record<LinkStream, { request: Codec<unknown>; response: Codec<unknown> }>;

export const LINK_VERSION = 1;
/** Bytes of random ticket a node hands out. */
export const LINK_TICKET_BYTES = 16;
const HEADER_BYTES = 5;

/** Frame sizes are bounded by the largest message plus this. */
const LINK_FRAME_OVERHEAD_BYTES = 64;

/** The largest frame either end takes when messages are at most `maxMessageBytes`. */
export function _maxFrameBytes(maxMessageBytes: number): number {
  return maxMessageBytes + LINK_FRAME_OVERHEAD_BYTES;
}

export function _helloPayload(stream: LinkStream, ticket: Uint8Array): Buffer {
  const payload = Buffer.allocUnsafe(2 + ticket.byteLength);
  payload[0] = LINK_VERSION;
  payload[1] = stream;
  payload.set(ticket, 2);
  return payload;
}

export function _errorPayload(code: number, message: string): Buffer {
  const text = Buffer.from(message, "utf8");
  const payload = Buffer.allocUnsafe(4 + text.byteLength);
  payload.writeUInt32BE(code, 0);
  payload.set(text, 4);
  return payload;
}

export function _parseError(payload: Buffer): { code: number; details: string } {
  if (payload.byteLength < 4) return { code: 13, details: "peer link: malformed error frame" };
  return { code: payload.readUInt32BE(0), details: payload.toString("utf8", 4) };
}

/**
 * Cuts a connection's bytes into frames. A frame that spans reads is copied
 * once into a buffer of its full size; one within a read is handed on as a
 * view of it (Bun gives each read a buffer of its own).
 */
export class _FrameReader {
  /** A frame header cut by the end of a read. */
  private head: Buffer | null = null;
  /** A frame being gathered: its bytes after the header, and how many are in. */
  private partial: Buffer | null = null;
  private partialType = 0;
  private filled = 0;
  private stopped = false;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly onFrame: (type: number, payload: Buffer) => void,
  ) {}

  /** Stops delivering frames (the connection is closing). */
  stop(): void {
    this.stopped = true;
  }

  /** Takes one read. Returns what is wrong with the bytes, or null. */
  push(chunk: Buffer): string | null {
    let at = 0;
    if (this.partial !== null) {
      at = this.fill(chunk);
      if (this.partial !== null) return null;
    }
    if (this.head !== null) {
      // Complete the cut header from this read's first bytes only; the frame is then gathered.
      const taken = chunk.subarray(at, at + HEADER_BYTES - this.head.byteLength);
      const head = Buffer.concat([this.head, taken]);
      at += taken.byteLength;
      this.head = null;
      if (head.byteLength < HEADER_BYTES) {
        this.head = head;
        return null;
      }
      const problem = this.gather(head, 0);
      if (problem !== null) return problem;
      at += this.fill(chunk.subarray(at));
      if (this.partial !== null) return null;
    }
    while (!this.stopped && chunk.byteLength - at >= HEADER_BYTES) {
      const length = chunk.readUInt32BE(at);
      const end = at + 4 + length;
      if (end > chunk.byteLength || length < 1 || length > this.maxFrameBytes) {
        const problem = this.gather(chunk, at);
        if (problem !== null) return problem;
        this.fill(chunk.subarray(at + HEADER_BYTES));
        return null;
      }
      this.onFrame(chunk[at + 4]!, chunk.subarray(at + HEADER_BYTES, end));
      at = end;
    }
    if (!this.stopped && at < chunk.byteLength) this.head = Buffer.from(chunk.subarray(at));
    return null;
  }

  /** Starts gathering the frame whose header is at `at` of `bytes`, or says what is wrong with it. */
  private gather(bytes: Buffer, at: number): string | null {
    const length = bytes.readUInt32BE(at);
    if (length < 1 || length > this.maxFrameBytes) return `peer link: a frame of ${length} bytes (at most ${this.maxFrameBytes})`;
    this.partial = Buffer.allocUnsafe(length - 1);
    this.partialType = bytes[at + 4]!;
    this.filled = 0;
    return null;
  }

  /** Copies what `chunk` holds of the partial frame; delivers it once whole. Returns the bytes of `chunk` used. */
  private fill(chunk: Buffer): number {
    const partial = this.partial!;
    const used = Math.min(partial.byteLength - this.filled, chunk.byteLength);
    partial.set(chunk.subarray(0, used), this.filled);
    this.filled += used;
    if (this.filled === partial.byteLength) {
      this.partial = null;
      if (!this.stopped) this.onFrame(this.partialType, partial);
    }
    return used;
  }
}

/** Bytes a frame's header takes; a message encoded with this much headroom becomes a frame in place (`_FrameWriter.message`). */
export const LINK_HEADER_BYTES = HEADER_BYTES;

/** A frame in a buffer of its own. */
export function _frame(type: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.byteLength);
  frame.set(payload, HEADER_BYTES);
  return seal(frame, type);
}

/** Writes the header of a frame whose payload already follows the header's room. */
function seal<B extends Uint8Array>(frame: B, type: number): B {
  const length = frame.byteLength - 4;
  frame[0] = length >>> 24;
  frame[1] = (length >>> 16) & 0xff;
  frame[2] = (length >>> 8) & 0xff;
  frame[3] = length & 0xff;
  frame[4] = type;
  return frame;
}

/**
 * Writes frames to a Bun socket. A message is encoded with the header's room
 * ahead of it (`Codec.encodeTransient(message, LINK_HEADER_BYTES)`) and goes
 * out from the encoder's buffer as it is: a frame the socket takes whole is
 * neither copied nor allocated here.
 */
export class _FrameWriter {
  private readonly out: _SocketWriter;

  constructor(socket: _WritableSocket) {
    this.out = new _SocketWriter(socket);
  }

  /** Whether earlier frames still wait for the socket. */
  get backedUp(): boolean {
    return this.out.backedUp;
  }

  /** Sends a message encoded after `LINK_HEADER_BYTES` of headroom, in a buffer the encoder reuses; false when it waits for `drain`. */
  message(encoded: Uint8Array): boolean {
    return this.out.write(seal(encoded, LinkFrame.MESSAGE), encoded.byteLength, true);
  }

  /** Sends a frame of `type` around `payload` (HELLO, END, ERROR: small, and rare). */
  frame(type: number, payload: Uint8Array): boolean {
    return this.raw(_frame(type, payload));
  }

  /** Sends a whole frame that stays as it is (one queued before the connection opened). */
  raw(frame: Uint8Array): boolean {
    return this.out.write(frame, frame.byteLength, false);
  }

  /** The socket can take more. Returns true once nothing waits. */
  drain(): boolean {
    return this.out.drain();
  }

  /** Drops what waits; nothing more is written. */
  close(): void {
    this.out.close();
  }
}

/** `_FrameWriter.message`'s frame as bytes of their own (to hold until a connection opens). */
export function _messageFrame(encoded: Uint8Array): Buffer {
  return Buffer.from(seal(encoded, LinkFrame.MESSAGE));
}
