/**
 * Latency of the peer hop at low load: one get at a time from this process to
 * a node that owns (and holds) the key, through the path a node uses for a key
 * another node owns (`GrpcPeer.get`: the batcher, a batch of one on the
 * peer link), against one plain Get call with `from_peer` on a gRPC channel.
 * The goal: batching adds no latency when there is nothing to batch. A third
 * contender, for information: the same batch of one on a gRPC BatchGetStream
 * (a peer with the link off, as over TLS).
 *
 * Then the same for keys the node must load (a fresh key per get, from an
 * origin in this process that answers at once): the stream with later
 * answers (what `GrpcPeer.get` does) against what a peer did before them, a
 * batch of one answered "ask alone" and then a plain Get call.
 *
 *   bun run bench:hop-latency                 # 5 rounds x 2 contenders x 3,000 gets, twice: about 30 s
 *   bun run bench:hop-latency --rounds=9 --gets=5000
 *
 * The node is `src/cli/main.ts` in its own Bun process on loopback; each
 * contender has its own connection; rounds alternate the order; 300 gets warm
 * each contender up before every measurement. Reported: median over rounds of
 * p50, p90 and p99 per contender, and of the per-round p50 ratio.
 */
import { parseArgs } from "node:util";
import { GrpcPeer } from "../../src/cluster/peer.ts";
import { _Connection } from "../../src/wire/connection.ts";
import { _BatchStream } from "../../src/cluster/batch-stream.ts";
import { GCACHE_SERVICE, type BatchGetRequest, type BatchGetResponse } from "../../src/wire/messages.ts";
import { startFilledNode } from "./_cluster/one-node.ts";
import { installCleanup, stopAll } from "./_cluster/procs.ts";
import { fmtMs, fmtRatio, median, table } from "./_cluster/util.ts";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "5" },
    gets: { type: "string", default: "3000" },
    "value-bytes": { type: "string", default: "100" },
  },
});
const ROUNDS = wholeNumber("rounds", args.rounds);
const GETS = wholeNumber("gets", args.gets);
const VALUE_BYTES = wholeNumber("value-bytes", args["value-bytes"]);
const WARMUP_GETS = 300;
const KEYS = 1_000;
const DEADLINE_MS = 5_000;
const EMPTY = new Uint8Array(0);

function wholeNumber(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a whole number >= 1, got ${text}`);
  return n;
}

interface Contender {
  name: string;
  get(key: string): Promise<unknown>;
}

async function measure(contender: Contender, count: number): Promise<number[]> {
  const latencies: number[] = [];
  for (let i = 0; i < count; i++) {
    const key = `k${i % KEYS}`;
    const started = performance.now();
    await contender.get(key);
    latencies.push(performance.now() - started);
  }
  return latencies;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** Runs `contenders` (the first is the one the goal is about) in alternating order and prints their latencies and p50 ratio. */
async function compare(title: string, goal: string, contenders: Contender[]): Promise<void> {
  const results = new Map<string, { p50: number[]; p90: number[]; p99: number[] }>(contenders.map((c) => [c.name, { p50: [], p90: [], p99: [] }]));
  const ratios: number[] = [];
  console.log(`${title}: 1 get in flight, ${VALUE_BYTES}-byte values, ${ROUNDS} rounds x ${GETS} gets per contender (after ${WARMUP_GETS} warm-up gets)`);
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? contenders : [...contenders].reverse();
    const p50s = new Map<string, number>();
    for (const contender of order) {
      await measure(contender, WARMUP_GETS);
      const sorted = (await measure(contender, GETS)).sort((a, b) => a - b);
      const r = results.get(contender.name)!;
      r.p50.push(percentile(sorted, 0.5));
      r.p90.push(percentile(sorted, 0.9));
      r.p99.push(percentile(sorted, 0.99));
      p50s.set(contender.name, percentile(sorted, 0.5));
    }
    ratios.push(p50s.get(contenders[0]!.name)! / p50s.get(contenders[1]!.name)!);
  }
  console.log(
    table(
      ["contender", "p50 ms", "p90 ms", "p99 ms"],
      contenders.map((c) => {
        const r = results.get(c.name)!;
        return [c.name, fmtMs(median(r.p50), 3), fmtMs(median(r.p90), 3), fmtMs(median(r.p99), 3)];
      }),
    ),
  );
  const ratio = median(ratios);
  console.log(`${goal}: ${fmtRatio(ratio)} (per round: ${ratios.map((r) => r.toFixed(3)).join(" ")}) -> ${ratio <= 1 ? "PASS" : "FAIL"}`);
}

async function main(): Promise<void> {
  installCleanup();
  const value = new Uint8Array(VALUE_BYTES).fill(9);
  const origin = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(value) });
  const { address } = await startFilledNode(KEYS, VALUE_BYTES, `http://127.0.0.1:${origin.port}/{group}/{key}`);
  const peer = new GrpcPeer("B", address);
  const grpcPeer = new GrpcPeer("B", address, { peerLink: false });
  const connection = new _Connection(address);
  const within = () => ({ deadline: Date.now() + DEADLINE_MS });
  const plainGet = (key: string) =>
    connection.unary(GCACHE_SERVICE.Get, { group: "default", key, value: EMPTY, ttlMs: 0, expiresAtMs: 0, fromPeer: true }, within());
  try {
    await compare("hop latency", "goal (stream p50 <= plain call p50)", [
      { name: "batch of one on the peer link (GrpcPeer.get)", get: (key) => peer.get("default", key, within()) },
      { name: "one plain Get call (from_peer)", get: plainGet },
      { name: "(info) batch of one on a gRPC stream (link off)", get: (key) => grpcPeer.get("default", key, within()) },
    ]);
    // A batch stream of its own that does not ask for later answers: the way keys to load went before.
    const aloneStream = new _BatchStream<BatchGetRequest, BatchGetResponse>(connection, GCACHE_SERVICE.BatchGetStream, (request, context) =>
      connection.unary(GCACHE_SERVICE.BatchGet, request, context),
    );
    let fresh = 0;
    await compare("loads through the hop", "later answer p50 / ask alone + Get p50", [
      { name: "later answer on the peer link (GrpcPeer.get)", get: () => peer.get("default", `load-${fresh++}`, within()) },
      {
        name: "ask alone, then a plain Get call",
        get: async () => {
          const key = `load-${fresh++}`;
          const answer = await aloneStream.send({ group: "default", keys: [key] }, within());
          if (answer.items[0]?.retryAlone !== true) throw new Error(`expected "ask alone" for ${key}`);
          return plainGet(key);
        },
      },
    ]);
    aloneStream.close();
  } finally {
    peer.close();
    grpcPeer.close();
    connection.close();
    void origin.stop(true);
    await stopAll();
  }
}

await main().catch(async (error: unknown) => {
  console.error(error);
  await stopAll();
  process.exit(1);
});
