/**
 * Loader failures are never cached, and a loader that throws or rejects never
 * wedges the key's load: the next get loads again. Over gcache-node processes
 * with an origin that fails first and then answers, and in process for
 * loaders that throw synchronously, reject, or return garbage.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { GCacheError, NotFoundError } from "../../src/errors.ts";
import { Group, type Loader } from "../../src/group.ts";
import { bytes, text } from "../_support/cluster.ts";
import { describeEtcd } from "../_support/etcd.ts";
import { codeOf, httpAddressOf, keysOwnedBy, tally, useFaultCluster } from "./_support.ts";

const NAMES = ["A", "B"];

describeEtcd("fault: origin errors", () => {
  const env = useFaultCluster(NAMES);

  for (const owner of NAMES) {
    test(`origin 500 then 200, key owned by ${owner}: ERR_LOAD_FAILED once, then the value; the failure is not cached`, async () => {
      const key = keysOwnedBy(NAMES, owner, 1, "flaky")[0]!;
      env.origin.behaviour = (k, n) => (k === key && n === 1 ? { status: 500, body: "boom" } : {});
      const first = await env.clients[0]!.get("default", key, { timeoutMs: 2_000 }).then(text, codeOf);
      // One origin request for the failed get: a failed load at the owner is not retried by the caller's node.
      const afterFirst = env.origin.requestsFor(key);
      const second = await env.clients[0]!.get("default", key, { timeoutMs: 2_000 }).then(text, codeOf);
      const third = await env.clients[0]!.get("default", key, { timeoutMs: 2_000 }).then(text, codeOf);
      env.origin.behaviour = () => ({});
      expect([first, second, third]).toEqual(["ERR_LOAD_FAILED", `origin:${key}`, `origin:${key}`]);
      expect([afterFirst, env.origin.requestsFor(key)]).toEqual([1, 2]);
    });

    test(`origin 404 then 200, key owned by ${owner}: not found is not cached either`, async () => {
      const key = keysOwnedBy(NAMES, owner, 1, "appearing")[0]!;
      env.origin.behaviour = (k, n) => (k === key && n === 1 ? { status: 404 } : {});
      const first = await env.clients[0]!.get("default", key, { timeoutMs: 2_000 }).then(text, codeOf);
      const second = await env.clients[0]!.get("default", key, { timeoutMs: 2_000 }).then(text, codeOf);
      env.origin.behaviour = () => ({});
      expect([first, second]).toEqual(["ERR_NOT_FOUND", `origin:${key}`]);
      expect(env.origin.requestsFor(key)).toBe(2);
    });
  }

  test("HTTP gateway: 502 for a failed load, then 200 with the value", async () => {
    const key = keysOwnedBy(NAMES, "B", 1, "flaky-http")[0]!;
    env.origin.behaviour = (k, n) => (k === key && n === 1 ? { status: 503 } : {});
    const url = `http://${httpAddressOf(env.nodes[0]!)}/v1/groups/default/keys/${key}`;
    const first = await fetch(url);
    const firstBody = (await first.json()) as { error: string };
    const second = await fetch(url);
    const secondBody = await second.text();
    env.origin.behaviour = () => ({});
    expect([first.status, firstBody.error]).toEqual([502, "ERR_LOAD_FAILED"]);
    expect([second.status, secondBody]).toEqual([200, `origin:${key}`]);
  });
});

describe("fault: loaders that throw, reject or return garbage (in process)", () => {
  const encoder = new TextEncoder();
  // Each key prefix picks a way to fail; after `healed` every load succeeds.
  let healed = false;
  let calls = 0;
  const loader: Loader = (key) => {
    calls++;
    if (healed) return encoder.encode(`loaded:${key}`);
    if (key.startsWith("sync-throw")) throw new Error("synchronous throw");
    if (key.startsWith("throw-string")) throw "a thrown string";
    if (key.startsWith("reject-later")) return new Promise((_, reject) => setTimeout(() => reject(new Error("late")), 5));
    if (key.startsWith("reject")) return Promise.reject(new Error("rejected"));
    if (key.startsWith("not-found")) throw new NotFoundError("no such key");
    if (key.startsWith("gcache-error")) return Promise.reject(new GCacheError("ERR_UNAVAILABLE", "backend down"));
    if (key.startsWith("null")) return null as unknown as Uint8Array;
    if (key.startsWith("string")) return "not bytes" as unknown as Uint8Array;
    if (key.startsWith("too-large")) return new Uint8Array(2048);
    return encoder.encode(`loaded:${key}`);
  };
  // One load at a time: a load slot leaked by a failure would refuse every later load.
  const group = new Group({ name: "g", loader, maxConcurrentLoads: 1, maxBytes: 1024 * 1024, maxValueBytes: 1024, maxKeyBytes: 64 });
  afterAll(() => group.close());

  const kinds = [
    ["sync-throw", "ERR_LOAD_FAILED"],
    ["throw-string", "ERR_LOAD_FAILED"],
    ["reject", "ERR_LOAD_FAILED"],
    ["reject-later", "ERR_LOAD_FAILED"],
    ["not-found", "ERR_NOT_FOUND"],
    ["gcache-error", "ERR_UNAVAILABLE"],
    ["null", "ERR_LOAD_FAILED"],
    ["string", "ERR_LOAD_FAILED"],
    ["too-large", "ERR_VALUE_TOO_LARGE"],
  ] as const;

  test("every failure reaches every concurrent caller, 200 rounds; then every key loads", async () => {
    healed = false;
    const outcomes: string[] = [];
    for (let round = 0; round < 200; round++) {
      for (const [kind] of kinds) {
        const key = `${kind}-${round % 5}`;
        // 8 callers share each load (singleflight); each must get the failure, none may hang.
        const results = await Promise.all(Array.from({ length: 8 }, () => group.get(key, { timeoutMs: 1_000 }).then(text, codeOf)));
        for (const result of results) outcomes.push(`${kind} ${result}`);
      }
    }
    const counts = tally(outcomes, (o) => o);
    expect(counts).toEqual(Object.fromEntries(kinds.map(([kind, code]) => [`${kind} ${code}`, 200 * 8])));
    // Loads were shared: at most one loader call per round and kind.
    expect(calls).toBeLessThanOrEqual(200 * kinds.length);

    healed = true;
    for (const [kind] of kinds) {
      for (let i = 0; i < 5; i++) {
        const key = `${kind}-${i}`;
        expect(text(await group.get(key, { timeoutMs: 1_000 }))).toBe(`loaded:${key}`);
      }
    }
    const stats = group.stats();
    expect(stats.localLoads).toBe(kinds.length * 5);
  });

  test("a key whose loader never settles frees its slot when the caller gives up", async () => {
    let release: (() => void) | undefined;
    const hanging = new Group({
      name: "h",
      maxConcurrentLoads: 1,
      loader: (key) =>
        key === "hang"
          ? new Promise<Uint8Array>((resolve) => {
              release = () => resolve(encoder.encode("late"));
            })
          : encoder.encode(`loaded:${key}`),
    });
    try {
      expect(await hanging.get("hang", { timeoutMs: 50 }).then(text, codeOf)).toBe("ERR_DEADLINE_EXCEEDED");
      // The slot is free although the loader's promise never settled: another key loads.
      expect(text(await hanging.get("other", { timeoutMs: 1_000 }))).toBe("loaded:other");
      // The abandoned result, arriving late, is not cached: the key loads again.
      release?.();
      expect(await hanging.get("hang", { timeoutMs: 50 }).then(text, codeOf)).toBe("ERR_DEADLINE_EXCEEDED");
      expect(hanging.stats().caches.main.items).toBe(1);
    } finally {
      release?.();
      hanging.close();
    }
  });

  test("sets still work on keys whose loads failed", async () => {
    healed = false;
    expect(await group.get("sync-throw-set", { timeoutMs: 1_000 }).then(text, codeOf)).toBe("ERR_LOAD_FAILED");
    await group.set("sync-throw-set", bytes("stored"));
    expect(text(await group.get("sync-throw-set"))).toBe("stored");
  });
});
