/**
 * gcache-node against Go groupcache (github.com/golang/groupcache, from
 * Debian's package), the design gcache follows, in the same run: three nodes
 * of each on loopback, loaded in turn by the same wrk (one thread) with the
 * same kind of Lua script over the same gateway route.
 *
 *   bun run bench:groupcache          # 2 sizes x 8 contenders x 3 rounds x (1 s warm-up + 3 s): about 5 min
 *
 * Options:
 *   --rounds=N         rounds (default 3); medians over rounds are reported
 *   --duration=S       measured seconds per run (default 3)
 *   --warmup=S         warm-up seconds before every run (default 1)
 *   --first-warmup=S   warm-up seconds before a contender's first run (default 5)
 *   --sizes=B,B        value sizes in bytes (default 100,10240)
 *   --concurrency=N    wrk connections of the loaded runs (default 64)
 *   --gomaxprocs=N     GOMAXPROCS of the groupcache nodes (default: Go's own, one per CPU)
 *   --only=LIST        workloads among hit,hop,hop-c1,zipf (default all)
 *   --zipf-store=KIND  store of gcache's group zipf: lru2 (default, as a node's default) or lru, as groupcache's
 *   --build            rebuild dist/gcache-node first (it is built anyway when missing)
 *
 * Contenders, per value size and per system:
 *   hit        GET on A, keys A owns, held in its main cache
 *   hop        GET on A, keys B and C own, held in their main caches, A keeping no copy: every request
 *              crosses a hop (gcache: group cold with a hot-cache share of 0; groupcache: group cold with
 *              0 cache bytes on A, whose hot cache then stays empty, and 64 MiB on B and C)
 *   hop c1     the hop with one connection: its latency without load
 *   zipf       read-through, what both are for: GET on A of Zipf(0.99)-ranked keys over a universe of 10 MB
 *              (100,000 keys at 100 B, 1,000 at 10 KB), one trace of 500,000 requests for both systems; group
 *              zipf holds a quarter of the universe's bytes per node (its hot cache included: at most an
 *              eighth in both; gcache's main cache must hold two of its largest values, 1 MiB each) and loads a miss from
 *              the origin (_cluster/origin.ts, 1 ms per answer; gcache-node --origin, groupcache's getter
 *              an HTTP GET with kept connections); the caches start empty and stay warm across rounds, and
 *              both systems get the same requests in the same order. Also reported: A's hit share and
 *              origin loads per 1,000 requests.
 *
 * The groupcache node is _groupcache/main.go, built here with Debian's Go
 * (`go` from golang-go, groupcache from golang-github-golang-groupcache-dev,
 * both installed with apt-get when missing). Its getter makes the value; its
 * peers' HTTP client keeps 128 idle connections per peer, since Go's default
 * of 2 would open and close connections under 64 requests in flight. Every
 * process is stopped at the end, on errors and on SIGINT/SIGTERM.
 *
 * There is no goal against groupcache in the issue; the table gives gcache
 * / groupcache per round (then the median) for req/s, and CPU per request
 * summed over the three nodes of each system. Counters of each system check
 * that every run took the path it was meant for.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { GroupStats } from "../../src/group.ts";
import { sampleMachine, sampleProcess } from "./_node/commands.ts";
import { keysOwnedBy } from "./_cluster/keys.ts";
import { zipfTrace } from "./traces.ts";
import { getKeys, groupStats, putKeys, startCluster, type NodeProcess } from "./_cluster/nodes.ts";
import { installCleanup, runToEnd, startWithReadyLine, stopAll } from "./_cluster/procs.ts";
import { aptInstall, ensureBinary, ensureCommands } from "./_cluster/tools.ts";
import { fmtInt, fmtMs, fmtRatio, freePorts, hitKeyCount, median, sizeLabel, table, wholeNumber } from "./_cluster/util.ts";
import { runWrk, writeWrkScript, type WrkResult } from "./_cluster/wrk.ts";

const { values: flags } = parseArgs({
  options: {
    rounds: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    "first-warmup": { type: "string" },
    sizes: { type: "string" },
    concurrency: { type: "string" },
    gomaxprocs: { type: "string" },
    only: { type: "string" },
    "zipf-store": { type: "string" },
    build: { type: "boolean", default: false },
  },
});
const rounds = wholeNumber(flags.rounds, 3, 1, "rounds");
const durationS = wholeNumber(flags.duration, 3, 1, "duration");
const warmupS = wholeNumber(flags.warmup, 1, 0, "warmup");
const firstWarmupS = Math.max(warmupS, wholeNumber(flags["first-warmup"], 5, 0, "first-warmup"));
const concurrency = wholeNumber(flags.concurrency, 64, 1, "concurrency");
const goMaxProcs = wholeNumber(flags.gomaxprocs, 0, 0, "gomaxprocs");
const sizes = (flags.sizes ?? "100,10240").split(",").map((s) => wholeNumber(s.trim(), 0, 1, "sizes"));

const root = fileURLToPath(new URL("../..", import.meta.url));
const MEMBERS = ["A", "B", "C"] as const;
/** Where Debian puts Go sources; GOPATH mode builds against them without fetching anything. */
const DEBIAN_GOPATH = "/usr/share/gocode";
const GROUPCACHE_SOURCE = join(DEBIAN_GOPATH, "src/github.com/golang/groupcache");

type SystemName = "gcache" | "groupcache";
type Workload = "hit" | "hop" | "hop-c1" | "zipf";
const ALL_WORKLOADS: readonly Workload[] = ["hit", "hop", "hop-c1", "zipf"];
const WORKLOADS: readonly Workload[] = (() => {
  const names = (flags.only ?? ALL_WORKLOADS.join(",")).split(",").map((w) => w.trim());
  for (const name of names) if (!(ALL_WORKLOADS as readonly string[]).includes(name)) throw new Error(`--only: unknown workload ${name} (expected ${ALL_WORKLOADS.join(", ")})`);
  return ALL_WORKLOADS.filter((w) => names.includes(w));
})();
const zipfStore = flags["zipf-store"] ?? "lru2";
if (zipfStore !== "lru2" && zipfStore !== "lru") throw new Error(`--zipf-store: expected lru2 or lru, got ${zipfStore}`);
/** The read-through workload: Zipf exponent, requests in the trace both systems cycle through, universe and cache per node. */
const ZIPF = { s: 0.99, requests: 500_000, universeBytes: 10_000_000, cacheShare: 0.25, originDelayMs: 1 } as const;
const zipfUniverse = (size: number) => Math.max(1_000, Math.round(ZIPF.universeBytes / size / 1_000) * 1_000);
const zipfCacheBytes = (size: number) => Math.round(zipfUniverse(size) * size * ZIPF.cacheShare);

/** The counters both systems keep, by the names they share. */
interface Counters {
  gets: number;
  cacheHits: number;
  peerLoads: number;
  peerErrors: number;
  localLoads: number;
}

/** One system's three nodes, as the runs need them. */
interface System {
  name: SystemName;
  /** Base URLs of A, B, C. */
  urls: string[];
  pids: number[];
  /** Node A's counters of `group`. */
  countersOfA(group: string): Promise<Counters>;
  scripts: Record<"hit" | "hop" | "zipf", string>;
  stop(): Promise<void>;
}

interface Run {
  wrk: WrkResult;
  /** CPU of the three nodes, µs per request. */
  nodeCpuUs: number;
  /** Share of the machine's CPU not used by the nodes and wrk. */
  otherShare: number;
  /** A's cache hits (main and hot) per get. */
  hitShare: number;
  /** Values the origin answered, per 1,000 requests. */
  originLoadsPerK: number;
}

const note = (text: string) => console.error(`[bench:groupcache] ${text}`);

async function main(): Promise<void> {
  installCleanup();
  const tools = await ensureCommands([
    { command: "wrk", pkg: "wrk" },
    { command: "go", pkg: "golang-go" },
  ]);
  if (!existsSync(GROUPCACHE_SOURCE)) await aptInstall(["golang-github-golang-groupcache-dev"], "missing the groupcache sources");
  const binary = await ensureBinary(root, flags.build);
  const tmp = mkdtempSync(join(tmpdir(), "gcache-bench-groupcache-"));
  try {
    const goNode = await buildGroupcacheNode(tools.get("go")!, tmp);
    const origin = (
      await startWithReadyLine("origin", [process.execPath, join(root, "scripts/bench/_cluster/origin.ts"), `--delay-ms=${ZIPF.originDelayMs}`, "--delay-groups=zipf"])
    ).address;
    console.log(
      `bench:groupcache: gcache-node against Go groupcache, 3 nodes each; values ${sizes.map(sizeLabel).join(" and ")}; ` +
        `${rounds} rounds x (${warmupS} s warm-up + ${durationS} s, first ${firstWarmupS} s); wrk -t1 -c${concurrency} (hop c1: -c1); ` +
        `groupcache GOMAXPROCS ${goMaxProcs === 0 ? "Go's default" : goMaxProcs}; ${navigator.hardwareConcurrency} CPUs, Bun ${Bun.version}`,
    );
    const failures: string[] = [];
    for (const size of sizes) await benchSize(size, binary, goNode, tools.get("wrk")!, tmp, origin, failures);
    for (const failure of failures) console.log(`ERROR ${failure}`);
    if (failures.length > 0) process.exitCode = 1;
  } finally {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

async function buildGroupcacheNode(go: string, dir: string): Promise<string> {
  const out = join(dir, "groupcache-node");
  note("building _groupcache/main.go with Debian's Go …");
  await runToEnd("go build", [go, "build", "-o", out, join(root, "scripts/bench/_groupcache/main.go")], 300_000, {
    env: { ...process.env, GO111MODULE: "off", GOPATH: DEBIAN_GOPATH, GOFLAGS: "" },
  });
  return out;
}

async function benchSize(size: number, binary: string, goNode: string, wrk: string, tmp: string, origin: string, failures: string[]): Promise<void> {
  // As bench:cluster: at most 10 MiB of values per key set.
  const keyCount = hitKeyCount(size);
  note(`${sizeLabel(size)}: starting both clusters, ${fmtInt(keyCount)} hit keys and as many hop keys each …`);
  // Keys the origin sizes by their name (`z<bytes>-<rank>`), the same trace for both systems.
  const zipfKeys = Array.from(zipfTrace(zipfUniverse(size), ZIPF.s, ZIPF.requests, size).ids, (id) => `z${size}-${id}`);
  // Both systems serve the same route, so one script (and one key file of the whole trace) serves both.
  const zipfScript = writeWrkScript(tmp, `zipf${size}`, zipfKeys, "/v1/groups/zipf/keys/", 1);
  const systems = [await startGcache(size, keyCount, binary, tmp, origin, zipfScript), await startGroupcache(size, keyCount, goNode, tmp, origin, zipfScript)];
  try {
    const runs = new Map<string, Run[]>();
    const warmedUp = new Set<string>();
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? systems : [...systems].reverse();
      for (const workload of WORKLOADS) {
        for (const system of order) {
          const id = `${system.name} ${workload}`;
          const run = await measure(system, workload, wrk, warmedUp.has(id) ? warmupS : firstWarmupS, failures, size, origin);
          warmedUp.add(id);
          runs.set(id, [...(runs.get(id) ?? []), run]);
        }
      }
    }
    report(size, runs);
  } finally {
    await Promise.all(systems.map((s) => s.stop()));
  }
}

async function startGcache(size: number, keyCount: number, binary: string, tmp: string, origin: string, zipfScript: string): Promise<System> {
  const nodes = await startCluster({
    binary,
    names: [...MEMBERS],
    groups: ["cold:64MiB:lru2:0", `zipf:${zipfCacheBytes(size)}B:${zipfStore}`],
    origin: `http://${origin}/{group}/{key}`,
  });
  const [A] = nodes as [NodeProcess];
  const hitKeys = keysOwnedBy(MEMBERS, ["A"], `h${size}-`, keyCount);
  const hopKeys = keysOwnedBy(MEMBERS, ["B", "C"], `c${size}-`, keyCount);
  // A PUT through A stores at the owner; group cold keeps no copy on A.
  await putKeys(A, "default", hitKeys, size);
  await putKeys(A, "cold", hopKeys, size);
  const held = (await groupStats(A, "cold")).caches;
  if (held.main.items + held.hot.items > 0) throw new Error(`gcache node A holds ${held.main.items + held.hot.items} keys of group cold`);
  return {
    name: "gcache",
    urls: nodes.map((n) => n.http),
    pids: nodes.map((n) => n.service.pid),
    countersOfA: async (group) => pickCounters(await groupStats(A, group)),
    scripts: {
      hit: writeWrkScript(tmp, `gcache-hit${size}`, hitKeys, "/v1/groups/default/keys/", 1),
      hop: writeWrkScript(tmp, `gcache-hop${size}`, hopKeys, "/v1/groups/cold/keys/", 1),
      zipf: zipfScript,
    },
    stop: async () => {
      await Promise.all(nodes.map((n) => n.service.stop()));
    },
  };
}

function pickCounters(stats: GroupStats | Counters): Counters {
  return { gets: stats.gets, cacheHits: stats.cacheHits, peerLoads: stats.peerLoads, peerErrors: stats.peerErrors, localLoads: stats.localLoads };
}

async function startGroupcache(size: number, keyCount: number, goNode: string, tmp: string, origin: string, zipfScript: string): Promise<System> {
  const urls = freePorts(MEMBERS.length).map((port) => `http://127.0.0.1:${port}`);
  const services = await Promise.all(
    MEMBERS.map(async (name, i) => {
      const argv = [goNode, "-self", urls[i]!, "-peers", urls.join(","), "-value-bytes", String(size), "-gomaxprocs", String(goMaxProcs)];
      argv.push("-origin", `http://${origin}`, "-zipf-bytes", String(zipfCacheBytes(size)));
      // A keeps no copies of the hop's keys: with no cache bytes, groupcache's hot cache stays empty.
      argv.push("-cold-bytes", name === "A" ? "0" : String(64 << 20));
      return (await startWithReadyLine(`groupcache ${name}`, argv)).service;
    }),
  );
  const countersOfA = async (group: string): Promise<Counters> => {
    const response = await fetch(`${urls[0]}/v1/stats?group=${group}`);
    if (!response.ok) throw new Error(`groupcache A: GET /v1/stats answered ${response.status}`);
    return pickCounters((await response.json()) as Counters);
  };
  // Keys by groupcache's own ring (its consistent hash over the peers' URLs), as node A reports it. With 50
  // points per node its shares are uneven (a node may own a tenth of the keys), so candidates come in batches.
  const pick = async (prefix: string, wanted: (owner: string) => boolean) => {
    const chosen: string[] = [];
    for (let from = 0; chosen.length < keyCount; from += keyCount) {
      if (from > keyCount * 100) throw new Error(`too few groupcache keys ${prefix}* owned as wanted`);
      const keys = Array.from({ length: keyCount }, (_, i) => `${prefix}${from + i}`);
      const response = await fetch(`${urls[0]}/v1/owners`, { method: "POST", body: `${keys.join("\n")}\n` });
      const owners = (await response.text()).split("\n");
      if (owners.length !== keys.length + 1) throw new Error(`groupcache A named ${owners.length - 1} owners for ${keys.length} keys`);
      for (const [i, key] of keys.entries()) if (chosen.length < keyCount && wanted(owners[i]!)) chosen.push(key);
    }
    return chosen;
  };
  const hitKeys = await pick(`h${size}-`, (owner) => owner === urls[0]);
  const hopKeys = await pick(`c${size}-`, (owner) => owner !== urls[0]);
  // groupcache has no set: a first get loads each key into its owner's main cache (through A for both groups).
  const A = { name: "groupcache A", http: urls[0]! };
  await getKeys(A, "default", hitKeys, size);
  await getKeys(A, "cold", hopKeys, size);
  return {
    name: "groupcache",
    urls,
    pids: services.map((s) => s.pid),
    countersOfA,
    scripts: {
      hit: writeWrkScript(tmp, `groupcache-hit${size}`, hitKeys, "/v1/groups/default/keys/", 1),
      hop: writeWrkScript(tmp, `groupcache-hop${size}`, hopKeys, "/v1/groups/cold/keys/", 1),
      zipf: zipfScript,
    },
    stop: async () => {
      await Promise.all(services.map((s) => s.stop()));
    },
  };
}

/** Per value size and system, where wrk stands in the zipf trace: every run continues it, so both see the same requests in order. */
const zipfCursor = new Map<string, number>();

async function originAnswered(origin: string): Promise<number> {
  const response = await fetch(`http://${origin}/_stats`);
  if (!response.ok) throw new Error(`origin: GET /_stats answered ${response.status}`);
  return ((await response.json()) as { answered: number }).answered;
}

async function measure(system: System, workload: Workload, wrk: string, warmup: number, failures: string[], size: number, origin: string): Promise<Run> {
  const group = workload === "hit" ? "default" : workload === "zipf" ? "zipf" : "cold";
  const connections = workload === "hop-c1" ? 1 : concurrency;
  const spec = { wrk, url: system.urls[0]!, script: system.scripts[workload === "hop-c1" ? "hop" : workload], threads: 1, connections };
  const zipf = workload === "zipf";
  const traceAt = `${size} ${system.name}`;
  let cursor = zipf ? (zipfCursor.get(traceAt) ?? 0) : 0;
  if (warmup > 0) cursor = (await runWrk({ ...spec, seconds: warmup, cursor })).cursor;
  const before = await system.countersOfA(group);
  const originBefore = await originAnswered(origin);
  const cpuBefore = system.pids.map((pid) => sampleProcess(pid).cpuMs);
  const machineBefore = sampleMachine();
  const result = await runWrk({ ...spec, seconds: durationS, cursor });
  const machineAfter = sampleMachine();
  const nodeCpuMs = system.pids.reduce((sum, pid, i) => sum + sampleProcess(pid).cpuMs - cpuBefore[i]!, 0);
  const after = await system.countersOfA(group);
  const originLoads = (await originAnswered(origin)) - originBefore;
  if (zipf) zipfCursor.set(traceAt, result.cursor);

  const label = `${sizeLabel(size)} ${system.name} ${workload}`;
  if (result.socketErrors + result.statusErrors > 0) failures.push(`${label}: ${result.socketErrors} socket errors, ${result.statusErrors} bad answers`);
  const gets = after.gets - before.gets;
  const hits = after.cacheHits - before.cacheHits;
  const fetched = after.peerLoads - before.peerLoads;
  if (gets < result.requests * 0.99) failures.push(`${label}: A counted ${gets} gets for ${result.requests} requests`);
  if (workload === "hit" && hits < gets * 0.99) failures.push(`${label}: only ${hits} of ${gets} gets were cache hits on A`);
  // Concurrent gets of one key may share a fetch, so a few gets fewer than fetched is no fault.
  if ((workload === "hop" || workload === "hop-c1") && (hits > gets * 0.01 || fetched < gets * 0.95)) failures.push(
      `${label}: of ${gets} gets on A, ${hits} hits, ${fetched} fetched, ${after.peerErrors - before.peerErrors} failed fetches, ${after.localLoads - before.localLoads} loaded on A`,
    );

  // /proc/stat counts ticks of every CPU over about wrk's lifetime: the machine's busy share, less the nodes and wrk.
  const machineTicks = machineAfter.total - machineBefore.total;
  const busyShare = machineTicks > 0 ? (machineAfter.busy - machineBefore.busy) / machineTicks : 0;
  const otherShare = Math.max(0, busyShare - (nodeCpuMs + result.cpuMs) / (result.wallMs * navigator.hardwareConcurrency));
  if (!zipf && originLoads > 0) failures.push(`${label}: the origin answered ${originLoads} loads; this workload loads nothing`);
  return {
    wrk: result,
    nodeCpuUs: (nodeCpuMs * 1000) / result.requests,
    otherShare,
    hitShare: gets > 0 ? hits / gets : 0,
    originLoadsPerK: (originLoads * 1000) / Math.max(1, result.requests),
  };
}

function report(size: number, runs: Map<string, Run[]>): void {
  const list = (system: SystemName, workload: Workload) => runs.get(`${system} ${workload}`) ?? [];
  const rows: string[][] = [];
  for (const workload of WORKLOADS) {
    for (const system of ["gcache", "groupcache"] as const) {
      const r = list(system, workload);
      rows.push([
        `${workload} ${system}`,
        fmtInt(median(r.map((x) => x.wrk.rps))),
        fmtMs(median(r.map((x) => x.wrk.p50Ms))),
        fmtMs(median(r.map((x) => x.wrk.p99Ms))),
        median(r.map((x) => x.nodeCpuUs)).toFixed(1),
        workload === "zipf" ? `${(median(r.map((x) => x.hitShare)) * 100).toFixed(1)}%` : "-",
        workload === "zipf" ? median(r.map((x) => x.originLoadsPerK)).toFixed(1) : "-",
        `${Math.round(median(r.map((x) => x.otherShare)) * 100)}%`,
      ]);
    }
  }
  console.log(`\n${sizeLabel(size)} values (medians of ${rounds} rounds; CPU: the three nodes' user + system time per request)`);
  console.log(table(["workload", "req/s", "p50 ms", "p99 ms", "node CPU µs/req", "A hits", "origin loads /1k req", "other CPU"], rows));
  console.log("\ngcache / groupcache, per round then median:");
  for (const workload of WORKLOADS) {
    const ours = list("gcache", workload);
    const theirs = list("groupcache", workload);
    const ratios = (pick: (r: Run) => number) => ours.map((r, i) => pick(r) / pick(theirs[i]!));
    const line = (what: string, values: number[]) => `${what} ${fmtRatio(median(values))} [${values.map(fmtRatio).join(" ")}]`;
    console.log(
      `  ${workload.padEnd(7)} ${line("req/s", ratios((r) => r.wrk.rps))}; ${line("p50", ratios((r) => r.wrk.p50Ms))}; ` +
        `${line("p99", ratios((r) => r.wrk.p99Ms))}; ${line("CPU/req", ratios((r) => r.nodeCpuUs))}`,
    );
  }
}

await main();
