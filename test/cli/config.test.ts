import { describe, expect, test } from "bun:test";
import { repeatedFlag, resolveServeConfig, UsageError } from "../../src/cli/config.ts";
import { parseBytes, parseDuration } from "../../src/units.ts";

const resolve = (args: Record<string, string | string[] | boolean | undefined>, env: Record<string, string> = {}) =>
  resolveServeConfig(args, env);

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error("expected a UsageError");
}

describe("serve configuration", () => {
  test("defaults", () => {
    const config = resolve({});
    expect(config).toMatchObject({ port: 8001, host: "127.0.0.1", httpPort: 9001, ttlMs: 0, maxValueBytes: 1024 * 1024, logFormat: "json" });
    expect(config.groups).toEqual([{ name: "default", maxBytes: 64 * 1024 * 1024, store: "lru2" }]);
    expect(config.peers).toBeUndefined();
    expect(config.etcd).toBeUndefined();
  });

  test("--gc-idle: off (0) by default, a duration turns it on", () => {
    expect(resolve({}).gcIdleMs).toBe(0);
    expect(resolve({ "gc-idle": "1s" }).gcIdleMs).toBe(1000);
    expect(resolve({ "gc-idle": "0" }).gcIdleMs).toBe(0);
    expect(resolve({}, { GCACHE_GC_IDLE: "100ms" }).gcIdleMs).toBe(100);
    expect(usageError(() => resolve({ "gc-idle": "soon" }))).toContain("--gc-idle");
  });

  test("--gc-interval: off (0) by default, a bare number is milliseconds", () => {
    expect(resolve({}).gcIntervalMs).toBe(0);
    expect(resolve({ "gc-interval": "25ms" }).gcIntervalMs).toBe(25);
    expect(resolve({ "gc-interval": "0" }).gcIntervalMs).toBe(0);
    expect(resolve({ "gc-interval": "50" }).gcIntervalMs).toBe(50);
    expect(resolve({}, { GCACHE_GC_INTERVAL: "100ms" }).gcIntervalMs).toBe(100);
    expect(usageError(() => resolve({ "gc-interval": "often" }))).toContain("--gc-interval");
  });

  test("flags win over environment twins, which win over defaults", () => {
    expect(resolve({}, { GCACHE_PORT: "8100" }).port).toBe(8100);
    expect(resolve({ port: "8200" }, { GCACHE_PORT: "8100" }).port).toBe(8200);
    expect(resolve({}, { GCACHE_CACHE_BYTES: "1GiB" }).groups[0]!.maxBytes).toBe(1024 ** 3);
    expect(resolve({}, { GCACHE_TTL: "5m" }).ttlMs).toBe(300_000);
    expect(resolve({}).hotCacheShare).toBe(0.125);
    expect(resolve({ "hot-cache-share": "0" }, { GCACHE_HOT_CACHE_SHARE: "0.5" }).hotCacheShare).toBe(0);
    expect(resolve({}, { GCACHE_HOT_CACHE_SHARE: "0.25" }).hotCacheShare).toBe(0.25);
    expect(resolve({}).hotCacheAdmission).toBe(0.1);
    expect(resolve({ "hot-cache-admission": "1" }, { GCACHE_HOT_CACHE_ADMISSION: "0.5" }).hotCacheAdmission).toBe(1);
    expect(resolve({}, { GCACHE_HOT_CACHE_ADMISSION: "0" }).hotCacheAdmission).toBe(0);
    expect(() => resolve({ "hot-cache-admission": "1.5" })).toThrow("--hot-cache-admission: expected a number from 0 to 1");
  });

  test("groups: repeatable and comma-separated NAME[:BYTES[:STORE[:HOT_SHARE]]]", () => {
    const groups = resolve({ group: ["users:8MiB", "pages:512KB:lru,misc", "cold:1MiB::0"], store: "lru2", "cache-bytes": "16MiB" }).groups;
    expect(groups).toEqual([
      { name: "default", maxBytes: 16 * 1024 ** 2, store: "lru2" },
      { name: "users", maxBytes: 8 * 1024 ** 2, store: "lru2" },
      { name: "pages", maxBytes: 512_000, store: "lru" },
      { name: "misc", maxBytes: 16 * 1024 ** 2, store: "lru2" },
      { name: "cold", maxBytes: 1024 ** 2, store: "lru2", hotCacheShare: 0 },
    ]);
    expect(usageError(() => resolve({ group: "g:1MiB:lru:2" }))).toBe('--group: expected a number from 0 to 0.9, got "2"');
    expect(repeatedFlag(["--port", "1", "--group", "a", "--group=b:1MiB", "--group"], "group")).toEqual(["a", "b:1MiB"]);
  });

  test("membership: static peers or etcd, never both", () => {
    expect(resolve({ peers: "A=127.0.0.1:8001,B=127.0.0.1:8002" }).peers).toEqual([
      { name: "A", address: "127.0.0.1:8001" },
      { name: "B", address: "127.0.0.1:8002" },
    ]);
    const etcd = resolve({ etcd: "http://127.0.0.1:2379,https://10.0.0.2:2379", "lease-ttl": "3s" }).etcd;
    expect(etcd).toMatchObject({ endpoints: ["http://127.0.0.1:2379", "https://10.0.0.2:2379"], leaseTtlSeconds: 3, service: "gcache" });
    expect(usageError(() => resolve({ peers: "A=127.0.0.1:1", etcd: "http://127.0.0.1:2379" }))).toContain("alternatives");
  });

  test("bad values name the flag and the accepted form", () => {
    expect(usageError(() => resolve({ port: "abc" }))).toBe('--port: expected an integer from 0 to 65535, got "abc"');
    expect(usageError(() => resolve({ store: "fifo" }))).toContain("--store: expected lru or lru2");
    expect(usageError(() => resolve({ "cache-bytes": "lots" }))).toContain("--cache-bytes: expected a size");
    expect(usageError(() => resolve({ ttl: "soon" }))).toContain("--ttl: expected a duration");
    expect(usageError(() => resolve({ "hot-cache-share": "1" }))).toBe('--hot-cache-share: expected a number from 0 to 0.9, got "1"');
    expect(usageError(() => resolve({ "hot-cache-share": "" }))).toContain("--hot-cache-share: expected a number");
    expect(usageError(() => resolve({ peers: "A=nowhere" }))).toContain("--peers: expected HOST:PORT");
    expect(usageError(() => resolve({ etcd: "127.0.0.1:2379" }))).toContain("--etcd: expected http(s)://HOST:PORT");
    expect(usageError(() => resolve({ "lease-ttl": "1500ms", etcd: "http://127.0.0.1:2379" }))).toContain("whole seconds");
    expect(usageError(() => resolve({ origin: "http://origin/no-key" }))).toContain("--origin");
    expect(usageError(() => resolve({ group: "bad name" }))).toContain("--group");
    expect(usageError(() => resolve({ port: true }))).toContain("--port needs a value");
    expect(usageError(() => resolve({ "auth-token": "short" }))).toContain("at least 16");
    expect(usageError(() => resolve({ "tls-cert": "c.pem" }))).toContain("--tls-cert and --tls-key go together");
    expect(usageError(() => resolve({}, { GCACHE_STORE: "fifo" }))).toContain("--store");
  });

  test("HTTP port: gRPC port + 1000, any free port with --port 0, disabled with 0", () => {
    expect(resolve({ port: "8002" }).httpPort).toBe(9002);
    expect(resolve({ port: "0" }).httpPort).toBe(0);
    expect(resolve({ "http-port": "0" }).httpPort).toBeNull();
    expect(usageError(() => resolve({ port: "65000" }))).toContain("--http-port");
  });

  test("peer link port: any free port by default, a fixed one, or off; anything else is a usage error", () => {
    expect(resolve({}).peerLink).toEqual({ port: 0 });
    expect(resolve({ "peer-link-port": "8101" }).peerLink).toEqual({ port: 8101 });
    expect(resolve({}, { GCACHE_PEER_LINK_PORT: "off" }).peerLink).toBe(false);
    expect(usageError(() => resolve({ "peer-link-port": "70000" }))).toContain("--peer-link-port: expected an integer from 0 to 65535");
    expect(usageError(() => resolve({ "peer-link-port": "no" }))).toContain("--peer-link-port");
  });
});

describe("units", () => {
  test("sizes", () => {
    expect(parseBytes("64MiB")).toBe(64 * 1024 ** 2);
    expect(parseBytes("512KB")).toBe(512_000);
    expect(parseBytes("1.5GiB")).toBe(1.5 * 1024 ** 3);
    expect(parseBytes("4096")).toBe(4096);
    expect(parseBytes("12 parsecs")).toBeNull();
    expect(parseBytes("-1")).toBeNull();
  });

  test("durations", () => {
    expect(parseDuration("250ms", "s")).toBe(250);
    expect(parseDuration("30s", "ms")).toBe(30_000);
    expect(parseDuration("5m", "s")).toBe(300_000);
    expect(parseDuration("1h", "s")).toBe(3_600_000);
    expect(parseDuration("10", "s")).toBe(10_000);
    expect(parseDuration("10", "ms")).toBe(10);
    expect(parseDuration("soon", "s")).toBeNull();
  });
});
