import { afterAll, describe, expect, test } from "bun:test";
import { Server, ServerCredentials, status, type ServiceError } from "@grpc/grpc-js";
import { _CallBatcher, type BatchedCalls, type CallBatcherOptions } from "../../src/cluster/call-batcher.ts";
import { GrpcPeer } from "../../src/cluster/peer.ts";
import { GCacheError } from "../../src/errors.ts";
import type { CallContext } from "../../src/wire/connection.ts";
import { GCACHE_SERVICE, type InvalidateRequest, type Request } from "../../src/wire/messages.ts";
import { nextTurn } from "../_support/wait.ts";

/** Calls that stay open until the test ends them. A plain call answers `one:<item>`. */
class GatedCalls implements BatchedCalls<string, string> {
  singles: string[] = [];
  batches: string[][] = [];
  deadlines: number[] = [];
  /** What the peer answers for an item of a batch: its result, or an error for that item alone. */
  outcome: (item: string) => GCacheError | string = (item) => `many:${item}`;
  private gates: { open(): void; fail(error: unknown): void }[] = [];

  async one(item: string): Promise<string> {
    this.singles.push(item);
    return `one:${item}`;
  }

  async many(items: string[], context: CallContext): Promise<(GCacheError | string)[]> {
    this.batches.push(items);
    this.deadlines.push(context.deadline);
    await new Promise<void>((open, fail) => this.gates.push({ open, fail }));
    return items.map((item) => this.outcome(item));
  }

  release(): void {
    for (const gate of this.gates.splice(0)) gate.open();
  }

  fail(error: unknown): void {
    for (const gate of this.gates.splice(0)) gate.fail(error);
  }
}

const far = () => ({ deadline: Date.now() + 10_000 });
const settled = <T>(promise: Promise<T>) => promise.then(() => "resolved", (error: unknown) => error);
const batcher = (calls: GatedCalls, options: Partial<CallBatcherOptions<string>> = {}) =>
  new _CallBatcher(calls, { maxItems: 512, ...options });

describe("CallBatcher", () => {
  test("at low load an item goes out at the end of the event loop's turn, as a batch of one", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport);
    const done = calls.submit("a", far());
    expect(transport.batches).toEqual([]);
    await nextTurn();
    expect(transport.batches).toEqual([["a"]]);
    transport.release();
    expect(await settled(done)).toBe("resolved");
    expect(transport.singles).toEqual([]);
  });

  test("the items of one turn of the event loop leave together, at most maxItems per call", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport, { maxItems: 3 });
    const all = ["a", "b", "c", "d"].map((key) => calls.submit(key, far()));
    await nextTurn();
    expect(transport.batches).toEqual([["a", "b", "c"]]);
    transport.release();
    await Bun.sleep(0);
    expect(transport.batches).toEqual([["a", "b", "c"], ["d"]]);
    transport.release();
    expect(await Promise.all(all.map(settled))).toEqual(Array(4).fill("resolved"));
  });

  test("items that come while a call is in flight leave together in the next one, at most maxItems per call", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport, { maxItems: 3 });
    const all = [calls.submit("a", far())];
    await nextTurn();
    all.push(...["b", "c", "d", "e"].map((key) => calls.submit(key, far())));
    expect(transport.batches).toEqual([["a"]]);
    transport.release();
    await Bun.sleep(0);
    expect(transport.batches).toEqual([["a"], ["b", "c", "d"]]);
    transport.release();
    await Bun.sleep(0);
    expect(transport.batches).toEqual([["a"], ["b", "c", "d"], ["e"]]);
    transport.release();
    expect(await Promise.all(all.map(settled))).toEqual(["resolved", "resolved", "resolved", "resolved", "resolved"]);
  });

  test("a batch stays within maxBytes; an item larger than that goes alone", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport, { maxBytes: 10, bytesOf: (item) => item.length });
    const all = [calls.submit("first", far())];
    await nextTurn();
    all.push(...["aaaa", "bbbb", "cc", "dddddddddddddddd", "ee"].map((item) => calls.submit(item, far())));
    for (let i = 0; i < 4; i++) {
      transport.release();
      await Bun.sleep(0);
    }
    expect(transport.batches).toEqual([["first"], ["aaaa", "bbbb", "cc"], ["dddddddddddddddd"], ["ee"]]);
    transport.release();
    expect(await Promise.all(all.map(settled))).toEqual(Array(6).fill("resolved"));
  });

  test("an item the peer refuses fails alone; the rest of its batch succeeds", async () => {
    const transport = new GatedCalls();
    const refused = new GCacheError("ERR_VALUE_TOO_LARGE", "too large there");
    transport.outcome = (item) => (item === "bad" ? refused : `many:${item}`);
    const calls = batcher(transport);
    const first = calls.submit("first", far());
    await nextTurn();
    const rest = ["good", "bad", "fine"].map((item) => calls.submit(item, far()));
    transport.release();
    await Bun.sleep(0);
    transport.release();
    expect(await settled(first)).toBe("resolved");
    expect(await Promise.all(rest.map(settled))).toEqual(["resolved", refused, "resolved"]);
  });

  test("a failed call fails every item it carried, and the items behind it still go", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport);
    const first = calls.submit("a", far());
    await nextTurn();
    const second = calls.submit("b", far());
    const unavailable = new GCacheError("ERR_UNAVAILABLE", "peer gone");
    transport.fail(unavailable);
    expect(await settled(first)).toBe(unavailable);
    await Bun.sleep(0);
    expect(transport.batches).toEqual([["a"], ["b"]]);
    transport.release();
    expect(await settled(second)).toBe("resolved");
  });

  test("an item queued behind a stuck call fails by its own deadline; the call lives as long as its most patient item", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport);
    const stuck = calls.submit("a", far());
    await nextTurn();
    const started = Date.now();
    const hasty = calls.submit("b", { deadline: started + 50 });
    const error = await settled(hasty);
    expect(error).toBeInstanceOf(GCacheError);
    expect((error as GCacheError).code).toBe("ERR_DEADLINE_EXCEEDED");
    expect(Date.now() - started).toBeLessThan(2_000);
    // The call stays open for "a", which has time left; "b" does not ride the next call.
    transport.release();
    expect(await settled(stuck)).toBe("resolved");
    await Bun.sleep(0);
    expect(transport.batches).toEqual([["a"]]);

    const patient = calls.submit("c", { deadline: Date.now() + 60_000 });
    await nextTurn();
    const mixed = [patient, calls.submit("d", { deadline: Date.now() + 5_000 }), calls.submit("e", { deadline: Date.now() + 60_000 })];
    transport.release();
    await Bun.sleep(0);
    expect(transport.batches.at(-1)).toEqual(["d", "e"]);
    expect(transport.deadlines.at(-1)! - Date.now()).toBeGreaterThan(30_000);
    transport.release();
    expect(await Promise.all(mixed.map(settled))).toEqual(["resolved", "resolved", "resolved"]);
  });

  test("an item of a turn that did not fit in the call fails by its own deadline while the call is stuck", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport, { maxItems: 2 });
    const started = Date.now();
    const stuck = [calls.submit("a", far()), calls.submit("b", far())];
    const hasty = calls.submit("c", { deadline: started + 50 });
    await nextTurn();
    expect(transport.batches).toEqual([["a", "b"]]);
    const error = await settled(hasty);
    expect((error as GCacheError).code).toBe("ERR_DEADLINE_EXCEEDED");
    expect(Date.now() - started).toBeLessThan(2_000);
    transport.release();
    expect(await Promise.all(stuck.map(settled))).toEqual(["resolved", "resolved"]);
    await Bun.sleep(0);
    expect(transport.batches).toEqual([["a", "b"]]);
  });

  test("an item queued with a deadline beyond what a timer takes (about 24.8 days) waits for its call, not failing at once", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport);
    const first = calls.submit("a", far());
    await nextTurn();
    const distant = calls.submit("b", { deadline: Date.now() + 30 * 24 * 3_600_000 });
    await Bun.sleep(20);
    transport.release();
    expect(await settled(first)).toBe("resolved");
    await Bun.sleep(0);
    transport.release();
    expect(await settled(distant)).toBe("resolved");
    expect(transport.batches).toEqual([["a"], ["b"]]);
  });

  test("each caller gets the answer to its own item, from a batch or from a plain call", async () => {
    const transport = new GatedCalls();
    transport.outcome = (item) => (item === "held" ? "many:yes" : "many:no");
    const calls = batcher(transport);
    const first = calls.submit("first", far());
    await nextTurn();
    const rest = ["held", "gone", "held"].map((item) => calls.submit(item, far()));
    transport.release();
    await Bun.sleep(0);
    transport.release();
    expect(await first).toBe("many:no");
    expect(await Promise.all(rest)).toEqual(["many:yes", "many:no", "many:yes"]);
    const unimplemented = Object.assign(new Error("12 UNIMPLEMENTED"), { code: status.UNIMPLEMENTED }) as ServiceError;
    const refusedBatch = calls.submit("x", far());
    await nextTurn();
    transport.fail(new GCacheError("ERR_INTERNAL", "/pb.GCache/DeleteMany: not here", { cause: unimplemented }));
    expect(await refusedBatch).toBe("one:x");
    expect(await calls.submit("y", far())).toBe("one:y");
  });

  test("a caller whose signal aborts leaves at once with ERR_CANCELLED", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport);
    const controller = new AbortController();
    const leaving = calls.submit("a", { ...far(), signal: controller.signal });
    controller.abort();
    const error = await settled(leaving);
    expect((error as GCacheError).code).toBe("ERR_CANCELLED");
    transport.release();
    const aborted = await settled(calls.submit("b", { ...far(), signal: controller.signal }));
    expect((aborted as GCacheError).code).toBe("ERR_CANCELLED");
  });

  test("a peer without the batched method gets plain calls, for the batch that found out and from then on", async () => {
    const transport = new GatedCalls();
    const calls = batcher(transport);
    const first = calls.submit("a", far());
    await nextTurn();
    const queued = calls.submit("b", far());
    const unimplemented = Object.assign(new Error("12 UNIMPLEMENTED"), { code: status.UNIMPLEMENTED }) as ServiceError;
    transport.fail(new GCacheError("ERR_INTERNAL", "/pb.GCache/InvalidateMany: not here", { cause: unimplemented }));
    expect(await Promise.all([settled(first), settled(queued)])).toEqual(["resolved", "resolved"]);
    expect(await settled(calls.submit("c", far()))).toBe("resolved");
    expect(transport.singles).toEqual(["a", "b", "c"]);
    expect(transport.batches).toEqual([["a"]]);
  });
});

describe("GrpcPeer writes over gRPC", () => {
  const servers: Server[] = [];
  const peers: GrpcPeer[] = [];
  afterAll(async () => {
    for (const peer of peers) peer.close();
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.tryShutdown(() => resolve()))));
  });

  test("an older node that has only Invalidate, Set and Delete still drops every key, stores every value and deletes every key", async () => {
    const seen: string[] = [];
    const stored: string[] = [];
    const deleted: string[] = [];
    const server = new Server();
    servers.push(server);
    server.addService({ Invalidate: GCACHE_SERVICE.Invalidate, Set: GCACHE_SERVICE.Set, Delete: GCACHE_SERVICE.Delete }, {
      Invalidate: (call: { request: InvalidateRequest }, callback: (error: null, response: object) => void) => {
        seen.push(call.request.key);
        callback(null, {});
      },
      Set: (call: { request: Request }, callback: (error: null, response: object) => void) => {
        stored.push(`${call.request.key}=${new TextDecoder().decode(call.request.value)}@${call.request.expiresAtMs}`);
        callback(null, { value: new Uint8Array(0), expiresAtMs: 0, unreachablePeers: [] });
      },
      Delete: (call: { request: Request }, callback: (error: null, response: object) => void) => {
        deleted.push(call.request.key);
        callback(null, { value: call.request.key !== "missing", unreachablePeers: [] });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    const peer = new GrpcPeer("old", `127.0.0.1:${port}`);
    peers.push(peer);
    const context = { deadline: Date.now() + 5_000 };
    await Promise.all(["k1", "k2", "k3"].map((key) => peer.invalidate("g", key, context)));
    await peer.invalidate("g", "k4", context);
    expect(seen.sort()).toEqual(["k1", "k2", "k3", "k4"]);
    const value = (text: string) => new TextEncoder().encode(text);
    await Promise.all(["s1", "s2", "s3"].map((key, i) => peer.set("g", key, value(`v${i}`), 1_000 + i, context)));
    await peer.set("g", "s4", value("v3"), 0, context);
    expect(stored.sort()).toEqual(["s1=v0@1000", "s2=v1@1001", "s3=v2@1002", "s4=v3@0"]);
    expect(await Promise.all(["d1", "missing", "d3"].map((key) => peer.delete("g", key, context)))).toEqual([true, false, true]);
    expect(await peer.delete("g", "missing", context)).toBe(false);
    expect(deleted.sort()).toEqual(["d1", "d3", "missing", "missing"]);
  });
});
