/**
 * The load generator of the node benchmark, in its own process: keeps a fixed
 * number of unary `/pb.GCache/Get` calls in flight over one gRPC channel per
 * target and measures calls/s and latency.
 *
 *   bun scripts/bench/_node/load.ts
 *
 * Prints `READY -`, then takes commands on stdin (see commands.ts):
 *   { op: "connect", target, address, client? }     -> opens the channel and waits until it is ready;
 *       client "grpc-js" (the default: a grpc-js Client, as the nodes use) or "raw"
 *       (raw-grpc.ts: HTTP/2 on a Bun socket, 15-30 µs per call, so the server is what limits)
 *   { op: "keys", name, group, keys }               -> stores a key set (requests are encoded once, here)
 *   { op: "run", target, keys, concurrency, warmupMs, durationMs, pids, valueBytes, rate? }
 *       -> runs `concurrency` closed loops (or, with `rate`, starts `rate`
 *          calls/s with at most `concurrency` in flight) for warmupMs +
 *          durationMs; only the last durationMs count. Reports calls/s, latency percentiles, errors,
 *          and the CPU time and RSS of every process in `pids` over the window.
 *   { op: "exit" }
 *
 * Each request is encoded with the project's codec once, up front, and sent
 * as those bytes: the wire carries exactly what the client would send, but
 * the generator spends no CPU re-encoding it (on a small machine the
 * generator shares cores with the servers). Responses are passed through as
 * bytes; every 64th is decoded with the project's codec and its value length
 * checked, and every response's framing is checked for a value field.
 */
import { Client, credentials, type ServiceError } from "@grpc/grpc-js";
import { codecs, GCACHE_SERVICE } from "../../../src/wire/messages.ts";
import { busyCpusBetween, processDeltas, sampleMachine, sampleProcess, serveCommands, type ProcessDelta, type ProcSample } from "./commands.ts";
import { RawUnaryChannel, type UnaryDone } from "./raw-grpc.ts";

const GET_PATH = GCACHE_SERVICE.Get.path;
const CALL_TIMEOUT_MS = 5_000;
const EMPTY = new Uint8Array(0);

/** One target's calls, whichever client makes them. */
interface UnaryChannel {
  call(request: Buffer, done: UnaryDone): void;
  close(): void;
}

const channels = new Map<string, UnaryChannel>();
const keySets = new Map<string, Buffer[]>();

const passThrough = (bytes: Buffer): Buffer => bytes;

async function connect(target: string, address: string, kind: string): Promise<void> {
  channels.get(target)?.close();
  channels.delete(target);
  if (kind === "raw") {
    channels.set(target, await RawUnaryChannel.connect({ address, path: GET_PATH, timeoutMs: CALL_TIMEOUT_MS }));
    return;
  }
  if (kind !== "grpc-js") throw new Error(`client must be "grpc-js" or "raw", got ${JSON.stringify(kind)}`);
  const client = new Client(address, credentials.createInsecure(), {
    // The options every channel of the project carries, the flow-control window first.
    "grpc-node.flow_control_window": 16 * 1024 * 1024,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.max_receive_message_length": 4 * 1024 * 1024 + 64 * 1024,
    "grpc.max_send_message_length": 4 * 1024 * 1024 + 64 * 1024,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2_000,
  });
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 10_000, (error) => (error ? reject(error) : resolve())),
  );
  channels.set(target, {
    call(request, done) {
      client.makeUnaryRequest<Buffer, Buffer>(
        GET_PATH,
        passThrough,
        passThrough,
        request,
        { deadline: Date.now() + CALL_TIMEOUT_MS },
        (error: ServiceError | null, response?: Buffer) => {
          if (error !== null) done(error.message);
          else if (response === undefined) done("no response");
          else done(null, response);
        },
      );
    },
    close: () => client.close(),
  });
}

interface RunSpec {
  target: string;
  keys: string;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  pids: number[];
  valueBytes: number;
  /** Calls per second to start on a fixed schedule (open loop); unset: closed loop. */
  rate?: number;
}

export interface RunResult {
  calls: number;
  seconds: number;
  callsPerSecond: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  /** Paced runs: calls not started on schedule because `concurrency` were already in flight. */
  skipped: number;
  firstError: string | null;
  /** Responses whose value did not have the expected length. */
  badValues: number;
  /** Per pid in `pids`: CPU and run-queue wait ms during the window, and RSS at its end. */
  processes: ProcessDelta[];
  /** CPU ms this generator used during the window. */
  generatorCpuMs: number;
  /** CPUs the whole machine kept busy during the window, on average (all processes, ours included). */
  machineBusyCpus: number;
}

function run(spec: RunSpec): Promise<RunResult> {
  const channel = channels.get(spec.target);
  if (channel === undefined) throw new Error(`not connected to ${spec.target}`);
  const requests = keySets.get(spec.keys);
  if (requests === undefined || requests.length === 0) throw new Error(`no key set ${spec.keys}`);

  const paced = spec.rate !== undefined && spec.rate > 0;
  let skipped = 0;
  let measuring = false;
  let stopping = false;
  let latencies = new Float64Array(1 << 16);
  let count = 0;
  let errors = 0;
  let badValues = 0;
  let firstError: string | null = null;
  let next = 0;
  let inFlight = 0;
  let responses = 0;
  let t0 = 0;
  let t1 = 0;
  let before: ProcSample[] = [];
  let after: ProcSample[] = [];
  let cpu0: NodeJS.CpuUsage = process.cpuUsage();
  let generatorCpuMs = 0;
  let machine0 = sampleMachine();
  let machineBusyCpus = NaN;

  return new Promise<RunResult>((resolve) => {
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      const sorted = latencies.subarray(0, count).sort();
      const at = (q: number) => (count === 0 ? NaN : sorted[Math.min(count - 1, Math.floor(q * count))]!);
      const seconds = (t1 - t0) / 1000;
      resolve({
        calls: count,
        seconds,
        callsPerSecond: count / seconds,
        p50Ms: at(0.5),
        p90Ms: at(0.9),
        p99Ms: at(0.99),
        maxMs: count === 0 ? NaN : sorted[count - 1]!,
        errors,
        skipped,
        firstError,
        badValues,
        processes: processDeltas(spec.pids, before, after),
        generatorCpuMs,
        machineBusyCpus,
      });
    };

    const issue = () => {
      const request = requests[next++ % requests.length]!;
      const start = performance.now();
      inFlight++;
      channel.call(request, (error, response) => {
        inFlight--;
        const end = performance.now();
        if (error !== null || response === undefined) {
          if (measuring) errors++;
          firstError ??= error ?? "no response";
        } else {
          if (!plausible(response, spec.valueBytes) || ((++responses & 63) === 0 && !exact(response, spec.valueBytes))) badValues++;
          if (measuring) {
            if (count === latencies.length) {
              const grown = new Float64Array(latencies.length * 2);
              grown.set(latencies);
              latencies = grown;
            }
            latencies[count++] = end - start;
          }
        }
        if (!stopping) {
          if (!paced) issue();
        } else if (inFlight === 0) finish();
      });
    };

    if (!paced) {
      for (let i = 0; i < spec.concurrency; i++) issue();
    } else {
      // Open loop: start calls on a schedule of `rate` per second, never more than `concurrency` at once.
      const begin = performance.now();
      let due = 0;
      const pump = setInterval(() => {
        if (stopping) {
          clearInterval(pump);
          if (inFlight === 0) finish();
          return;
        }
        const target = Math.floor(((performance.now() - begin) * spec.rate!) / 1000);
        while (due < target && inFlight < spec.concurrency) {
          due++;
          issue();
        }
        if (due < target) {
          if (measuring) skipped += target - due;
          due = target;
        }
      }, 1);
    }
    setTimeout(() => {
      before = spec.pids.map(sampleProcess);
      machine0 = sampleMachine();
      cpu0 = process.cpuUsage();
      t0 = performance.now();
      measuring = true;
      setTimeout(() => {
        t1 = performance.now();
        measuring = false;
        stopping = true;
        const cpu = process.cpuUsage(cpu0);
        generatorCpuMs = (cpu.user + cpu.system) / 1000;
        after = spec.pids.map(sampleProcess);
        machineBusyCpus = busyCpusBetween(machine0, sampleMachine());
      }, spec.durationMs);
    }, spec.warmupMs);
  });
}

/** Field 1 (value, length-delimited) comes first with the expected length. */
function plausible(response: Buffer, valueBytes: number): boolean {
  if (valueBytes === 0) return true;
  if (response[0] !== 0x0a) return false;
  let length = 0;
  let shift = 0;
  for (let i = 1; i < response.length && i < 6; i++) {
    const byte = response[i]!;
    length |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return length === valueBytes;
    shift += 7;
  }
  return false;
}

function exact(response: Buffer, valueBytes: number): boolean {
  try {
    return codecs.ResponseForGet.decode(response).value.byteLength === valueBytes;
  } catch {
    return false;
  }
}

serveCommands(
  "-",
  async (command) => {
    switch (command.op) {
      case "connect":
        await connect(String(command.target), String(command.address), String(command.client ?? "grpc-js"));
        return null;
      case "keys": {
        const group = String(command.group);
        const encoded = (command.keys as string[]).map((key) =>
          codecs.Request.encode({ group, key, value: EMPTY, ttlMs: 0, expiresAtMs: 0, fromPeer: false }),
        );
        keySets.set(String(command.name), encoded);
        return encoded.length;
      }
      case "run":
        return run(command as unknown as RunSpec);
      default:
        throw new Error(`unknown command ${command.op}`);
    }
  },
  async () => {
    for (const channel of channels.values()) channel.close();
  },
);
