/** The parent side of tcp-get.ts: one run of the one-client generator. */
import { fileURLToPath } from "node:url";
import { runToEnd } from "./procs.ts";

export interface TcpGetSpec {
  protocol: "http" | "resp" | "memcache";
  port: number;
  /** One key per line, as it goes on the wire. */
  keysFile: string;
  connections: number;
  valueBytes: number;
  /** Redis database to SELECT (0: none). */
  db: number;
  /** HTTP path before the key. Default: /v1/groups/default/keys/. */
  pathPrefix?: string;
  /** Open loop at this many requests per second. Default: 0, a closed loop. */
  rate?: number;
  /** Seconds the loop runs before the measured ones, counted in nothing. Default: 0. */
  warmupSeconds?: number;
}

export interface TcpGetResult {
  requests: number;
  seconds: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  firstError: string | null;
  cpuMs: number;
  /** Open loop: the most requests that were due with no idle connection to take them. */
  mostWaiting: number;
  /** Open loop: the longest the client went between two polls. */
  longestPollGapMs: number;
}

const MARK = "RESULT ";
const MEASURING = "MEASURING";
const SCRIPT = fileURLToPath(new URL("./tcp-get.ts", import.meta.url));

/**
 * Runs tcp-get.ts under this process's Bun for `spec.warmupSeconds` and then
 * `spec.seconds`; `onMeasuring` is called as the measured seconds start.
 */
export async function runTcpGet(spec: TcpGetSpec & { seconds: number }, onMeasuring?: () => void): Promise<TcpGetResult> {
  const warmupSeconds = spec.warmupSeconds ?? 0;
  const argv = [
    process.execPath,
    SCRIPT,
    `--protocol=${spec.protocol}`,
    `--port=${spec.port}`,
    `--keys=${spec.keysFile}`,
    `--connections=${spec.connections}`,
    `--seconds=${spec.seconds}`,
    `--value-bytes=${spec.valueBytes}`,
    `--db=${spec.db}`,
    `--rate=${spec.rate ?? 0}`,
    `--warmup=${warmupSeconds}`,
    ...(spec.pathPrefix === undefined ? [] : [`--path-prefix=${spec.pathPrefix}`]),
  ];
  const { lines } = await runToEnd(`tcp-get ${spec.protocol}`, argv, (warmupSeconds + spec.seconds) * 1000 + 30_000, {
    onLine: (line) => {
      if (line === MEASURING) onMeasuring?.();
    },
  });
  const line = lines.find((l) => l.startsWith(MARK));
  if (line === undefined) throw new Error(`tcp-get printed no result line:\n${lines.join("\n")}`);
  return JSON.parse(line.slice(MARK.length)) as TcpGetResult;
}
