/** Peer link frames as a sender puts them on the wire (`[u32 length][u8 type][payload]`), for tests that speak the link raw. */
export function linkFrame(type: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.byteLength);
  out.writeUInt32BE(payload.byteLength + 1, 0);
  out[4] = type;
  out.set(payload, 5);
  return out;
}
