/**
 * What receiving the peer hop's batches costs the node that forwards: the
 * client side of one BatchGetStream, through grpc-js (as a node does),
 * through a bare `node:http2` stream speaking the same gRPC framing, and
 * through a minimal HTTP/2 client of our own on Bun's TCP sockets, side by
 * side. It bounds what any change on our side could save: the bare client is
 * what is left when grpc-js's call machinery is gone and only Bun's HTTP/2
 * remains; the raw socket client what is left when Bun's HTTP/2 is gone too.
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
import type { Socket } from "bun";
import { parseArgs } from "node:util";
import { _Connection, _FLOW_CONTROL_WINDOW } from "../../src/wire/connection.ts";
import { codecs, GCACHE_SERVICE, type BatchGetRequest, type BatchGetResponse } from "../../src/wire/messages.ts";
import { startFilledNode } from "./_cluster/one-node.ts";
import { installCleanup, stopAll } from "./_cluster/procs.ts";
import { fmtRatio, median, table, wholeNumber } from "./_cluster/util.ts";
import { ACK, END_HEADERS, END_STREAM, H2, H2FrameReader, h2Frame, indexedNameHeader, literalHeader, PADDED } from "./_node/h2-frames.ts";

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

/** A message in gRPC's length-prefixed framing: 1 byte "compressed" (no), 4 bytes length, the message. */
function grpcFramed(message: Uint8Array): Buffer {
  const framed = Buffer.allocUnsafe(5 + message.length);
  framed[0] = 0;
  framed.writeUInt32BE(message.length, 1);
  framed.set(message, 5);
  return framed;
}

/** Cuts a stream's bytes into gRPC messages; a message within one piece is handed on as a view of it. */
class GrpcMessages {
  private parts: Buffer[] = [];
  private have = 0;
  private need = -1;

  constructor(private readonly onMessage: (message: Buffer) => void) {}

  push(piece: Buffer): void {
    this.parts.push(piece);
    this.have += piece.length;
    for (;;) {
      if (this.need < 0) {
        if (this.have < 5) return;
        const head = this.joined();
        this.need = 5 + head.readUInt32BE(1);
      }
      if (this.have < this.need) return;
      const all = this.joined();
      const rest = all.subarray(this.need);
      this.onMessage(all.subarray(5, this.need));
      this.parts = rest.length > 0 ? [rest] : [];
      this.have = rest.length;
      this.need = -1;
    }
  }

  private joined(): Buffer {
    if (this.parts.length > 1) this.parts = [Buffer.concat(this.parts, this.have)];
    return this.parts[0]!;
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
  const messages = new GrpcMessages((message) => pending.answer(codecs.BatchGetResponse.decode(message)));
  stream.on("data", (chunk: Buffer) => messages.push(chunk));
  stream.on("error", (error: Error) => pending.fail(error));
  stream.on("trailers", (trailers) => {
    if (trailers["grpc-status"] !== "0") pending.fail(new Error(`stream ended: ${trailers["grpc-status"]} ${trailers["grpc-message"]}`));
  });
  return {
    name: "bare node:http2",
    batch(request) {
      const answer = pending.expect();
      stream.write(grpcFramed(codecs.BatchGetRequest.encode(request)));
      return answer;
    },
    close() {
      stream.end();
      session.close();
    },
  };
}

/** The only stream the raw client opens. */
const STREAM_ID = 1;

/**
 * The least an HTTP/2 client can do on Bun's TCP sockets: one stream opened
 * with literal headers, frames read as they arrive, DATA handed on as views
 * of the received chunks (copied only where a message spans chunks), SETTINGS
 * and PING acknowledged, the receive window topped up. It never decodes the
 * server's headers: trailers, RST_STREAM or GOAWAY just end the run. Not a
 * client to use, a measure of what Bun's HTTP/2 client and grpc-js cost on
 * top of the socket.
 */
async function rawSocketClient(address: string): Promise<StreamClient> {
  const colon = address.lastIndexOf(":");
  const hostname = address.slice(0, colon);
  const port = Number(address.slice(colon + 1));
  const pending = new Pending();
  const messages = new GrpcMessages((message) => pending.answer(codecs.BatchGetResponse.decode(message)));
  let unacknowledged = 0;
  let socket: Socket<undefined> | null = null;
  const write = (bytes: Uint8Array) => socket!.write(bytes);
  const windowUpdate = (increment: number) => {
    const payload = Buffer.allocUnsafe(4);
    payload.writeUInt32BE(increment);
    write(Buffer.concat([h2Frame(H2.WINDOW_UPDATE, 0, 0, payload), h2Frame(H2.WINDOW_UPDATE, 0, STREAM_ID, payload)]));
  };
  const reader = new H2FrameReader({
    onHead: ({ type, length }) => {
      if (type !== H2.DATA) return;
      unacknowledged += length;
      if (unacknowledged >= _FLOW_CONTROL_WINDOW / 4) {
        windowUpdate(unacknowledged);
        unacknowledged = 0;
      }
    },
    onData: (_head, piece) => {
      if (piece.length > 0) messages.push(piece);
    },
    onFrame: ({ type, flags }, payload) => {
      if (type === H2.DATA && (flags & PADDED) !== 0) {
        // Bun never pads, but a padded frame comes whole.
        const body = payload.subarray(1, payload.length - payload[0]!);
        if (body.length > 0) messages.push(body);
      } else if (type === H2.SETTINGS && (flags & ACK) === 0) write(h2Frame(H2.SETTINGS, ACK, 0, new Uint8Array(0)));
      else if (type === H2.PING && (flags & ACK) === 0) write(h2Frame(H2.PING, ACK, 0, payload));
      else if (type === H2.RST_STREAM || type === H2.GOAWAY) pending.fail(new Error(`raw socket: frame type ${type} from the server`));
      if ((type === H2.DATA || type === H2.HEADERS) && (flags & END_STREAM) !== 0) pending.fail(new Error("raw socket: the server ended the stream"));
    },
  });
  socket = await new Promise<Socket<undefined>>((resolve, reject) => {
    Bun.connect({
      hostname,
      port,
      socket: {
        open: (opened) => resolve(opened),
        data: (_socket, chunk) => reader.push(chunk),
        close: () => pending.fail(new Error("raw socket: connection closed")),
        error: (_socket, error) => pending.fail(error),
        connectError: (_socket, error) => reject(error),
      },
    }).catch(reject);
  });
  const settings = Buffer.allocUnsafe(12);
  settings.writeUInt16BE(0x2, 0); // SETTINGS_ENABLE_PUSH: off
  settings.writeUInt32BE(0, 2);
  settings.writeUInt16BE(0x4, 6); // SETTINGS_INITIAL_WINDOW_SIZE: the window our channels open with
  settings.writeUInt32BE(_FLOW_CONTROL_WINDOW, 8);
  const connectionWindow = Buffer.allocUnsafe(4);
  connectionWindow.writeUInt32BE(_FLOW_CONTROL_WINDOW - 65_535);
  const path = GCACHE_SERVICE.BatchGetStream.path;
  const headers = Buffer.concat([
    Buffer.from([0x83, 0x86]), // static table: :method POST, :scheme http
    indexedNameHeader(4, path),
    indexedNameHeader(1, address),
    literalHeader("content-type", "application/grpc"),
    literalHeader("te", "trailers"),
    literalHeader("grpc-timeout", `${STREAM_MS}m`),
  ]);
  write(
    Buffer.concat([
      Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
      h2Frame(H2.SETTINGS, 0, 0, settings),
      h2Frame(H2.WINDOW_UPDATE, 0, 0, connectionWindow),
      h2Frame(H2.HEADERS, END_HEADERS, STREAM_ID, headers),
    ]),
  );
  return {
    name: "raw socket",
    batch(request) {
      const answer = pending.expect();
      write(h2Frame(H2.DATA, 0, STREAM_ID, grpcFramed(codecs.BatchGetRequest.encode(request))));
      return answer;
    },
    close() {
      socket!.end();
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
      // The node holds values filled with 7s: a client that cut the stream wrong reads other bytes.
      if (item.value[0] !== 7 || item.value[item.value.byteLength - 1] !== 7) throw new Error(`${client.name}: a value with wrong bytes`);
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
  const clients = [grpcJsClient(address), await bareHttp2Client(address), await rawSocketClient(address)];
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
