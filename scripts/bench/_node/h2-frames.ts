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
