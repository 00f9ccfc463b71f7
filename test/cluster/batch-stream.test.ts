import { afterEach, describe, expect, test } from "bun:test";
import { Client, credentials, Metadata, Server, ServerCredentials, status, type ClientDuplexStream, type ServerDuplexStream, type StatusObject } from "@grpc/grpc-js";
import { _BatchStream } from "../../src/cluster/batch-stream.ts";
import { _writeBatchCall } from "../../src/cluster/peer.ts";
import { EventEmitter } from "node:events";
import { GCacheError } from "../../src/errors.ts";
import { Group } from "../../src/group.ts";
import { renderMetrics } from "../../src/server/metrics.ts";
import { cacheServiceHandlers } from "../../src/server/service.ts";
import { CacheNode } from "../../src/node.ts";
import { _Connection } from "../../src/wire/connection.ts";
import {
  codecs,
  GCACHE_SERVICE,
  WriteKind,
  type BatchGetRequest,
  type BatchGetResponse,
  type ItemResults,
  type SetManyRequest,
  type WriteBatch,
  type WriteBatchResponse,
} from "../../src/wire/messages.ts";
import { bytes, text } from "../_support/cluster.ts";
import { waitFor } from "../_support/wait.ts";

/** Records every stream `connection` opens, with the statuses it ends with. */
function recordStreams(connection: _Connection): { statuses: number[] }[] {
  const streams: { statuses: number[] }[] = [];
  const duplex = connection.duplex.bind(connection);
  connection.duplex = (<Req, Res>(method: typeof GCACHE_SERVICE.BatchGetStream, deadline: number) => {
    const call = duplex(method, deadline) as ClientDuplexStream<Req, Res> | null;
    const record = { statuses: [] as number[] };
    streams.push(record);
    call?.on("status", (s: StatusObject) => record.statuses.push(s.code));
    return call;
  }) as typeof connection.duplex;
  return streams;
}

/** A stream client whose fallback calls and opened streams are counted. */
function observed(address: string, options?: { maxAgeMs: number; retryAfterMs: number }, token?: string) {
  const connection = new _Connection(address, token === undefined ? {} : { token });
  const calls: BatchGetRequest[] = [];
  const streams = recordStreams(connection);
  const stream = new _BatchStream<BatchGetRequest, BatchGetResponse>(
    connection,
    GCACHE_SERVICE.BatchGetStream,
    (request, context) => {
      calls.push(request);
      return connection.unary(GCACHE_SERVICE.BatchGet, request, context);
    },
    options,
  );
  return {
    stream,
    calls,
    streams,
    close() {
      stream.close();
      connection.close();
    },
  };
}

const within = (ms: number) => ({ deadline: Date.now() + ms });
const values = (response: BatchGetResponse) => response.items.map((item) => (item.retryAlone ? "alone" : item.errorCode || text(item.value)));

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startNode(options: Partial<ConstructorParameters<typeof CacheNode>[0]> = {}): Promise<CacheNode> {
  const node = new CacheNode({ name: "B", port: 0, groups: [{ name: "g", maxBytes: 8 << 20, loader: (key) => bytes(`loaded:${key}`) }], ...options });
  await node.start();
  cleanups.push(() => node.close());
  for (let i = 0; i < 10; i++) await node.group("g")!.set(`k${i}`, bytes(`v${i}`));
  return node;
}

/** A grpc-js server with only the given handlers of pb.GCache. */
async function startBare(handlers: Partial<Record<keyof typeof GCACHE_SERVICE, unknown>>): Promise<{ address: string; server: Server }> {
  const server = new Server();
  const definition = Object.fromEntries(Object.keys(handlers).map((name) => [name, GCACHE_SERVICE[name as keyof typeof GCACHE_SERVICE]]));
  server.addService(definition as never, handlers as never);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  cleanups.push(() => void server.forceShutdown());
  return { address: `127.0.0.1:${port}`, server };
}

describe("BatchGetStream", () => {
  test("concurrent batches share one stream and get the answers a BatchGet call gives", async () => {
    const node = await startNode();
    const client = observed(node.address);
    cleanups.push(() => client.close());
    const batches = Array.from({ length: 40 }, (_, i) => [`k${i % 10}`, `k${(i + 3) % 10}`, `missing-${i}`]);
    const answers = await Promise.all(batches.map((keys) => client.stream.send({ group: "g", keys }, within(5_000))));
    answers.forEach((answer, i) => {
      const [a, b] = batches[i]!;
      expect(values(answer)).toEqual([`v${a!.slice(1)}`, `v${b!.slice(1)}`, "alone"]);
    });
    expect(client.streams.length).toBe(1);
    expect(client.calls).toEqual([]);
    const openStreams = () => Number(/^gcache_peer_streams_open (\d+)$/m.exec(renderMetrics(node))?.[1]);
    expect(openStreams()).toBe(1);
    const connection = new _Connection(node.address);
    cleanups.push(() => connection.close());
    const unary = await connection.unary(GCACHE_SERVICE.BatchGet, { group: "g", keys: ["k0", "k3", "missing-x"] }, within(5_000));
    expect(values(unary)).toEqual(values(answers[0]!));
    // Each "alone" key's load was started by its batch.
    await waitFor(() => node.group("g")!.stats().localLoads === 41, 5_000, "the announced loads");
    client.close();
    await waitFor(() => openStreams() === 0, 5_000, "the node to see the stream end");
  });

  test("a batch the stream cannot answer (unknown group) goes as a call and gets the call's error", async () => {
    const node = await startNode();
    const client = observed(node.address);
    cleanups.push(() => client.close());
    const error = await client.stream.send({ group: "nope", keys: ["a"] }, within(5_000)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GCacheError);
    expect((error as GCacheError).code).toBe("ERR_UNKNOWN_GROUP");
    expect(client.calls.map((c) => c.group)).toEqual(["nope"]);
    // The stream stays usable for good batches.
    expect(values(await client.stream.send({ group: "g", keys: ["k1"] }, within(5_000)))).toEqual(["v1"]);
    expect(client.streams.length).toBe(1);
  });

  test("a peer without the method gets calls only, after one try", async () => {
    const item = { value: bytes("fixed"), expiresAtMs: 0, errorCode: "", errorMessage: "", retryAlone: false };
    const bare = await startBare({
      BatchGet: (call: { request: BatchGetRequest }, callback: (e: null, r: BatchGetResponse) => void) =>
        callback(null, { items: call.request.keys.map(() => item) }),
    });
    const client = observed(bare.address);
    cleanups.push(() => client.close());
    for (let i = 0; i < 3; i++) expect(values(await client.stream.send({ group: "g", keys: ["a", "b"] }, within(5_000)))).toEqual(["fixed", "fixed"]);
    expect(client.streams.length).toBe(1);
    expect(client.streams[0]!.statuses).toEqual([status.UNIMPLEMENTED]);
    expect(client.calls.length).toBe(3);
  });

  test("a batch the peer never answers fails at its deadline", async () => {
    const bare = await startBare({ BatchGetStream: (_call: ServerDuplexStream<BatchGetRequest, BatchGetResponse>) => {} });
    const client = observed(bare.address);
    cleanups.push(() => client.close());
    const started = Date.now();
    const error = await client.stream.send({ group: "g", keys: ["a"] }, within(300)).catch((e: unknown) => e);
    const elapsed = Date.now() - started;
    expect((error as GCacheError).code).toBe("ERR_DEADLINE_EXCEEDED");
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(3_000);
    expect(client.calls).toEqual([]);
  });

  test("a stream that breaks with a batch on it: the batch goes as a call, which reports the failure at once", async () => {
    let received = 0;
    const bare = await startBare({
      BatchGetStream: (call: ServerDuplexStream<BatchGetRequest, BatchGetResponse>) => call.on("data", () => received++),
    });
    const client = observed(bare.address);
    cleanups.push(() => client.close());
    const pending = client.stream.send({ group: "g", keys: ["a"] }, within(10_000)).catch((e: unknown) => e);
    await waitFor(() => received === 1, 5_000, "the batch to arrive");
    const started = Date.now();
    bare.server.forceShutdown();
    const error = (await pending) as GCacheError;
    expect(error.code).toBe("ERR_UNAVAILABLE");
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(client.calls.length).toBe(1);
  });

  test("a closing node ends its streams cleanly, and close does not wait for them", async () => {
    const node = await startNode();
    const client = observed(node.address);
    cleanups.push(() => client.close());
    expect(values(await client.stream.send({ group: "g", keys: ["k2"] }, within(5_000)))).toEqual(["v2"]);
    await node.close();
    await waitFor(() => client.streams[0]!.statuses.length === 1, 5_000, "the stream to end");
    expect(client.streams[0]!.statuses).toEqual([status.OK]);
    const error = (await client.stream.send({ group: "g", keys: ["k2"] }, within(2_000)).catch((e: unknown) => e)) as GCacheError;
    expect(error.code).toBe("ERR_UNAVAILABLE");
  });

  test("new batches move to a fresh stream once the current one is half its maximum age; the old one ends cleanly", async () => {
    const node = await startNode();
    const client = observed(node.address, { maxAgeMs: 400, retryAfterMs: 1_000 });
    cleanups.push(() => client.close());
    expect(values(await client.stream.send({ group: "g", keys: ["k3"] }, within(5_000)))).toEqual(["v3"]);
    const opened = Date.now();
    await waitFor(() => Date.now() - opened > 210, 1_000, "half the stream's age");
    expect(values(await client.stream.send({ group: "g", keys: ["k4"] }, within(5_000)))).toEqual(["v4"]);
    expect(client.streams.length).toBe(2);
    await waitFor(() => client.streams[0]!.statuses.length === 1, 5_000, "the old stream to end");
    expect(client.streams[0]!.statuses).toEqual([status.OK]);
    expect(client.calls).toEqual([]);
  });

  test("with read tokens: a stream without the token is refused and the batch gets the call's UNAUTHENTICATED; with it, the stream serves", async () => {
    const node = await startNode({ auth: { token: "secret-token-123", reads: true } });
    const stranger = observed(node.address);
    cleanups.push(() => stranger.close());
    const error = (await stranger.stream.send({ group: "g", keys: ["k1"] }, within(5_000)).catch((e: unknown) => e)) as GCacheError;
    expect(error.code).toBe("ERR_UNAUTHENTICATED");
    expect(stranger.calls.length).toBe(1);
    const member = observed(node.address, undefined, "secret-token-123");
    cleanups.push(() => member.close());
    expect(values(await member.stream.send({ group: "g", keys: ["k1"] }, within(5_000)))).toEqual(["v1"]);
    expect(member.calls).toEqual([]);
  });

  test("a malformed message ends its stream with INVALID_ARGUMENT after the answers before it; the node serves on", async () => {
    const node = await startNode();
    const raw = new Client(node.address, credentials.createInsecure());
    cleanups.push(() => raw.close());
    const identity = (b: Buffer) => b;
    const call = raw.makeBidiStreamRequest(GCACHE_SERVICE.BatchGetStream.path, identity, identity, { deadline: Date.now() + 5_000 });
    const answers: BatchGetResponse[] = [];
    call.on("data", (bytes: Buffer) => answers.push(codecs.BatchGetResponse.decode(bytes)));
    const ended = new Promise<StatusObject>((resolve) => call.on("status", resolve));
    call.on("error", () => {});
    call.write(codecs.BatchGetRequest.encode({ group: "g", keys: ["k5"], id: 7, timeoutMs: 1_000 }));
    await waitFor(() => answers.length === 1, 5_000, "the first answer");
    call.write(Buffer.from([0x0a, 0x07, 0x64, 0x65, 0x66, 0x63, 0xff, 0xff, 0xff]));
    const final = await ended;
    expect(final.code).toBe(status.INVALID_ARGUMENT);
    expect(final.details).toContain("malformed request message");
    expect(answers.map((a) => [a.id, values(a)])).toEqual([[7, ["v5"]]]);
    const client = observed(node.address);
    cleanups.push(() => client.close());
    expect(values(await client.stream.send({ group: "g", keys: ["k6"] }, within(5_000)))).toEqual(["v6"]);
  });

  test("the server stops taking batches off a stream whose answers the transport cannot take, until it drains", async () => {
    // Logic only: a stand-in for grpc-js's server stream whose write reports a full buffer.
    class FullStream extends EventEmitter {
      readonly metadata = new Metadata();
      readonly written: BatchGetResponse[] = [];
      full = false;
      paused = false;
      write(answer: BatchGetResponse): boolean {
        this.written.push(answer);
        return !this.full;
      }
      pause(): void {
        this.paused = true;
      }
      resume(): void {
        this.paused = false;
      }
      end(): void {}
    }
    const group = new Group({ name: "g", maxBytes: 8 << 20 });
    cleanups.push(() => group.close());
    await group.set("k", bytes("v"));
    const handlers = cacheServiceHandlers((name) => (name === "g" ? group : undefined), {
      accepting: () => true,
      auth: null,
      maxResponseBytes: () => 4 << 20,
      begin: () => {},
      end: () => {},
      streamOpened: () => () => {},
    });
    const stream = new FullStream();
    handlers.BatchGetStream(stream as never);
    stream.emit("data", { group: "g", keys: ["k"], id: 1, timeoutMs: 1_000 });
    expect(stream.paused).toBe(false);
    stream.full = true;
    stream.emit("data", { group: "g", keys: ["k"], id: 2, timeoutMs: 1_000 });
    expect(stream.paused).toBe(true);
    stream.full = false;
    stream.emit("drain");
    expect(stream.paused).toBe(false);
    expect(stream.written.map((answer) => [answer.id, values(answer)])).toEqual([
      [1, ["v"]],
      [2, ["v"]],
    ]);
  });
});

/** A write-stream client whose fallback calls (by method) and opened streams are counted. */
function observedWrites(address: string, token?: string) {
  const connection = new _Connection(address, token === undefined ? {} : { token });
  const calls: string[] = [];
  const streams = recordStreams(connection);
  const unary = connection.unary.bind(connection);
  connection.unary = ((method: { path: string }, request: unknown, context: unknown) => {
    calls.push(method.path.slice("/pb.GCache/".length));
    return unary(method as never, request as never, context as never);
  }) as typeof connection.unary;
  const stream = new _BatchStream<WriteBatch, WriteBatchResponse>(connection, GCACHE_SERVICE.WriteStream, (batch, context) =>
    _writeBatchCall(connection, batch, context),
  );
  return {
    stream,
    calls,
    streams,
    sets: (group: string, entries: [string, Uint8Array][]) =>
      stream.send({ group, kind: WriteKind.SET, sets: entries.map(([key, value]) => ({ key, value, expiresAtMs: 0 })), keys: [] }, within(5_000)),
    keys: (group: string, kind: WriteKind, keys: string[]) => stream.send({ group, kind, sets: [], keys }, within(5_000)),
    close() {
      stream.close();
      connection.close();
    },
  };
}

const outcomes = (response: WriteBatchResponse) => response.results.map((r) => r.errorCode || (r.deleted ? "deleted" : "ok"));

describe("WriteStream", () => {
  test("sets, deletes and drops of copies share one stream and are answered as SetMany, DeleteMany and InvalidateMany answer", async () => {
    const node = await startNode();
    const client = observedWrites(node.address);
    cleanups.push(() => client.close());
    const g = node.group("g")!;
    const tooLarge = new Uint8Array(g.maxValueBytes + 1);
    const [stored, deleted] = await Promise.all([
      client.sets("g", [["new1", bytes("n1")], ["big", tooLarge], ["new2", bytes("n2")]]),
      client.keys("g", WriteKind.DELETE, ["k1", "never-there", "k2"]),
    ]);
    expect(outcomes(stored)).toEqual(["ok", "ERR_VALUE_TOO_LARGE", "ok"]);
    expect(outcomes(deleted)).toEqual(["deleted", "ok", "deleted"]);
    expect(text(await g.get("new1"))).toBe("n1");
    expect(text(await g.get("new2"))).toBe("n2");
    expect(g.cachedEntry("k1")).toBeUndefined();
    expect(g.cachedEntry("k3")).toBeDefined();
    expect(outcomes(await client.keys("g", WriteKind.INVALIDATE, ["k3", "k4"]))).toEqual([]);
    expect(g.cachedEntry("k3")).toBeUndefined();
    expect(g.cachedEntry("k5")).toBeDefined();
    expect(client.streams.length).toBe(1);
    expect(client.calls).toEqual([]);
    // The same batch as a call answers the same.
    const connection = new _Connection(node.address);
    cleanups.push(() => connection.close());
    const asCall = await connection.unary(GCACHE_SERVICE.DeleteMany, { group: "g", keys: ["new1", "never-there"] }, within(5_000));
    expect(outcomes(asCall)).toEqual(["deleted", "ok"]);
  });

  test("what the stream hands back goes as the call, whose error the writer gets: an unknown group, an empty key to drop, an oversized batch", async () => {
    const node = await startNode();
    const client = observedWrites(node.address);
    cleanups.push(() => client.close());
    const failure = (promise: Promise<unknown>) => promise.then(() => null, (e: unknown) => (e as GCacheError).code);
    expect(await failure(client.sets("nope", [["a", bytes("x")]]))).toBe("ERR_UNKNOWN_GROUP");
    expect(await failure(client.keys("g", WriteKind.INVALIDATE, ["k1", ""]))).toBe("ERR_INVALID_ARGUMENT");
    const many = Array.from({ length: 1025 }, (_, i) => `many-${i}`);
    expect(await failure(client.keys("g", WriteKind.DELETE, many))).toBe("ERR_INVALID_ARGUMENT");
    expect(client.calls).toEqual(["SetMany", "InvalidateMany", "DeleteMany"]);
    // Nothing of the refused drop was applied; the stream still serves.
    expect(node.group("g")!.cachedEntry("k1")).toBeDefined();
    expect(outcomes(await client.keys("g", WriteKind.DELETE, ["k1"]))).toEqual(["deleted"]);
    expect(client.streams.length).toBe(1);
  });

  test("a peer without the method gets calls only, after one try", async () => {
    const received: string[] = [];
    const bare = await startBare({
      SetMany: (call: { request: SetManyRequest }, callback: (e: null, r: ItemResults) => void) => {
        received.push(...call.request.items.map((item) => item.key));
        callback(null, { results: call.request.items.map(() => ({ errorCode: "", errorMessage: "", deleted: false })) });
      },
    });
    const client = observedWrites(bare.address);
    cleanups.push(() => client.close());
    for (let i = 0; i < 3; i++) expect(outcomes(await client.sets("g", [[`a${i}`, bytes("x")]]))).toEqual(["ok"]);
    expect(received).toEqual(["a0", "a1", "a2"]);
    expect(client.streams.length).toBe(1);
    expect(client.streams[0]!.statuses).toEqual([status.UNIMPLEMENTED]);
    expect(client.calls).toEqual(["SetMany", "SetMany", "SetMany"]);
  });

  test("with write tokens: a stream without the token is refused and the batch gets the call's UNAUTHENTICATED; with it, the stream serves", async () => {
    const node = await startNode({ auth: { token: "secret-token-123", reads: false } });
    const stranger = observedWrites(node.address);
    cleanups.push(() => stranger.close());
    const error = (await stranger.sets("g", [["a", bytes("x")]]).catch((e: unknown) => e)) as GCacheError;
    expect(error.code).toBe("ERR_UNAUTHENTICATED");
    expect(stranger.calls).toEqual(["SetMany"]);
    expect(node.group("g")!.cachedEntry("a")).toBeUndefined();
    const member = observedWrites(node.address, "secret-token-123");
    cleanups.push(() => member.close());
    expect(outcomes(await member.sets("g", [["a", bytes("x")]]))).toEqual(["ok"]);
    expect(member.calls).toEqual([]);
  });
});
