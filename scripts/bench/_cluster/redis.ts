/**
 * The Redis reference of the cluster benchmark: redis-server on a free
 * loopback port without persistence (`--save "" --appendonly no`), filled
 * with `redis-cli --pipe`, measured with `redis-benchmark -t get`.
 *
 * redis-benchmark's GET test asks for `key:<12-digit number below -r>`, so the
 * fill writes exactly those keys (all of them, not a random sample) with
 * values of the measured size, one database per value size (`--dbnum`).
 */
import { mkdirSync } from "node:fs";
import { runToEnd, Service } from "./procs.ts";
import { freePorts } from "./util.ts";

export interface Redis {
  service: Service;
  port: number;
}

export async function startRedis(redisServer: string, redisCli: string, dir: string): Promise<Redis> {
  const [port] = freePorts(1) as [number];
  mkdirSync(dir, { recursive: true });
  const service = new Service("redis-server", [
    redisServer,
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
    "--daemonize",
    "no",
    "--logfile",
    "",
    "--loglevel",
    "warning",
    "--databases",
    "16",
  ]);
  const deadline = performance.now() + 10_000;
  for (;;) {
    if (service.hasExited) throw new Error(`redis-server exited at start:\n${service.tail()}`);
    try {
      const { lines } = await runToEnd("redis-cli ping", [redisCli, "-h", "127.0.0.1", "-p", String(port), "ping"], 2_000);
      if (lines.some((l) => l.trim() === "PONG")) break;
    } catch {
      // Not up yet.
    }
    if (performance.now() > deadline) throw new Error(`redis-server did not answer PING within 10 s:\n${service.tail()}`);
    await Bun.sleep(20);
  }
  return { service, port };
}

export function redisKey(i: number): string {
  return `key:${String(i).padStart(12, "0")}`;
}

/** SET key:000000000000 … key:<count-1> to `valueBytes` bytes each in database `db`. */
export async function fillRedis(redisCli: string, port: number, db: number, count: number, valueBytes: number): Promise<void> {
  const value = "x".repeat(valueBytes);
  const chunks: string[] = [];
  for (let i = 0; i < count; i++) {
    const key = redisKey(i);
    chunks.push(`*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${value.length}\r\n${value}\r\n`);
  }
  const { lines } = await runToEnd(
    "redis-cli --pipe",
    [redisCli, "-h", "127.0.0.1", "-p", String(port), "-n", String(db), "--pipe"],
    120_000,
    { input: chunks.join("") },
  );
  const summary = lines.find((l) => l.includes("replies:"));
  const match = summary === undefined ? null : /errors:\s*(\d+),\s*replies:\s*(\d+)/.exec(summary);
  if (match === null || Number(match[1]) !== 0 || Number(match[2]) !== count) {
    throw new Error(`filling redis db ${db} failed:\n${lines.join("\n")}`);
  }
}

export interface RedisResult {
  requests: number;
  rps: number;
  avgMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** CPU time redis-benchmark used, ms. */
  cpuMs: number;
  wallMs: number;
}

export interface RedisBenchSpec {
  redisBenchmark: string;
  port: number;
  db: number;
  clients: number;
  keyspace: number;
  valueBytes: number;
  requests: number;
}

/** `redis-benchmark -c <clients> -t get -d <size> -r <keyspace> -n <requests> --dbnum <db> --csv --precision 3`. */
export async function runRedisBenchmark(spec: RedisBenchSpec, timeoutMs: number): Promise<RedisResult> {
  const argv = [
    spec.redisBenchmark,
    "-h",
    "127.0.0.1",
    "-p",
    String(spec.port),
    "-c",
    String(spec.clients),
    "-t",
    "get",
    "-d",
    String(spec.valueBytes),
    "-r",
    String(spec.keyspace),
    "-n",
    String(spec.requests),
    "--dbnum",
    String(spec.db),
    "--csv",
    "--precision",
    "3",
  ];
  const { lines, cpuMs, wallMs } = await runToEnd("redis-benchmark", argv, timeoutMs);
  // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  const unquote = (line: string) => line.split(",").map((cell) => cell.trim().replace(/^"|"$/g, ""));
  const headerAt = lines.findIndex((l) => l.startsWith('"test"'));
  const row = lines.find((l) => l.startsWith('"GET"'));
  if (headerAt < 0 || row === undefined) throw new Error(`redis-benchmark printed no CSV result:\n${lines.join("\n")}`);
  const header = unquote(lines[headerAt]!);
  const cells = unquote(row);
  const field = (name: string) => {
    const i = header.indexOf(name);
    return i < 0 ? NaN : Number(cells[i]);
  };
  return {
    requests: spec.requests,
    rps: field("rps"),
    avgMs: field("avg_latency_ms"),
    p50Ms: field("p50_latency_ms"),
    p99Ms: field("p99_latency_ms"),
    maxMs: field("max_latency_ms"),
    cpuMs,
    wallMs,
  };
}

/** keyspace_hits and keyspace_misses so far (INFO stats), to check that the GETs found their keys. */
export async function redisHitCounters(redisCli: string, port: number): Promise<{ hits: number; misses: number }> {
  const { lines } = await runToEnd("redis-cli info", [redisCli, "-h", "127.0.0.1", "-p", String(port), "info", "stats"], 5_000);
  const value = (name: string) => {
    const line = lines.find((l) => l.startsWith(`${name}:`));
    return line === undefined ? NaN : Number(line.slice(name.length + 1).trim());
  };
  return { hits: value("keyspace_hits"), misses: value("keyspace_misses") };
}
