import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Etcd3 } from "etcd3";
import { GCacheError } from "../../src/errors.ts";
import type { LogFields, Logger } from "../../src/log.ts";
import { DEFAULT_ETCD_OPTIONS, _etcdClientOptions, type EtcdOptions } from "../../src/registry/etcd.ts";
import { Registry, type LossInfo, type RegistrationInfo, type RegistryOptions } from "../../src/registry/registry.ts";
import { describeEtcd, startEtcd, type EtcdServer } from "../_support/etcd.ts";
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

/** Records a registry's events. */
function record(registry: Registry) {
  const events = {
    registered: [] as RegistrationInfo[],
    lost: [] as LossInfo[],
    reregistered: [] as (RegistrationInfo & { downMs: number })[],
    errors: [] as GCacheError[],
  };
  registry.on("registered", (info) => events.registered.push(info));
  registry.on("lost", (info) => events.lost.push(info));
  registry.on("reregistered", (info) => events.reregistered.push(info));
  registry.on("error", (error) => events.errors.push(error));
  return events;
}

describeEtcd("Registry against etcd", () => {
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

  /** A client of the test's own, for inspecting and tampering. */
  function admin(): Etcd3 {
    return etcd.client();
  }

  function registry(options: Partial<RegistryOptions> & { name: string }): Registry {
    const created = new Registry({ etcd: { endpoints: [etcd.endpoint] }, prefix, addr: "127.0.0.1:7001", ...options });
    cleanups.push(() => created.close());
    return created;
  }

  /** Each test registers under its own prefix in the shared server. */
  function freshPrefix(): string {
    prefix = `/test-${++prefixes}`;
    return prefix;
  }

  async function leaseIds(): Promise<string[]> {
    const response = await admin().leaseClient.leaseLeases({});
    return response.leases.map((lease) => lease.ID).sort();
  }

  test("register stores the JSON value on a lease; deregister removes the key at once", async () => {
    freshPrefix();
    const node = registry({ name: "node-a", addr: "127.0.0.1:7001", httpAddr: "127.0.0.1:8001", weight: 2, version: "9.9.9", ttlSeconds: 5 });
    const events = record(node);
    const info = await node.register();

    expect(node.key).toBe(`${prefix}/gcache/node-a`);
    expect(node.state).toBe("registered");
    expect(events.registered).toHaveLength(1);
    const kv = (await admin().get(node.key).exec()).kvs[0];
    expect(kv).toBeDefined();
    expect(JSON.parse(kv!.value.toString())).toEqual({ name: "node-a", addr: "127.0.0.1:7001", httpAddr: "127.0.0.1:8001", weight: 2, version: "9.9.9" });
    expect(kv!.lease).not.toBe("0");
    expect(BigInt(kv!.lease).toString(16)).toBe(info.leaseId);
    expect(node.leaseId).toBe(info.leaseId);
    const ttl = await admin().leaseClient.leaseTimeToLive({ ID: kv!.lease });
    expect(Number(ttl.grantedTTL)).toBe(5);
    expect(Number(ttl.TTL)).toBeGreaterThan(0);

    await node.deregister();
    // No waiting: the lease is revoked before deregister resolves.
    expect(await admin().get(node.key).string()).toBeNull();
    expect(await leaseIds()).not.toContain(kv!.lease);
    expect(node.state).toBe("idle");
    await Promise.all([node.deregister(), node.close(), node.close()]);
    expect(node.state).toBe("closed");
    const afterClose = await node.register().catch((error: unknown) => error);
    expect(afterClose).toBeInstanceOf(GCacheError);
    expect((afterClose as GCacheError).code).toBe("ERR_CLOSED");
  }, 20_000);

  test("uses the default prefix and service", async () => {
    const node = new Registry({ etcd: { endpoints: [etcd.endpoint] }, name: "defaults", addr: "127.0.0.1:7001" });
    cleanups.push(() => node.close());
    expect(node.key).toBe("/services/gcache/defaults");
    await node.register();
    const value = JSON.parse((await admin().get(node.key).string()) ?? "null") as Record<string, unknown>;
    expect(value.weight).toBe(1);
    expect(typeof value.version).toBe("string");
    expect(value.httpAddr).toBeUndefined();
    await node.close();
    expect(await admin().get(node.key).string()).toBeNull();
  }, 20_000);

  test("a second node with the same name is refused with ERR_CONFLICT and the first is untouched", async () => {
    freshPrefix();
    const first = registry({ name: "dup", addr: "127.0.0.1:7001" });
    await first.register();
    const before = (await admin().get(first.key).exec()).kvs[0]!;
    const leasesBefore = await leaseIds();

    const second = registry({ name: "dup", addr: "127.0.0.1:7002" });
    const error = await second.register().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GCacheError);
    expect((error as GCacheError).code).toBe("ERR_CONFLICT");
    expect((error as GCacheError).message).toContain('"dup"');
    expect((error as GCacheError).message).toContain("127.0.0.1:7001");
    expect(second.state).toBe("idle");

    const after = (await admin().get(first.key).exec()).kvs[0]!;
    expect(after.value.toString()).toBe(before.value.toString());
    expect(after.lease).toBe(before.lease);
    expect(after.mod_revision).toBe(before.mod_revision);
    // The refused node gave its lease back.
    expect(await leaseIds()).toEqual(leasesBefore);
    expect(first.state).toBe("registered");
  }, 20_000);

  test("a lease revoked by someone else is replaced and the node re-registered", async () => {
    freshPrefix();
    const logger = captureLogger();
    const node = registry({ name: "revoked", ttlSeconds: 10, logger });
    const events = record(node);
    await node.register();
    const oldLease = (await admin().get(node.key).exec()).kvs[0]!.lease;

    const revokedAt = performance.now();
    await admin().leaseClient.leaseRevoke({ ID: oldLease });
    await waitFor(() => events.reregistered.length === 1, 5_000, "re-registration after revoke");
    // Much sooner than the keepalive interval (TTL/3 = 3.3 s): the registry watches its own key.
    expect(performance.now() - revokedAt).toBeLessThan(3_000);

    expect(events.lost).toHaveLength(1);
    const kv = (await admin().get(node.key).exec()).kvs[0];
    expect(kv).toBeDefined();
    expect(kv!.lease).not.toBe(oldLease);
    expect(BigInt(kv!.lease).toString(16)).toBe(node.leaseId!);
    expect(JSON.parse(kv!.value.toString()).addr).toBe("127.0.0.1:7001");
    expect(node.state).toBe("registered");
    expect(logger.lines.filter((l) => l.message.includes("unreachable"))).toHaveLength(0);
  }, 20_000);

  test("a key deleted by someone else is re-created", async () => {
    freshPrefix();
    const node = registry({ name: "deleted" });
    const events = record(node);
    await node.register();
    await admin().delete().key(node.key);
    await waitFor(() => events.reregistered.length === 1, 5_000, "re-registration after delete");
    expect(await admin().get(node.key).string()).not.toBeNull();
    expect(events.lost[0]?.reason).toContain("deleted");
  }, 20_000);

  test("a name taken by another live node during re-registration is reported, not stolen, and retried", async () => {
    freshPrefix();
    const logger = captureLogger();
    const node = registry({ name: "contested", addr: "127.0.0.1:7001", retryMaxMs: 200, logger });
    const events = record(node);
    await node.register();

    // Another node takes over the key with its own lease.
    const intruder = admin().lease(30, { autoKeepAlive: false });
    const intruderValue = JSON.stringify({ name: "contested", addr: "127.0.0.1:7999", weight: 1, version: "x" });
    await intruder.put(node.key).value(intruderValue);
    const intruderLease = await intruder.grant();

    await waitFor(() => events.errors.length >= 1, 5_000, "conflict reported");
    expect(events.errors[0]?.code).toBe("ERR_CONFLICT");
    expect(events.errors[0]?.message).toContain("127.0.0.1:7999");
    expect(node.state).toBe("recovering");
    // Retries go on (every <= 200 ms) but nothing is stolen and the conflict is reported once.
    await waitFor(
      () => logger.lines.filter((l) => l.message === "re-registration attempt: name still taken").length >= 3,
      5_000,
      "further re-registration attempts",
    );
    const kv = (await admin().get(node.key).exec()).kvs[0]!;
    expect(kv.value.toString()).toBe(intruderValue);
    expect(kv.lease).toBe(intruderLease);
    expect(events.errors).toHaveLength(1);

    // Once the other node is gone, the name is ours again.
    await intruder.revoke();
    await waitFor(() => events.reregistered.length === 1, 5_000, "re-registration after the other node left");
    expect(JSON.parse((await admin().get(node.key).string()) ?? "{}").addr).toBe("127.0.0.1:7001");
  }, 20_000);

  test(
    "etcd down for longer than the TTL: the node re-registers when etcd is back, and the outage is logged once",
    async () => {
      freshPrefix();
      const logger = captureLogger();
      const node = registry({ name: "survivor", ttlSeconds: 2, logger });
      const events = record(node);
      await node.register();
      const firstLease = node.leaseId;

      await etcd.kill();
      // The registry gives the lease up once the TTL has passed without a keepalive.
      await waitFor(() => events.lost.length === 1, 8_000, "lease given up during the outage");
      expect(events.lost[0]?.reason).toContain("unreachable");
      // etcd stays down a while longer; the registry keeps retrying without flooding the log.
      await waitFor(() => logger.lines.filter((l) => l.message === "re-registration attempt failed").length >= 3, 8_000, "retries while down");
      await etcd.restart();

      await waitFor(() => events.reregistered.length === 1, 15_000, "re-registration after etcd came back");
      const kv = (await admin().get(node.key).exec()).kvs[0];
      expect(kv).toBeDefined();
      expect(BigInt(kv!.lease).toString(16)).toBe(node.leaseId!);
      expect(node.leaseId).not.toBe(firstLease);
      expect(JSON.parse(kv!.value.toString()).name).toBe("survivor");

      const warnings = logger.lines.filter((l) => l.level === "warn" || l.level === "error");
      const outageStarts = warnings.filter((l) => l.message.includes("unreachable"));
      const outageEnds = logger.lines.filter((l) => l.message.startsWith("etcd reachable again"));
      expect(outageStarts).toHaveLength(1);
      expect(outageEnds).toHaveLength(1);
      expect(logger.lines.filter((l) => l.message === "re-registered in etcd")).toHaveLength(1);
      // One loss, one outage, a handful of lines: not one per failed keepalive.
      expect(warnings.length).toBeLessThanOrEqual(3);
      expect(events.lost).toHaveLength(1);
      expect(events.errors).toHaveLength(0);

      // The old lease, if it survived the restart, was revoked; the node is still registered after it.
      await node.deregister();
      expect(await admin().get(node.key).string()).toBeNull();
    },
    40_000,
  );

  test("etcd down for less than the TTL: the lease is kept, the outage logged once and its end once", async () => {
    freshPrefix();
    const logger = captureLogger();
    const node = registry({ name: "steady", ttlSeconds: 5, logger });
    const events = record(node);
    await node.register();
    const lease = node.leaseId;

    await etcd.kill();
    await waitFor(() => logger.lines.some((l) => l.message.includes("unreachable")), 5_000, "outage noticed");
    await etcd.restart();
    await waitFor(() => logger.lines.some((l) => l.message.startsWith("etcd reachable again")), 10_000, "outage end noticed");

    expect(events.lost).toHaveLength(0);
    expect(node.state).toBe("registered");
    expect(node.leaseId).toBe(lease);
    const kv = (await admin().get(node.key).exec()).kvs[0];
    expect(kv).toBeDefined();
    expect(BigInt(kv!.lease).toString(16)).toBe(lease!);
    expect(logger.lines.filter((l) => l.message.includes("unreachable"))).toHaveLength(1);
    expect(logger.lines.filter((l) => l.message.startsWith("etcd reachable again"))).toHaveLength(1);
    expect(logger.lines.find((l) => l.message.startsWith("etcd reachable again"))?.message).toContain("registration kept");
  }, 20_000);
});

test("Registry rejects bad options with clear errors", () => {
  const base = { etcd: { endpoints: ["http://127.0.0.1:2379"] }, name: "n", addr: "127.0.0.1:1" };
  const bad: [Partial<RegistryOptions>, RegExp][] = [
    [{ name: "" }, /node name/],
    [{ name: "a/b" }, /node name/],
    [{ addr: "nope" }, /addr/],
    [{ addr: "0.0.0.0:7001" }, /wildcard/],
    [{ ttlSeconds: 0 }, /ttlSeconds/],
    [{ ttlSeconds: 1.5 }, /ttlSeconds/],
    [{ weight: -1 }, /weight/],
    [{ prefix: "services" }, /prefix/],
    [{ service: "" }, /service/],
    [{ etcd: { endpoints: ["127.0.0.1:2379"] } }, /http/],
  ];
  for (const [override, message] of bad) {
    let caught: unknown;
    try {
      new Registry({ ...base, ...override } as RegistryOptions);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(GCacheError);
    expect((caught as GCacheError).code).toBe("ERR_INVALID_OPTION");
    expect((caught as GCacheError).message).toMatch(message);
  }
}, 20_000);

test("etcd options map to the client's options, with clear errors for bad ones", () => {
  const dir = mkdtempSync(join(tmpdir(), "gcache-ca-"));
  try {
    const caPath = join(dir, "ca.pem");
    writeFileSync(caPath, "CA FROM FILE");
    const mapped = _etcdClientOptions({
      endpoints: ["https://etcd-1:2379", " https://etcd-2:2379/ "],
      caFile: caPath,
      cert: "CERT",
      key: Buffer.from("KEY"),
      username: "gcache",
      password: "secret",
      dialTimeoutMs: 1_234,
    });
    expect(mapped.hosts).toEqual(["https://etcd-1:2379", "https://etcd-2:2379"]);
    expect(mapped.dialTimeout).toBe(1_234);
    expect(mapped.credentials?.rootCertificate.toString()).toBe("CA FROM FILE");
    expect(mapped.credentials?.certChain?.toString()).toBe("CERT");
    expect(mapped.credentials?.privateKey?.toString()).toBe("KEY");
    expect(mapped.auth).toEqual({ username: "gcache", password: "secret" });

    const plain = _etcdClientOptions({ endpoints: ["http://127.0.0.1:2379"] });
    expect(plain.hosts).toEqual(["http://127.0.0.1:2379"]);
    expect(plain.dialTimeout).toBe(DEFAULT_ETCD_OPTIONS.dialTimeoutMs);
    expect(plain.credentials).toBeUndefined();
    expect(plain.auth).toBeUndefined();

    const bad: [EtcdOptions, RegExp][] = [
      [{ endpoints: [] }, /non-empty list/],
      [{ endpoints: ["127.0.0.1:2379"] }, /http:\/\/ or https:\/\//],
      [{ endpoints: ["http://127.0.0.1"] }, /explicit port/],
      [{ endpoints: ["http://127.0.0.1:99999"] }, /not a URL|outside/],
      [{ endpoints: ["http://127.0.0.1:2379/v3"] }, /just scheme/],
      [{ endpoints: ["http://a:2379", "https://b:2379"] }, /not a mix/],
      [{ endpoints: ["http://a:2379"], ca: "CA" }, /https/],
      [{ endpoints: ["https://a:2379"], ca: "CA", cert: "C" }, /cert and key/],
      [{ endpoints: ["https://a:2379"], cert: "C", key: "K" }, /CA/],
      [{ endpoints: ["https://a:2379"], caFile: join(dir, "missing.pem") }, /cannot be read/],
      [{ endpoints: ["http://a:2379"], username: "u" }, /username and password/],
      [{ endpoints: ["http://a:2379"], dialTimeoutMs: 0 }, /dialTimeoutMs/],
    ];
    for (const [options, message] of bad) {
      let caught: unknown;
      try {
        _etcdClientOptions(options);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(GCacheError);
      expect((caught as GCacheError).code).toBe("ERR_INVALID_OPTION");
      expect((caught as GCacheError).message).toMatch(message);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 20_000);
