/**
 * The few pieces of HTTP/2 (RFC 9113) and HPACK (RFC 7541) the benchmarks'
 * own clients on Bun's TCP sockets speak: frame types and flags, a frame's
 * 9-byte head, and header fields written as literals (no Huffman coding, no
 * table), which every server must accept.
 */

/** Frame types the clients read or write (RFC 9113, section 6). */
export const H2 = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8 } as const;
export const END_STREAM = 0x1;
export const ACK = 0x1;
export const END_HEADERS = 0x4;
export const PADDED = 0x8;
export const FRAME_HEAD_BYTES = 9;

/** Writes a frame's head at `at` of `into`. */
export function writeFrameHead(into: Buffer, at: number, length: number, type: number, flags: number, streamId: number): void {
  into.writeUIntBE(length, at, 3);
  into[at + 3] = type;
  into[at + 4] = flags;
  into.writeUInt32BE(streamId, at + 5);
}

/** A whole frame in a buffer of its own. */
export function h2Frame(type: number, flags: number, streamId: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEAD_BYTES + payload.length);
  writeFrameHead(frame, 0, payload.length, type, flags, streamId);
  frame.set(payload, FRAME_HEAD_BYTES);
  return frame;
}

/** HPACK "literal header field without indexing" with a literal name. */
export function literalHeader(name: string, value: string): Buffer {
  const n = Buffer.from(name);
  const v = Buffer.from(value);
  if (n.length > 126 || v.length > 126) throw new Error(`header ${name} too long for a one-byte length`);
  return Buffer.concat([Buffer.from([0x00, n.length]), n, Buffer.from([v.length]), v]);
}

/** The same with a name from HPACK's static table (`index`: 1 :authority, 4 :path). */
export function indexedNameHeader(index: number, value: string): Buffer {
  const v = Buffer.from(value);
  if (v.length > 126) throw new Error(`header value ${value} too long for a one-byte length`);
  return Buffer.concat([Buffer.from([index, v.length]), v]);
}

/** The head of the frame being read. One object, filled in again for every frame: not to be kept. */
export interface H2FrameHead {
  type: number;
  flags: number;
  streamId: number;
  length: number;
}

export interface H2FrameHandler {
  /** A frame's head has been read; its payload follows. */
  onHead(head: H2FrameHead): void;
  /** A piece of an unpadded DATA frame's payload, as a view of the read it came in. */
  onData(head: H2FrameHead, piece: Buffer): void;
  /** A frame is complete: with its whole payload, or with none for unpadded DATA (its pieces went to `onData`). */
  onFrame(head: H2FrameHead, payload: Buffer): void;
}

const NO_PAYLOAD = Buffer.alloc(0);

/**
 * Cuts a connection's bytes into frames. A head may span reads; unpadded
 * DATA is handed on piece by piece as it arrives, every other frame gathered
 * whole.
 */
export class H2FrameReader {
  private readonly headBytes = Buffer.allocUnsafe(FRAME_HEAD_BYTES);
  private headHave = 0;
  private payloadLeft = 0;
  private readonly head: H2FrameHead = { type: 0, flags: 0, streamId: 0, length: 0 };
  private gathered: Buffer[] = [];

  constructor(private readonly handler: H2FrameHandler) {}

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.headHave < FRAME_HEAD_BYTES) {
        const take = Math.min(FRAME_HEAD_BYTES - this.headHave, chunk.length - at);
        chunk.copy(this.headBytes, this.headHave, at, at + take);
        this.headHave += take;
        at += take;
        if (this.headHave < FRAME_HEAD_BYTES) return;
        const head = this.head;
        head.length = this.headBytes.readUIntBE(0, 3);
        head.type = this.headBytes[3]!;
        head.flags = this.headBytes[4]!;
        head.streamId = this.headBytes.readUInt32BE(5) & 0x7fff_ffff;
        this.payloadLeft = head.length;
        this.gathered = [];
        this.handler.onHead(head);
        if (this.payloadLeft === 0) {
          this.complete();
          continue;
        }
      }
      const take = Math.min(this.payloadLeft, chunk.length - at);
      const piece = chunk.subarray(at, at + take);
      at += take;
      this.payloadLeft -= take;
      if (this.inPieces()) this.handler.onData(this.head, piece);
      else this.gathered.push(piece);
      if (this.payloadLeft === 0) this.complete();
    }
  }

  private inPieces(): boolean {
    return this.head.type === H2.DATA && (this.head.flags & PADDED) === 0;
  }

  private complete(): void {
    this.headHave = 0;
    const gathered = this.gathered;
    const payload = this.inPieces() || gathered.length === 0 ? NO_PAYLOAD : gathered.length === 1 ? gathered[0]! : Buffer.concat(gathered);
    this.handler.onFrame(this.head, payload);
  }
}
