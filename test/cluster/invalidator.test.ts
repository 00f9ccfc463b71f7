import { afterAll, describe, expect, test } from "bun:test";
import { Server, ServerCredentials, status, type ServiceError } from "@grpc/grpc-js";
import { _InvalidateBatcher, type InvalidateTransport } from "../../src/cluster/invalidator.ts";
import { GrpcPeer } from "../../src/cluster/peer.ts";
import { GCacheError } from "../../src/errors.ts";
import type { CallContext } from "../../src/wire/connection.ts";
import { GCACHE_SERVICE, type InvalidateRequest } from "../../src/wire/messages.ts";

/** A transport whose calls stay open until the test ends them. */
class GatedTransport implements InvalidateTransport {
  singles: string[] = [];
  batches: string[][] = [];
  deadlines: number[] = [];
  private gates: { open(): void; fail(error: unknown): void }[] = [];

  async one(key: string): Promise<void> {
    this.singles.push(key);
  }

  many(keys: string[], context: CallContext): Promise<void> {
    this.batches.push(keys);
    this.deadlines.push(context.deadline);
    return new Promise((open, fail) => this.gates.push({ open, fail }));
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

describe("InvalidateBatcher", () => {
  test("at low load a key goes out at once, as a batch of one", async () => {
    const transport = new GatedTransport();
    const batcher = new _InvalidateBatcher(transport);
    const done = batcher.invalidate("a", far());
    expect(transport.batches).toEqual([["a"]]);
    transport.release();
    expect(await settled(done)).toBe("resolved");
    expect(transport.singles).toEqual([]);
  });

  test("keys that come while a call is in flight leave together in the next one, at most maxBatch per call", async () => {
    const transport = new GatedTransport();
    const batcher = new _InvalidateBatcher(transport, 3);
    const all = ["a", "b", "c", "d", "e"].map((key) => batcher.invalidate(key, far()));
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

  test("a failed call fails every key it carried, and the keys behind it still go", async () => {
    const transport = new GatedTransport();
    const batcher = new _InvalidateBatcher(transport);
    const first = batcher.invalidate("a", far());
    const second = batcher.invalidate("b", far());
    const unavailable = new GCacheError("ERR_UNAVAILABLE", "peer gone");
    transport.fail(unavailable);
    expect(await settled(first)).toBe(unavailable);
    await Bun.sleep(0);
    expect(transport.batches).toEqual([["a"], ["b"]]);
    transport.release();
    expect(await settled(second)).toBe("resolved");
  });

  test("a key queued behind a stuck call fails by its own deadline; the call lives as long as its most patient key", async () => {
    const transport = new GatedTransport();
    const batcher = new _InvalidateBatcher(transport);
    const stuck = batcher.invalidate("a", far());
    const started = Date.now();
    const hasty = batcher.invalidate("b", { deadline: started + 50 });
    const error = await settled(hasty);
    expect(error).toBeInstanceOf(GCacheError);
    expect((error as GCacheError).code).toBe("ERR_DEADLINE_EXCEEDED");
    expect(Date.now() - started).toBeLessThan(2_000);
    // The call stays open for "a", which has time left; "b" does not ride the next call.
    transport.release();
    expect(await settled(stuck)).toBe("resolved");
    await Bun.sleep(0);
    expect(transport.batches).toEqual([["a"]]);

    const patient = batcher.invalidate("c", { deadline: Date.now() + 60_000 });
    const mixed = [patient, batcher.invalidate("d", { deadline: Date.now() + 5_000 }), batcher.invalidate("e", { deadline: Date.now() + 60_000 })];
    transport.release();
    await Bun.sleep(0);
    expect(transport.batches.at(-1)).toEqual(["d", "e"]);
    expect(transport.deadlines.at(-1)! - Date.now()).toBeGreaterThan(30_000);
    transport.release();
    expect(await Promise.all(mixed.map(settled))).toEqual(["resolved", "resolved", "resolved"]);
  });

  test("a caller whose signal aborts leaves at once with ERR_CANCELLED", async () => {
    const transport = new GatedTransport();
    const batcher = new _InvalidateBatcher(transport);
    const controller = new AbortController();
    const leaving = batcher.invalidate("a", { ...far(), signal: controller.signal });
    controller.abort();
    const error = await settled(leaving);
    expect((error as GCacheError).code).toBe("ERR_CANCELLED");
    transport.release();
    const aborted = await settled(batcher.invalidate("b", { ...far(), signal: controller.signal }));
    expect((aborted as GCacheError).code).toBe("ERR_CANCELLED");
  });

  test("a peer without InvalidateMany gets plain Invalidate calls, for the batch that found out and from then on", async () => {
    const transport = new GatedTransport();
    const batcher = new _InvalidateBatcher(transport);
    const first = batcher.invalidate("a", far());
    const queued = batcher.invalidate("b", far());
    const unimplemented = Object.assign(new Error("12 UNIMPLEMENTED"), { code: status.UNIMPLEMENTED }) as ServiceError;
    transport.fail(new GCacheError("ERR_INTERNAL", "/pb.GCache/InvalidateMany: not here", { cause: unimplemented }));
    expect(await Promise.all([settled(first), settled(queued)])).toEqual(["resolved", "resolved"]);
    expect(await settled(batcher.invalidate("c", far()))).toBe("resolved");
    expect(transport.singles).toEqual(["a", "b", "c"]);
    expect(transport.batches).toEqual([["a"]]);
  });
});

describe("GrpcPeer invalidations over gRPC", () => {
  const servers: Server[] = [];
  const peers: GrpcPeer[] = [];
  afterAll(async () => {
    for (const peer of peers) peer.close();
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.tryShutdown(() => resolve()))));
  });

  test("an older node that has only Invalidate still drops every key", async () => {
    const seen: string[] = [];
    const server = new Server();
    servers.push(server);
    server.addService({ Invalidate: GCACHE_SERVICE.Invalidate }, {
      Invalidate: (call: { request: InvalidateRequest }, callback: (error: null, response: object) => void) => {
        seen.push(call.request.key);
        callback(null, {});
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
  });
});
