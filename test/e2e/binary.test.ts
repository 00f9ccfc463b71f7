/**
 * gcache-node end to end, as an operator runs it: the compiled binary from an
 * empty directory when GCACHE_NODE_BIN names it, else the sources. Clients are
 * the library's gRPC client, the binary's own get/set/del subcommands and
 * plain HTTP; origins are HTTP servers in this process.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import packageJson from "../../package.json" with { type: "json" };
import { envName, SERVE_FLAGS, type ServeFlag } from "../../src/cli/config.ts";
import { RUNTIME_TUNING } from "../../src/cli/runtime-tuning.ts";
import { GCacheClient } from "../../src/client.ts";
import { GCacheError } from "../../src/errors.ts";
import { _Connection } from "../../src/wire/connection.ts";
import { HEALTH_SERVICE, ServingStatus } from "../../src/wire/messages.ts";
import { CliNode } from "../_support/cli.ts";
import { bytes, text } from "../_support/cluster.ts";
import { describeEtcd, freePort, startEtcd, type EtcdServer } from "../_support/etcd.ts";
import { call, originalClient } from "../_support/original-client.ts";
import { waitFor } from "../_support/wait.ts";
import {
  binaryUnderTest,
  childEnv,
  gate,
  median,
  Origin,
  parsePrometheus,
  prepareWorkspace,
  rssKiB,
  runCli,
  sampleValue,
  stripAnsi,
  type Workspace,
} from "./_support.ts";

const VERSION = process.env.GCACHE_BUILD_VERSION || packageJson.version;

let workspace: Workspace;
const nodes = new Set<CliNode>();
const clients = new Set<GCacheClient>();
const origins = new Set<Origin>();
const scratchDirs = new Set<string>();

beforeAll(() => {
  workspace = prepareWorkspace();
});

afterEach(async () => {
  for (const client of clients) client.close();
  clients.clear();
  await Promise.all([...nodes].map((node) => node.stop()));
  nodes.clear();
  await Promise.all([...origins].map((origin) => origin.stop()));
  origins.clear();
  for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
  scratchDirs.clear();
});

afterAll(() => {
  workspace?.dispose();
});

async function startNode(name: string, args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<CliNode> {
  const node = await CliNode.start(name, args, { cwd: options.cwd ?? workspace.cwd, env: childEnv(options.env) });
  nodes.add(node);
  return node;
}

function clientOf(node: CliNode): GCacheClient {
  const client = new GCacheClient(node.address);
  clients.add(client);
  return client;
}

function originOf(respond: (path: string) => Response | Promise<Response>): Origin {
  const origin = new Origin(respond);
  origins.add(origin);
  return origin;
}

function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "gcache-e2e-scratch-"));
  scratchDirs.add(dir);
  return dir;
}

/** http://host:port of a node's gateway, from its serving line. */
function httpBase(node: CliNode): string {
  const serving = node.logs().find((log) => log.msg === "serving");
  const address = serving?.httpAddress;
  if (typeof address !== "string") throw new Error(`${node.name} logged no httpAddress`);
  return `http://${address}`;
}

function keyUrl(node: CliNode, key: string, group = "default"): string {
  return `${httpBase(node)}/v1/groups/${encodeURIComponent(group)}/keys/${encodeURIComponent(key)}`;
}

function cli(...args: string[]) {
  return runCli(args, { cwd: workspace.cwd });
}

async function grpcError(promise: Promise<unknown>): Promise<GCacheError> {
  const outcome = await promise.then(
    (value) => value,
    (error: unknown) => error,
  );
  if (!(outcome instanceof GCacheError)) throw new Error(`expected a GCacheError, got ${String(outcome)}`);
  return outcome;
}

/** What the promises settled with so far (for failure messages): counts of distinct outcomes, pending ones included. */
async function settled(promises: Promise<unknown>[]): Promise<string> {
  const pending = Symbol("pending");
  const outcomes = await Promise.all(promises.map((p) => Promise.race([p, Promise.resolve(pending)])));
  const counts = new Map<string, number>();
  for (const outcome of outcomes) {
    const key = outcome === pending ? "pending" : outcome instanceof Error ? `error: ${outcome.message}` : JSON.stringify(outcome);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([outcome, count]) => `${count}× ${outcome}`).join("; ");
}

/** `count` distinct free loopback ports. */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

async function healthStatus(address: string): Promise<number> {
  const connection = new _Connection(address);
  try {
    const response = await connection.unary(HEALTH_SERVICE.Check, { service: "" }, { deadline: Date.now() + 2_000 });
    return response.status;
  } finally {
    connection.close();
  }
}

interface GroupStatsJson {
  gets: number;
  cacheHits: number;
  serverRequests: number;
  peerLoads: number;
}

async function defaultGroupStats(node: CliNode): Promise<GroupStatsJson> {
  const response = await fetch(`${httpBase(node)}/v1/stats`);
  const body = (await response.json()) as { groups: Record<string, GroupStatsJson> };
  const stats = body.groups.default;
  if (stats === undefined) throw new Error(`${node.name} has no default group stats`);
  return stats;
}

/** Nodes A, B and C with static membership, each started with `args` too. */
async function startThreeNodes(args: string[]): Promise<CliNode[]> {
  const [grpcPorts, httpPorts] = await freePorts(6).then((ports) => [ports.slice(0, 3), ports.slice(3)]);
  const names = ["A", "B", "C"];
  const peers = names.map((name, i) => `${name}=127.0.0.1:${grpcPorts![i]}`).join(",");
  return Promise.all(
    names.map((name, i) => startNode(name, [`--port=${grpcPorts![i]}`, `--http-port=${httpPorts![i]}`, `--node=${name}`, `--peers=${peers}`, ...args])),
  );
}

describe("single node", () => {
  test(
    "set/get/del through gRPC, the CLI client subcommands and HTTP",
    async () => {
      const node = await startNode("solo", ["--port=0", "--max-value-bytes=1KiB", "--gc-interval=25ms", "--gc-idle=250ms"]);
      const first = node.logs()[0];
      expect(first).toMatchObject({ level: "info", msg: "serving", address: node.address });
      expect(first?.httpAddress).toMatch(/^127\.0\.0\.1:\d+$/);
      // The collection pacer runs when asked (bun:jsc is reachable from the executable too).
      expect(first?.gcIntervalMs).toBe(25);
      // So does the full collection once quiet.
      expect(first?.gcIdleMs).toBe(250);
      const client = clientOf(node);

      // gRPC
      await client.set("default", "grpc-key", bytes("grpc value"));
      expect(text(await client.get("default", "grpc-key"))).toBe("grpc value");
      expect(await client.delete("default", "grpc-key")).toEqual({ deleted: true, unreachablePeers: [] });
      expect((await grpcError(client.get("default", "grpc-key"))).code).toBe("ERR_NOT_FOUND");
      expect((await client.delete("default", "grpc-key")).deleted).toBe(false);
      expect((await grpcError(client.set("default", "grpc-big", new Uint8Array(1025)))).code).toBe("ERR_VALUE_TOO_LARGE");
      expect((await grpcError(client.get("nosuch", "grpc-key"))).code).toBe("ERR_UNKNOWN_GROUP");

      // The CLI client: 0 done, 1 not found, 2 error.
      const dir = scratchDir();
      const binaryValue = Uint8Array.from([0, 1, 2, 255, 10, 13, 0x80, 0x7f]);
      writeFileSync(join(dir, "value.bin"), binaryValue);
      const unreachable = `127.0.0.1:${await freePort()}`;
      const [setText, setFile, getUnreachable] = await Promise.all([
        cli("set", "--target", node.address, "cli-key", "cli value"),
        cli("set", "--target", node.address, "--file", join(dir, "value.bin"), "cli-bin"),
        cli("get", "--target", unreachable, "--timeout", "2s", "cli-key"),
      ]);
      expect(setText).toMatchObject({ code: 0, stdoutText: "" });
      expect(setFile).toMatchObject({ code: 0, stdoutText: "" });
      expect(getUnreachable).toMatchObject({ code: 2, stdoutText: "" });
      expect(getUnreachable.stderr).toStartWith("error:");
      expect(getUnreachable.stderr).toContain(unreachable);

      const [getText, getFile, getUnknownGroup] = await Promise.all([
        cli("get", "--target", node.address, "cli-key"),
        cli("get", "--target", node.address, "cli-bin"),
        cli("get", "--target", node.address, "--group", "nosuch", "cli-key"),
      ]);
      expect(getText).toMatchObject({ code: 0, stdoutText: "cli value" });
      expect(getFile.code).toBe(0);
      expect([...getFile.stdout]).toEqual([...binaryValue]);
      expect(getUnknownGroup).toMatchObject({ code: 2, stdoutText: "" });
      expect(getUnknownGroup.stderr).toStartWith("error:");
      // What the CLI stored is what every other client sees.
      expect(text(await client.get("default", "cli-key"))).toBe("cli value");
      expect(await (await fetch(keyUrl(node, "cli-bin"))).bytes()).toEqual(binaryValue);

      expect(await cli("del", "--target", node.address, "cli-key")).toMatchObject({ code: 0 });
      const [getDeleted, delDeleted] = await Promise.all([
        cli("get", "--target", node.address, "cli-key"),
        cli("del", "--target", node.address, "cli-key"),
      ]);
      expect(getDeleted).toMatchObject({ code: 1, stdoutText: "" });
      expect(getDeleted.stderr).toStartWith("not found");
      expect(delDeleted).toMatchObject({ code: 1 });

      // HTTP
      expect((await fetch(`${httpBase(node)}/healthz`)).status).toBe(200);
      expect((await fetch(`${httpBase(node)}/readyz`)).status).toBe(200);
      const odd = "a/b c?d";
      const put = await fetch(keyUrl(node, odd), { method: "PUT", body: "http value" });
      expect(put.status).toBe(200);
      expect(await put.json()).toEqual({ stored: true, unreachablePeers: [] });
      const got = await fetch(keyUrl(node, odd));
      expect(got.status).toBe(200);
      expect(await got.text()).toBe("http value");
      expect(text(await client.get("default", odd))).toBe("http value");

      const before = Date.now();
      expect((await fetch(`${keyUrl(node, "ttl-key")}?ttl=30s`, { method: "PUT", body: "soon gone" })).status).toBe(200);
      const withTtl = await fetch(keyUrl(node, "ttl-key"));
      expect(await withTtl.text()).toBe("soon gone");
      const expiresAt = Number(withTtl.headers.get("x-gcache-expires-at"));
      expect(expiresAt).toBeGreaterThanOrEqual(before + 30_000);
      expect(expiresAt).toBeLessThanOrEqual(Date.now() + 30_000);

      const badTtl = await fetch(`${keyUrl(node, "bad-ttl")}?ttl=soon`, { method: "PUT", body: "x" });
      expect(badTtl.status).toBe(400);
      expect(((await badTtl.json()) as { error: string }).error).toBe("ERR_INVALID_ARGUMENT");
      expect((await fetch(keyUrl(node, "bad-ttl"))).status).toBe(404);

      const atLimit = await fetch(keyUrl(node, "at-limit"), { method: "PUT", body: new Uint8Array(1024) });
      expect(atLimit.status).toBe(200);
      const tooLarge = await fetch(keyUrl(node, "too-large"), { method: "PUT", body: new Uint8Array(1025) });
      expect(tooLarge.status).toBe(413);
      expect(((await tooLarge.json()) as { error: string }).error).toBe("ERR_VALUE_TOO_LARGE");
      expect((await fetch(keyUrl(node, "too-large"))).status).toBe(404);

      const deleted = await fetch(keyUrl(node, odd), { method: "DELETE" });
      expect(deleted.status).toBe(200);
      expect(((await deleted.json()) as { deleted: boolean }).deleted).toBe(true);
      const missing = await fetch(keyUrl(node, odd));
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as { error: string }).error).toBe("ERR_NOT_FOUND");
      expect((await fetch(keyUrl(node, odd), { method: "DELETE" })).status).toBe(404);
      expect((await fetch(keyUrl(node, "x", "nosuch"))).status).toBe(404);
    },
    20_000,
  );

  test(
    "clients that compress their messages (gzip, deflate) are answered",
    async () => {
      // The executable loads zlib only when a compressed message first arrives (scripts/build.ts).
      const node = await startNode("compressed", ["--port=0"]);
      const value = Buffer.from("compressible ".repeat(1_000));
      for (const algorithm of [grpc.compressionAlgorithms.gzip, grpc.compressionAlgorithms.deflate]) {
        const client = originalClient(node.address, { "grpc.default_compression_algorithm": algorithm });
        try {
          const key = `compressed-${algorithm}`;
          await call(client.Set, client, { group: "default", key, value });
          const got = await call(client.Get, client, { group: "default", key });
          expect(Buffer.from(got.value).equals(value)).toBe(true);
        } finally {
          client.close();
        }
      }
      expect(text(await clientOf(node).get("default", `compressed-${grpc.compressionAlgorithms.gzip}`))).toBe(value.toString());
    },
    20_000,
  );
});

describe("command line", () => {
  test(
    "help and usage written to a pipe carry no colour codes",
    async () => {
      // An environment in which citty would colour: no CI, TEST or NO_COLOR, a colour terminal type.
      const env = childEnv({ TERM: "xterm-256color" });
      for (const name of ["CI", "TEST", "NO_COLOR", "FORCE_COLOR"]) delete env[name];
      const [help, getHelp, badPort] = await Promise.all([
        runCli(["--help"], { cwd: workspace.cwd, env }),
        runCli(["get", "--help"], { cwd: workspace.cwd, env }),
        runCli(["--port", "abc"], { cwd: workspace.cwd, env }),
      ]);
      expect(help.code).toBe(0);
      expect(help.stdoutText).toContain("USAGE gcache-node [OPTIONS]");
      expect(help.stdoutText).not.toContain("\u001B[");
      expect(getHelp.code).toBe(0);
      expect(getHelp.stdoutText).toContain("USAGE gcache-node get [OPTIONS] <KEY>");
      expect(getHelp.stdoutText).not.toContain("\u001B[");
      expect(badPort.code).toBe(2);
      expect(badPort.stderr).toContain("USAGE");
      expect(badPort.stderr).not.toContain("\u001B[");
    },
    20_000,
  );

  test(
    "--version, --help, and bad flags exit 2 with a one-line error naming the flag",
    async () => {
      const [version, help, badPort, badStore, unknown, badPeers, badEnv] = await Promise.all([
        cli("--version"),
        cli("--help"),
        cli("--port", "abc"),
        cli("--store", "fifo"),
        cli("--bogus"),
        cli("--peers", "X"),
        runCli(["--port=0"], { cwd: workspace.cwd, env: childEnv({ GCACHE_STORE: "fifo" }) }),
      ]);

      expect(version).toMatchObject({ code: 0, stdoutText: `${VERSION}\n` });

      expect(help.code).toBe(0);
      const helpText = stripAnsi(help.stdoutText);
      const flagLines = helpText.split("\n").filter((line) => line.trimStart().startsWith("--"));
      for (const flag of Object.keys(SERVE_FLAGS) as ServeFlag[]) {
        const line = flagLines.find((l) => l.trimStart().startsWith(`--${flag}=`) || l.trimStart().startsWith(`--${flag} `));
        expect(line, `--help lists --${flag}`).toBeDefined();
        expect(line, `--help gives the env name of --${flag}`).toContain(`env ${envName(flag)}`);
        const spec: { description: string; default?: string } = SERVE_FLAGS[flag];
        if (spec.default !== undefined) expect(line, `--help gives the default of --${flag}`).toContain(`default ${spec.default}`);
      }
      // Spot checks independent of the flag table.
      expect(helpText).toMatch(/--port=<PORT>\s+gRPC port \(default 8001, env GCACHE_PORT\)/);
      expect(helpText).toMatch(/--store=<KIND>.*\(default lru2, env GCACHE_STORE\)/);
      for (const command of ["get", "set", "del"]) expect(helpText).toMatch(new RegExp(`^\\s+${command}\\s`, "m"));

      const cases: [string, typeof badPort][] = [
        ["--port", badPort],
        ["--store", badStore],
        ["--bogus", unknown],
        ["--peers", badPeers],
        ["--store", badEnv],
      ];
      for (const [flag, result] of cases) {
        expect(result.code, `${flag}: exit status; stderr:\n${result.stderr}`).toBe(2);
        expect(result.stdoutText).toBe("");
        const [first = "", second = ""] = result.stderr.split("\n");
        expect(first).toStartWith("error: ");
        expect(first).toContain(flag);
        // One line of error, then a blank line before the usage.
        expect(second).toBe("");
        expect(stripAnsi(result.stderr)).toContain("USAGE");
      }
      expect(badPort.stderr.split("\n")[0]).toContain('"abc"');
      expect(badStore.stderr.split("\n")[0]).toContain('"fifo"');
      expect(badPeers.stderr.split("\n")[0]).toContain('"X"');
    },
    20_000,
  );

  test(
    "client subcommands reject unknown flags: a typo must not change the target or drop the TTL",
    async () => {
      const node = await startNode("typos", ["--port=0"]);
      const client = clientOf(node);
      const [misspeltTtl, misspeltTarget] = await Promise.all([
        cli("set", "--target", node.address, "--tll=30s", "typo-key", "v"),
        cli("get", `--tagret=${node.address}`, "typo-key"),
      ]);
      for (const [flag, result] of [["--tll", misspeltTtl], ["--tagret", misspeltTarget]] as const) {
        expect(result.code, `${flag}: exit status; stderr:\n${result.stderr}`).toBe(2);
        expect(result.stderr.split("\n")[0]).toStartWith("error: ");
        expect(result.stderr.split("\n")[0]).toContain(flag);
      }
      // Nothing was stored without the TTL the operator asked for.
      expect((await grpcError(client.get("default", "typo-key"))).code).toBe("ERR_NOT_FOUND");
    },
    20_000,
  );
});

describe("shutdown", () => {
  test(
    "SIGTERM drains: gets in flight complete, the process logs draining and stopped and exits 0",
    async () => {
      const release = gate();
      const origin = originOf(async (path) => {
        await release.promise;
        return new Response(`slow:${path}`);
      });
      const node = await startNode("drainer", ["--port=0", `--origin=${origin.template}`, "--drain-grace=0s"]);
      const client = clientOf(node);
      const readyz = `${httpBase(node)}/readyz`;
      const grpcGet = client.get("default", "slow-grpc", { timeoutMs: 10_000 }).then(text, (error: unknown) => error);
      const httpGet = fetch(keyUrl(node, "slow-http")).then(
        async (response) => ({ status: response.status, body: await response.text() }),
        (error: unknown) => error,
      );
      await waitFor(() => origin.paths.length === 2, 5_000, "both gets to reach the origin").catch(async (error: Error) => {
        throw new Error(`${error.message}; origin saw ${JSON.stringify(origin.paths)}; gets: ${await settled([grpcGet, httpGet])}`);
      });

      const signalledAt = performance.now();
      node.kill("SIGTERM");
      await node.waitForLog((log) => log.msg === "draining", "draining");
      // Draining, with both gets still held at the origin.
      await waitFor(async () => (await fetch(readyz)).status === 503, 2_000, "/readyz to say 503");
      expect(origin.paths.length).toBe(2);
      release.open();

      expect(await grpcGet).toBe("slow:/default/slow-grpc");
      expect(await httpGet).toEqual({ status: 200, body: "slow:/default/slow-http" });
      expect(await node.waitExit(5_000)).toBe(0);
      const exitMs = performance.now() - signalledAt;
      expect(exitMs).toBeLessThan(5_000);
      const messages = node.logs().map((log) => log.msg);
      expect(messages.indexOf("draining")).toBeLessThan(messages.indexOf("stopped"));
      expect(node.logs().find((log) => log.msg === "stopped")?.reason).toBe("SIGTERM");
    },
    20_000,
  );

  test(
    "SIGINT drains too and exits 0",
    async () => {
      const node = await startNode("interrupted", ["--port=0", "--drain-grace=0s"]);
      // Signalled once it has answered a call; signals sent sooner are the next test's subject.
      expect(await healthStatus(node.address)).toBe(ServingStatus.SERVING);
      node.kill("SIGINT");
      expect(await node.waitExit(5_000)).toBe(0);
      expect(node.logs().find((log) => log.msg === "stopped")?.reason).toBe("SIGINT");
    },
    20_000,
  );

  test(
    "a signal right after the serving line still drains: exit 0 and stopped logged, never killed by the signal",
    async () => {
      // The serving line is the readiness signal operators and tests wait on; from
      // then on SIGTERM and SIGINT must drain. Twelve tries, four at a time.
      const outcomes: string[] = [];
      for (let round = 0; round < 3; round++) {
        await Promise.all(
          Array.from({ length: 4 }, async (_, i) => {
            const signal = i % 2 === 0 ? "SIGTERM" : "SIGINT";
            const node = await startNode(`eager-${round}-${i}`, ["--port=0", "--drain-grace=0s"]);
            node.kill(signal);
            const code = await node.waitExit(5_000);
            const stopped = node.logs().some((log) => log.msg === "stopped");
            outcomes.push(`${signal}: exit ${code}, ${stopped ? "stopped logged" : "no stopped line"}`);
          }),
        );
      }
      expect(outcomes.filter((outcome) => !outcome.endsWith("exit 0, stopped logged"))).toEqual([]);
    },
    20_000,
  );
});

describe("three nodes", () => {
  test(
    "a value's expiry (a 64-bit field) arrives intact through every node, by gRPC, the peer link and HTTP",
    async () => {
      const cluster = await startThreeNodes(["--hot-cache-share=0"]);
      const clients = cluster.map(clientOf);
      // Beyond 32 bits, as every time in ms since 1970 is; the executable decodes such fields as numbers.
      const expiresAt = Date.now() + 3_600_000;
      const keys = Array.from({ length: 12 }, (_, i) => `expiring-${i}`);
      const before = Date.now();
      for (const [i, key] of keys.entries()) {
        const writer = clients[i % 3]!;
        if (i % 2 === 0) await writer.set("default", key, bytes(key), { ttlMs: 600_000 });
        else await writer.set("default", key, bytes(key), { expiresAt });
      }
      const after = Date.now();
      for (const [i, key] of keys.entries()) {
        const seen = new Set<number>();
        for (const [n, node] of cluster.entries()) {
          const entry = await clients[n]!.getEntry("default", key);
          expect(text(entry.value)).toBe(key);
          seen.add(entry.expiresAt);
          const response = await fetch(keyUrl(node, key));
          expect(await response.text()).toBe(key);
          seen.add(Number(response.headers.get("x-gcache-expires-at")));
        }
        expect(seen.size).toBe(1);
        const [stored] = seen;
        if (i % 2 === 0) {
          expect(stored).toBeGreaterThanOrEqual(before + 600_000);
          expect(stored).toBeLessThanOrEqual(after + 600_000);
        } else expect(stored).toBe(expiresAt);
      }
      // Most reads above crossed to the key's owner: the peer link carried the expiry.
      const forwarded = (await Promise.all(cluster.map(defaultGroupStats))).reduce((sum, stats) => sum + stats.peerLoads, 0);
      expect(forwarded).toBeGreaterThan(0);
    },
    30_000,
  );
});

describe("origin loader with three nodes", () => {
  test(
    "200 concurrent gets of a cold key make one origin request; origin 404 and 500 are not cached",
    async () => {
      const release = gate();
      const origin = originOf(async (path) => {
        if (path === "/default/missing") return new Response("no such thing", { status: 404 });
        if (path === "/default/broken") return new Response("boom", { status: 500 });
        if (path === "/default/cold") await release.promise;
        return new Response(`value of ${path}`);
      });
      const names = ["A", "B", "C"];
      const cluster = await startThreeNodes([`--origin=${origin.template}`]);
      for (const node of cluster) {
        const ring = (await (await fetch(`${httpBase(node)}/v1/ring`)).json()) as { self: string; members: { name: string }[] };
        expect(ring.self).toBe(node.name);
        expect(ring.members.map((m) => m.name).sort()).toEqual(names);
      }
      const grpc = cluster.map(clientOf);

      const gets = Array.from({ length: 200 }, (_, i) => {
        const node = i % 3;
        if (i % 2 === 0) return grpc[node]!.get("default", "cold").then(text, (error: unknown) => `error: ${String(error)}`);
        return fetch(keyUrl(cluster[node]!, "cold")).then(
          async (response) => (response.ok ? response.text() : `HTTP ${response.status}: ${await response.text()}`),
          (error: unknown) => `error: ${String(error)}`,
        );
      });
      // Hold the origin until every client get has reached a node.
      await waitFor(
        async () => {
          const stats = await Promise.all(cluster.map(defaultGroupStats));
          return stats.reduce((sum, s) => sum + s.gets - s.serverRequests, 0) >= 200;
        },
        10_000,
        "all 200 gets to reach the nodes",
      ).catch(async (error: Error) => {
        throw new Error(`${error.message}; origin saw ${origin.paths.length} requests; gets: ${await settled(gets)}`);
      });
      expect(origin.count("/default/cold")).toBe(1);
      release.open();
      const answers = await Promise.all(gets);
      expect(answers.filter((answer) => answer !== "value of /default/cold")).toEqual([]);
      expect(origin.count("/default/cold")).toBe(1);
      // Cached now, on every node's path.
      for (const client of grpc) expect(text(await client.get("default", "cold"))).toBe("value of /default/cold");
      expect(origin.count("/default/cold")).toBe(1);

      // 404 from the origin: not found, asked again next time.
      expect((await grpcError(grpc[0]!.get("default", "missing"))).code).toBe("ERR_NOT_FOUND");
      expect(origin.count("/default/missing")).toBe(1);
      const missing = await fetch(keyUrl(cluster[1]!, "missing"));
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as { error: string }).error).toBe("ERR_NOT_FOUND");
      expect(origin.count("/default/missing")).toBe(2);

      // 500 from the origin: an error, asked again next time.
      expect((await grpcError(grpc[2]!.get("default", "broken"))).code).toBe("ERR_LOAD_FAILED");
      expect(origin.count("/default/broken")).toBe(1);
      const broken = await fetch(keyUrl(cluster[0]!, "broken"));
      expect(broken.status).toBe(502);
      expect(((await broken.json()) as { error: string }).error).toBe("ERR_LOAD_FAILED");
      expect(origin.count("/default/broken")).toBe(2);
    },
    30_000,
  );
});

describe("metrics", () => {
  test(
    "/metrics is valid Prometheus text and its counters follow the gets",
    async () => {
      const origin = originOf((path) => new Response(`value of ${path}`));
      // The extra group comes from the environment twin of --group.
      const node = await startNode("metered", ["--port=0", `--origin=${origin.template}`], { env: { GCACHE_GROUP: "extra" } });
      const client = clientOf(node);
      const scrape = async () => {
        const response = await fetch(`${httpBase(node)}/metrics`);
        expect(response.status).toBe(200);
        expect(response.headers.get("content-type")).toStartWith("text/plain");
        return parsePrometheus(await response.text());
      };

      const before = await scrape();
      for (const [name, family] of before.families) {
        if (family.type === "counter") expect(name).toEndWith("_total");
        expect(family.help, `HELP of ${name}`).toBeDefined();
      }
      for (const name of ["gcache_gets_total", "gcache_hits_total", "gcache_loads_total", "gcache_cache_gets_total"]) {
        expect(before.families.get(name)?.type).toBe("counter");
      }
      expect(before.families.get("gcache_cache_bytes")?.type).toBe("gauge");
      expect(sampleValue(before, "gcache_serving")).toBe(1);
      expect(sampleValue(before, "gcache_ring_members")).toBe(1);
      for (const sample of before.samples) expect(sample.value, `${sample.name} is a finite number`).toBeFinite();
      const groups = new Set(before.samples.filter((s) => s.name === "gcache_gets_total").map((s) => s.labels.group));
      expect([...groups].sort()).toEqual(["default", "extra"]);

      const counter = (exposition: typeof before, name: string) => sampleValue(exposition, name, { group: "default" });
      // One miss (loaded from the origin), then three hits: two over gRPC, one over HTTP.
      expect(text(await client.get("default", "m1"))).toBe("value of /default/m1");
      expect(text(await client.get("default", "m1"))).toBe("value of /default/m1");
      expect(text(await client.get("default", "m1"))).toBe("value of /default/m1");
      expect(await (await fetch(keyUrl(node, "m1"))).text()).toBe("value of /default/m1");
      const after = await scrape();
      expect(counter(after, "gcache_gets_total") - counter(before, "gcache_gets_total")).toBe(4);
      expect(counter(after, "gcache_hits_total") - counter(before, "gcache_hits_total")).toBe(3);
      expect(counter(after, "gcache_loads_total") - counter(before, "gcache_loads_total")).toBe(1);
      expect(counter(after, "gcache_local_loads_total") - counter(before, "gcache_local_loads_total")).toBe(1);
      const extraGets = (exposition: typeof before) => sampleValue(exposition, "gcache_gets_total", { group: "extra" });
      expect(extraGets(after)).toBe(extraGets(before));
      expect(sampleValue(after, "gcache_cache_items", { group: "default", cache: "main" })).toBe(1);
      expect(origin.count("/default/m1")).toBe(1);
      // The JSON stats tell the same story.
      const stats = await defaultGroupStats(node);
      expect(stats.gets).toBe(counter(after, "gcache_gets_total"));
      expect(stats.cacheHits).toBe(counter(after, "gcache_hits_total"));
    },
    20_000,
  );

  test("the Prometheus parser rejects what Prometheus would", () => {
    const ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{g=\"x\\\"y\"} 3\n";
    expect(parsePrometheus(ok).samples).toEqual([{ name: "a_total", labels: { g: 'x"y' }, value: 3 }]);
    expect(() => parsePrometheus("a_total 1\n")).toThrow(/no TYPE/);
    expect(() => parsePrometheus("# TYPE a counter\na 1\n")).toThrow(/_total/);
    expect(() => parsePrometheus("# TYPE a gauge\na{b=\"c} 1\n")).toThrow(/unterminated/);
    expect(() => parsePrometheus("# TYPE a gauge\na one\n")).toThrow(/not a number/);
    expect(() => parsePrometheus("# TYPE a gauge\na 1\na 2\n")).toThrow(/twice/);
    expect(() => parsePrometheus("# TYPE a gauge\n# TYPE a gauge\n")).toThrow(/second TYPE/);
    expect(() => parsePrometheus("# TYPE a gauge\na 1")).toThrow(/newline/);
  });
});

describeEtcd("three nodes over etcd", () => {
  let etcd: EtcdServer | undefined;

  beforeAll(async () => {
    etcd = await startEtcd();
  }, 20_000);

  afterAll(async () => {
    await etcd?.stop();
  });

  test(
    "all agree on members; SIGTERM one and the others drop it at once while gets keep succeeding",
    async () => {
      const origin = originOf((path) => new Response(`origin${path}`));
      const names = ["A", "B", "C"];
      const cluster = await Promise.all(
        names.map((name) =>
          startNode(name, ["--port=0", `--node=${name}`, `--etcd=${etcd!.endpoint}`, "--lease-ttl=2s", `--origin=${origin.template}`]),
        ),
      );
      await waitFor(() => cluster.every((node) => node.members()?.join(",") === "A,B,C"), 5_000, "every node to log members A,B,C");
      for (const node of cluster) {
        const ring = (await (await fetch(`${httpBase(node)}/v1/ring`)).json()) as { members: { name: string; address: string }[] };
        expect(ring.members.map((m) => `${m.name}@${m.address}`).sort()).toEqual(cluster.map((n) => `${n.name}@${n.address}`));
      }

      const [a, b, c] = cluster as [CliNode, CliNode, CliNode];
      const survivors = [a, b].map(clientOf);
      const failures: string[] = [];
      let answered = 0;
      let stop = false;
      const load = (async () => {
        for (let i = 0; !stop; i++) {
          await Promise.all(
            survivors.map((client, s) => {
              const key = `k-${(i * 7 + s) % 150}`;
              return client.get("default", key, { timeoutMs: 3_000 }).then(
                (value) => {
                  if (text(value) === `origin/default/${key}`) answered++;
                  else failures.push(`${key}: wrong value ${text(value)}`);
                },
                (error: Error) => failures.push(`${key}: ${error.message}`),
              );
            }),
          );
        }
      })();
      try {
        await waitFor(() => answered >= 100, 10_000, "load to start");
        const signalledAt = performance.now();
        c.kill("SIGTERM");
        await waitFor(() => [a, b].every((node) => node.members()?.join(",") === "A,B"), 3_000, "the survivors to drop C");
        const dropMs = performance.now() - signalledAt;
        console.log(`etcd: survivors dropped the SIGTERMed node after ${dropMs.toFixed(0)} ms`);
        expect(await c.waitExit(5_000)).toBe(0);
        const at = answered;
        await waitFor(() => answered >= at + 100, 10_000, "gets to go on through the survivors");
        expect(dropMs).toBeLessThan(1_000);
      } finally {
        stop = true;
        await load;
      }
      expect(failures).toEqual([]);
      for (const node of [a, b]) {
        const ring = (await (await fetch(`${httpBase(node)}/v1/ring`)).json()) as { members: { name: string }[] };
        expect(ring.members.map((m) => m.name).sort()).toEqual(["A", "B"]);
      }
    },
    30_000,
  );
});

describe("footprint", () => {
  test(
    "startup time and idle memory (5 starts)",
    async () => {
      const binary = binaryUnderTest() !== undefined;
      const startMs: number[] = [];
      const healthyMs: number[] = [];
      const started: CliNode[] = [];
      for (let i = 0; i < 5; i++) {
        const spawnedAt = performance.now();
        const node = await startNode(`f${i}`, ["--port=0"]);
        startMs.push(performance.now() - spawnedAt);
        expect(await healthStatus(node.address)).toBe(ServingStatus.SERVING);
        healthyMs.push(performance.now() - spawnedAt);
        started.push(node);
      }
      // Idle for 2 s after the last start (the quantity measured, not a wait for a condition).
      await Bun.sleep(2_000);
      const rssMiB = started.map((node) => rssKiB(node.pid) / 1024);
      const mode = binary ? "binary" : "sources";
      console.log(
        `footprint (${mode}): start to serving line median ${median(startMs).toFixed(0)} ms ` +
          `[${startMs.map((ms) => ms.toFixed(0)).join(", ")}], to first SERVING health check median ${median(healthyMs).toFixed(0)} ms; ` +
          `idle VmRSS median ${median(rssMiB).toFixed(1)} MiB [${rssMiB.map((m) => m.toFixed(1)).join(", ")}]`,
      );
      // Generous sanity bounds; the figures above are what to record.
      expect(median(startMs)).toBeLessThan(binary ? 2_000 : 5_000);
      expect(Math.max(...rssMiB)).toBeLessThan(300);
    },
    30_000,
  );
});

describe.skipIf(binaryUnderTest() === undefined)("binary in an empty directory", () => {
  test(
    "ignores .env, bunfig.toml and package.json in its working directory",
    async () => {
      const dir = scratchDir();
      writeFileSync(join(dir, ".env"), "GCACHE_STORE=fifo\nGCACHE_PORT=notaport\n");
      writeFileSync(join(dir, "bunfig.toml"), 'preload = ["./missing-preload.ts"]\n');
      writeFileSync(join(dir, "package.json"), "{ this is not json");
      mkdirSync(join(dir, "node_modules"));
      const node = await startNode("tidy", ["--port=0"], { cwd: dir });
      const client = clientOf(node);
      await client.set("default", "k", bytes("v"));
      expect(text(await client.get("default", "k"))).toBe("v");
      expect(node.stderr).not.toContain("error");
    },
    20_000,
  );

  test(
    "serves in the process it was started as, restarted once with the runtime's settings; an operator's own value or off wins",
    async () => {
      const watched = new Set([...Object.keys(RUNTIME_TUNING), "GCACHE_RUNTIME_TUNED"]);
      const environ = (pid: number) =>
        Object.fromEntries(
          readFileSync(`/proc/${pid}/environ`, "latin1")
            .split("\0")
            .filter((entry) => watched.has(entry.slice(0, entry.indexOf("="))))
            .map((entry) => entry.split("=") as [string, string]),
        );
      const tuned = await startNode("tuned", ["--port=0"]);
      expect(await healthStatus(tuned.address)).toBe(ServingStatus.SERVING);
      expect(environ(tuned.pid)).toEqual({ ...RUNTIME_TUNING, GCACHE_RUNTIME_TUNED: "1" });
      const own = await startNode("own", ["--port=0"], { env: { BUN_JSC_largeHeapSize: "67108864" } });
      expect(environ(own.pid)).toEqual({ ...RUNTIME_TUNING, BUN_JSC_largeHeapSize: "67108864", GCACHE_RUNTIME_TUNED: "1" });
      const off = await startNode("off", ["--port=0"], { env: { GCACHE_RUNTIME_TUNING: "off" } });
      expect(environ(off.pid)).toEqual({});
      expect(await healthStatus(off.address)).toBe(ServingStatus.SERVING);
    },
    20_000,
  );
});
