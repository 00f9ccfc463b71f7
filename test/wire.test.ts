import { expect, test } from "bun:test";
import { protoDescriptor } from "../scripts/gen-proto.ts";
import { PROTO_DESCRIPTOR } from "../src/wire/_proto-descriptor.ts";
import { codecs, type BatchGetItem } from "../src/wire/messages.ts";

test("the embedded descriptor is exactly what proto/ parses to (run `bun run gen:proto` after editing)", async () => {
  expect(JSON.parse(JSON.stringify(PROTO_DESCRIPTOR))).toEqual(JSON.parse(JSON.stringify(await protoDescriptor())));
});

test("the original fields keep their numbers and types", () => {
  // Request{group=1,key=2,value=3}, as a client of the original definition encodes it.
  const original = Uint8Array.from([0x0a, 0x01, 0x67, 0x12, 0x01, 0x6b, 0x1a, 0x02, 0x01, 0x02]);
  const request = codecs.Request.decode(original);
  expect(request).toMatchObject({ group: "g", key: "k", fromPeer: false, ttlMs: 0, expiresAtMs: 0 });
  expect([...request.value]).toEqual([1, 2]);
  const response = codecs.ResponseForGet.encode({ value: Uint8Array.from([7]), expiresAtMs: 0, unreachablePeers: [] });
  expect([...response]).toEqual([0x0a, 0x01, 0x07]);
  expect([...codecs.ResponseForDelete.encode({ value: true, unreachablePeers: [] })]).toEqual([0x08, 0x01]);
});

test("int64 expiry survives the wire exactly", () => {
  const expiresAtMs = 4_102_444_800_123;
  const decoded = codecs.ResponseForGet.decode(codecs.ResponseForGet.encode({ value: new Uint8Array(0), expiresAtMs, unreachablePeers: [] }));
  expect(decoded.expiresAtMs).toBe(expiresAtMs);
});

test("transient encoding gives the bytes encode gives, message after message, small and large, also after a failed encoding", () => {
  const response = (values: number[]) => ({
    items: values.map((size, i) => ({
      value: new Uint8Array(size).fill(i + 1),
      expiresAtMs: i * 1_000,
      errorCode: i % 3 === 0 ? "ERR_NOT_FOUND" : "",
      errorMessage: i % 3 === 0 ? `missing ${i}` : "",
      retryAlone: i % 5 === 0,
    })),
    id: values.length,
    useCall: false,
  });
  const shapes = [[1, 2, 3], Array(30).fill(10_240), [], [200, 300_000, 5], [2 * 1024 * 1024], [7], Array(40).fill(100)];
  for (const shape of shapes) {
    const message = response(shape);
    const transient = codecs.BatchGetResponse.encodeTransient(message);
    expect(Buffer.compare(transient, codecs.BatchGetResponse.encode(message))).toBe(0);
    expect(codecs.BatchGetResponse.decode(transient).items.map((item) => item.value.byteLength)).toEqual(shape);
  }
  // A message protobufjs cannot encode throws half-way through; the next one is still right.
  const bad = { items: [response([5]).items[0]!, null as unknown as BatchGetItem] };
  expect(() => codecs.BatchGetResponse.encodeTransient(bad)).toThrow();
  const after = response([3, 4]);
  expect(Buffer.compare(codecs.BatchGetResponse.encodeTransient(after), codecs.BatchGetResponse.encode(after))).toBe(0);
});
