/**
 * A cluster of gcache-node processes (the compiled executable) on loopback
 * with static membership, and the HTTP calls the benchmark makes to them:
 * readiness, group stats, filling keys with PUT, loading keys with GET.
 */
import type { GroupStats } from "../../../src/group.ts";
import { Service, waitForHttp } from "./procs.ts";
import { freePorts } from "./util.ts";

export interface NodeProcess {
  name: string;
  /** host:port of the gRPC server. */
  grpc: string;
  /** http://host:port of the gateway. */
  http: string;
  service: Service;
}

export interface ClusterOptions {
  binary: string;
  names: string[];
  /** `--group` values, e.g. "cold:4MiB:lru". */
  groups: string[];
  /** `--origin` URL template. */
  origin?: string;
  /** More flags for every node. */
  args?: readonly string[];
  /** Environment variables for the nodes only, on top of this process's (the runtime's settings, say). */
  env?: Readonly<Record<string, string>>;
}

export async function startCluster(options: ClusterOptions): Promise<NodeProcess[]> {
  const ports = freePorts(options.names.length * 2);
  const grpcPorts = ports.slice(0, options.names.length);
  const httpPorts = ports.slice(options.names.length);
  const peers = options.names.map((name, i) => `${name}=127.0.0.1:${grpcPorts[i]}`).join(",");
  const nodes = options.names.map((name, i): NodeProcess => {
    const argv = [
      options.binary,
      "--node",
      name,
      "--host",
      "127.0.0.1",
      "--port",
      String(grpcPorts[i]),
      "--http-port",
      String(httpPorts[i]),
      "--peers",
      peers,
      ...(options.groups.length === 0 ? [] : ["--group", options.groups.join(",")]),
      ...(options.origin === undefined ? [] : ["--origin", options.origin]),
      "--drain-grace",
      "0s",
      "--log-level",
      "warn",
      ...(options.args ?? []),
    ];
    const service = new Service(`node ${name}`, argv, {
      // Only warnings and errors are logged: show them as they come.
      onLine: (line) => process.stderr.write(`[node ${name}] ${line}\n`),
      ...(options.env === undefined ? {} : { env: { ...process.env, ...options.env } }),
    });
    return { name, grpc: `127.0.0.1:${grpcPorts[i]}`, http: `http://127.0.0.1:${httpPorts[i]}`, service };
  });
  await Promise.all(nodes.map((node) => waitForHttp(`${node.http}/readyz`, 30_000, node.service)));
  for (const node of nodes) {
    const body = (await (await fetch(`${node.http}/v1/stats`)).json()) as { groups: Record<string, unknown> };
    for (const group of options.groups.map((g) => g.split(":")[0]!)) {
      if (body.groups[group] === undefined) throw new Error(`node ${node.name} started without group ${group}`);
    }
  }
  return nodes;
}

/** The stats of one group on one node (GET /v1/stats). */
export async function groupStats(node: NodeProcess, group: string): Promise<GroupStats> {
  const response = await fetch(`${node.http}/v1/stats`);
  if (!response.ok) throw new Error(`${node.name}: GET /v1/stats answered ${response.status}`);
  const body = (await response.json()) as { groups: Record<string, GroupStats> };
  const stats = body.groups[group];
  if (stats === undefined) throw new Error(`${node.name} has no group ${group}`);
  return stats;
}

async function forEachKey(keys: readonly string[], concurrency: number, task: (key: string) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < keys.length) await task(keys[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, keys.length) }, worker));
}

const keyUrl = (base: string, group: string, key: string) =>
  `${base}/v1/groups/${encodeURIComponent(group)}/keys/${encodeURIComponent(key)}`;

/** PUTs `valueBytes` bytes under every key through `node`'s gateway. */
export async function putKeys(node: NodeProcess, group: string, keys: readonly string[], valueBytes: number, concurrency = 32): Promise<void> {
  const body = new Uint8Array(valueBytes).fill(0x63);
  await forEachKey(keys, concurrency, async (key) => {
    const response = await fetch(keyUrl(node.http, group, key), { method: "PUT", body });
    const text = await response.text();
    if (!response.ok) throw new Error(`PUT ${group}/${key} on ${node.name}: ${response.status} ${text}`);
  });
}

/** GETs every key through `node`'s gateway (loading misses); checks every value is `valueBytes` long. Any server with the same route will do. */
export async function getKeys(node: Pick<NodeProcess, "name" | "http">, group: string, keys: readonly string[], valueBytes: number, concurrency = 32): Promise<void> {
  await forEachKey(keys, concurrency, async (key) => {
    const response = await fetch(keyUrl(node.http, group, key));
    const body = await response.arrayBuffer();
    if (!response.ok) throw new Error(`GET ${group}/${key} on ${node.name}: ${response.status} ${new TextDecoder().decode(body)}`);
    if (body.byteLength !== valueBytes) throw new Error(`GET ${group}/${key} on ${node.name}: ${body.byteLength} bytes, expected ${valueBytes}`);
  });
}
