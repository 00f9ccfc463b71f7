/**
 * The compiled gcache-node executable in a 3-node loopback cluster, against
 * references measured in the same run: Redis (GET), a bare Bun.serve (a fixed
 * body) and a bare grpc-js server; with --full also memcached (get), a second
 * bare Bun.serve (a Map of the same keys' values), a bare server on Bun's TCP
 * sockets (fixed bytes) and nginx (a fixed body); plus the executable's start
 * time and memory.
 *
 *   bun run bench:cluster             # the goals' rows: 2 value sizes x 8 contenders x 3 rounds
 *                                     # x (1 s warm-up + 3 s), 5 s first warm-ups: about 4.5 min
 *   bun run bench:cluster --full      # also the rows that explain them, and writes: 20 contenders, about 10 min
 *   bun run bench:cluster --quick     # 100-byte values, 1 s runs, one warm-up pass: under a minute
 *   bun run bench:cluster --soak      # also: RSS every 10 s under the mixed workload for 5 minutes
 *
 * Options:
 *   --rounds=N          rounds (default 3); medians over rounds are reported
 *   --duration=S        measured seconds per run, whole seconds (wrk takes no fractions); default 3, quick 1
 *   --warmup=S          warm-up seconds before every run (default 1); --quick warms up once, in a discarded pass;
 *                       the one-client generator warms up in the process that measures (a fresh client's own
 *                       first second of pauses would otherwise be in its p99)
 *   --first-warmup=S    warm-up seconds before a contender's first run (default 5, at least --warmup): a path's
 *                       first seconds of load run slower (JIT tiers, the peers' streams; the hop's first round
 *                       came out 10-15 % below the later ones after 1 s)
 *   --sizes=B,B         value sizes in bytes (default 100,10240; quick 100)
 *   --only=LIST         sections among start,http,grpc,peer,writes,mixed (default all but writes, which --full adds;
 *                       peer brings the local-hit runs it is compared with); soak is added by --soak
 *   --full              also the contenders no goal names (marked --full below: bare Bun.serve with a Map, the bare
 *                       socket server, nginx, memcached, the one-client and equal-load rows) and the writes section
 *   --soak              run the soak after the rest (--only=soak --soak: the soak alone)
 *   --soak-minutes=M    soak length (default 5); RSS is sampled every 10 s
 *   --concurrency=N     connections / calls in flight (default 64)
 *   --wrk-threads=N     wrk threads (default 1: like redis-benchmark, one load thread; on two cores a second
 *                       wrk thread takes CPU from the server it measures)
 *   --cold-group=SPEC   size[:store] of group `cold` used for the peer hop (default 64MiB, quick 4MiB:lru; see below)
 *   --mixed-bytes=SIZE  size of group `mixed` on each node (default: the node's default, 64MiB); the mixed rows fill it,
 *                       and what it holds stays on the nodes' heaps for the rows after them
 *   --grpc-client=C     the gRPC generator's client: raw (default; HTTP/2 on a Bun socket, _node/raw-grpc.ts,
 *                       15-30 µs per call, so the gRPC servers are what limits) or grpc-js (about 90 µs per call,
 *                       more than the servers it loads: on two cores both contenders then wait on it)
 *   --node-env=N=V,...  environment for the three nodes only (e.g. BUN_JSC_largeHeapSize=67108864 or
 *                       GCACHE_RUNTIME_TUNING=off); the load generators and bare servers keep this process's
 *   --build             rebuild dist/gcache-node first (it is built anyway when missing)
 *   --verbose           print every run as it ends
 *
 * Processes, those the contenders run need (all on 127.0.0.1, all stopped at
 * the end, on errors and on SIGINT/SIGTERM): nodes A, B, C (dist/gcache-node, static --peers,
 * --origin pointing at the origin), the origin (_cluster/origin.ts, its own
 * Bun process; 1 ms per answer for group `mixed`), redis-server (--save ""
 * --appendonly no), memcached (UDP off), two bare Bun.serve, one bare socket server, one nginx and one bare
 * grpc-js server per value size, the gRPC load generator (_node/load.ts), the mixed-workload generator
 * (_cluster/mixed.ts), and wrk / redis-benchmark / tcp-get.ts runs. Missing wrk,
 * redis-server, memcached or nginx are installed with apt-get (Debian packages wrk,
 * redis-server, redis-tools, memcached, nginx).
 *
 * Contenders, per value size, each with `concurrency` connections or calls in flight:
 *   http gcache   wrk GET /v1/groups/default/keys/<key> on A, keys A owns, prefilled with PUT: main-cache hits
 *   http bare     the same wrk script against a Bun.serve returning a fixed body of the same size
 *   http bare map the same wrk script against a Bun.serve serving each of those keys its own value from a Map,
 *                 through the gateway's route (--full; no goal: what finding and sending distinct values costs)
 *   http bare sockets  the same wrk script against Bun's TCP sockets answering each request head with fixed
 *                 bytes, the request unread (--full; no goal: the floor of any HTTP server on Bun, as the gateway
 *                 is built)
 *   http nginx    the same wrk script against nginx, one process, answering every request with a fixed body of the
 *                 same size from its configuration (--full; no goal: what a server in C gets under wrk on the same
 *                 cores, next to Redis under redis-benchmark; and what Bun's sockets add, next to the bare socket
 *                 server)
 *   redis GET     redis-benchmark -t get -r <keys> on keys prefilled with SET of the same size
 *   one client    (--full; no goal) the http gcache and redis GET workloads again, and memcached's get over keys
 *                 prefilled with set of the same size, all loaded by _cluster/tcp-get.ts (raw TCP, HTTP/1.1, RESP
 *                 or memcached's text protocol, same connections, same clock): wrk and redis-benchmark differ in
 *                 their own cost and in what their latency covers, so these are the like-for-like comparisons
 *                 (memcached runs its default 4 worker threads, as a user gets it; Debian has no load tool that
 *                 measures it as the others are measured)
 *   equal load    (--full; no goal) the same three again in an open loop, and the bare sockets server: requests
 *                 fall due at --equal-rate per second (default 50,000, below what any of them serves here), latency
 *                 counted from when each fell due, so they are compared at the same load (a closed loop at full
 *                 speed compares throughput: the faster server also answers sooner); the bare server's tail is
 *                 what Bun's sockets and collector leave any server at that load
 *   http peer     wrk GET /v1/groups/cold/keys/<key> on A, keys B and C own: every request is one gRPC hop
 *   grpc peer     the same keys over gRPC Get (load generator of bench:node)
 *   grpc gcache   gRPC Get on A, keys A owns (the HTTP keys): main-cache hits
 *   grpc bare     the bare grpc-js server of bench:node, fixed value of the same size
 *   http put      (--full, or --only=writes) wrk PUT /v1/groups/writes/keys/<key> on A, keys owned by A, B and C
 *                 alike (group writes): each PUT stores at the owner and drops the copies on the other nodes
 *   http delete   (--full, or --only=writes) wrk DELETE of the same keys on A: each deletes at the owner and drops
 *                 the copies on the other nodes (after the first pass over the keys nobody holds them: 404,
 *                 counted as an answer)
 *   mixed         Zipf(0.99) keys over 100,000, 90 % GET / 10 % PUT, round-robin over A, B, C; misses load
 *                 from the origin (1 ms)
 * Every round runs every contender once, in an order reversed every other
 * round; contenders that are compared run next to each other, and ratios are
 * taken within a round (per-round ratios are printed), then the median.
 *
 * Peer hop without the hot cache: group `cold` is started with a hot-cache
 * share of 0 (`--group cold:SIZE:STORE:0`), so A keeps no copies and every
 * peer-hop get crosses the hop; A's counters confirm it. Its keys (as many as
 * the hit keys) are loaded from the origin at their owners before the rounds.
 *
 * Goals (median of per-round ratios): HTTP gateway hits >= 1.2x Redis GET req/s and >= 0.9x bare Bun.serve,
 * p99 <= Redis's; gRPC hits >= 0.9x bare grpc-js; peer hop req/s >= 0.5x local hits on the same transport.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { GroupStats } from "../../src/group.ts";
import { parseBytes } from "../../src/units.ts";
import { Child, within } from "./_node/child.ts";
import { busyCpusBetween, processDeltas, sampleMachine, sampleProcess, type ProcessDelta, type ProcSample } from "./_node/commands.ts";
import type { RunResult } from "./_node/load.ts";
import { keysOwnedBy, ownersOf } from "./_cluster/keys.ts";
import type { MixedResult, MixedSpec } from "./_cluster/mixed.ts";
import { getKeys, groupStats, putKeys, startCluster, type NodeProcess } from "./_cluster/nodes.ts";
import { installCleanup, startWithReadyLine, stopAll, track, type Service } from "./_cluster/procs.ts";
import { startNginx } from "./_cluster/nginx.ts";
import { fillMemcached, memcachedHitCounters, memcachedKey, startMemcached, type Memcached } from "./_cluster/memcached.ts";
import { fillRedis, redisHitCounters, redisKey, runRedisBenchmark, startRedis, type Redis } from "./_cluster/redis.ts";
import { measureStarts, type StartSample } from "./_cluster/startup.ts";
import { runTcpGet, type TcpGetSpec } from "./_cluster/tcp-get-run.ts";
import { ensureBinary, ensureCommands, NEEDED_COMMANDS } from "./_cluster/tools.ts";
import { fmtInt, fmtMs, fmtRatio, hitKeyCount, mb, median, pct, sizeLabel, slope, spread, table, wholeNumber } from "./_cluster/util.ts";
import { runWrk, writeWrkScript, type WrkResult } from "./_cluster/wrk.ts";

// ---------------------------------------------------------------- options

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    full: { type: "boolean", default: false },
    rounds: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    "first-warmup": { type: "string" },
    sizes: { type: "string" },
    only: { type: "string" },
    soak: { type: "boolean", default: false },
    "soak-minutes": { type: "string" },
    concurrency: { type: "string" },
    "wrk-threads": { type: "string" },
    "cold-group": { type: "string" },
    "mixed-bytes": { type: "string" },
    "equal-rate": { type: "string" },
    "grpc-client": { type: "string" },
    "node-env": { type: "string" },
    build: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
  },
});


const quick = flags.quick;
const rounds = wholeNumber(flags.rounds, 3, 1, "rounds");
const durationS = wholeNumber(flags.duration, quick ? 1 : 3, 1, "duration");
const warmupS = wholeNumber(flags.warmup, 1, 0, "warmup");
const firstWarmupS = Math.max(warmupS, wholeNumber(flags["first-warmup"], 5, 0, "first-warmup"));
const concurrency = wholeNumber(flags.concurrency, 64, 1, "concurrency");
const WRK_THREADS = wholeNumber(flags["wrk-threads"], 1, 1, "wrk-threads");
const soakMinutes = Number(flags["soak-minutes"] ?? "5");
if (!(soakMinutes > 0)) throw new Error(`--soak-minutes: expected a positive number, got ${flags["soak-minutes"]}`);
const sizes = (flags.sizes ?? (quick ? "100" : "100,10240")).split(",").map((s) => wholeNumber(s.trim(), 0, 1, "sizes"));
const SECTIONS = ["start", "http", "grpc", "peer", "writes", "mixed", "soak"] as const;
type Section = (typeof SECTIONS)[number];
const sections = new Set<Section>();
const full = flags.full;
/** Sections without --only: all but the soak (--soak adds it), and the writes only with --full (no goal names them). */
const defaultSections = SECTIONS.filter((name) => name !== "soak" && (full || name !== "writes")).join(",");
for (const name of (flags.only ?? defaultSections).split(",").map((s) => s.trim()).filter((s) => s !== "")) {
  if (!(SECTIONS as readonly string[]).includes(name)) throw new Error(`--only: unknown section ${name} (expected ${SECTIONS.join(", ")})`);
  sections.add(name as Section);
}
if (flags.soak) sections.add("soak");
const coldSpec = flags["cold-group"] ?? (quick ? "4MiB:lru" : "64MiB");
const [coldBytesText = "", coldStore = "lru2"] = coldSpec.split(":");
const coldBytes = parseBytes(coldBytesText);
if (coldBytes === null || coldBytes <= 0 || !["lru", "lru2"].includes(coldStore)) {
  throw new Error(`--cold-group: expected SIZE[:lru|lru2], e.g. 4MiB:lru, got ${coldSpec}`);
}
const mixedBytesText = flags["mixed-bytes"];
if (mixedBytesText !== undefined && !((parseBytes(mixedBytesText) ?? 0) > 0)) {
  throw new Error(`--mixed-bytes: expected a size such as 8MiB, got ${mixedBytesText}`);
}
const mixedGroup = mixedBytesText === undefined ? "mixed" : `mixed:${mixedBytesText}`;
const verbose = flags.verbose;
/** Requests per second of the equal-load pair (open loop). */
const equalRate = wholeNumber(flags["equal-rate"], 50_000, 1, "equal-rate");
/** The gRPC generator's client (_node/load.ts): raw HTTP/2, cheap enough that the servers are what limits, or grpc-js. */
const grpcClient = flags["grpc-client"] ?? "raw";
if (grpcClient !== "raw" && grpcClient !== "grpc-js") throw new Error(`--grpc-client: expected raw or grpc-js, got ${grpcClient}`);
/** Environment for the three nodes only (`--node-env=NAME=VALUE,…`): their settings vary, the other Bun processes' do not. */
const nodeEnv: Record<string, string> = {};
for (const pair of (flags["node-env"] ?? "").split(",").filter((p) => p !== "")) {
  const eq = pair.indexOf("=");
  if (eq <= 0) throw new Error(`--node-env: expected NAME=VALUE[,NAME=VALUE…], got ${pair}`);
  nodeEnv[pair.slice(0, eq)] = pair.slice(eq + 1);
}

const MEMBERS = ["A", "B", "C"];
/** A run during which the rest of the machine used less than this share of a core counts as quiet. */
const QUIET_OTHER_CPU = 0.2;
const MIXED = { universe: 100_000, zipf: 0.99, setShare: 0.1 };
const SOAK_SIZE = 10_240;
const SOAK_SAMPLE_MS = 10_000;
const START_RUNS = 5;
const IDLE_MS = 2_000;

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
const bun = process.execPath;

// ---------------------------------------------------------------- contenders

type ContenderId =
  | "http-bare"
  | "http-bare-map"
  | "http-bare-sockets"
  | "http-nginx"
  | "http-gcache"
  | "redis"
  | "http-gcache-tcp"
  | "redis-tcp"
  | "memcached-tcp"
  | "http-gcache-rate"
  | "http-bare-sockets-rate"
  | "redis-rate"
  | "memcached-rate"
  | "http-peer"
  | "grpc-peer"
  | "grpc-gcache"
  | "grpc-bare"
  | "http-put"
  | "http-delete"
  | "mixed";

const LABELS: Record<ContenderId, string> = {
  "http-gcache": "HTTP gateway, hit on A",
  "http-bare": "HTTP bare Bun.serve",
  "http-bare-map": "HTTP bare Bun.serve, Map",
  "http-bare-sockets": "HTTP bare Bun.listen",
  "http-nginx": "HTTP nginx (C), fixed body",
  redis: "Redis GET (redis-benchmark)",
  "http-gcache-tcp": "HTTP gateway hit, one client",
  "redis-tcp": "Redis GET, one client",
  "memcached-tcp": "memcached get, one client",
  "http-gcache-rate": "HTTP gateway hit, equal load",
  "http-bare-sockets-rate": "HTTP bare Bun.listen, equal load",
  "redis-rate": "Redis GET, equal load",
  "memcached-rate": "memcached get, equal load",
  "http-peer": "HTTP gateway, peer hop",
  "grpc-gcache": "gRPC Get, hit on A",
  "grpc-bare": "gRPC bare grpc-js",
  "grpc-peer": "gRPC Get, peer hop",
  "http-put": "HTTP gateway PUT on A",
  "http-delete": "HTTP gateway DELETE on A",
  mixed: "mixed 90/10 over A,B,C",
};

/** Running order of a round (reversed every other round): compared contenders sit next to each other. */
const ORDER: ContenderId[] = [
  "http-bare",
  "http-bare-map",
  "http-bare-sockets",
  "http-nginx",
  "http-gcache",
  "redis",
  "redis-tcp",
  "http-gcache-tcp",
  "memcached-tcp",
  "memcached-rate",
  "http-bare-sockets-rate",
  "http-gcache-rate",
  "redis-rate",
  "http-peer",
  "grpc-peer",
  "grpc-gcache",
  "grpc-bare",
  "http-put",
  "http-delete",
  "mixed",
];

const wanted = new Set<ContenderId>();
if (sections.has("http")) {
  for (const id of ["http-bare", "http-gcache", "redis"] as const) wanted.add(id);
  // Rows that explain the goals' figures but are none: the floor under the gateway, a server in C, like-for-like clients.
  if (full) {
    for (const id of ["http-bare-map", "http-bare-sockets", "http-nginx", "http-gcache-tcp", "redis-tcp", "memcached-tcp", "http-gcache-rate", "http-bare-sockets-rate", "redis-rate", "memcached-rate"] as const) {
      wanted.add(id);
    }
  }
}
if (sections.has("grpc")) for (const id of ["grpc-gcache", "grpc-bare"] as const) wanted.add(id);
if (sections.has("peer")) for (const id of ["http-peer", "http-gcache", "grpc-peer", "grpc-gcache"] as const) wanted.add(id);
if (sections.has("writes")) for (const id of ["http-put", "http-delete"] as const) wanted.add(id);
if (sections.has("mixed")) wanted.add("mixed");
const contenders = ORDER.filter((id) => wanted.has(id));
/** The outside commands, and the contenders whose runs need each (any one of them). */
const NEEDED_BY: Record<string, ContenderId[]> = {
  wrk: ["http-gcache", "http-put"],
  "redis-server": ["redis"],
  "redis-benchmark": ["redis"],
  "redis-cli": ["redis"],
  memcached: ["memcached-tcp"],
  nginx: ["http-nginx"],
};
/** Contenders served by redis-server: their path is Redis's hit counters. */
const isRedis = (id: ContenderId) => id === "redis" || id === "redis-tcp" || id === "redis-rate";
const isMemcached = (id: ContenderId) => id === "memcached-tcp" || id === "memcached-rate";

/** Everything measured in one run of one contender. */
interface Measured {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Mean latency as the load tool reports it (NaN when it reports none). */
  meanMs: number;
  requests: number;
  /** Window over which CPU was sampled, s. */
  seconds: number;
  errors: number;
  firstError: string | null;
  /** CPU ms in the window: the process that takes the requests, and the other cache nodes (NaN when none). */
  recvCpuMs: number;
  peersCpuMs: number;
  /** Run-queue wait of the server's main thread in the window, ms (for mixed: A's, B's and C's together). */
  recvWaitMs: number;
  /** Minor page faults of the server in the window (for mixed: A's, B's and C's together). */
  recvFaults: number;
  recvRssBytes: number;
  genCpuMs: number;
  machineBusyCpus: number;
  path: PathDelta | null;
  mixed: MixedResult | null;
}

interface PathDelta {
  gets: number;
  mainHits: number;
  hotHits: number;
  peerLoads: number;
  localLoads: number;
  /** Gets the owners (B, C) served for peers. */
  ownerServed: number;
  /** Redis, memcached: GETs that found no key. */
  misses?: number;
}

/** Per value size: the key sets, scripts and reference servers. */
interface SizeSetup {
  size: number;
  hitKeys: string[];
  coldKeys: string[];
  redisDb: number;
  hitScript: string;
  /** Key lists of the one-client generator (tcp-get.ts): the gateway's hit keys, Redis's keys, memcached's keys. */
  hitKeysFile: string;
  redisKeysFile: string;
  memcachedKeysFile: string;
  coldScript: string;
  /** PUTs of `size` bytes over keys of group writes. */
  putScript: string;
  /** DELETEs over the same keys. */
  deleteScript: string;
  /** The bare HTTP servers by contender (see `_cluster/bare-http.ts`): a fixed body, a Map of the hit keys' values, Bun's sockets. */
  bareHttp: Map<ContenderId, { service: Service; url: string }>;
  bareGrpc: Child | null;
}

// ---------------------------------------------------------------- state

let tmp: string | null = null;

function spawnChild(label: string, argv: string[]): Child {
  const child = new Child(label, argv);
  track({ stop: () => child.stop().catch(() => child.kill()), kill: () => child.kill() });
  return child;
}

function note(text: string): void {
  process.stderr.write(`${text}\n`);
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  installCleanup(() => {
    if (tmp !== null) rmSync(tmp, { recursive: true, force: true });
  });
  const started = performance.now();
  const needsLoad = contenders.length > 0 || sections.has("soak");
  const needed = NEEDED_COMMANDS.filter((n) => (NEEDED_BY[n.command] ?? []).some((id) => wanted.has(id)));
  const tools = await ensureCommands(needed);
  const binary = await ensureBinary(ROOT, flags.build);
  tmp = mkdtempSync(join(tmpdir(), "gcache-bench-"));

  const cpus = navigator.hardwareConcurrency;
  console.log(
    `cluster benchmark: dist/gcache-node, 3 nodes A B C on loopback; ${concurrency} connections / calls in flight; wrk -t ${WRK_THREADS}; ` +
      (contenders.length === 0
        ? ""
        : `values ${sizes.map(sizeLabel).join(" and ")}; ${rounds} rounds x (${quick ? "one warm-up pass" : `${warmupS} s warm-up`} + ${durationS} s${quick ? "" : `, first warm-ups ${firstWarmupS} s`}); `) +
      `${cpus} CPUs, Bun ${Bun.version}`,
  );

  let starts: StartSample[] | null = null;
  if (sections.has("start")) {
    note("start check: 5 starts of one node …");
    starts = await measureStarts(binary, START_RUNS, IDLE_MS, quick ? 1 : START_RUNS);
  }

  let failures: string[] = [];
  if (needsLoad) failures = await loadSections(binary, tools);
  if (starts !== null) printStarts(starts);
  for (const failure of failures) console.log(`ERROR ${failure}`);
  console.log(`\ntotal time ${((performance.now() - started) / 1000).toFixed(1)} s`);
  if (failures.length > 0) process.exitCode = 1;
}

async function loadSections(binary: string, tools: Map<string, string>): Promise<string[]> {
  const failures: string[] = [];
  const origin = await startWithReadyLine("origin", [bun, here("./_cluster/origin.ts"), "--delay-ms=1", "--delay-groups=mixed"]);
  const nodes = await startCluster({
    binary,
    names: MEMBERS,
    // No hot cache in group cold: every peer-hop get crosses the hop.
    groups: [`cold:${coldBytesText}:${coldStore}:0`, mixedGroup, "writes"],
    origin: `http://${origin.address}/{group}/{key}`,
    env: nodeEnv,
  });
  const [A, B, C] = nodes as [NodeProcess, NodeProcess, NodeProcess];
  const nodePids = nodes.map((n) => n.service.pid);

  const needGrpc = wanted.has("grpc-gcache") || wanted.has("grpc-peer");
  const load = needGrpc ? spawnChild("grpc load", [bun, here("./_node/load.ts")]) : null;
  const mixedGen = wanted.has("mixed") || sections.has("soak") ? spawnChild("mixed load", [bun, here("./_cluster/mixed.ts")]) : null;
  const redis: Redis | null = wanted.has("redis") || wanted.has("redis-tcp") ? await startRedis(tools.get("redis-server")!, tools.get("redis-cli")!, join(tmp!, "redis")) : null;
  const memcached: Memcached | null = wanted.has("memcached-tcp") ? await startMemcached(tools.get("memcached")!) : null;
  if (load) await within(load.ready, 30_000, "starting the gRPC load generator");
  if (mixedGen) await within(mixedGen.ready, 30_000, "starting the mixed load generator");
  if (load) await load.call("connect", { target: "A", address: A.grpc, client: grpcClient });

  // ---- key sets and prefill
  const setups: SizeSetup[] = [];
  const coldMainBytes = coldBytes!;
  for (const [index, size] of sizes.entries()) {
    const prefillStart = performance.now();
    // Hit keys: at most 10 MiB of values per size, so the default group (64 MiB) keeps all of them in level 1.
    const hitCount = hitKeyCount(size, quick ? 2_000 : 10_000);
    const hitKeys = wanted.has("http-gcache") || wanted.has("grpc-gcache") ? keysOwnedBy(MEMBERS, ["A"], `h${size}-`, hitCount) : [];
    // Peer-hop keys, owned by B and C: as many as hit keys, in group cold, which keeps no copies on A.
    const coldEntry = size + 12;
    const coldCount = hitCount;
    const coldKeys = wanted.has("http-peer") || wanted.has("grpc-peer") ? keysOwnedBy(MEMBERS, ["B", "C"], `c${size}-`, coldCount) : [];
    if (coldKeys.length > 0 && (coldCount / 2) * 1.2 * coldEntry > coldMainBytes * (coldStore === "lru2" ? 0.4 : 0.8)) {
      throw new Error(
        `--cold-group=${coldSpec}: ${coldCount} peer-hop keys of ${sizeLabel(size)} would not fit the owners' main caches; use a larger group or lru`,
      );
    }
    let t = performance.now();
    const lap = (what: string) => {
      if (verbose) note(`  ${sizeLabel(size)} prefill: ${what} ${((performance.now() - t) / 1000).toFixed(1)} s`);
      t = performance.now();
    };
    if (hitKeys.length > 0) {
      const heldBefore = (await groupStats(A, "default")).caches.main.items;
      await putKeys(A, "default", hitKeys, size);
      const held = (await groupStats(A, "default")).caches.main.items - heldBefore;
      if (held < hitKeys.length) throw new Error(`A's main cache took ${held} of the ${hitKeys.length} keys PUT into group default`);
      lap(`PUT ${hitKeys.length} keys on A`);
    }
    if (coldKeys.length > 0) {
      // Loaded once at the owners from the origin, so the owners answer every forwarded get from their main cache.
      const owners = ownersOf(MEMBERS, coldKeys);
      await Promise.all([B, C].map((owner) => getKeys(owner, "cold", coldKeys.filter((_, i) => owners[i] === owner.name), size, 32)));
      lap(`GET ${coldKeys.length} keys on their owners (origin loads)`);
    }
    const redisDb = index + 1;
    if (redis) {
      await fillRedis(tools.get("redis-cli")!, redis.port, redisDb, hitKeys.length, size);
      lap("redis fill");
    }
    if (memcached) {
      await fillMemcached(memcached.port, size, hitKeys.length);
      lap("memcached fill");
    }
    // Keys of group writes, owned by A, B and C alike: PUT, then DELETE.
    const writesKeys = Array.from({ length: hitCount }, (_, i) => `w${size}-${i}`);
    const setup: SizeSetup = {
      size,
      hitKeys,
      coldKeys,
      redisDb,
      hitScript: hitKeys.length > 0 ? writeWrkScript(tmp!, `hit${size}`, hitKeys, "/v1/groups/default/keys/", WRK_THREADS) : "",
      hitKeysFile: wanted.has("http-gcache-tcp") || wanted.has("http-gcache-rate") ? writeKeys(`hit${size}.wire`, hitKeys.map((k) => encodeURIComponent(k))) : "",
      redisKeysFile: wanted.has("redis-tcp") || wanted.has("redis-rate") ? writeKeys(`redis${size}.wire`, hitKeys.map((_, i) => redisKey(i))) : "",
      memcachedKeysFile: memcached ? writeKeys(`memcached${size}.wire`, hitKeys.map((_, i) => memcachedKey(size, i))) : "",
      coldScript: coldKeys.length > 0 ? writeWrkScript(tmp!, `cold${size}`, coldKeys, "/v1/groups/cold/keys/", WRK_THREADS) : "",
      putScript: wanted.has("http-put")
        ? writeWrkScript(tmp!, `put${size}`, writesKeys, "/v1/groups/writes/keys/", WRK_THREADS, { method: "PUT", bytes: size })
        : "",
      deleteScript: wanted.has("http-delete")
        ? writeWrkScript(tmp!, `delete${size}`, writesKeys, "/v1/groups/writes/keys/", WRK_THREADS, { method: "DELETE" })
        : "",
      bareHttp: new Map(),
      bareGrpc: null,
    };
    const bareServers: [ContenderId, string, () => string[]][] = [
      ["http-bare", "bare http", () => []],
      ["http-bare-map", "bare http map", () => [`--keys-file=${writeKeys(`bare-map${size}.keys`, hitKeys)}`]],
      ["http-bare-sockets", "bare sockets", () => ["--sockets"]],
    ];
    for (const [id, label, extraArgs] of bareServers) {
      // The Map server serves the hit keys; with none there is nothing to compare it with.
      if (!wanted.has(id) || (id === "http-bare-map" && hitKeys.length === 0)) continue;
      const bare = await startWithReadyLine(`${label} ${size}`, [bun, here("./_cluster/bare-http.ts"), `--value-bytes=${size}`, ...extraArgs()]);
      setup.bareHttp.set(id, { service: bare.service, url: `http://${bare.address}` });
    }
    if (wanted.has("http-nginx")) setup.bareHttp.set("http-nginx", await startNginx(tools.get("nginx")!, join(tmp!, `nginx${size}`), size));
    if (wanted.has("grpc-bare")) {
      setup.bareGrpc = spawnChild(`bare grpc ${size}`, [bun, here("./_node/bare.ts"), `--value-bytes=${size}`]);
      const address = await within(setup.bareGrpc.ready, 30_000, "starting the bare grpc-js server");
      await load!.call("connect", { target: `bare${size}`, address, client: grpcClient });
    }
    if (load && hitKeys.length > 0) await load.call("keys", { name: `hit${size}`, group: "default", keys: hitKeys }, 60_000);
    if (load && coldKeys.length > 0) await load.call("keys", { name: `cold${size}`, group: "cold", keys: coldKeys }, 60_000);
    setups.push(setup);
    if (hitKeys.length + coldKeys.length > 0) note(
      `${sizeLabel(size)}: ${hitKeys.length} hit keys (PUT on A), ${coldKeys.length} peer-hop keys (group cold ${coldSpec}, ` +
        `no hot cache), prefilled in ${((performance.now() - prefillStart) / 1000).toFixed(1)} s`,
    );
  }

  // ---- one run of one contender
  const redisRate = new Map<number, number>();
  /**
   * Per size, where the cycle over the peer-hop keys stands (counted without
   * wrapping): every run, HTTP or gRPC, continues it, so every key is asked
   * for as often as the others.
   */
  const coldCursor = new Map<number, number>();
  const measure = async (id: ContenderId, setup: SizeSetup, warmup: number): Promise<Measured> => {
    const size = setup.size;
    switch (id) {
      case "http-gcache":
      case "http-peer":
      case "http-put":
      case "http-delete":
      case "http-bare":
      case "http-bare-map":
      case "http-bare-sockets":
      case "http-nginx": {
        const bare = setup.bareHttp.get(id) ?? null;
        const url = bare === null ? A.http : bare.url;
        const peer = id === "http-peer";
        const write = id === "http-put" || id === "http-delete";
        const script = peer ? setup.coldScript : id === "http-put" ? setup.putScript : id === "http-delete" ? setup.deleteScript : setup.hitScript;
        const pids = bare === null ? nodePids : [bare.service.pid];
        const group = peer ? "cold" : "default";
        const wrk = async (seconds: number) => {
          const r = await runWrk({
            wrk: tools.get("wrk")!,
            url,
            script,
            threads: WRK_THREADS,
            connections: concurrency,
            seconds,
            cursor: peer ? (coldCursor.get(size) ?? 0) : 0,
          });
          if (peer) coldCursor.set(size, r.cursor);
          return r;
        };
        if (warmup > 0) await wrk(warmup);
        // A write reads nothing: the gets path says nothing about it.
        const before = bare !== null || write ? null : await pathSnapshot(A, [B, C], group);
        const window = startWindow(pids);
        const r = await wrk(durationS);
        const m = endWindow(window, pids, r.wallMs / 1000);
        const path = before === null ? null : diffPath(before, await pathSnapshot(A, [B, C], group));
        // A PUT or DELETE is answered with a short JSON body, whatever the value's size.
        return fromWrk(r, m, write ? 0 : size, path);
      }
      case "http-gcache-tcp":
      case "redis-tcp":
      case "memcached-tcp":
      case "http-gcache-rate":
      case "http-bare-sockets-rate":
      case "redis-rate":
      case "memcached-rate": {
        const http = id === "http-gcache-tcp" || id === "http-gcache-rate";
        // The bare socket server answers any request with the same bytes: the floor of a Bun server's tail at this load.
        const bare = id === "http-bare-sockets-rate" ? setup.bareHttp.get("http-bare-sockets")! : null;
        const otherServer = () => {
          if (bare !== null) return { protocol: "http" as const, port: Number(new URL(bare.url).port), pid: bare.service.pid, keysFile: setup.hitKeysFile, db: 0 };
          if (isRedis(id)) return { protocol: "resp" as const, port: redis!.port, pid: redis!.service.pid, keysFile: setup.redisKeysFile, db: setup.redisDb };
          return { protocol: "memcache" as const, port: memcached!.port, pid: memcached!.service.pid, keysFile: setup.memcachedKeysFile, db: 0 };
        };
        const server = http ? null : otherServer();
        const spec: TcpGetSpec = {
          rate: id.endsWith("-rate") ? equalRate : 0,
          protocol: server?.protocol ?? "http",
          port: server?.port ?? Number(new URL(A.http).port),
          keysFile: server?.keysFile ?? setup.hitKeysFile,
          connections: concurrency,
          valueBytes: size,
          db: server?.db ?? 0,
        };
        const pids = server === null ? nodePids : [server.pid];
        const counters = () => (isRedis(id) ? redisHitCounters(tools.get("redis-cli")!, redis!.port) : memcachedHitCounters(memcached!.port));
        const before = http ? await pathSnapshot(A, [B, C], "default") : null;
        const counters0 = http || bare !== null ? null : await counters();
        // The client warms up in the same process (its own first second would otherwise be in the p99); the servers' CPU counts from the measured seconds.
        const measured: { window?: Window } = {};
        const r = await runTcpGet({ ...spec, seconds: durationS, warmupSeconds: warmup }, () => (measured.window = startWindow(pids)));
        if (measured.window === undefined) throw new Error("tcp-get did not say when its measured seconds started");
        const m = endWindow(measured.window, pids, r.seconds);
        const path = http ? diffPath(before!, await pathSnapshot(A, [B, C], "default")) : bare !== null ? null : counterPath(counters0!, await counters());
        return {
          rps: r.requests / r.seconds,
          p50Ms: r.p50Ms,
          p99Ms: r.p99Ms,
          meanMs: r.meanMs,
          requests: r.requests,
          seconds: m.seconds,
          errors: r.errors,
          firstError: r.firstError,
          ...serverFigures(m.processes, http),
          genCpuMs: r.cpuMs,
          machineBusyCpus: m.machineBusyCpus,
          path,
          mixed: null,
        };
      }
      case "redis": {
        const spec = {
          redisBenchmark: tools.get("redis-benchmark")!,
          port: redis!.port,
          db: setup.redisDb,
          clients: concurrency,
          keyspace: setup.hitKeys.length,
          valueBytes: size,
        };
        if (warmup > 0 || !redisRate.has(size)) {
          // Warm-up and calibration: redis-benchmark runs a request count, not a duration.
          const guess = redisRate.get(size) ?? 20_000;
          const w = await runRedisBenchmark({ ...spec, requests: Math.max(5_000, Math.round(guess * Math.max(warmup, 0.5))) }, 60_000);
          redisRate.set(size, w.rps);
        }
        const requests = Math.max(10_000, Math.round(redisRate.get(size)! * durationS));
        const pids = [redis!.service.pid];
        const counters0 = await redisHitCounters(tools.get("redis-cli")!, redis!.port);
        const window = startWindow(pids);
        const r = await runRedisBenchmark({ ...spec, requests }, durationS * 1000 * 10 + 30_000);
        const m = endWindow(window, pids, r.wallMs / 1000);
        const counters1 = await redisHitCounters(tools.get("redis-cli")!, redis!.port);
        redisRate.set(size, r.rps);
        return {
          rps: r.rps,
          p50Ms: r.p50Ms,
          p99Ms: r.p99Ms,
          meanMs: r.avgMs,
          requests: r.requests,
          seconds: m.seconds,
          errors: 0,
          firstError: null,
          ...serverFigures(m.processes, false),
          genCpuMs: r.cpuMs,
          machineBusyCpus: m.machineBusyCpus,
          path: counterPath(counters0, counters1),
          mixed: null,
        };
      }
      case "grpc-gcache":
      case "grpc-peer":
      case "grpc-bare": {
        const target = id === "grpc-bare" ? `bare${size}` : "A";
        const pids = id === "grpc-bare" ? [setup.bareGrpc!.pid] : nodePids;
        const group = id === "grpc-peer" ? "cold" : "default";
        if (id === "grpc-peer") {
          // Continue the cycle where the previous peer-hop run ended (see coldCursor).
          const offset = (coldCursor.get(size) ?? 0) % setup.coldKeys.length;
          const rotated = [...setup.coldKeys.slice(offset), ...setup.coldKeys.slice(0, offset)];
          await load!.call("keys", { name: `cold${size}`, group: "cold", keys: rotated }, 60_000);
        }
        const before = id === "grpc-bare" ? null : await pathSnapshot(A, [B, C], group);
        const r = await load!.call<RunResult>(
          "run",
          {
            target,
            keys: id === "grpc-peer" ? `cold${size}` : `hit${size}`,
            concurrency,
            warmupMs: warmup * 1000,
            durationMs: durationS * 1000,
            pids,
            valueBytes: size,
          },
          (warmup + durationS) * 1000 + 30_000,
        );
        // The stats include the warm-up: shares are what matter for the path check.
        const path = before === null ? null : diffPath(before, await pathSnapshot(A, [B, C], group));
        // Every get on A in group cold came from this run, one key after the other.
        if (id === "grpc-peer") coldCursor.set(size, (coldCursor.get(size) ?? 0) + path!.gets);
        return {
          rps: r.callsPerSecond,
          p50Ms: r.p50Ms,
          p99Ms: r.p99Ms,
          meanMs: NaN,
          requests: r.calls,
          seconds: r.seconds,
          errors: r.errors + r.badValues,
          firstError: r.firstError ?? (r.badValues > 0 ? `${r.badValues} responses with a wrong value` : null),
          ...serverFigures(r.processes, pids.length > 1),
          genCpuMs: r.generatorCpuMs,
          machineBusyCpus: r.machineBusyCpus,
          path,
          mixed: null,
        };
      }
      case "mixed": {
        const before = await Promise.all(nodes.map((n) => groupStats(n, "mixed")));
        const spec: MixedSpec = {
          bases: nodes.map((n) => n.http),
          group: "mixed",
          keyPrefix: `m${size}-`,
          ...MIXED,
          valueBytes: size,
          concurrency,
          warmupMs: warmup * 1000,
          durationMs: durationS * 1000,
          pids: nodePids,
        };
        const r = await mixedGen!.call<MixedResult>("run", { ...spec }, (warmup + durationS) * 1000 + 60_000);
        const after = await Promise.all(nodes.map((n) => groupStats(n, "mixed")));
        const sum = (stats: GroupStats[], pick: (s: GroupStats) => number) => stats.reduce((t, s) => t + pick(s), 0);
        const delta = (pick: (s: GroupStats) => number) => sum(after, pick) - sum(before, pick);
        return {
          rps: r.opsPerSecond,
          p50Ms: r.all.p50Ms,
          p99Ms: r.all.p99Ms,
          meanMs: NaN,
          requests: r.ops,
          seconds: r.seconds,
          errors: r.errors + r.badValues,
          firstError: r.firstError ?? (r.badValues > 0 ? `${r.badValues} GETs with a wrong value length` : null),
          recvCpuMs: r.processes.reduce((t, p) => t + p.cpuMs, 0),
          peersCpuMs: NaN,
          recvWaitMs: r.processes.reduce((t, p) => t + p.waitMs, 0),
          recvFaults: r.processes.reduce((t, p) => t + p.minorFaults, 0),
          recvRssBytes: Math.max(...r.processes.map((p) => p.rssBytes)),
          genCpuMs: r.generatorCpuMs,
          machineBusyCpus: r.machineBusyCpus,
          path: {
            gets: delta((s) => s.gets - s.serverRequests),
            mainHits: delta((s) => s.cacheHits - s.hotHits),
            hotHits: delta((s) => s.hotHits),
            peerLoads: delta((s) => s.peerLoads),
            localLoads: delta((s) => s.localLoads),
            ownerServed: delta((s) => s.serverRequests),
          },
          mixed: r,
        };
      }
    }
  };

  // ---- rounds
  const runs = new Map<string, Measured[]>();
  const keyOf = (size: number, id: ContenderId) => `${size}:${id}`;
  if (contenders.length > 0) {
    const perRunWarmup = quick ? 0 : warmupS;
    const plan: { round: number; discard: boolean }[] = [];
    if (quick && warmupS > 0) plan.push({ round: -1, discard: true });
    for (let round = 0; round < rounds; round++) plan.push({ round, discard: false });
    for (const { round, discard } of plan) {
      for (const setup of setups) {
        const order = round % 2 === 0 || round < 0 ? contenders : [...contenders].reverse();
        for (const id of order) {
          const m = await measure(id, setup, discard ? warmupS : round === 0 && !quick ? firstWarmupS : perRunWarmup);
          if (discard) continue;
          const list = runs.get(keyOf(setup.size, id)) ?? [];
          list.push(m);
          runs.set(keyOf(setup.size, id), list);
          if (m.errors > 0) failures.push(`${sizeLabel(setup.size)} ${LABELS[id]} round ${round + 1}: ${m.errors} errors (first: ${m.firstError})`);
          if (verbose) {
            note(
              `  round ${round + 1} ${sizeLabel(setup.size).padStart(6)} ${LABELS[id].padEnd(28)} ${fmtInt(m.rps).padStart(8)} req/s  ` +
                `p50 ${fmtMs(m.p50Ms)} ms  p99 ${fmtMs(m.p99Ms)} ms  server CPU ${pct(m.recvCpuMs / (m.seconds * 1000))}  ` +
                `generator CPU ${pct(m.genCpuMs / (m.seconds * 1000))}  ` +
                `server CPU/req ${((m.recvCpuMs * 1000) / Math.max(1, m.requests)).toFixed(1)} us  faults/req ${faultsPerRequest(m).toFixed(3)}` +
                (m.path !== null && !isRedis(id) && !isMemcached(id) && id !== "mixed"
                  ? `  A gets ${m.path.gets} (hot hits ${m.path.hotHits}, from owners ${m.path.peerLoads})`
                  : ""),
            );
          }
        }
      }
    }
    failures.push(...report(runs, keyOf));
  }

  if (sections.has("soak")) await soak(nodes, mixedGen!);

  await stopAll();
  return failures;
}

// ---------------------------------------------------------------- measuring helpers

/** Writes one key per line for the one-client generator; returns the file's path. */
function writeKeys(name: string, keys: readonly string[]): string {
  const file = join(tmp!, name);
  writeFileSync(file, `${keys.join("\n")}\n`);
  return file;
}

interface Window {
  before: ProcSample[];
  machine: { busy: number; total: number };
}

function startWindow(pids: number[]): Window {
  return { before: pids.map(sampleProcess), machine: sampleMachine() };
}

function endWindow(window: Window, pids: number[], seconds: number): { processes: ProcessDelta[]; seconds: number; machineBusyCpus: number } {
  const processes = processDeltas(pids, window.before, pids.map(sampleProcess));
  return { processes, seconds, machineBusyCpus: busyCpusBetween(window.machine, sampleMachine()) };
}

/** The server's minor page faults per request in a run. */
function faultsPerRequest(m: Measured): number {
  return m.recvFaults / Math.max(1, m.requests);
}

/** A run's figures of the server (`processes[0]`) and, with `peers`, of B and C (`processes[1]`, `[2]`). */
function serverFigures(processes: readonly ProcessDelta[], peers: boolean): Pick<Measured, "recvCpuMs" | "peersCpuMs" | "recvWaitMs" | "recvFaults" | "recvRssBytes"> {
  const server = processes[0]!;
  return {
    recvCpuMs: server.cpuMs,
    peersCpuMs: peers ? processes[1]!.cpuMs + processes[2]!.cpuMs : NaN,
    recvWaitMs: server.waitMs,
    recvFaults: server.minorFaults,
    recvRssBytes: server.rssBytes,
  };
}

function fromWrk(r: WrkResult, m: ReturnType<typeof endWindow>, size: number, path: PathDelta | null): Measured {
  const perResponse = r.requests > 0 ? r.bytes / r.requests : 0;
  const badSize = r.requests > 0 && (perResponse < size || perResponse > size + 512);
  const errors = r.socketErrors + r.statusErrors + (badSize ? 1 : 0);
  return {
    rps: r.rps,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    meanMs: r.meanMs,
    requests: r.requests,
    seconds: m.seconds,
    errors,
    firstError:
      r.statusErrors > 0
        ? `${r.statusErrors} non-2xx answers`
        : r.socketErrors > 0
          ? `${r.socketErrors} socket errors`
          : badSize
            ? `${perResponse.toFixed(0)} bytes per response for ${size}-byte values`
            : null,
    ...serverFigures(m.processes, m.processes.length > 1),
    genCpuMs: r.cpuMs,
    machineBusyCpus: m.machineBusyCpus,
    path,
    mixed: null,
  };
}

interface PathSnapshot {
  stats: GroupStats;
  ownerServed: number;
}

async function pathSnapshot(receiver: NodeProcess, owners: NodeProcess[], group: string): Promise<PathSnapshot> {
  const stats = await groupStats(receiver, group);
  let ownerServed = 0;
  for (const owner of owners) ownerServed += (await groupStats(owner, group)).serverRequests;
  return { stats, ownerServed };
}

/** Redis's (or memcached's) GETs between two readings of its hit counters, as a path delta. */
function counterPath(before: { hits: number; misses: number }, after: { hits: number; misses: number }): PathDelta {
  const hits = after.hits - before.hits;
  const misses = after.misses - before.misses;
  return { gets: hits + misses, mainHits: hits, hotHits: 0, peerLoads: 0, localLoads: 0, ownerServed: 0, misses };
}

function diffPath(a: PathSnapshot, b: PathSnapshot): PathDelta {
  return {
    gets: b.stats.gets - a.stats.gets,
    mainHits: b.stats.cacheHits - b.stats.hotHits - (a.stats.cacheHits - a.stats.hotHits),
    hotHits: b.stats.hotHits - a.stats.hotHits,
    peerLoads: b.stats.peerLoads - a.stats.peerLoads,
    localLoads: b.stats.localLoads - a.stats.localLoads,
    ownerServed: b.ownerServed - a.ownerServed,
  };
}

// ---------------------------------------------------------------- report

/** CPUs (as a share of one) the rest of the machine used during a run: everything but the servers and the generator. */
function otherCpuOf(m: Measured): number {
  const ours = m.recvCpuMs + (Number.isNaN(m.peersCpuMs) ? 0 : m.peersCpuMs) + m.genCpuMs;
  return Math.max(0, m.machineBusyCpus - ours / (m.seconds * 1000));
}

function report(runs: Map<string, Measured[]>, keyOf: (size: number, id: ContenderId) => string): string[] {
  const failures: string[] = [];
  const get = (size: number, id: ContenderId) => runs.get(keyOf(size, id)) ?? [];
  /** Per-round ratio of a metric of `a` to `b` (same size, same round). */
  const perRound = (size: number, a: ContenderId, b: ContenderId, metric: (m: Measured) => number = (m) => m.rps) => {
    const xs = get(size, a);
    const ys = get(size, b);
    return xs.map((x, i) => (ys[i] === undefined ? NaN : metric(x) / metric(ys[i]!)));
  };

  const rows: string[][] = [];
  for (const size of sizes) {
    for (const id of contenders) {
      const list = get(size, id);
      if (list.length === 0) continue;
      const share = (pick: (m: Measured) => number) => median(list.map((m) => pick(m) / (m.seconds * 1000)));
      const ratios: string[] = [];
      const add = (label: string, ref: ContenderId) => {
        if (get(size, ref).length > 0) ratios.push(`${fmtRatio(median(perRound(size, id, ref)))}x ${label}`);
      };
      if (id === "http-gcache") {
        add("redis", "redis");
        add("bare", "http-bare");
      }
      if (id === "http-bare-map") add("bare", "http-bare");
      if (id === "http-bare-sockets" || id === "http-nginx") add("redis", "redis");
      if (id === "http-gcache-tcp") {
        add("redis", "redis-tcp");
        add("memcached", "memcached-tcp");
      }
      if (id === "grpc-gcache") add("bare", "grpc-bare");
      if (id === "http-peer") add("local", "http-gcache");
      if (id === "grpc-peer") add("local", "grpc-gcache");
      const cpuPerReq = median(
        list.map((m) => ((m.recvCpuMs + (Number.isNaN(m.peersCpuMs) ? 0 : m.peersCpuMs)) * 1000) / Math.max(1, m.requests)),
      );
      const otherCpu = median(list.map(otherCpuOf));
      rows.push([
        `${sizeLabel(size).padStart(6)}  ${LABELS[id]}`,
        fmtInt(median(list.map((m) => m.rps))),
        `${(spread(list.map((m) => m.rps)) * 100).toFixed(0)}%`,
        fmtMs(median(list.map((m) => m.p50Ms))),
        fmtMs(median(list.map((m) => m.p99Ms))),
        ratios.join(", ") || "-",
        pct(share((m) => m.recvCpuMs)),
        pct(share((m) => m.recvWaitMs)),
        id === "mixed" || Number.isNaN(list[0]!.peersCpuMs) ? "-" : pct(share((m) => m.peersCpuMs)),
        cpuPerReq.toFixed(1),
        median(list.map(faultsPerRequest)).toFixed(3),
        mb(median(list.map((m) => m.recvRssBytes))),
        pct(share((m) => m.genCpuMs)),
        pct(otherCpu),
      ]);
    }
  }
  console.log(`\nmedians of ${rounds} rounds (${durationS} s each)\n`);
  console.log(
    table(
      ["size  workload", "req/s", "spread", "p50 ms", "p99 ms", "ratio (median of per-round)", "server CPU", "waited", "B+C CPU", "CPU us/req", "faults/req", "server RSS", "gen CPU", "other CPU"],
      rows,
    ),
  );
  console.log(
    "\nserver = the process taking the requests (A, the bare server, redis-server, memcached; for mixed: A+B+C together, RSS = largest).\n" +
      "CPU columns are shares of one core over the measured window (/proc, 10 ms ticks); CPU us/req counts A+B+C for gcache\n" +
      "rows. faults/req = the server's minor page faults per request (/proc/<pid>/stat; for mixed A+B+C).\n" +
      "waited = time the server's main thread was ready to run but had no CPU (/proc/<pid>/schedstat; for mixed A+B+C):\n" +
      "the generator and the other nodes share the cores, and a server that waits is held back by them, not by its own work.\n" +
      "gen = wrk / redis-benchmark / the Bun load generators; other = the rest of the machine meanwhile (above ~10 % the\n" +
      "run was disturbed). spread = (max - min) / median of req/s over rounds. Quiet rounds (goals below): both runs had\n" +
      `other CPU under ${pct(QUIET_OTHER_CPU)}.`,
  );

  // ---- per-round ratios and goals
  console.log("\ngoals (median of per-round ratios; per-round values in brackets):");
  /** Rounds in which neither run shared the machine with much else. */
  const quietRounds = (size: number, a: ContenderId, b: ContenderId) =>
    get(size, a).map((x, i) => {
      const y = get(size, b)[i];
      return y !== undefined && otherCpuOf(x) < QUIET_OTHER_CPU && otherCpuOf(y) < QUIET_OTHER_CPU;
    });
  const goal = (label: string, ratios: number[], quiet: boolean[], pass: (r: number) => boolean, bound: string) => {
    if (ratios.length === 0 || ratios.every((r) => Number.isNaN(r))) return;
    const m = median(ratios);
    const ok = pass(m);
    const calm = ratios.filter((_, i) => quiet[i]);
    console.log(
      `  ${ok ? "PASS" : "FAIL"}  ${label.padEnd(52)} ${fmtRatio(m).padStart(6)}  (goal ${bound})  [${ratios.map(fmtRatio).join(" ")}]` +
        `  quiet rounds: ${calm.length === 0 ? "none" : `${calm.length}, median ${fmtRatio(median(calm))}`}`,
    );
  };
  for (const size of sizes) {
    const s = sizeLabel(size);
    goal(`${s}: HTTP hits req/s / Redis GET req/s`, perRound(size, "http-gcache", "redis"), quietRounds(size, "http-gcache", "redis"), (r) => r >= 1.2, ">= 1.2");
    goal(`${s}: HTTP hits req/s / bare Bun.serve req/s`, perRound(size, "http-gcache", "http-bare"), quietRounds(size, "http-gcache", "http-bare"), (r) => r >= 0.9, ">= 0.9");
    goal(`${s}: HTTP hits p99 / Redis GET p99`, perRound(size, "http-gcache", "redis", (m) => m.p99Ms), quietRounds(size, "http-gcache", "redis"), (r) => r <= 1, "<= 1.0");
    // By Little's law a closed loop of N connections at R req/s spends N / R per request cycle. A tool that
    // starts its clock late (redis-benchmark, when it is the bottleneck, leaves out the time a request waits
    // inside it) reports a mean well below that: its percentiles then cover less of the cycle than wrk's.
    const coverage = (id: ContenderId) => {
      const runs = get(size, id).filter((m) => m.meanMs > 0 && m.rps > 0);
      return runs.length === 0 ? NaN : median(runs.map((m) => m.meanMs / ((concurrency / m.rps) * 1000)));
    };
    const covered = ([["gateway", "http-gcache"], ["bare", "http-bare"], ["bare sockets", "http-bare-sockets"], ["nginx", "http-nginx"], ["Redis", "redis"], ["one client: gateway", "http-gcache-tcp"], ["Redis", "redis-tcp"], ["memcached", "memcached-tcp"]] as const)
      .map(([name, id]) => [name, coverage(id)] as const)
      .filter(([, c]) => !Number.isNaN(c));
    if (covered.length > 0) {
      console.log(
        `  info  ${`${s}: reported mean latency / (connections / req/s)`.padEnd(52)} ` +
          covered.map(([name, c]) => `${name} ${fmtRatio(c)}`).join(", "),
      );
    }
    /** A ratio worth seeing that is no goal: req/s and p99 of `a` against `b`, per round (in brackets) for `perRoundOf`. */
    const info = (label: string, a: ContenderId, b: ContenderId, perRoundOf: "req/s" | "p99" = "req/s") => {
      if (get(size, a).length === 0 || get(size, b).length === 0) return;
      const rps = perRound(size, a, b);
      const p99 = perRound(size, a, b, (m) => m.p99Ms);
      const rounds = perRoundOf === "p99" ? p99 : rps;
      console.log(
        `  info  ${`${s}: ${label}`.padEnd(52)} req/s ${fmtRatio(median(rps))}, p99 ${fmtRatio(median(p99))}  ${perRoundOf} [${rounds.map(fmtRatio).join(" ")}]`,
      );
    };
    info("bare Bun.serve vs Redis (what any Bun HTTP server gets here)", "http-bare", "redis", "p99");
    info("gateway / bare Bun.serve (what the cache adds to its tail)", "http-gcache", "http-bare", "p99");
    info("gateway / bare Bun.serve with a Map of the same values", "http-gcache", "http-bare-map");
    info("bare Bun.serve with a Map / with one fixed body", "http-bare-map", "http-bare");
    info("bare Bun.listen vs Redis (the floor on Bun's sockets)", "http-bare-sockets", "redis", "p99");
    info("gateway / bare Bun.listen (fixed bytes)", "http-gcache", "http-bare-sockets", "p99");
    info("nginx vs Redis (a C server under wrk)", "http-nginx", "redis", "p99");
    info("bare Bun.listen / nginx (what Bun's sockets add)", "http-bare-sockets", "http-nginx", "p99");
    info("one client for both (tcp-get.ts): gateway / Redis", "http-gcache-tcp", "redis-tcp");
    info("one client: gateway / memcached", "http-gcache-tcp", "memcached-tcp");
    info(`equal load (${fmtInt(equalRate)} req/s, one client): gateway / Redis`, "http-gcache-rate", "redis-rate", "p99");
    info(`equal load (${fmtInt(equalRate)} req/s, one client): gateway / memcached`, "http-gcache-rate", "memcached-rate", "p99");
    info(`equal load: bare Bun.listen / Redis (a Bun server's floor)`, "http-bare-sockets-rate", "redis-rate", "p99");
    info(`equal load: gateway / bare Bun.listen`, "http-gcache-rate", "http-bare-sockets-rate", "p99");
    goal(`${s}: gRPC hits calls/s / bare grpc-js calls/s`, perRound(size, "grpc-gcache", "grpc-bare"), quietRounds(size, "grpc-gcache", "grpc-bare"), (r) => r >= 0.9, ">= 0.9");
    goal(`${s}: HTTP peer hop req/s / HTTP local hits req/s`, perRound(size, "http-peer", "http-gcache"), quietRounds(size, "http-peer", "http-gcache"), (r) => r >= 0.5, ">= 0.5");
    goal(`${s}: gRPC peer hop calls/s / gRPC local hits calls/s`, perRound(size, "grpc-peer", "grpc-gcache"), quietRounds(size, "grpc-peer", "grpc-gcache"), (r) => r >= 0.5, ">= 0.5");
  }

  // ---- path checks
  console.log("\npath check (counters over all runs of a workload, warm-ups of gRPC and one-client runs included):");
  for (const size of sizes) {
    for (const id of contenders) {
      const list = get(size, id);
      if (list.length === 0 || list[0]!.path === null) continue;
      const total = (pick: (p: PathDelta) => number) => list.reduce((t, m) => t + pick(m.path!), 0);
      const gets = total((p) => p.gets);
      const share = (n: number) => (gets === 0 ? "-" : `${((n / gets) * 100).toFixed(1)}%`);
      let text: string;
      if (isRedis(id) || isMemcached(id)) {
        text = `GETs ${fmtInt(gets)}, found ${share(total((p) => p.mainHits))}, missing ${share(total((p) => p.misses ?? 0))}`;
        if (total((p) => p.misses ?? 0) > 0) failures.push(`${sizeLabel(size)} ${LABELS[id]}: GETs of missing keys (the fill did not cover the keyspace)`);
      } else if (id === "mixed") {
        // A forwarded get counts on the receiving node and again on the owner, so these shares overlap.
        text =
          `client gets ${fmtInt(gets)}: hot-cache hits ${share(total((p) => p.hotHits))}, forwarded to the owner ${share(total((p) => p.peerLoads))}, ` +
          `origin loads ${share(total((p) => p.localLoads))}; main-cache hits (receiver or owner) ${share(total((p) => p.mainHits))}`;
      } else {
        const hot = total((p) => p.hotHits);
        const main = total((p) => p.mainHits);
        text =
          `A gets ${fmtInt(gets)}: main hits ${share(main)}, hot hits ${share(hot)}, fetched from owners ${share(total((p) => p.peerLoads))}, ` +
          `served by B+C ${share(total((p) => p.ownerServed))}, origin loads ${share(total((p) => p.localLoads))}`;
        if ((id === "http-gcache" || id === "http-gcache-tcp" || id === "http-gcache-rate" || id === "grpc-gcache") && main < gets * 0.99) {
          failures.push(`${sizeLabel(size)} ${LABELS[id]}: only ${share(main)} of gets were main-cache hits`);
        }
        if ((id === "http-peer" || id === "grpc-peer") && hot > gets * 0.02) {
          failures.push(`${sizeLabel(size)} ${LABELS[id]}: ${share(hot)} of gets hit A's hot cache; the peer hop was not measured alone`);
        }
      }
      console.log(`  ${sizeLabel(size).padStart(6)} ${LABELS[id].padEnd(28)} ${text}`);
    }
  }

  // ---- mixed details
  for (const size of sizes) {
    const list = get(size, "mixed");
    if (list.length === 0) continue;
    const mx = list.map((m) => m.mixed!);
    console.log(
      `\nmixed ${sizeLabel(size)}: ${fmtInt(median(mx.map((r) => r.opsPerSecond)))} ops/s; ` +
        `GET p50 ${fmtMs(median(mx.map((r) => r.gets.p50Ms)))} ms p99 ${fmtMs(median(mx.map((r) => r.gets.p99Ms)))} ms; ` +
        `PUT p50 ${fmtMs(median(mx.map((r) => r.sets.p50Ms)))} ms p99 ${fmtMs(median(mx.map((r) => r.sets.p99Ms)))} ms; ` +
        `node CPU ${mx[0]!.processes.map((_, i) => `${MEMBERS[i]} ${pct(median(mx.map((r) => r.processes[i]!.cpuMs / (r.seconds * 1000))))}`).join(" ")}; ` +
        `RSS ${mx[0]!.processes.map((_, i) => `${MEMBERS[i]} ${mb(median(mx.map((r) => r.processes[i]!.rssBytes)))}`).join(" ")}`,
    );
  }
  return failures;
}

function printStarts(samples: StartSample[]): void {
  const idle = samples.map((s) => s.idleRssBytes).filter((v) => Number.isFinite(v));
  console.log(`\nstart check (dist/gcache-node, one node, default flags, ${samples.length} starts one after another):`);
  console.log(
    `  spawn -> first /readyz 200: median ${fmtMs(median(samples.map((s) => s.readyMs)), 1)} ms ` +
      `[${samples.map((s) => s.readyMs.toFixed(1)).join(" ")}]`,
  );
  console.log(
    `  spawn -> "serving" log line: median ${fmtMs(median(samples.map((s) => s.servingLineMs)), 1)} ms; ` +
      `the node's own startupMs: median ${fmtMs(median(samples.map((s) => s.loggedStartupMs)), 0)} ms`,
  );
  console.log(
    `  RSS when first ready: median ${mb(median(samples.map((s) => s.readyRssBytes)))}; ` +
      `idle RSS ${IDLE_MS / 1000} s after spawn: median ${mb(median(idle))} [${idle.map((b) => (b / 1048576).toFixed(1)).join(" ")} MB]`,
  );
  console.log(
    `  SIGTERM -> exit: median ${fmtMs(median(samples.map((s) => s.stopMs)), 0)} ms; exit codes ${[...new Set(samples.map((s) => s.exitCode))].join(",")}`,
  );
}

// ---------------------------------------------------------------- soak

async function soak(nodes: NodeProcess[], mixedGen: Child): Promise<void> {
  const durationMs = soakMinutes * 60_000;
  note(`soak: mixed workload with ${sizeLabel(SOAK_SIZE)} values for ${soakMinutes} min, RSS every ${SOAK_SAMPLE_MS / 1000} s …`);
  const pids = nodes.map((n) => n.service.pid);
  const samples: { t: number; rss: number[] }[] = [];
  const t0 = performance.now();
  const sample = () => samples.push({ t: (performance.now() - t0) / 1000, rss: pids.map((pid) => sampleProcess(pid).rssBytes) });
  sample();
  const timer = setInterval(sample, SOAK_SAMPLE_MS);
  let result: MixedResult;
  try {
    const spec: MixedSpec = {
      bases: nodes.map((n) => n.http),
      group: "mixed",
      keyPrefix: `m${SOAK_SIZE}-`,
      ...MIXED,
      valueBytes: SOAK_SIZE,
      concurrency,
      warmupMs: 0,
      durationMs,
      pids,
      seed: 7,
    };
    result = await mixedGen.call<MixedResult>("run", { ...spec }, durationMs + 120_000);
  } finally {
    clearInterval(timer);
  }
  if ((performance.now() - t0) / 1000 - samples[samples.length - 1]!.t > 1) sample();
  console.log(
    `\nsoak: mixed 90/10, ${sizeLabel(SOAK_SIZE)} values, ${soakMinutes} min: ${fmtInt(result.opsPerSecond)} ops/s, ` +
      `GET p99 ${fmtMs(result.gets.p99Ms)} ms, PUT p99 ${fmtMs(result.sets.p99Ms)} ms, errors ${result.errors}`,
  );
  console.log(table(["t s", ...nodes.map((n) => `${n.name} RSS MB`)], samples.map((s) => [s.t.toFixed(0), ...s.rss.map((b) => (b / 1048576).toFixed(1))])));
  // RSS saws up and down with garbage collection, so growth is judged on the floor: the lowest sample of each
  // minute. After the first minute (the caches fill), a leak shows as floors that rise minute after minute.
  const minutes = Math.max(1, Math.round(soakMinutes));
  const floorsOf = (i: number) =>
    Array.from({ length: minutes }, (_, m) => {
      const inMinute = samples.filter((s) => s.t >= m * 60 && s.t < (m + 1) * 60 + 1).map((s) => s.rss[i]!);
      return inMinute.length === 0 ? NaN : Math.min(...inMinute) / 1048576;
    });
  console.log(`per-minute RSS floor (lowest sample of each minute; the first minute includes the caches filling):`);
  for (const [i, node] of nodes.entries()) {
    const floors = floorsOf(i);
    const settled = floors.slice(1).filter((f) => Number.isFinite(f));
    const rising = settled.length >= 2 && settled.every((f, k) => k === 0 || f > settled[k - 1]!);
    const growth = settled.length >= 2 ? settled[settled.length - 1]! - settled[0]! : NaN;
    const perMinute = settled.length >= 2 ? growth / (settled.length - 1) : NaN;
    const xs = samples.filter((s) => s.t >= 60).map((s) => s.t / 60);
    const ys = samples.filter((s) => s.t >= 60).map((s) => s.rss[i]! / 1048576);
    const steady = rising && growth > 0.05 * settled[0]!;
    if (settled.length < 2) {
      console.log(`  ${node.name}: ${floors.map((f) => f.toFixed(0)).join(" -> ")} MB; too short to judge growth (3 minutes or more)`);
      continue;
    }
    console.log(
      `  ${node.name}: ${floors.map((f) => f.toFixed(0)).join(" -> ")} MB; after the first minute ` +
        `${Number.isFinite(perMinute) ? `${perMinute >= 0 ? "+" : ""}${perMinute.toFixed(1)} MB/min` : "-"} on the floor, ` +
        `least-squares slope of all samples ${slope(xs, ys).toFixed(1)} MB/min -> ${steady ? "GROWS STEADILY" : "no steady growth"}`,
    );
  }
}

// ---------------------------------------------------------------- run

try {
  await main();
} catch (error) {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exitCode = 1;
} finally {
  await stopAll();
  if (tmp !== null) rmSync(tmp, { recursive: true, force: true });
}
