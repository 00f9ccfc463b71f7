import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import type { Etcd3 } from "etcd3";
import { EtcdDiscovery, type EtcdDiscoveryOptions } from "../../src/cluster/discovery.ts";
import type { MemberSpec } from "../../src/cluster/picker.ts";
import { GCacheError } from "../../src/errors.ts";
import type { LogFields, Logger } from "../../src/log.ts";
import { Registry } from "../../src/registry/registry.ts";
import { describeEtcd, freePort, startEtcd, type EtcdServer } from "../_support/etcd.ts";
import { waitFor } from "../_support/wait.ts";

interface Line {
  level: "debug" | "info" | "warn" | "error";
  message: string;
  fields?: LogFields;
}

function captureLogger(): Logger & { lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: Line["level"]) => (message: string, fields?: LogFields) => {
    lines.push({ level, message, ...(fields === undefined ? {} : { fields }) });
  };
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

function names(members: readonly MemberSpec[] | undefined): string[] {
  return (members ?? []).map((m) => m.name);
}

describeEtcd("EtcdDiscovery against etcd", () => {
  let etcd: EtcdServer;
  const cleanups: (() => Promise<void>)[] = [];
  let prefixes = 0;
  let prefix = "";

  beforeAll(async () => {
    etcd = await startEtcd();
  }, 30_000);

  afterAll(async () => {
    await etcd?.stop();
  }, 15_000);

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  }, 15_000);

  function admin(): Etcd3 {
    return etcd.client();
  }

  function freshPrefix(): string {
    prefix = `/disc-${++prefixes}`;
    return prefix;
  }

  function keyOf(name: string): string {
    return `${prefix}/gcache/${name}`;
  }

  function value(name: string, port: number, weight = 1): string {
    return JSON.stringify({ name, addr: `127.0.0.1:${port}`, weight, version: "test" });
  }

  /** A started discovery recording every update. */
  async function discover(options: Partial<EtcdDiscoveryOptions> = {}) {
    const updates: MemberSpec[][] = [];
    const discovery = new EtcdDiscovery({
      etcd: { endpoints: [etcd.endpoint] },
      prefix,
      onMembers: (members) => updates.push(members),
      ...options,
    });
    cleanups.push(() => discovery.close());
    await discovery.start();
    return {
      discovery,
      updates,
      latest: () => updates[updates.length - 1],
      waitForNames: (expected: string[], timeoutMs = 5_000) =>
        waitFor(() => JSON.stringify(names(updates[updates.length - 1])) === JSON.stringify(expected), timeoutMs, `members ${expected.join(",")}`),
    };
  }

  function registry(name: string, port: number): Registry {
    const created = new Registry({ etcd: { endpoints: [etcd.endpoint] }, prefix, name, addr: `127.0.0.1:${port}`, weight: port - 7000 });
    cleanups.push(() => created.close());
    return created;
  }

  test("lists registered nodes, follows registrations and removals, and stops on close", async () => {
    freshPrefix();
    const a = registry("a", 7001);
    await a.register();
    const watched = await discover();
    // start() resolves after the first call, which carries the initial listing.
    expect(watched.updates).toHaveLength(1);
    expect(watched.latest()).toEqual([{ name: "a", address: "127.0.0.1:7001", weight: 1 }]);

    const c = registry("c", 7003);
    const b = registry("b", 7002);
    await Promise.all([c.register(), b.register()]);
    await watched.waitForNames(["a", "b", "c"]);
    expect(watched.latest()).toEqual([
      { name: "a", address: "127.0.0.1:7001", weight: 1 },
      { name: "b", address: "127.0.0.1:7002", weight: 2 },
      { name: "c", address: "127.0.0.1:7003", weight: 3 },
    ]);
    expect(watched.discovery.members()).toEqual(watched.latest()!);

    await b.deregister();
    await watched.waitForNames(["a", "c"]);
    await a.close();
    await watched.waitForNames(["c"]);
    // A plain delete (the event carries only the key) removes the member too.
    await admin().put(keyOf("x")).value(value("x", 7009));
    await watched.waitForNames(["c", "x"]);
    await admin().delete().key(keyOf("x"));
    await watched.waitForNames(["c"]);

    // After close, changes reach a second discovery but not the closed one.
    const witness = await discover();
    await watched.discovery.close();
    const seen = watched.updates.length;
    await admin().put(keyOf("d")).value(value("d", 7004));
    await witness.waitForNames(["c", "d"]);
    expect(watched.updates).toHaveLength(seen);
  }, 20_000);

  test("a node whose lease expires (no keepalive, as after SIGKILL) is removed within TTL + 1 s", async () => {
    freshPrefix();
    const watched = await discover();
    const ttlSeconds = 2;
    const grantedAt = performance.now();
    const dying = admin().lease(ttlSeconds, { autoKeepAlive: false });
    await dying.put(keyOf("dying")).value(value("dying", 7005));
    await watched.waitForNames(["dying"]);
    await watched.waitForNames([], (ttlSeconds + 1) * 1_000);
    expect(performance.now() - grantedAt).toBeLessThan((ttlSeconds + 1) * 1_000);
    dying.release();
  }, 20_000);

  test("a burst of 20 registrations is coalesced into a few updates with the right final set", async () => {
    freshPrefix();
    const watched = await discover();
    const before = watched.updates.length;
    const expected: string[] = [];
    const puts: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      const name = `n${String(i).padStart(2, "0")}`;
      expected.push(name);
      puts.push(admin().put(keyOf(name)).value(value(name, 7100 + i)).exec());
    }
    await Promise.all(puts);
    await watched.waitForNames(expected);
    const burstUpdates = watched.updates.length - before;
    expect(burstUpdates).toBeGreaterThanOrEqual(1);
    expect(burstUpdates).toBeLessThan(20);
    expect(watched.latest()!.map((m) => m.address)).toEqual(expected.map((_, i) => `127.0.0.1:${7100 + i}`));
  }, 20_000);

  test("malformed values are ignored with a warning; a throwing onMembers does not stop discovery", async () => {
    freshPrefix();
    await admin().put(keyOf("bad-json")).value("{not json");
    await admin().put(keyOf("no-addr")).value(JSON.stringify({ name: "no-addr" }));
    await admin().put(keyOf("wrong-name")).value(value("other", 7006));
    await admin().put(keyOf("bad-weight")).value(JSON.stringify({ name: "bad-weight", addr: "127.0.0.1:7007", weight: -2 }));
    await admin().put(`${keyOf("nested")}/deeper`).value(value("deeper", 7008));
    await admin().put(keyOf("good")).value(value("good", 7009));
    const logger = captureLogger();
    const updates: MemberSpec[][] = [];
    const discovery = new EtcdDiscovery({
      etcd: { endpoints: [etcd.endpoint] },
      prefix,
      logger,
      onMembers: (members) => {
        updates.push(members);
        throw new Error("listener bug");
      },
    });
    cleanups.push(() => discovery.close());
    await discovery.start();
    expect(names(updates[0])).toEqual(["good"]);
    expect(logger.lines.filter((l) => l.level === "warn" && l.message.includes("malformed"))).toHaveLength(4);
    expect(logger.lines.some((l) => l.message === "onMembers threw")).toBe(true);

    // A valid value replacing a malformed one is picked up; a malformed one replacing a valid one removes it.
    await admin().put(keyOf("no-addr")).value(value("no-addr", 7010));
    await waitFor(() => JSON.stringify(names(updates[updates.length - 1])) === '["good","no-addr"]', 5_000, "fixed value");
    await admin().put(keyOf("good")).value("garbage");
    await waitFor(() => JSON.stringify(names(updates[updates.length - 1])) === '["no-addr"]', 5_000, "broken value dropped");
  }, 20_000);

  test("changes are still followed after the history is compacted past the watch revision", async () => {
    freshPrefix();
    const logger = captureLogger();
    const watched = await discover({ logger });
    await admin().put(keyOf("a")).value(value("a", 7001));
    await admin().put(keyOf("b")).value(value("b", 7002));
    await watched.waitForNames(["a", "b"]);
    await admin().delete().key(keyOf("a"));
    await watched.waitForNames(["b"]);

    await etcd.compact(await etcd.revision());

    await admin().put(keyOf("c")).value(value("c", 7003));
    await admin().delete().key(keyOf("b"));
    await watched.waitForNames(["c"]);
    expect(watched.latest()).toEqual([{ name: "c", address: "127.0.0.1:7003", weight: 1 }]);
  }, 20_000);

  test(
    "a watch resuming at a compacted revision re-lists and watches again",
    async () => {
      freshPrefix();
      const logger = captureLogger();
      await admin().put(keyOf("a")).value(value("a", 7001));
      const watched = await discover({ logger });
      expect(names(watched.latest())).toEqual(["a"]);

      // Move etcd to a port the discovery does not know, change things there and compact them away.
      const hidden = await freePort();
      await etcd.restart({ clientPort: hidden });
      await admin().put(keyOf("b")).value(value("b", 7002));
      await admin().delete().key(keyOf("a"));
      await admin().put(keyOf("c")).value(value("c", 7003));
      await etcd.compact(await etcd.revision());
      expect(names(watched.latest())).toEqual(["a"]);

      // Back on its port: the watch's next revision is gone, so discovery must list again.
      await etcd.restart();
      await watched.waitForNames(["b", "c"], 15_000);
      expect(logger.lines.some((l) => l.message === "re-listing members")).toBe(true);

      // And the new watch follows later changes.
      await admin().put(keyOf("d")).value(value("d", 7004));
      await watched.waitForNames(["b", "c", "d"]);
    },
    40_000,
  );
});

test("EtcdDiscovery.start() fails with ERR_UNAVAILABLE when etcd cannot be reached; bad options are refused", async () => {
  const port = await freePort();
  const discovery = new EtcdDiscovery({
    etcd: { endpoints: [`http://127.0.0.1:${port}`], requestTimeoutMs: 1_000 },
    onMembers: () => undefined,
  });
  const error = await discovery.start().catch((e: unknown) => e);
  await discovery.close();
  expect(error).toBeInstanceOf(GCacheError);
  expect((error as GCacheError).code).toBe("ERR_UNAVAILABLE");

  const invalid: [Partial<EtcdDiscoveryOptions>, RegExp][] = [
    [{ etcd: { endpoints: [] } }, /endpoints/],
    [{ etcd: { endpoints: ["http://127.0.0.1"] } }, /port/],
    [{ etcd: { endpoints: ["ftp://127.0.0.1:2379"] } }, /http/],
    [{ etcd: { endpoints: ["http://127.0.0.1:2379", "https://127.0.0.1:2380"] } }, /mix/],
    [{ coalesceMs: -1 }, /coalesceMs/],
    [{ prefix: "no-slash" }, /prefix/],
    [{ onMembers: undefined }, /onMembers/],
  ];
  for (const [override, message] of invalid) {
    let caught: unknown;
    try {
      new EtcdDiscovery({ etcd: { endpoints: ["http://127.0.0.1:2379"] }, onMembers: () => undefined, ...override } as EtcdDiscoveryOptions);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(GCacheError);
    expect((caught as GCacheError).code).toBe("ERR_INVALID_OPTION");
    expect((caught as GCacheError).message).toMatch(message);
  }
}, 20_000);
