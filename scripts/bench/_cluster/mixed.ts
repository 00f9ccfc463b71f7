/**
 * The mixed-workload load generator of the cluster benchmark, in its own
 * process: `concurrency` closed loops over HTTP (keep-alive), each picking a
 * key by Zipf rank, a node round-robin, and a GET or (with probability
 * `setShare`) a PUT of `valueBytes` bytes, through the nodes' gateways.
 *
 *   bun scripts/bench/_cluster/mixed.ts
 *
 * Prints `READY -`, then takes commands on stdin (the line protocol of ../_node/commands.ts):
 *   { op: "run", bases, group, keyPrefix, universe, zipf, setShare, valueBytes,
 *     concurrency, warmupMs, durationMs, pids, seed? }
 *       -> runs for warmupMs + durationMs; the last durationMs count. Reports
 *          ops/s, latency percentiles of gets, sets and both, errors, and the CPU
 *          time and RSS of every process in `pids` over the window.
 *   { op: "exit" }
 *
 * Keys are `<keyPrefix><rank>`; the origin sizes values from the key, so a
 * GET answers `valueBytes` bytes whether it was loaded or set.
 */
import { busyCpusBetween, processDeltas, sampleMachine, sampleProcess, serveCommands, type ProcessDelta, type ProcSample } from "../_node/commands.ts";
import { Rng, Zipf } from "../traces.ts";

export interface MixedSpec {
  /** Gateway base URLs, e.g. http://127.0.0.1:9001. */
  bases: string[];
  group: string;
  keyPrefix: string;
  universe: number;
  /** Zipf exponent s (rank r is drawn with probability proportional to 1 / r^s). */
  zipf: number;
  setShare: number;
  valueBytes: number;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  pids: number[];
  seed?: number;
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p99Ms: number;
}

export interface MixedResult {
  ops: number;
  seconds: number;
  opsPerSecond: number;
  gets: LatencySummary;
  sets: LatencySummary;
  all: LatencySummary;
  errors: number;
  firstError: string | null;
  /** GET answers whose body was not `valueBytes` long. */
  badValues: number;
  processes: ProcessDelta[];
  generatorCpuMs: number;
  machineBusyCpus: number;
}

class Latencies {
  private values = new Float64Array(1 << 15);
  count = 0;
  add(ms: number): void {
    if (this.count === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.count++] = ms;
  }
  summary(): LatencySummary {
    const sorted = this.values.subarray(0, this.count).sort();
    const at = (q: number) => (this.count === 0 ? NaN : sorted[Math.min(this.count - 1, Math.floor(q * this.count))]!);
    return { count: this.count, p50Ms: at(0.5), p99Ms: at(0.99) };
  }
}

async function run(spec: MixedSpec): Promise<MixedResult> {
  const zipf = new Zipf(spec.universe, spec.zipf);
  const rng = new Rng(spec.seed ?? 1);
  const body = new Uint8Array(spec.valueBytes).fill(0x62);
  const putHeaders = { "content-type": "application/octet-stream" };
  const paths = spec.bases.map((base) => `${base}/v1/groups/${encodeURIComponent(spec.group)}/keys/`);
  const gets = new Latencies();
  const sets = new Latencies();
  const all = new Latencies();
  let measuring = false;
  let stopping = false;
  let errors = 0;
  let badValues = 0;
  let firstError: string | null = null;
  let turn = 0;

  const worker = async () => {
    while (!stopping) {
      const key = `${spec.keyPrefix}${zipf.sample(rng)}`;
      const url = paths[turn++ % paths.length]! + encodeURIComponent(key);
      const isSet = rng.float() < spec.setShare;
      const start = performance.now();
      let ok = false;
      try {
        const response = isSet ? await fetch(url, { method: "PUT", body, headers: putHeaders }) : await fetch(url);
        const answer = await response.arrayBuffer();
        if (!response.ok) {
          firstError ??= `${isSet ? "PUT" : "GET"} ${key}: ${response.status} ${new TextDecoder().decode(answer).slice(0, 200)}`;
        } else {
          ok = true;
          if (!isSet && answer.byteLength !== spec.valueBytes && measuring) badValues++;
        }
      } catch (error) {
        firstError ??= `${isSet ? "PUT" : "GET"} ${key}: ${error instanceof Error ? error.message : String(error)}`;
      }
      if (!measuring) continue;
      if (!ok) {
        errors++;
        continue;
      }
      const ms = performance.now() - start;
      (isSet ? sets : gets).add(ms);
      all.add(ms);
    }
  };

  const workers = Array.from({ length: spec.concurrency }, worker);
  await Bun.sleep(spec.warmupMs);
  const before: ProcSample[] = spec.pids.map(sampleProcess);
  const machine0 = sampleMachine();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  measuring = true;
  await Bun.sleep(spec.durationMs);
  measuring = false;
  const t1 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const after: ProcSample[] = spec.pids.map(sampleProcess);
  const machine1 = sampleMachine();
  stopping = true;
  await Promise.all(workers);
  const seconds = (t1 - t0) / 1000;
  return {
    ops: all.count,
    seconds,
    opsPerSecond: all.count / seconds,
    gets: gets.summary(),
    sets: sets.summary(),
    all: all.summary(),
    errors,
    firstError,
    badValues,
    processes: processDeltas(spec.pids, before, after),
    generatorCpuMs: (cpu.user + cpu.system) / 1000,
    machineBusyCpus: busyCpusBetween(machine0, machine1),
  };
}

if (import.meta.main) {
  serveCommands(
    "-",
    async (command) => {
      if (command.op === "run") return run(command as unknown as MixedSpec);
      throw new Error(`unknown command ${command.op}`);
    },
    async () => {},
  );
}
