/**
 * One node with its young collections paced (`--gc-interval`) and not, side
 * by side: HTTP gateway hits on 10,000 hot 100-byte keys under `wrk -t 1
 * -c 64`, optionally while the node holds more values in another group (the
 * held bytes are what lengthen the collector's stops). Rounds alternate the
 * settings, each on a fresh node; it prints medians and the per-round values.
 *
 *   bun run bench:gc-pacing [--rounds=3] [--held=50000] [--interval=25ms] [--seconds=5] [--build]
 *
 * --held=N   N values of 1 KB PUT into group `held` (256 MiB) before the hot keys; default 50000, 0 for none
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { sampleProcess } from "./_node/commands.ts";
import { putKeys, startCluster } from "./_cluster/nodes.ts";
import { installCleanup, stopAll } from "./_cluster/procs.ts";
import { ensureBinary, ensureCommands, NEEDED_COMMANDS } from "./_cluster/tools.ts";
import { fmtInt, fmtMs, mb, median, table, wholeNumber } from "./_cluster/util.ts";
import { runWrk, writeWrkScript } from "./_cluster/wrk.ts";

const { values: flags } = parseArgs({
  options: {
    rounds: { type: "string" },
    held: { type: "string" },
    interval: { type: "string", default: "25ms" },
    seconds: { type: "string" },
    build: { type: "boolean", default: false },
  },
});
const rounds = wholeNumber(flags.rounds, 3, 1, "rounds");
const held = wholeNumber(flags.held, 50_000, 0, "held");
const seconds = wholeNumber(flags.seconds, 5, 1, "seconds");
const SETTINGS = ["0", flags.interval!];
const HOT_KEYS = 10_000;
const WARMUP_S = 2;

interface Sample {
  rps: number;
  p99Ms: number;
  cpuUsPerRequest: number;
  rssBytes: number;
}

async function measure(binary: string, wrk: string, dir: string, interval: string): Promise<Sample> {
  const [node] = await startCluster({ binary, names: ["A"], groups: held > 0 ? ["held:256MiB"] : [], args: ["--gc-interval", interval] });
  try {
    if (held > 0) await putKeys(node!, "held", Array.from({ length: held }, (_, i) => `held-${i}`), 1000);
    const hot = Array.from({ length: HOT_KEYS }, (_, i) => `hot-${i}`);
    await putKeys(node!, "default", hot, 100);
    const script = writeWrkScript(dir, "hot", hot, "/v1/groups/default/keys/", 1);
    const spec = { wrk, url: node!.http, script, threads: 1, connections: 64 };
    await runWrk({ ...spec, seconds: WARMUP_S });
    const before = sampleProcess(node!.service.pid);
    const result = await runWrk({ ...spec, seconds });
    const after = sampleProcess(node!.service.pid);
    if (result.socketErrors + result.statusErrors > 0) {
      throw new Error(`wrk saw ${result.socketErrors} socket and ${result.statusErrors} status errors`);
    }
    return {
      rps: result.rps,
      p99Ms: result.p99Ms,
      cpuUsPerRequest: ((after.cpuMs - before.cpuMs) * 1000) / result.requests,
      rssBytes: after.rssBytes,
    };
  } finally {
    await stopAll();
  }
}

installCleanup();
const root = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const commands = await ensureCommands(NEEDED_COMMANDS.filter((c) => c.command === "wrk"));
const binary = await ensureBinary(root, flags.build!);
const dir = mkdtempSync(join(tmpdir(), "gcache-gc-pacing-"));
const samples = new Map<string, Sample[]>(SETTINGS.map((s) => [s, []]));
console.log(
  `gc pacing: ${binary}, one node, ${fmtInt(HOT_KEYS)} hot 100 B keys` +
    (held > 0 ? `, ${fmtInt(held)} values of 1 KB held in another group` : "") +
    `; wrk -t 1 -c 64, ${WARMUP_S} s warm-up + ${seconds} s; ${rounds} rounds alternating --gc-interval ${SETTINGS.join(" / ")}`,
);
try {
  for (let round = 1; round <= rounds; round++) {
    for (const setting of SETTINGS) {
      const sample = await measure(binary, commands.get("wrk")!, dir, setting);
      samples.get(setting)!.push(sample);
      console.log(
        `  round ${round}, --gc-interval ${setting}: ${fmtInt(sample.rps)} req/s, p99 ${fmtMs(sample.p99Ms)} ms, ` +
          `${sample.cpuUsPerRequest.toFixed(2)} us CPU/req, RSS ${mb(sample.rssBytes)}`,
      );
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const each = (setting: string, pick: (s: Sample) => number) => samples.get(setting)!.map(pick);
console.log(
  "\n" +
    table(
      ["--gc-interval", "req/s", "p99 ms", "CPU us/req", "RSS", "p99 per round"],
      SETTINGS.map((setting) => [
        setting,
        fmtInt(median(each(setting, (s) => s.rps))),
        fmtMs(median(each(setting, (s) => s.p99Ms))),
        median(each(setting, (s) => s.cpuUsPerRequest)).toFixed(2),
        mb(median(each(setting, (s) => s.rssBytes))),
        each(setting, (s) => s.p99Ms).map((ms) => fmtMs(ms)).join(" "),
      ]),
    ),
);
const [off, on] = SETTINGS.map((setting) => median(each(setting, (s) => s.p99Ms)));
console.log(`\np99 paced / not paced: ${(on! / off!).toFixed(3)} (median of ${rounds} rounds each)`);
