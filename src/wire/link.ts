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
import type { Socket } from "bun";
import { codecs, type Codec } from "./messages.ts";

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
export const LINK_FRAME_OVERHEAD_BYTES = 64;

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
    let bytes = chunk;
    if (this.head !== null) {
      bytes = Buffer.concat([this.head, chunk.subarray(at)]);
      this.head = null;
      at = 0;
    }
    while (!this.stopped && bytes.byteLength - at >= HEADER_BYTES) {
      const length = bytes.readUInt32BE(at);
      if (length < 1 || length > this.maxFrameBytes) return `peer link: a frame of ${length} bytes (at most ${this.maxFrameBytes})`;
      const type = bytes[at + 4]!;
      const end = at + 4 + length;
      if (end > bytes.byteLength) {
        this.partial = Buffer.allocUnsafe(length - 1);
        this.partialType = type;
        this.filled = 0;
        this.fill(bytes.subarray(at + HEADER_BYTES));
        return null;
      }
      this.onFrame(type, bytes.subarray(at + HEADER_BYTES, end));
      at = end;
    }
    if (!this.stopped && at < bytes.byteLength) this.head = Buffer.from(bytes.subarray(at));
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

/**
 * Writes frames to a Bun socket, which takes what the kernel takes and no
 * more: the rest waits here, in order, until `drain`. Frames are built in
 * one reused buffer, so a frame the socket takes whole allocates nothing.
 */
export class _FrameWriter {
  private unsent: Buffer[] | null = null;
  private scratch = Buffer.allocUnsafe(64 * 1024);
  private closed = false;

  constructor(private readonly socket: Socket<unknown>) {}

  /** Whether earlier frames still wait for the socket. */
  get backedUp(): boolean {
    return this.unsent !== null;
  }

  /** Sends one frame; false when it, or frames before it, wait for `drain`. */
  write(type: number, payload: Uint8Array): boolean {
    if (this.closed) return false;
    const length = HEADER_BYTES + payload.byteLength;
    if (this.scratch.byteLength < length) this.scratch = Buffer.allocUnsafe(Math.max(length, this.scratch.byteLength * 2));
    const frame = this.scratch;
    frame.writeUInt32BE(length - 4, 0);
    frame[4] = type;
    frame.set(payload, HEADER_BYTES);
    if (this.unsent !== null) {
      this.unsent.push(Buffer.from(frame.subarray(0, length)));
      this.shrinkScratch();
      return false;
    }
    const written = this.socket.write(frame, 0, length);
    if (written >= length) {
      this.shrinkScratch();
      return true;
    }
    if (written < 0) {
      this.closed = true;
      return false;
    }
    this.unsent = [Buffer.from(frame.subarray(written, length))];
    this.shrinkScratch();
    return false;
  }

  /** The socket can take more. Returns true once nothing waits. */
  drain(): boolean {
    const unsent = this.unsent;
    if (unsent === null) return true;
    while (unsent.length > 0) {
      const bytes = unsent[0]!;
      const written = this.socket.write(bytes);
      if (written < 0) {
        this.closed = true;
        return false;
      }
      if (written < bytes.byteLength) {
        unsent[0] = bytes.subarray(written);
        return false;
      }
      unsent.shift();
    }
    this.unsent = null;
    return true;
  }

  /** Drops what waits; nothing more is written. */
  close(): void {
    this.closed = true;
    this.unsent = null;
  }

  /** A large message grows the scratch buffer once; it is not kept beyond 1 MiB. */
  private shrinkScratch(): void {
    if (this.scratch.byteLength > 1024 * 1024) this.scratch = Buffer.allocUnsafe(64 * 1024);
  }
}
