import { afterEach, describe, expect, test } from "bun:test";
import { Client, credentials, Metadata, Server, ServerCredentials, status, type ClientDuplexStream, type ServerDuplexStream, type StatusObject } from "@grpc/grpc-js";
import { _BatchStream, type LaterAnswers } from "../../src/cluster/batch-stream.ts";
import { _writeBatchCall, GrpcPeer } from "../../src/cluster/peer.ts";
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
  type BatchGetItem,
  type BatchGetRequest,
  type BatchGetResponse,
  type ItemResults,
  type Request,
  type SetManyRequest,
  type WriteBatch,
  type WriteBatchResponse,
} from "../../src/wire/messages.ts";
import { bytes, text } from "../_support/cluster.ts";
import { recordUnaryCalls } from "../_support/recorded-calls.ts";
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

  test("a batch whose deadline is beyond what a timer takes (about 24.8 days) is answered on the stream, not failed at once", async () => {
    const node = await startNode();
    const client = observed(node.address);
    cleanups.push(() => client.close());
    const answer = await client.stream.send({ group: "g", keys: ["k1", "k2"] }, within(30 * 24 * 3_600_000));
    expect(values(answer)).toEqual(["v1", "v2"]);
    expect(client.streams.length).toBe(1);
    expect(client.calls).toEqual([]);
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

/** What a batch's later answers bring, by position, and how the rest was lost if it was. */
function laterRecorder() {
  const got = new Map<number, string>();
  const record = { got, lost: undefined as string | null | undefined, waiting: 0 };
  const later: LaterAnswers<BatchGetResponse> = {
    expected: (first) => (record.waiting = first.items.filter((item) => item.deferred).length),
    received: (answer) => {
      answer.positions!.forEach((position, i) => got.set(position, itemValue(answer.items[i]!)));
      return (record.waiting -= answer.positions!.length);
    },
    lost: (error) => void (record.lost = error === null ? null : error.code),
  };
  return { ...record, record, later };
}

const itemValue = (item: BatchGetItem) => (item.deferred ? "later" : item.retryAlone ? "alone" : item.errorCode || text(item.value));

/** A gate the loader of "slow…" keys waits at; "broken…" keys fail. Counts loads per key. */
function gatedLoader() {
  let open: () => void = () => {};
  const gate = new Promise<void>((resolve) => (open = resolve));
  const loads = new Map<string, number>();
  return {
    loads,
    open: () => open(),
    loader: async (key: string) => {
      loads.set(key, (loads.get(key) ?? 0) + 1);
      if (key.startsWith("slow")) await gate;
      if (key.startsWith("broken")) throw new Error("origin is down");
      return bytes(`loaded:${key}`);
    },
  };
}

/** A GrpcPeer whose unary calls (by method) are recorded; its batches go on gRPC streams (peer-link.test.ts covers the link). */
function recordedPeer(address: string): { peer: GrpcPeer; calls: string[] } {
  const peer = new GrpcPeer("B", address, { peerLink: false });
  cleanups.push(() => peer.close());
  return { peer, calls: recordUnaryCalls(peer) };
}

/** A node whose loader waits at a gate (see `gatedLoader`), and a stream client of it. */
async function gatedNode() {
  const origin = gatedLoader();
  const node = await startNode({ groups: [{ name: "g", maxBytes: 8 << 20, loader: origin.loader }] });
  const client = observed(node.address);
  cleanups.push(() => client.close());
  return { origin, node, client };
}

describe("BatchGetStream: deferred loads", () => {
  test("keys the owner must load are answered later on the stream, by id; the batch itself is answered at once and no call is made", async () => {
    const { origin, node, client } = await gatedNode();
    const first = laterRecorder();
    const second = laterRecorder();
    const [a, b] = await Promise.all([
      client.stream.send({ group: "g", keys: ["k1", "slow", "broken", "k2"], deferLoads: true }, within(5_000), first.later),
      client.stream.send({ group: "g", keys: ["slow", "k3"], deferLoads: true }, within(5_000), second.later),
    ]);
    // Answered while the slow load still waits at its gate.
    expect(a.items.map(itemValue)).toEqual(["v1", "later", "later", "v2"]);
    expect(b.items.map(itemValue)).toEqual(["later", "v3"]);
    await waitFor(() => first.got.size === 1, 5_000, "the failed load's answer");
    expect([...first.got]).toEqual([[2, "ERR_LOAD_FAILED"]]);
    origin.open();
    await waitFor(() => first.record.waiting === 0 && second.record.waiting === 0, 5_000, "the slow load's answers");
    expect(first.got.get(1)).toBe("loaded:slow");
    expect([...second.got]).toEqual([[0, "loaded:slow"]]);
    expect(origin.loads.get("slow")).toBe(1);
    expect(first.lost).toBeUndefined();
    expect(client.calls).toEqual([]);
    expect(client.streams.length).toBe(1);
    // The loaded value was kept, as a Get's would be; without deferLoads a load is sent back to be asked alone.
    expect(text(node.group("g")!.cachedEntry("slow")!.value)).toBe("loaded:slow");
    const plain = await client.stream.send({ group: "g", keys: ["fresh", "slow"] }, within(5_000));
    expect(plain.items.map(itemValue)).toEqual(["alone", "loaded:slow"]);
  });

  test("a value that does not fit beside the others in the first answer comes later, in an answer of its own; smaller values after it still fit", async () => {
    const node = await startNode();
    const big = (fill: number) => new Uint8Array(600_000).fill(fill);
    await node.group("g")!.set("big1", big(1));
    await node.group("g")!.set("big2", big(2));
    const client = observed(node.address);
    cleanups.push(() => client.close());
    const later = laterRecorder();
    const answer = await client.stream.send({ group: "g", keys: ["big1", "big2", "k1"], deferLoads: true }, within(5_000), later.later);
    expect(answer.items.map((item) => (item.deferred ? "later" : item.value.byteLength))).toEqual([600_000, "later", 2]);
    await waitFor(() => later.record.waiting === 0, 5_000, "the second value");
    expect(later.got.get(1)).toBe(text(big(2)));
    expect(client.calls).toEqual([]);
    // Without later answers it is sent back to be asked alone; the small value after it still fits.
    const plain = await client.stream.send({ group: "g", keys: ["big1", "big2", "k1"] }, within(5_000));
    expect(plain.items.map((item) => (item.retryAlone ? "alone" : item.value.byteLength))).toEqual([600_000, "alone", 2]);
  });

  test("a peer's get of a key its owner must load makes no Get call", async () => {
    const origin = gatedLoader();
    origin.open();
    const node = await startNode({ groups: [{ name: "g", maxBytes: 8 << 20, loader: origin.loader }] });
    const { peer, calls } = recordedPeer(node.address);
    const keys = Array.from({ length: 20 }, (_, i) => `fresh${i}`);
    const got = await Promise.all([...keys, "k1", "broken"].map((key) => peer.get("g", key, within(5_000)).then((e) => text(e.value), (e: GCacheError) => e.code)));
    expect(got).toEqual([...keys.map((key) => `loaded:${key}`), "v1", "ERR_LOAD_FAILED"]);
    expect(calls).toEqual([]);
  });

  /** A peer's get of "x" from a bare owner whose BatchGetStream is `answer` and whose Get answers "from-get:x": it must end up as that Get. */
  async function endsAsGet(answer: (call: ServerDuplexStream<BatchGetRequest, BatchGetResponse>, request: BatchGetRequest) => void) {
    const bare = await startBare({
      BatchGetStream: (call: ServerDuplexStream<BatchGetRequest, BatchGetResponse>) => call.on("data", (request: BatchGetRequest) => answer(call, request)),
      Get: (call: { request: Request }, callback: (e: null, r: object) => void) =>
        callback(null, { value: bytes(`from-get:${call.request.key}`), expiresAtMs: 0, unreachablePeers: [] }),
    });
    const { peer, calls } = recordedPeer(bare.address);
    expect(text((await peer.get("g", "x", within(5_000))).value)).toBe("from-get:x");
    expect(calls).toEqual(["Get"]);
  }

  test("an owner that ignores defer_loads (an older node) sends keys back to be asked alone, and they go as Gets", async () => {
    await endsAsGet((call, request) => call.write({ id: request.id!, items: request.keys.map(() => ALONE), useCall: false }));
  });

  test("a stream that ends while keys are deferred: those keys are asked for alone; stray later answers are ignored", async () => {
    await endsAsGet((call, request) => {
      call.write({ id: request.id!, items: request.keys.map(() => DEFERRED), useCall: false });
      // A later answer for a position the batch does not have, one for another batch, then the end.
      call.write({ id: request.id!, items: [VALUE("stray")], useCall: false, positions: [request.keys.length] });
      call.write({ id: request.id! + 1000, items: [VALUE("stray")], useCall: false, positions: [0] });
      call.end();
    });
  });

  test("a later answer that defers a key again sends it to be asked for alone", async () => {
    await endsAsGet((call, request) => {
      call.write({ id: request.id!, items: request.keys.map(() => DEFERRED), useCall: false });
      call.write({ id: request.id!, items: [DEFERRED], useCall: false, positions: [0] });
    });
  });

  test("a deferred key whose answer never comes fails at the batch's deadline", async () => {
    const bare = await startBare({
      BatchGetStream: (call: ServerDuplexStream<BatchGetRequest, BatchGetResponse>) =>
        call.on("data", (request: BatchGetRequest) => call.write({ id: request.id!, items: request.keys.map(() => DEFERRED), useCall: false })),
    });
    const client = observed(bare.address);
    cleanups.push(() => client.close());
    const later = laterRecorder();
    const started = Date.now();
    const answer = await client.stream.send({ group: "g", keys: ["a", "b"], deferLoads: true }, within(300), later.later);
    expect(answer.items.map(itemValue)).toEqual(["later", "later"]);
    await waitFor(() => later.record.lost !== undefined, 5_000, "the batch's deadline");
    expect(later.record.lost).toBe("ERR_DEADLINE_EXCEEDED");
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(client.calls).toEqual([]);
  });

  test("a node that stops answers its deferred loads before it ends their stream", async () => {
    const { origin, node, client } = await gatedNode();
    const later = laterRecorder();
    const answer = await client.stream.send({ group: "g", keys: ["slow"], deferLoads: true }, within(5_000), later.later);
    expect(answer.items.map(itemValue)).toEqual(["later"]);
    const closed = node.close();
    origin.open();
    await closed;
    await waitFor(() => client.streams[0]!.statuses.length === 1, 5_000, "the stream to end");
    expect(later.record.waiting).toBe(0);
    expect(later.got.size).toBe(1);
    expect(client.streams[0]!.statuses).toEqual([status.OK]);
  });
});

const ITEM = { value: new Uint8Array(0), expiresAtMs: 0, errorCode: "", errorMessage: "", retryAlone: false };
const ALONE: BatchGetItem = { ...ITEM, retryAlone: true };
const DEFERRED: BatchGetItem = { ...ITEM, deferred: true };
const VALUE = (value: string): BatchGetItem => ({ ...ITEM, value: bytes(value) });
