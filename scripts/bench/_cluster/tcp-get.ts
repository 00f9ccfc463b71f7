/**
 * One client for both protocols: closed-loop GETs over raw TCP, HTTP/1.1 to
 * the gateway or RESP to Redis, so the two servers are measured by the same
 * code. wrk and redis-benchmark differ in what they cost and in what their
 * latency covers (redis-benchmark leaves out the time a request waits inside
 * the generator); this one takes the same time stamps around the same socket
 * calls for both.
 *
 *   bun scripts/bench/_cluster/tcp-get.ts --protocol=http|resp --port=N --keys=FILE
 *       [--host=127.0.0.1] [--connections=64] [--seconds=3] [--value-bytes=N]
 *       [--path-prefix=/v1/groups/default/keys/] [--db=0]
 *
 * Keys come one per line from FILE, already as they go on the wire (URL-encoded
 * for HTTP). Each connection sends one request, waits for the whole answer,
 * sends the next key of the shared cycle. Prints one line `RESULT {json}`:
 * requests, seconds, latency mean/p50/p99 in ms, errors (non-200 or a value
 * of the wrong length) with the first one described.
 */
import { parseArgs } from "node:util";

const { values: flags } = parseArgs({
  options: {
    protocol: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    keys: { type: "string" },
    connections: { type: "string", default: "64" },
    seconds: { type: "string", default: "3" },
    "value-bytes": { type: "string", default: "-1" },
    "path-prefix": { type: "string", default: "/v1/groups/default/keys/" },
    db: { type: "string", default: "0" },
  },
});

const protocol = flags.protocol;
if (protocol !== "http" && protocol !== "resp") throw new Error(`--protocol: expected http or resp, got ${protocol}`);
const port = Number(flags.port);
const connections = Number(flags.connections);
const seconds = Number(flags.seconds);
const valueBytes = Number(flags["value-bytes"]);
if (!Number.isInteger(port) || !(connections >= 1) || !(seconds > 0) || flags.keys === undefined) {
  throw new Error("usage: tcp-get.ts --protocol=http|resp --port=N --keys=FILE [--connections=N] [--seconds=S]");
}

/** A request that gets no answer within this long fails the run rather than hang it. */
const STALL_MS = 10_000;
/** Latency histogram: 1 µs buckets up to 1 s (longer ones land in the last). */
const histogram = new Uint32Array(1_000_000);

const encoder = new TextEncoder();
const keys = (await Bun.file(flags.keys).text()).split("\n").filter((k) => k !== "");
if (keys.length === 0) throw new Error(`${flags.keys}: no keys`);
const requests = keys.map((key) =>
  protocol === "http"
    ? encoder.encode(`GET ${flags["path-prefix"]}${key} HTTP/1.1\r\nHost: ${flags.host}:${port}\r\n\r\n`)
    : encoder.encode(`*2\r\n$3\r\nGET\r\n$${Buffer.byteLength(key)}\r\n${key}\r\n`),
);

let nextKey = 0;
let running = true;
let completed = 0;
let errors = 0;
let firstError: string | null = null;
let latencySumUs = 0;

interface Connection {
  socket: Bun.Socket<undefined> | null;
  sentAt: number;
  /** Bytes of the answer still to come; -1 while its head is incomplete. */
  remaining: number;
  /** An incomplete head, kept until the rest arrives. */
  head: Buffer | null;
  /** The answer in progress failed the check (counted once it is complete). */
  failed: string | null;
  /** Resolves when the connection has stopped after `running` turned false. */
  idle: () => void;
  /** Takes the answer to SELECT, before the run. */
  selecting: ((chunk: Buffer) => void) | null;
  /** The part of the request the socket did not take yet (written on drain). */
  unsent: Uint8Array | null;
}

function fail(c: Connection, what: string): void {
  if (c.failed === null) c.failed = what;
}

/** Looks at the head of an answer: returns the bytes of the answer it accounts for, or -1 if incomplete. */
function parseHead(c: Connection, bytes: Buffer): number {
  if (protocol === "http") {
    const end = bytes.indexOf("\r\n\r\n");
    if (end < 0) return -1;
    const head = bytes.toString("latin1", 0, end).toLowerCase();
    if (!head.startsWith("http/1.1 200")) fail(c, `answer ${head.slice(0, 12)}`);
    const at = head.indexOf("\r\ncontent-length:");
    const length = at < 0 ? NaN : Number.parseInt(head.slice(at + 17), 10);
    if (!Number.isInteger(length)) {
      fail(c, "answer without content-length");
      return bytes.length;
    }
    if (valueBytes >= 0 && length !== valueBytes) fail(c, `value of ${length} bytes, expected ${valueBytes}`);
    return end + 4 + length;
  }
  const end = bytes.indexOf("\r\n");
  if (end < 0) return -1;
  if (bytes[0] !== 0x24 /* $ */) {
    fail(c, `answer ${bytes.toString("latin1", 0, Math.min(end, 40))}`);
    return end + 2;
  }
  const length = Number.parseInt(bytes.toString("latin1", 1, end), 10);
  if (length < 0) {
    fail(c, "key not found");
    return end + 2;
  }
  if (valueBytes >= 0 && length !== valueBytes) fail(c, `value of ${length} bytes, expected ${valueBytes}`);
  return end + 2 + length + 2;
}

function send(c: Connection): void {
  c.remaining = -1;
  c.head = null;
  c.failed = null;
  c.sentAt = performance.now();
  write(c, requests[nextKey]!);
  nextKey = nextKey + 1 === requests.length ? 0 : nextKey + 1;
}

function write(c: Connection, bytes: Uint8Array): void {
  const written = c.socket!.write(bytes);
  c.unsent = written >= bytes.length ? null : bytes.subarray(Math.max(0, written));
}

function onData(c: Connection, chunk: Buffer): void {
  if (c.selecting !== null) return c.selecting(chunk);
  if (c.remaining < 0) {
    const bytes = c.head === null ? chunk : Buffer.concat([c.head, chunk]);
    const total = parseHead(c, bytes);
    if (total < 0) {
      c.head = bytes;
      return;
    }
    c.head = null;
    c.remaining = total - bytes.length;
  } else {
    c.remaining -= chunk.length;
  }
  if (c.remaining > 0) return;
  if (c.remaining < 0) fail(c, `${-c.remaining} bytes after the answer`);
  if (c.failed !== null) {
    errors++;
    firstError ??= c.failed;
  }
  // Answers still on their way when the time is up are checked but not counted.
  if (!running) return c.idle();
  const us = Math.round((performance.now() - c.sentAt) * 1000);
  histogram[Math.min(us, histogram.length - 1)]!++;
  latencySumUs += us;
  completed++;
  send(c);
}

async function open(): Promise<{ connection: Connection; stopped: Promise<void> }> {
  let idle!: () => void;
  const stopped = new Promise<void>((resolve) => (idle = resolve));
  const connection: Connection = { socket: null, sentAt: 0, remaining: -1, head: null, failed: null, idle, selecting: null, unsent: null };
  connection.socket = await Bun.connect({
    hostname: flags.host,
    port,
    socket: {
      data: (_socket, chunk) => onData(connection, chunk),
      drain: () => {
        if (connection.unsent !== null) write(connection, connection.unsent);
      },
      close: () => {
        if (running) throw new Error("the server closed a connection");
        idle();
      },
      error: (_socket, error) => {
        throw error;
      },
    },
  });
  connection.socket.setNoDelay(true);
  return { connection, stopped };
}

/** Switches a RESP connection to `--db` before the clock starts. */
function select(c: Connection): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    c.selecting = (chunk) => {
      c.selecting = null;
      const answer = chunk.toString("latin1");
      if (answer.startsWith("+OK")) resolve();
      else reject(new Error(`SELECT ${flags.db}: ${answer.trim()}`));
    };
    write(c, encoder.encode(`*2\r\n$6\r\nSELECT\r\n$${flags.db.length}\r\n${flags.db}\r\n`));
  });
}

const opened = await Promise.all(Array.from({ length: connections }, open));
if (protocol === "resp" && flags.db !== "0") await Promise.all(opened.map(({ connection }) => select(connection)));

const cpuBefore = process.cpuUsage();
const startedAt = performance.now();
for (const { connection } of opened) send(connection);
const stall = setInterval(() => {
  const now = performance.now();
  for (const { connection } of opened) {
    if (connection.sentAt > 0 && now - connection.sentAt > STALL_MS && (running || connection.remaining !== 0)) {
      console.error(`no answer within ${STALL_MS} ms`);
      process.exit(1);
    }
  }
}, 1_000);
await Bun.sleep(seconds * 1000);
running = false;
const elapsedMs = performance.now() - startedAt;
await Promise.all(opened.map(({ stopped }) => stopped));
clearInterval(stall);
const cpu = process.cpuUsage(cpuBefore);
for (const { connection } of opened) connection.socket!.end();

function percentileMs(p: number): number {
  const wanted = Math.ceil(completed * p);
  let seen = 0;
  for (let us = 0; us < histogram.length; us++) {
    seen += histogram[us]!;
    if (seen >= wanted) return us / 1000;
  }
  return NaN;
}

console.log(
  `RESULT ${JSON.stringify({
    requests: completed,
    seconds: elapsedMs / 1000,
    meanMs: completed > 0 ? latencySumUs / completed / 1000 : NaN,
    p50Ms: percentileMs(0.5),
    p99Ms: percentileMs(0.99),
    errors,
    firstError,
    cpuMs: (cpu.user + cpu.system) / 1000,
  })}`,
);
process.exit(0);
