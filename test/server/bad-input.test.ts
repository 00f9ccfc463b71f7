/**
 * What a node answers to requests it must refuse, on the wire: the gRPC
 * status, a message that says what was wrong, the stable gcache code in the
 * trailers — and that the node keeps serving afterwards.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, credentials, status, type ServiceError } from "@grpc/grpc-js";
import { isGCacheError } from "../../src/errors.ts";
import { CacheNode } from "../../src/node.ts";
import { GCACHE_SERVICE, type Request } from "../../src/wire/messages.ts";
import { ERROR_CODE_METADATA } from "../../src/wire/status.ts";

const MAX_VALUE_BYTES = 1024;
const MAX_KEY_BYTES = 64;
const EMPTY = new Uint8Array(0);

type Method = keyof typeof GCACHE_SERVICE;

let node: CacheNode;
let client: Client;
let checks = 0;

beforeAll(async () => {
  node = new CacheNode({
    port: 0,
    groups: [
      {
        name: "g",
        maxValueBytes: MAX_VALUE_BYTES,
        maxKeyBytes: MAX_KEY_BYTES,
        loader: (key) => new TextEncoder().encode(`value-of-${key}`),
      },
    ],
  });
  await node.start();
  client = new Client(node.address, credentials.createInsecure(), {
    // Let this client send what the server must refuse.
    "grpc.max_send_message_length": -1,
  });
});

afterAll(async () => {
  client?.close();
  await node?.close();
});

function request(fields: Partial<Request>): Request {
  return { group: "g", key: "k", value: EMPTY, ttlMs: 0, expiresAtMs: 0, fromPeer: false, ...fields };
}

/** One unary call with encoders of the caller's choosing; resolves with the response or the ServiceError. */
function raw<Req, Res>(
  path: string,
  serialize: (value: Req) => Buffer,
  deserialize: (bytes: Buffer) => Res,
  message: Req,
): Promise<{ response: Res } | { error: ServiceError }> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(path, serialize, deserialize, message, { deadline: Date.now() + 5_000 }, (error, response) =>
      resolve(error ? { error } : { response: response as Res }),
    );
  });
}

function send(method: Method, message: unknown) {
  const definition = GCACHE_SERVICE[method] as {
    path: string;
    requestSerialize: (value: unknown) => Buffer;
    responseDeserialize: (bytes: Buffer) => unknown;
  };
  return raw(definition.path, definition.requestSerialize, definition.responseDeserialize, message);
}

/** The call must fail with `code`; returns the error for further checks. */
async function expectStatus(outcome: Promise<{ response: unknown } | { error: ServiceError }>, code: status): Promise<ServiceError> {
  const result = await outcome;
  if (!("error" in result)) throw new Error(`expected ${status[code]}, got a response: ${JSON.stringify(result.response)}`);
  expect(`${status[result.error.code]}: ${result.error.details}`).toStartWith(`${status[code]}: `);
  return result.error;
}

function gcacheCode(error: ServiceError): unknown {
  return error.metadata?.get(ERROR_CODE_METADATA)[0];
}

/** A normal get still works. */
async function expectServing(): Promise<void> {
  const key = `healthy-${++checks}`;
  const result = await send("Get", request({ key }));
  if (!("response" in result)) throw new Error(`node stopped serving: ${result.error.code} ${result.error.details}`);
  expect(new TextDecoder().decode((result.response as { value: Uint8Array }).value)).toBe(`value-of-${key}`);
}

describe("bad input", () => {
  test("an empty key is INVALID_ARGUMENT for Get, Set and Delete", async () => {
    for (const method of ["Get", "Set", "Delete"] as const) {
      const error = await expectStatus(send(method, request({ key: "", value: new Uint8Array([1]) })), status.INVALID_ARGUMENT);
      expect(error.details).toContain("key");
      expect(gcacheCode(error)).toBe("ERR_INVALID_ARGUMENT");
    }
    await expectServing();
  });

  test("an unknown group is NOT_FOUND, naming the group", async () => {
    for (const method of ["Get", "Set", "Delete"] as const) {
      const error = await expectStatus(send(method, request({ group: "no-such-group" })), status.NOT_FOUND);
      expect(error.details).toContain("no-such-group");
      expect(gcacheCode(error)).toBe("ERR_UNKNOWN_GROUP");
    }
    const cleared = await expectStatus(send("Clear", { group: "other-missing", fromPeer: false }), status.NOT_FOUND);
    expect(cleared.details).toContain("other-missing");
    await expectServing();
  });

  test("a value above maxValueBytes is RESOURCE_EXHAUSTED, naming the limit, and is not stored", async () => {
    const error = await expectStatus(
      send("Set", request({ key: "big", value: new Uint8Array(MAX_VALUE_BYTES + 1) })),
      status.RESOURCE_EXHAUSTED,
    );
    expect(error.details).toContain(String(MAX_VALUE_BYTES));
    expect(error.details).toContain(String(MAX_VALUE_BYTES + 1));
    expect(gcacheCode(error)).toBe("ERR_VALUE_TOO_LARGE");
    // The key was not stored: a get loads it.
    const got = await send("Get", request({ key: "big" }));
    expect("response" in got && new TextDecoder().decode((got.response as { value: Uint8Array }).value)).toBe("value-of-big");

    // Exactly at the limit is fine.
    const atLimit = await send("Set", request({ key: "at-limit", value: new Uint8Array(MAX_VALUE_BYTES).fill(7) }));
    expect("response" in atLimit).toBe(true);
    await expectServing();
  });

  test("malformed protobuf bytes are INVALID_ARGUMENT, not INTERNAL", async () => {
    const identity = (bytes: Buffer) => bytes;
    const garbage = [
      // Field 1 with wire type 7, which does not exist.
      Buffer.from([0x0f, 0xff, 0xff, 0xff, 0xff]),
      // Field 1, length-delimited, claims 16 bytes and carries one.
      Buffer.from([0x0a, 0x10, 0x61]),
      // A varint that never ends.
      Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
    ];
    for (const method of ["Get", "Set", "Delete"] as const) {
      for (const bytes of garbage) {
        const error = await expectStatus(raw(GCACHE_SERVICE[method].path, identity, identity, bytes), status.INVALID_ARGUMENT);
        expect(error.details).toContain("malformed");
        expect(gcacheCode(error)).toBe("ERR_INVALID_ARGUMENT");
      }
    }
    await expectServing();
  });

  test("a message above the server's receive limit is RESOURCE_EXHAUSTED", async () => {
    // The limit is the largest value any group accepts (at least 1 MiB) plus framing; 4 MiB is above it.
    const error = await expectStatus(
      send("Set", request({ key: "huge", value: new Uint8Array(4 * 1024 * 1024) })),
      status.RESOURCE_EXHAUSTED,
    );
    // grpc-js words it "Received message larger than max (<size> vs <limit>)".
    expect(error.details).toMatch(/larger than max \(\d+ vs (\d+)\)/);
    const limit = Number(/vs (\d+)/.exec(error.details)?.[1]);
    expect(limit).toBeGreaterThanOrEqual(1024 * 1024);
    expect(limit).toBeLessThan(4 * 1024 * 1024);
    await expectServing();
  });

  test("a key longer than maxKeyBytes is INVALID_ARGUMENT, naming the limit", async () => {
    for (const key of ["k".repeat(MAX_KEY_BYTES + 1), "é".repeat(MAX_KEY_BYTES / 2 + 1)]) {
      for (const method of ["Get", "Set", "Delete"] as const) {
        const error = await expectStatus(send(method, request({ key, value: new Uint8Array([1]) })), status.INVALID_ARGUMENT);
        expect(error.details).toContain(String(MAX_KEY_BYTES));
      }
    }
    // Exactly at the limit is fine.
    const atLimit = await send("Get", request({ key: "k".repeat(MAX_KEY_BYTES) }));
    expect("response" in atLimit).toBe(true);
    await expectServing();
  });

  test("a negative ttl or expiry is INVALID_ARGUMENT, and nothing is stored", async () => {
    const ttl = await expectStatus(send("Set", request({ key: "neg-ttl", value: new Uint8Array([1]), ttlMs: -5 })), status.INVALID_ARGUMENT);
    expect(ttl.details).toContain("-5");
    const expiry = await expectStatus(
      send("Set", request({ key: "neg-expiry", value: new Uint8Array([1]), expiresAtMs: -5 })),
      status.INVALID_ARGUMENT,
    );
    expect(expiry.details).toContain("-5");
    for (const key of ["neg-ttl", "neg-expiry"]) {
      const got = await send("Get", request({ key }));
      expect("response" in got && new TextDecoder().decode((got.response as { value: Uint8Array }).value)).toBe(`value-of-${key}`);
    }
    await expectServing();
  });

  test("an invalidation of an empty key is INVALID_ARGUMENT", async () => {
    const error = await expectStatus(send("Invalidate", { group: "g", key: "", all: false }), status.INVALID_ARGUMENT);
    expect(error.details).toContain("key");
    await expectServing();
  });

  test("InvalidateMany with an empty key drops nothing and names the key; too many keys or an unknown group are refused", async () => {
    const kept = "kept-by-bad-batch";
    await send("Get", request({ key: kept }));
    expect(node.group("g")!.stats().caches.main.items).toBeGreaterThan(0);
    const empty = await expectStatus(send("InvalidateMany", { group: "g", keys: [kept, ""] }), status.INVALID_ARGUMENT);
    expect(empty.details).toContain("key 1");
    expect(gcacheCode(empty)).toBe("ERR_INVALID_ARGUMENT");
    // All or nothing: the good key of the refused batch is still cached.
    const before = node.group("g")!.stats().caches.main.hits;
    await send("Get", request({ key: kept }));
    expect(node.group("g")!.stats().caches.main.hits).toBe(before + 1);

    const many = Array.from({ length: 1025 }, (_, i) => `k${i}`);
    const tooMany = await expectStatus(send("InvalidateMany", { group: "g", keys: many }), status.INVALID_ARGUMENT);
    expect(tooMany.details).toContain("1024");
    const unknown = await expectStatus(send("InvalidateMany", { group: "nope", keys: ["a"] }), status.NOT_FOUND);
    expect(gcacheCode(unknown)).toBe("ERR_UNKNOWN_GROUP");

    const dropped = await send("InvalidateMany", { group: "g", keys: [kept] });
    expect("response" in dropped).toBe(true);
    const misses = node.group("g")!.stats().caches.main.misses;
    await send("Get", request({ key: kept }));
    expect(node.group("g")!.stats().caches.main.misses).toBe(misses + 1);
    await expectServing();
  });
});

describe("SetMany", () => {
  test("each item is answered on its own: a bad key or an oversized value fails only itself", async () => {
    const value = (text: string) => new TextEncoder().encode(text);
    const result = await send("SetMany", {
      group: "g",
      items: [
        { key: "batch-good", value: value("stored"), expiresAtMs: 0 },
        { key: "", value: value("x"), expiresAtMs: 0 },
        { key: "batch-big", value: new Uint8Array(MAX_VALUE_BYTES + 1), expiresAtMs: 0 },
        { key: "k".repeat(MAX_KEY_BYTES + 1), value: value("x"), expiresAtMs: 0 },
      ],
    });
    if (!("response" in result)) throw new Error(`SetMany failed: ${result.error.details}`);
    const codes = (result.response as { results: { errorCode: string; errorMessage: string }[] }).results;
    expect(codes.map((r) => r.errorCode)).toEqual(["", "ERR_INVALID_ARGUMENT", "ERR_VALUE_TOO_LARGE", "ERR_INVALID_ARGUMENT"]);
    expect(codes[2]!.errorMessage).toContain(String(MAX_VALUE_BYTES));
    const got = await send("Get", request({ key: "batch-good" }));
    expect("response" in got && new TextDecoder().decode((got.response as { value: Uint8Array }).value)).toBe("stored");
    const big = await send("Get", request({ key: "batch-big" }));
    expect("response" in big && new TextDecoder().decode((big.response as { value: Uint8Array }).value)).toBe("value-of-batch-big");
    await expectServing();
  });

  test("too many items or an unknown group are refused as a whole", async () => {
    const items = Array.from({ length: 1025 }, (_, i) => ({ key: `many-${i}`, value: new Uint8Array([1]), expiresAtMs: 0 }));
    const tooMany = await expectStatus(send("SetMany", { group: "g", items }), status.INVALID_ARGUMENT);
    expect(tooMany.details).toContain("1024");
    const unknown = await expectStatus(send("SetMany", { group: "nope", items: items.slice(0, 1) }), status.NOT_FOUND);
    expect(gcacheCode(unknown)).toBe("ERR_UNKNOWN_GROUP");
    await expectServing();
  });
});

describe("DeleteMany", () => {
  test("each key is answered on its own: held or not, and an empty or long key fails only itself", async () => {
    for (const key of ["del-a", "del-b"]) await send("Get", request({ key }));
    const result = await send("DeleteMany", { group: "g", keys: ["del-a", "", "del-never", "k".repeat(MAX_KEY_BYTES + 1), "del-b"] });
    if (!("response" in result)) throw new Error(`DeleteMany failed: ${result.error.details}`);
    const results = (result.response as { results: { errorCode: string; errorMessage: string; deleted: boolean }[] }).results;
    expect(results.map((r) => r.errorCode)).toEqual(["", "ERR_INVALID_ARGUMENT", "", "ERR_INVALID_ARGUMENT", ""]);
    expect(results.map((r) => r.deleted)).toEqual([true, false, false, false, true]);
    expect(results[3]!.errorMessage).toContain(String(MAX_KEY_BYTES));
    // Deleted here: the next get loads again.
    const misses = node.group("g")!.stats().caches.main.misses;
    await send("Get", request({ key: "del-a" }));
    expect(node.group("g")!.stats().caches.main.misses).toBe(misses + 1);
    await expectServing();
  });

  test("too many keys or an unknown group are refused as a whole", async () => {
    const keys = Array.from({ length: 1025 }, (_, i) => `del-many-${i}`);
    const tooMany = await expectStatus(send("DeleteMany", { group: "g", keys }), status.INVALID_ARGUMENT);
    expect(tooMany.details).toContain("1024");
    const unknown = await expectStatus(send("DeleteMany", { group: "nope", keys: keys.slice(0, 1) }), status.NOT_FOUND);
    expect(gcacheCode(unknown)).toBe("ERR_UNKNOWN_GROUP");
    await expectServing();
  });
});

describe("message size limits follow the groups", () => {
  // The server's receive limit is sized from the groups at start(). A group
  // added later with larger values must either be refused by addGroup or be
  // served: never accept a value in process that the wire then refuses.
  test("a group added after start is refused or accepts values up to its own maxValueBytes over the wire", async () => {
    const late = new CacheNode({ port: 0, groups: [{ name: "g" }] });
    await late.start();
    const lateClient = new Client(late.address, credentials.createInsecure(), { "grpc.max_send_message_length": -1 });
    try {
      let refusal: unknown = null;
      try {
        late.addGroup({ name: "big", maxValueBytes: 2 * 1024 * 1024 });
      } catch (error) {
        refusal = error;
      }
      if (refusal !== null) {
        expect(isGCacheError(refusal, "ERR_INVALID_OPTION")).toBe(true);
        return;
      }
      const value = new Uint8Array(1536 * 1024).fill(9);
      expect(await late.group("big")!.set("in-process", value)).toEqual({ unreachablePeers: [] });
      const definition = GCACHE_SERVICE.Set;
      const result = await new Promise<ServiceError | null>((resolve) => {
        lateClient.makeUnaryRequest(
          definition.path,
          definition.requestSerialize,
          definition.responseDeserialize,
          request({ group: "big", key: "over-the-wire", value }),
          { deadline: Date.now() + 5_000 },
          (error) => resolve(error),
        );
      });
      expect(result === null ? "OK" : `${status[result.code]}: ${result.details}`).toBe("OK");
    } finally {
      lateClient.close();
      await late.close();
    }
  });
});
