/**
 * What receiving the peer hop's batches costs the node that forwards: the
 * client side of one BatchGetStream, through grpc-js (as a node does) and
 * through a bare `node:http2` stream speaking the same gRPC framing, side by
 * side. It bounds what any change on our side of grpc-js could save: the bare
 * client is what is left when grpc-js's call machinery is gone and only Bun's
 * HTTP/2 remains.
 *
 *   bun run bench:h2-client                        # 10 KB values, batches of 4 and 32 keys, 5 rounds: about 30 s
 *   bun run bench:h2-client --value-bytes=100 --batches=8,64
 *
 * The node is `src/cli/main.ts` in its own Bun process on loopback, holding
 * 1,000 values PUT beforehand; one batch in flight at a time (as the peer
 * hop's batcher sends them under load, one per peer). Reported per client
 * and batch size: CPU of this process per key (user + system) and wall time
 * per key, medians over rounds; contenders alternate within a round.
 */
import http2 from "node:http2";
import { parseArgs } from "node:util";
import { _Connection, _FLOW_CONTROL_WINDOW } from "../../src/wire/connection.ts";
import { codecs, GCACHE_SERVICE, type BatchGetRequest, type BatchGetResponse } from "../../src/wire/messages.ts";
import { startFilledNode } from "./_cluster/one-node.ts";
import { installCleanup, stopAll } from "./_cluster/procs.ts";
import { fmtRatio, median, table, wholeNumber } from "./_cluster/util.ts";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string" },
    keys: { type: "string" },
    batches: { type: "string", default: "4,32" },
    "value-bytes": { type: "string" },
  },
});
const ROUNDS = wholeNumber(args.rounds, 5, 1, "rounds");
/** Keys fetched per measurement (so every batch size moves the same bytes). */
const KEYS_PER_RUN = wholeNumber(args.keys, 64_000, 1, "keys");
const BATCH_SIZES = args.batches.split(",").map((b) => wholeNumber(b, 0, 1, "batches"));
const VALUE_BYTES = wholeNumber(args["value-bytes"], 10_240, 1, "value-bytes");
const STORED = 1_000;
/** The group `startFilledNode` fills. */
const GROUP = "default";
const STREAM_MS = 10 * 60_000;
/** A batch that gets no answer within this long fails the run rather than hang it. */
const BATCH_TIMEOUT_MS = 5_000;

/** One open BatchGetStream: sends a batch, resolves with its answer. */
interface StreamClient {
  name: string;
  batch(request: BatchGetRequest): Promise<BatchGetResponse>;
  close(): void;
}

/** Answers come back in order on one stream, one batch in flight: a queue of one. */
class Pending {
  private waiting: { resolve(r: BatchGetResponse): void; reject(e: Error): void; timer: ReturnType<typeof setTimeout> } | null = null;

  expect(): Promise<BatchGetResponse> {
    if (this.waiting !== null) throw new Error("one batch at a time");
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`no answer within ${BATCH_TIMEOUT_MS} ms`)), BATCH_TIMEOUT_MS);
      this.waiting = { resolve, reject, timer };
    });
  }

  answer(response: BatchGetResponse): void {
    const waiting = this.waiting;
    if (waiting === null) throw new Error("an answer nobody asked for");
    this.waiting = null;
    clearTimeout(waiting.timer);
    waiting.resolve(response);
  }

  fail(error: Error): void {
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting === null) return;
    clearTimeout(waiting.timer);
    waiting.reject(error);
  }
}

function grpcJsClient(address: string): StreamClient {
  const connection = new _Connection(address);
  const call = connection.duplex(GCACHE_SERVICE.BatchGetStream, Date.now() + STREAM_MS);
  if (call === null) throw new Error("connection closed");
  const pending = new Pending();
  call.on("data", (response: BatchGetResponse) => pending.answer(response));
  call.on("error", (error: Error) => pending.fail(error));
  return {
    name: "grpc-js",
    batch(request) {
      const answer = pending.expect();
      call.write(request);
      return answer;
    },
    close() {
      call.end();
      connection.close();
    },
  };
}

async function bareHttp2Client(address: string): Promise<StreamClient> {
  const session = http2.connect(`http://${address}`, { settings: { initialWindowSize: _FLOW_CONTROL_WINDOW } });
  await new Promise<void>((resolve, reject) => {
    session.once("remoteSettings", () => resolve());
    session.once("error", reject);
  });
  // The window our channels open with, so both clients read under the same flow control.
  session.setLocalWindowSize(_FLOW_CONTROL_WINDOW);
  const stream = session.request({
    ":method": "POST",
    ":path": GCACHE_SERVICE.BatchGetStream.path,
    "content-type": "application/grpc",
    te: "trailers",
    "grpc-timeout": `${STREAM_MS}m`,
  });
  const pending = new Pending();
  // gRPC length-prefixed messages: 1 byte "compressed", 4 bytes length, the message.
  let parts: Buffer[] = [];
  let have = 0;
  let need = -1;
  stream.on("data", (chunk: Buffer) => {
    parts.push(chunk);
    have += chunk.length;
    for (;;) {
      if (need < 0) {
        if (have < 5) return;
        const head = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
        parts = [head];
        need = 5 + head.readUInt32BE(1);
      }
      if (have < need) return;
      const all = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      const rest = all.subarray(need);
      pending.answer(codecs.BatchGetResponse.decode(all.subarray(5, need)));
      parts = rest.length > 0 ? [rest] : [];
      have = rest.length;
      need = -1;
    }
  });
  stream.on("error", (error: Error) => pending.fail(error));
  stream.on("trailers", (trailers) => {
    if (trailers["grpc-status"] !== "0") pending.fail(new Error(`stream ended: ${trailers["grpc-status"]} ${trailers["grpc-message"]}`));
  });
  return {
    name: "bare node:http2",
    batch(request) {
      const answer = pending.expect();
      const message = codecs.BatchGetRequest.encode(request);
      const frame = Buffer.allocUnsafe(5 + message.length);
      frame[0] = 0;
      frame.writeUInt32BE(message.length, 1);
      frame.set(message, 5);
      stream.write(frame);
      return answer;
    },
    close() {
      stream.end();
      session.close();
    },
  };
}

interface Measured {
  cpuUsPerKey: number;
  wallUsPerKey: number;
}

async function measure(client: StreamClient, batchSize: number, keys: number): Promise<Measured> {
  const batches = Math.ceil(keys / batchSize);
  const names = Array.from({ length: batchSize }, () => "");
  let next = 0;
  let bytes = 0;
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  for (let b = 0; b < batches; b++) {
    for (let i = 0; i < batchSize; i++) names[i] = `k${next++ % STORED}`;
    const response = await client.batch({ group: GROUP, keys: names, id: b + 1, timeoutMs: BATCH_TIMEOUT_MS });
    for (const item of response.items) {
      if (item.errorCode !== "" || item.retryAlone) throw new Error(`${client.name}: ${item.errorCode || "ask alone"} ${item.errorMessage}`);
      bytes += item.value.byteLength;
    }
  }
  const wallMs = performance.now() - started;
  const cpu = process.cpuUsage(cpu0);
  const fetched = batches * batchSize;
  // Every answer must have brought every value whole, or the figures say nothing.
  if (bytes !== fetched * VALUE_BYTES) throw new Error(`${client.name}: ${bytes} bytes for ${fetched} values of ${VALUE_BYTES}`);
  return { cpuUsPerKey: (cpu.user + cpu.system) / fetched, wallUsPerKey: (wallMs * 1000) / fetched };
}

async function main(): Promise<void> {
  installCleanup();
  const { address } = await startFilledNode(STORED, VALUE_BYTES);
  const clients = [grpcJsClient(address), await bareHttp2Client(address)];
  console.log(`h2 client: Bun ${Bun.version}, values of ${VALUE_BYTES} B, ${KEYS_PER_RUN} keys per run, ${ROUNDS} rounds, one batch in flight\n`);
  const results = new Map<string, Measured[]>();
  const slot = (client: StreamClient, batch: number) => `${client.name}|${batch}`;
  for (const client of clients) for (const batch of BATCH_SIZES) await measure(client, batch, Math.min(KEYS_PER_RUN, 8_000));
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? clients : [...clients].reverse();
    for (const batch of BATCH_SIZES) {
      for (const client of order) {
        Bun.gc(true);
        const m = await measure(client, batch, KEYS_PER_RUN);
        results.set(slot(client, batch), [...(results.get(slot(client, batch)) ?? []), m]);
      }
    }
  }
  const rows: string[][] = [];
  for (const batch of BATCH_SIZES) {
    const cpuOf = (client: StreamClient) => median(results.get(slot(client, batch))!.map((m) => m.cpuUsPerKey));
    for (const client of clients) {
      const list = results.get(slot(client, batch))!;
      rows.push([
        String(batch),
        client.name,
        cpuOf(client).toFixed(2),
        median(list.map((m) => m.wallUsPerKey)).toFixed(2),
        client === clients[0] ? "-" : fmtRatio(cpuOf(client) / cpuOf(clients[0]!)),
      ]);
    }
  }
  console.log(table(["keys/batch", "client", "CPU us/key", "wall us/key", "CPU vs grpc-js"], rows));
  for (const client of clients) client.close();
  await stopAll();
}

await main().catch(async (error: unknown) => {
  console.error(error);
  await stopAll();
  process.exit(1);
});
