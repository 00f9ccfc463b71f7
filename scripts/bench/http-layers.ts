/**
 * Where a gateway hit's cost lies above the floor of Bun's sockets, layer by
 * layer, under the same `wrk -t 1 -c 64` over the same keys (10,000, or as
 * many as 10 MiB of values hold, as `bench:cluster` takes):
 *
 *   gateway       one node (the executable), the keys PUT first: main-cache hits
 *   http server   the gateway's own HTTP server answering every request with
 *                 the same value, as a hit is answered, without route, key or
 *                 lookup (`_cluster/bare-http.ts --http-server`): what any
 *                 change to the key path (a byte-keyed index, interned keys)
 *                 could at most bring the gateway down to
 *   bare sockets  Bun's TCP sockets answering each request head with fixed
 *                 bytes, the request unread (`--sockets`): the floor
 *
 * The two bare servers run with the runtime settings the executable gives
 * itself (src/cli/runtime-tuning.ts), so the three differ only in their work.
 * Every round runs each once, in an order reversed every other round; it
 * prints medians of req/s, p99 and server CPU per request, and the ratios
 * within each round.
 *
 *   bun run bench:http-layers [--rounds=5] [--seconds=3] [--sizes=100,10240] [--build]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { RUNTIME_TUNING } from "../../src/cli/runtime-tuning.ts";
import { sampleProcess } from "./_node/commands.ts";
import { putKeys, startCluster } from "./_cluster/nodes.ts";
import { installCleanup, startWithReadyLine, stopAll } from "./_cluster/procs.ts";
import { ensureBinary, ensureCommands, NEEDED_COMMANDS } from "./_cluster/tools.ts";
import { fmtInt, fmtMs, fmtRatio, hitKeyCount, median, sizeLabel, table, wholeNumber } from "./_cluster/util.ts";
import { runWrk, writeWrkScript } from "./_cluster/wrk.ts";

const { values: flags } = parseArgs({
  options: {
    rounds: { type: "string" },
    seconds: { type: "string" },
    sizes: { type: "string", default: "100" },
    build: { type: "boolean", default: false },
  },
});
const rounds = wholeNumber(flags.rounds, 5, 1, "rounds");
const seconds = wholeNumber(flags.seconds, 3, 1, "seconds");
const sizes = flags.sizes!.split(",").map((size) => {
  if (size.trim() === "") throw new Error(`--sizes: expected sizes in bytes separated by commas, got ${JSON.stringify(flags.sizes)}`);
  return wholeNumber(size.trim(), 0, 1, "sizes");
});
const WARMUP_S = 3;
const LAYERS = ["gateway", "http server", "bare sockets"] as const;
type Layer = (typeof LAYERS)[number];

interface Sample {
  rps: number;
  p99Ms: number;
  cpuUsPerRequest: number;
}

interface Server {
  url: string;
  pid: number;
}

installCleanup();
const root = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const wrk = (await ensureCommands(NEEDED_COMMANDS.filter((c) => c.command === "wrk"))).get("wrk")!;
const binary = await ensureBinary(root, flags.build!);
const dir = mkdtempSync(join(tmpdir(), "gcache-http-layers-"));
const tunedEnv = { ...process.env, ...RUNTIME_TUNING };

/** The keys of one value size: as many as bench:cluster's hit keys. */
function keysFor(valueBytes: number): string[] {
  return Array.from({ length: hitKeyCount(valueBytes) }, (_, i) => `key-${i}`);
}

async function startServers(valueBytes: number, keys: readonly string[]): Promise<Map<Layer, Server>> {
  const [node] = await startCluster({ binary, names: ["A"], groups: [] });
  await putKeys(node!, "default", keys, valueBytes);
  const bare = (mode: string) =>
    startWithReadyLine(`${mode} ${valueBytes}`, [process.execPath, join(root, "scripts/bench/_cluster/bare-http.ts"), `--value-bytes=${valueBytes}`, mode], 30_000, tunedEnv);
  const http = await bare("--http-server");
  const sockets = await bare("--sockets");
  return new Map<Layer, Server>([
    ["gateway", { url: node!.http, pid: node!.service.pid }],
    ["http server", { url: `http://${http.address}`, pid: http.service.pid }],
    ["bare sockets", { url: `http://${sockets.address}`, pid: sockets.service.pid }],
  ]);
}

let cursor = 0;
async function measure(server: Server, script: string, runSeconds: number): Promise<Sample> {
  const before = sampleProcess(server.pid);
  const result = await runWrk({ wrk, url: server.url, script, threads: 1, connections: 64, seconds: runSeconds, cursor });
  const after = sampleProcess(server.pid);
  cursor = result.cursor;
  if (result.socketErrors + result.statusErrors > 0) {
    throw new Error(`wrk saw ${result.socketErrors} socket and ${result.statusErrors} status errors against ${server.url}`);
  }
  return { rps: result.rps, p99Ms: result.p99Ms, cpuUsPerRequest: ((after.cpuMs - before.cpuMs) * 1000) / result.requests };
}

console.log(
  `http layers: ${binary}, one node vs its HTTP server alone vs Bun's sockets; ` +
    `wrk -t 1 -c 64; ${WARMUP_S} s first warm-up, ${rounds} rounds x ${seconds} s, order reversed every other round`,
);
const output: string[][] = [];
const ratioLines: string[] = [];
try {
  for (const valueBytes of sizes) {
    const keys = keysFor(valueBytes);
    const script = writeWrkScript(dir, `get-${valueBytes}`, keys, "/v1/groups/default/keys/", 1);
    const servers = await startServers(valueBytes, keys);
    for (const server of servers.values()) await measure(server, script, WARMUP_S);
    const samples = new Map<Layer, Sample[]>(LAYERS.map((layer) => [layer, []]));
    for (let round = 1; round <= rounds; round++) {
      const order = round % 2 === 1 ? LAYERS : [...LAYERS].reverse();
      for (const layer of order) {
        const sample = await measure(servers.get(layer)!, script, seconds);
        samples.get(layer)!.push(sample);
        console.log(
          `  ${sizeLabel(valueBytes)} (${fmtInt(keys.length)} keys) round ${round} ${layer.padEnd(12)} ${fmtInt(sample.rps)} req/s  p99 ${fmtMs(sample.p99Ms)} ms  ` +
            `${sample.cpuUsPerRequest.toFixed(2)} us CPU/req`,
        );
      }
    }
    await stopAll();
    const of = (layer: Layer, pick: (s: Sample) => number) => samples.get(layer)!.map(pick);
    for (const layer of LAYERS) {
      output.push([
        sizeLabel(valueBytes),
        layer,
        fmtInt(median(of(layer, (s) => s.rps))),
        fmtMs(median(of(layer, (s) => s.p99Ms))),
        median(of(layer, (s) => s.cpuUsPerRequest)).toFixed(2),
      ]);
    }
    /** Median over rounds of a / b within each round. */
    const ratio = (a: Layer, b: Layer, pick: (s: Sample) => number) => {
      const as = of(a, pick);
      const bs = of(b, pick);
      return fmtRatio(median(as.map((value, i) => value / bs[i]!)));
    };
    const cpu = (s: Sample) => s.cpuUsPerRequest;
    const p99 = (s: Sample) => s.p99Ms;
    ratioLines.push(
      `${sizeLabel(valueBytes)}: CPU per request, gateway / http server ${ratio("gateway", "http server", cpu)}, ` +
        `http server / bare sockets ${ratio("http server", "bare sockets", cpu)}; ` +
        `p99, gateway / http server ${ratio("gateway", "http server", p99)}, http server / bare sockets ${ratio("http server", "bare sockets", p99)}`,
    );
  }
} finally {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
}
console.log(`\nmedians of ${rounds} rounds\n\n${table(["size", "server", "req/s", "p99 ms", "CPU us/req"], output)}`);
console.log(`\nratios (median of per-round ratios)\n${ratioLines.join("\n")}`);
