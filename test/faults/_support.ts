/**
 * Shared pieces of the fault tests: an HTTP origin served by the test process,
 * gcache-node processes over a test etcd, a steady load that records every
 * request it makes, and the staleness check run over that record.
 */
import { afterAll, beforeAll } from "bun:test";
import { GCacheClient } from "../../src/client.ts";
import { HashRing } from "../../src/cluster/ring.ts";
import { isGCacheError } from "../../src/errors.ts";
import { CliNode } from "../_support/cli.ts";
import { text } from "../_support/cluster.ts";
import { startEtcd, type EtcdServer } from "../_support/etcd.ts";
import { randomInt, seededRandom } from "../_support/random.ts";
import { waitFor } from "../_support/wait.ts";

/** Lease TTL every fault-test node runs with: how long a vanished node stays a member. */
export const LEASE_TTL_S = 2;

/** What the origin answers for one request. */
export interface OriginReply {
  /** HTTP status. Default: 200. */
  status?: number;
  /** Body. Default: `origin:<key>`. */
  body?: string;
  /** Wait this long before answering (a slow origin); a request whose client goes away stops waiting. */
  delayMs?: number;
}

/**
 * The origin the nodes load from (`--origin http://…/{group}/{key}`): answers
 * `origin:<key>` unless `behaviour` says otherwise, and counts what it saw,
 * including requests whose caller went away while the origin was still working.
 */
export class Origin {
  private readonly server: ReturnType<typeof Bun.serve>;
  /** Decides each answer; `n` counts the requests for this key so far, this one included. */
  behaviour: (key: string, n: number) => OriginReply = () => ({});
  requests = 0;
  inFlight = 0;
  /** Slow requests whose caller disconnected before the answer (the request's signal aborted). */
  aborted = 0;
  /** Slow requests that ran to the end and answered. */
  slowCompleted = 0;
  private readonly perKey = new Map<string, number>();

  constructor() {
    this.server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (request) => this.handle(request),
    });
  }

  /** The `--origin` template. */
  get template(): string {
    return `http://127.0.0.1:${this.server.port}/{group}/{key}`;
  }

  /** Requests seen for `key`. */
  requestsFor(key: string): number {
    return this.perKey.get(key) ?? 0;
  }

  async stop(): Promise<void> {
    await this.server.stop(true);
  }

  private async handle(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    const key = decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
    const n = (this.perKey.get(key) ?? 0) + 1;
    this.perKey.set(key, n);
    this.requests++;
    const reply = this.behaviour(key, n);
    this.inFlight++;
    try {
      if (reply.delayMs !== undefined && reply.delayMs > 0) {
        const finished = await delayUnlessAborted(reply.delayMs, request.signal);
        if (!finished) {
          this.aborted++;
          return new Response("caller went away", { status: 499 });
        }
        this.slowCompleted++;
      }
      return new Response(reply.body ?? `origin:${key}`, { status: reply.status ?? 200 });
    } finally {
      this.inFlight--;
    }
  }
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function delayUnlessAborted(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Flags of a fault-test node: free ports, etcd discovery with a short lease, the test origin. */
export function nodeArgs(name: string, etcd: EtcdServer, origin: Origin, extra: string[] = []): string[] {
  return [
    "--port=0",
    `--node=${name}`,
    `--etcd=${etcd.endpoint}`,
    `--lease-ttl=${LEASE_TTL_S}s`,
    `--origin=${origin.template}`,
    ...extra,
  ];
}

/** Starts one node per name; if any fails to start, stops the others and rethrows. */
export async function startNodes(names: string[], args: (name: string) => string[]): Promise<CliNode[]> {
  const started = await Promise.allSettled(names.map((name) => CliNode.start(name, args(name))));
  const nodes = started.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
  const failed = started.find((result): result is PromiseRejectedResult => result.status === "rejected");
  if (failed !== undefined) {
    await Promise.all(nodes.map((node) => node.stop()));
    throw failed.reason;
  }
  return nodes;
}

/** Waits until every node's latest membership line lists exactly `names`. */
export async function waitForMembers(nodes: CliNode[], names: string[], timeoutMs: number, what = `members ${names}`): Promise<void> {
  const expected = [...names].sort().join(",");
  await waitFor(() => nodes.every((node) => node.members()?.join(",") === expected), timeoutMs, what);
}

/** The HTTP gateway address a node logged when it started serving. */
export function httpAddressOf(node: CliNode): string {
  const line = node.logs().find((log) => log.msg === "serving");
  const address = line?.httpAddress;
  if (typeof address !== "string") throw new Error(`${node.name} logged no HTTP address`);
  return address;
}

/** The owner of `key` on a ring of `names` (every node builds the same ring from the same names). */
export function ownerAmong(names: string[], key: string): string {
  const ring = new HashRing();
  ring.setMembers(names.map((name) => ({ name, weight: 1 })));
  const owner = ring.owner(key);
  if (owner === undefined) throw new Error("empty ring");
  return owner;
}

/** `count` keys named `<prefix>-<i>` whose owner among `names` is `owner`. */
export function keysOwnedBy(names: string[], owner: string, count: number, prefix: string): string[] {
  const ring = new HashRing();
  ring.setMembers(names.map((name) => ({ name, weight: 1 })));
  const keys: string[] = [];
  for (let i = 0; keys.length < count && i < 100_000; i++) {
    const key = `${prefix}-${i}`;
    if (ring.owner(key) === owner) keys.push(key);
  }
  if (keys.length < count) throw new Error(`not enough keys owned by ${owner}`);
  return keys;
}

/** The p-th percentile (0–100) of `values`, or NaN when empty. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

/** The gcache code of a failed call, or a description of something that is not a GCacheError. */
export function codeOf(error: unknown): string {
  return isGCacheError(error) ? error.code : `non-gcache error: ${String(error)}`;
}

/** Tallies items by a label, for reports. */
export function tally<T>(items: Iterable<T>, label: (item: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const item of items) {
    const name = label(item);
    out[name] = (out[name] ?? 0) + 1;
  }
  return out;
}

export interface GetRecord {
  key: string;
  /** Index of the client (node) the get went to. */
  via: number;
  /** performance.now() when the get was sent and when its answer arrived. */
  start: number;
  end: number;
  /** The value read, when the get succeeded. */
  value?: string;
  /** The gcache error code, when it failed. */
  error?: string;
}

export interface SetRecord {
  key: string;
  via: number;
  /** Unique value written: `set:<key>:<seq>`. */
  value: string;
  start: number;
  end: number;
  /** The set was acknowledged. */
  acked: boolean;
  /** The gcache error code, when it failed. */
  error?: string;
  /** Peers the acknowledging node could not tell to drop their copies. */
  unreachablePeers: string[];
}

export interface LoadOptions {
  clients: GCacheClient[];
  keys: string[];
  /** Requests in flight at once. */
  concurrency: number;
  /** Share of requests that are sets (the rest are gets). */
  setShare: number;
  /** Deadline of each request. */
  timeoutMs: number;
  seed: number;
  /** The load stops by itself after this long, whatever happens. Default: 60 s. */
  maxDurationMs?: number;
  group?: string;
}

/**
 * A steady mixed load: `concurrency` workers, each sending one request at a
 * time. Two sets of one key are never in flight together, so the sets of a
 * key are totally ordered by time and their record order is that order.
 */
export class Load {
  readonly gets: GetRecord[] = [];
  /** Every set per key, in the order they were sent. */
  readonly sets = new Map<string, SetRecord[]>();
  private readonly settingKeys = new Set<string>();
  private readonly random: () => number;
  private readonly group: string;
  private seq = 0;
  private stopping = false;
  private workers: Promise<void>[] = [];
  private startedAt = 0;

  constructor(private readonly options: LoadOptions) {
    this.random = seededRandom(options.seed);
    this.group = options.group ?? "default";
  }

  /** Requests of the load that finished (answered, or failed for good). */
  completed = 0;

  start(): void {
    this.startedAt = performance.now();
    this.workers = Array.from({ length: this.options.concurrency }, () => this.work());
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.workers);
  }

  /** Stops the load, then reads every key through every client once, with no write in flight. */
  async stopAndSweep(): Promise<void> {
    await this.stop();
    for (const key of this.options.keys) {
      for (let via = 0; via < this.options.clients.length; via++) await this.getOnce(via, key);
    }
  }

  /** Every set, in no particular order across keys. */
  allSets(): SetRecord[] {
    return [...this.sets.values()].flat();
  }

  /** Every failed request, described for an assertion message. */
  failures(): string[] {
    return [
      ...this.gets.filter((get) => get.error !== undefined).map((get) => `get ${get.key} via #${get.via}: ${get.error}`),
      ...this.allSets().filter((set) => !set.acked).map((set) => `set ${set.key} via #${set.via}: ${set.error}`),
    ];
  }

  /** One get outside the load (e.g. a final sweep), recorded like the others. */
  async getOnce(via: number, key: string): Promise<GetRecord> {
    const record = await this.get(via, key);
    this.gets.push(record);
    return record;
  }

  /** The last set of `key` that was acknowledged, or undefined. */
  lastAcked(key: string): SetRecord | undefined {
    return (this.sets.get(key) ?? []).findLast((s) => s.acked);
  }

  private async work(): Promise<void> {
    const maxDurationMs = this.options.maxDurationMs ?? 60_000;
    for (let i = 0; i < 1_000_000 && !this.stopping && performance.now() - this.startedAt < maxDurationMs; i++) {
      const key = this.options.keys[randomInt(this.random, this.options.keys.length)]!;
      const via = randomInt(this.random, this.options.clients.length);
      if (this.random() < this.options.setShare && !this.settingKeys.has(key)) {
        await this.set(via, key);
      } else {
        this.gets.push(await this.get(via, key));
      }
      this.completed++;
    }
  }

  private async get(via: number, key: string): Promise<GetRecord> {
    const start = performance.now();
    try {
      const value = await this.options.clients[via]!.get(this.group, key, { timeoutMs: this.options.timeoutMs });
      return { key, via, start, end: performance.now(), value: text(value) };
    } catch (error) {
      return { key, via, start, end: performance.now(), error: codeOf(error) };
    }
  }

  private async set(via: number, key: string): Promise<void> {
    this.settingKeys.add(key);
    const value = `set:${key}:${++this.seq}`;
    const record: SetRecord = { key, via, value, start: performance.now(), end: 0, acked: false, unreachablePeers: [] };
    let list = this.sets.get(key);
    if (list === undefined) {
      list = [];
      this.sets.set(key, list);
    }
    list.push(record);
    try {
      const result = await this.options.clients[via]!.set(this.group, key, new TextEncoder().encode(value), {
        timeoutMs: this.options.timeoutMs,
      });
      record.acked = true;
      record.unreachablePeers = result.unreachablePeers;
    } catch (error) {
      record.error = codeOf(error);
    } finally {
      record.end = performance.now();
      this.settingKeys.delete(key);
    }
  }
}

/**
 * Reads that returned a value some acknowledged write had already replaced.
 *
 * For a get G of key k that succeeded with value v, let S be the last set of
 * k acknowledged before G was sent (sets of one key never overlap, so "last"
 * is well defined). G is correct when v was written by S or by a set sent
 * after S (which may still be in flight, or have failed after being applied),
 * or when v is the origin's `origin:<k>` and either no set of k was
 * acknowledged before G, or `mayBeLost(S)`: S was stored only on a node that
 * has died since, so its value is gone and the origin's is all that is left.
 * Anything else is stale: G returned a value overwritten by an acknowledged
 * set whose value nothing excuses losing (its owner is still alive).
 */
export function staleReads(load: Load, mayBeLost: (set: SetRecord) => boolean): string[] {
  const problems: string[] = [];
  for (const get of load.gets) {
    if (get.value === undefined) continue;
    const history = load.sets.get(get.key) ?? [];
    let last = -1;
    for (let i = 0; i < history.length; i++) {
      if (history[i]!.acked && history[i]!.end < get.start) last = i;
    }
    const written = history.findIndex((s) => s.value === get.value);
    const at = `get ${get.key} via #${get.via} sent at ${get.start.toFixed(0)} ms`;
    const lastSet = history[last];
    const lastText = lastSet === undefined ? "" : `${lastSet.value} (acknowledged at ${lastSet.end.toFixed(0)} ms)`;
    if (written >= 0) {
      if (written < last) problems.push(`${at} returned ${get.value}, overwritten by ${lastText}`);
    } else if (get.value === `origin:${get.key}`) {
      if (lastSet !== undefined && !mayBeLost(lastSet)) problems.push(`${at} returned the origin value, but ${lastText} was still live`);
    } else {
      problems.push(`${at} returned ${JSON.stringify(get.value)}, which nobody wrote`);
    }
  }
  return problems;
}

/** Reads `/proc/<pid>/status` VmRSS in bytes (Linux), or NaN elsewhere. */
export async function rssOf(pid: number | "self"): Promise<number> {
  try {
    const status = await Bun.file(`/proc/${pid}/status`).text();
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return match === null ? Number.NaN : Number(match[1]) * 1024;
  } catch {
    return Number.NaN;
  }
}

/** What the process fault tests share: an etcd, an origin, the nodes and clients they start. */
export interface FaultCluster {
  etcd: EtcdServer;
  origin: Origin;
  nodes: CliNode[];
  clients: GCacheClient[];
}

/**
 * Starts etcd and the origin before the suite (and, given `names`, those nodes
 * with a client of the first one), and stops everything the suite started after it.
 */
export function useFaultCluster(names?: string[]): FaultCluster {
  const env = { nodes: [], clients: [] } as unknown as FaultCluster;
  beforeAll(async () => {
    env.etcd = await startEtcd();
    env.origin = new Origin();
    if (names === undefined) return;
    env.nodes = await startNodes(names, (name) => nodeArgs(name, env.etcd, env.origin));
    await waitForMembers(env.nodes, names, 10_000);
    env.clients.push(new GCacheClient(env.nodes[0]!.address));
  }, 40_000);
  afterAll(async () => {
    for (const client of env.clients) client.close();
    await Promise.all(env.nodes.map((node) => node.stop()));
    await env.origin?.stop();
    await env.etcd?.stop();
  });
  return env;
}
