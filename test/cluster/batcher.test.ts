import { describe, expect, test } from "bun:test";
import { _GetBatcher, type BatchTransport } from "../../src/cluster/batcher.ts";
import type { Entry } from "../../src/cluster/peer.ts";
import { GCacheError } from "../../src/errors.ts";
import type { CallContext } from "../../src/wire/connection.ts";
import { bytes, text, startCluster, keyOwnedBy } from "../_support/cluster.ts";
import { nextTurn } from "../_support/wait.ts";

/** A transport whose calls stay open until the test releases them. */
class GatedTransport implements BatchTransport {
  singles: string[] = [];
  batches: string[][] = [];
  signals: AbortSignal[] = [];
  private gates: (() => void)[] = [];
  /** What a batch answers for a key; a key asked alone always gets its value. */
  answer: (key: string) => Entry | GCacheError | "alone" = (key) => value(key);

  async getOne(key: string, context: CallContext): Promise<Entry> {
    this.singles.push(key);
    await this.gate(context);
    return value(key);
  }

  async getMany(keys: string[], context: CallContext) {
    this.batches.push(keys);
    await this.gate(context);
    return keys.map((key) => this.answer(key));
  }

  release(): void {
    for (const open of this.gates.splice(0)) open();
  }

  private gate(context: CallContext): Promise<void> {
    if (context.signal !== undefined) this.signals.push(context.signal);
    return new Promise((resolve) => this.gates.push(resolve));
  }
}

const value = (key: string): Entry => ({ value: bytes(`v:${key}`), expiresAt: 0 });
const far = () => ({ deadline: Date.now() + 10_000 });
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("GetBatcher", () => {
  test("gets of one turn of the event loop leave together, at the end of it", async () => {
    const transport = new GatedTransport();
    const batcher = new _GetBatcher(transport, 4, 100);
    const results = [batcher.get("a", far()), batcher.get("b", far())];
    expect(transport.batches).toEqual([]);
    await nextTurn();
    expect(transport.batches).toEqual([["a", "b"]]);
    transport.release();
    expect((await Promise.all(results)).map((e) => text(e.value))).toEqual(["v:a", "v:b"]);
    expect(transport.singles).toEqual([]);
  });

  test("at low load a get goes out on its own turn, as a batch of one, while another is in flight", async () => {
    const transport = new GatedTransport();
    const batcher = new _GetBatcher(transport, 4, 100);
    const a = batcher.get("a", far());
    await nextTurn();
    const b = batcher.get("b", far());
    await nextTurn();
    expect(transport.batches).toEqual([["a"], ["b"]]);
    transport.release();
    expect([text((await a).value), text((await b).value)]).toEqual(["v:a", "v:b"]);
  });

  test("while the slots are busy, gets queue and leave together as one batch", async () => {
    const transport = new GatedTransport();
    const batcher = new _GetBatcher(transport, 2, 100);
    const keys = Array.from({ length: 52 }, (_, i) => `k${i}`);
    const results = [batcher.get(keys[0]!, far())];
    await nextTurn();
    results.push(batcher.get(keys[1]!, far()));
    await nextTurn();
    for (const key of keys.slice(2)) results.push(batcher.get(key, far()));
    await nextTurn();
    expect(transport.batches).toEqual([["k0"], ["k1"]]);
    transport.release();
    await settle();
    // Both slots freed: the 50 queued keys leave as one batch (under maxBatch).
    expect(transport.batches.slice(2)).toEqual([keys.slice(2)]);
    transport.release();
    const values = (await Promise.all(results)).map((e) => text(e.value));
    expect(values).toEqual(keys.map((key) => `v:${key}`));
  });

  test("one turn's gets beyond maxBatch fill the free slots in batches of maxBatch", async () => {
    const transport = new GatedTransport();
    const batcher = new _GetBatcher(transport, 2, 3);
    const keys = Array.from({ length: 8 }, (_, i) => `k${i}`);
    const results = keys.map((key) => batcher.get(key, far()));
    await nextTurn();
    expect(transport.batches).toEqual([keys.slice(0, 3), keys.slice(3, 6)]);
    transport.release();
    await settle();
    expect(transport.batches.slice(2)).toEqual([keys.slice(6)]);
    transport.release();
    expect((await Promise.all(results)).map((e) => text(e.value))).toEqual(keys.map((key) => `v:${key}`));
  });

  test("item errors reach only their caller; 'ask alone' items are fetched alone, outside the slots", async () => {
    const transport = new GatedTransport();
    const batcher = new _GetBatcher(transport, 1, 100);
    transport.answer = (key) => (key === "missing" ? new GCacheError("ERR_NOT_FOUND", "nope") : key.startsWith("load") ? "alone" : value(key));
    const first = batcher.get("first", far());
    await nextTurn();
    const queued = ["ok", "missing", "load-1", "load-2"].map((key) =>
      batcher.get(key, far()).then(
        (e) => text(e.value),
        (e: GCacheError) => e.code,
      ),
    );
    transport.release();
    await settle();
    expect(transport.batches).toEqual([["first"], ["ok", "missing", "load-1", "load-2"]]);
    transport.release();
    await settle();
    expect(transport.singles).toEqual(["load-1", "load-2"]);
    // The slow keys travel alone and hold no slot: a later get goes out at once.
    const later = batcher.get("later", far());
    await nextTurn();
    expect(transport.batches.at(-1)).toEqual(["later"]);
    transport.release();
    expect(text((await first).value)).toBe("v:first");
    expect(await Promise.all(queued)).toEqual(["v:ok", "ERR_NOT_FOUND", "v:load-1", "v:load-2"]);
    expect(text((await later).value)).toBe("v:later");
  });

  test("an aborted caller leaves alone; the batch RPC is cancelled once every caller left", async () => {
    const transport = new GatedTransport();
    const batcher = new _GetBatcher(transport, 1, 100);
    const first = batcher.get("first", far());
    await nextTurn();
    const a = new AbortController();
    const b = new AbortController();
    const calls = [batcher.get("x", { ...far(), signal: a.signal }), batcher.get("y", { ...far(), signal: b.signal })].map((p) =>
      p.catch((e: Error) => e.message),
    );
    transport.release();
    await first;
    await settle();
    expect(transport.batches).toEqual([["first"], ["x", "y"]]);
    const rpcSignal = transport.signals.at(-1)!;
    a.abort(new Error("x gave up"));
    expect(rpcSignal.aborted).toBe(false);
    b.abort(new Error("y gave up"));
    expect(rpcSignal.aborted).toBe(true);
    expect(await Promise.all(calls)).toEqual(["x gave up", "y gave up"]);
  });

  test("a batch with a caller that brings no signal is never cancelled: the others leave alone", async () => {
    const transport = new GatedTransport();
    const batcher = new _GetBatcher(transport, 1, 100);
    const first = batcher.get("first", far());
    await nextTurn();
    const a = new AbortController();
    const leaving = batcher.get("x", { ...far(), signal: a.signal }).catch((e: Error) => e.message);
    const staying = batcher.get("y", far());
    transport.release();
    await first;
    await settle();
    expect(transport.batches).toEqual([["first"], ["x", "y"]]);
    // The first batch held only a signal-less caller too: no RPC was given a signal.
    expect(transport.signals).toEqual([]);
    a.abort(new Error("x gave up"));
    expect(await leaving).toBe("x gave up");
    transport.release();
    expect(text((await staying).value)).toBe("v:y");
  });

  test("a get whose deadline passes while it queues is answered DEADLINE_EXCEEDED and never sent", async () => {
    const transport = new GatedTransport();
    const batcher = new _GetBatcher(transport, 1, 100);
    const first = batcher.get("first", far());
    await nextTurn();
    const hasty = batcher.get("hasty", { deadline: Date.now() + 20 }).catch((e: GCacheError) => e.code);
    const patient = batcher.get("patient", far());
    await new Promise((resolve) => setTimeout(resolve, 40));
    transport.release();
    await first;
    await settle();
    expect(transport.batches).toEqual([["first"], ["patient"]]);
    expect(await hasty).toBe("ERR_DEADLINE_EXCEEDED");
    transport.release();
    expect(text((await patient).value)).toBe("v:patient");
  });

  test("a failed batch RPC fails each of its callers", async () => {
    const transport = new GatedTransport();
    const batcher = new _GetBatcher(transport, 1, 100);
    const first = batcher.get("first", far());
    await nextTurn();
    transport.getMany = async () => {
      throw new GCacheError("ERR_UNAVAILABLE", "connection reset");
    };
    const calls = ["x", "y"].map((key) => batcher.get(key, far()).catch((e: GCacheError) => e.code));
    transport.release();
    await first;
    expect(await Promise.all(calls)).toEqual(["ERR_UNAVAILABLE", "ERR_UNAVAILABLE"]);
  });
});

test("over real gRPC, 500 concurrent forwards to one owner all get their own values", async () => {
  const loads: string[] = [];
  const cluster = await startCluster(["A", "B"], () => [
    {
      name: "g",
      hotCacheShare: 0,
      loader: async (key) => {
        loads.push(key);
        return bytes(`origin:${key}`);
      },
    },
  ]);
  try {
    const a = cluster.byName("A");
    const keys = Array.from({ length: 500 }, (_, i) => keyOwnedBy(a, "B", `fwd${i}`));
    const values = await Promise.all(keys.map((key) => cluster.clients[0]!.get("g", key)));
    expect(values.map(text)).toEqual(keys.map((key) => `origin:${key}`));
    expect(new Set(loads).size).toBe(500);
    const stats = a.group("g")!.stats();
    expect(stats.peerLoads).toBe(500);
    expect(stats.fallbackLoads).toBe(0);
  } finally {
    await cluster.close();
  }
});

test("over real gRPC, a slow load at the owner holds up no other key, and a failed one is not loaded twice", async () => {
  let slowLoads = 0;
  let failedLoads = 0;
  let releaseSlow: () => void = () => {};
  const slowGate = new Promise<void>((resolve) => (releaseSlow = resolve));
  const cluster = await startCluster(["A", "B"], () => [
    {
      name: "g",
      hotCacheShare: 0,
      loader: async (key) => {
        if (key.startsWith("slow")) {
          slowLoads++;
          await slowGate;
        }
        if (key.startsWith("broken")) {
          failedLoads++;
          throw new Error("origin is down");
        }
        return bytes(`origin:${key}`);
      },
    },
  ]);
  try {
    const a = cluster.byName("A");
    const slowKey = keyOwnedBy(a, "B", "slow");
    const brokenKey = keyOwnedBy(a, "B", "broken");
    const keys = Array.from({ length: 50 }, (_, i) => keyOwnedBy(a, "B", `fast${i}`));
    const slow = cluster.clients[0]!.get("g", slowKey, { timeoutMs: 10_000 });
    // The fast keys queue behind the slow key's batch and come back while its load still waits.
    const fast = await Promise.all(keys.map((key) => cluster.clients[0]!.get("g", key, { timeoutMs: 10_000 })));
    expect(fast.map(text)).toEqual(keys.map((key) => `origin:${key}`));
    expect(slowLoads).toBe(1);
    releaseSlow();
    expect(text(await slow)).toBe(`origin:${slowKey}`);
    expect(slowLoads).toBe(1);

    const failure = await cluster.clients[0]!.get("g", brokenKey).then(
      () => "no error",
      (error: GCacheError) => error.code,
    );
    expect(failure).toBe("ERR_LOAD_FAILED");
    expect(failedLoads).toBe(1);
  } finally {
    releaseSlow();
    await cluster.close();
  }
});
