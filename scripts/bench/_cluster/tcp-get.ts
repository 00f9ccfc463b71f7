/**
 * One client for every protocol: GETs over raw TCP, HTTP/1.1 to the gateway,
 * RESP to Redis or memcached's text protocol, so the servers are measured by
 * the same code. wrk and redis-benchmark differ in what they cost and in what
 * their latency covers (redis-benchmark leaves out the time a request waits
 * inside the generator); this one takes the same time stamps around the same
 * socket calls for all.
 *
 *   bun scripts/bench/_cluster/tcp-get.ts --protocol=http|resp|memcache --port=N --keys=FILE
 *       [--host=127.0.0.1] [--connections=64] [--seconds=3] [--value-bytes=N]
 *       [--path-prefix=/v1/groups/default/keys/] [--db=0] [--rate=N] [--warmup=S]
 *
 * Keys come one per line from FILE, already as they go on the wire (URL-encoded
 * for HTTP). Each connection sends one request, waits for the whole answer,
 * sends the next key of the shared cycle (a closed loop: the server sets the
 * pace, and latency is then mostly throughput seen from the other side).
 *
 * With `--rate=N` the loop is open: requests fall due at N per second, evenly
 * spaced, whatever the server does, and go out on the first idle connection;
 * latency counts from when a request fell due, so time spent waiting for an
 * idle connection (a server that stalls) is counted, not left out. Two
 * servers loaded at the same rate are compared at the same load. The client
 * polls between events so requests leave on time; it keeps one core busy, as
 * the closed loop does.
 *
 * With `--warmup=S` the same loop runs S seconds (fractions allowed) before
 * the measured ones, on the same connections, and nothing from then is
 * counted: a fresh client compiles its own hot paths and grows its heap in
 * its first second, and those pauses would otherwise land in the p99 of
 * whichever server it measures. `MEASURING` is printed as the measured
 * seconds start, so a parent can take the servers' CPU over just them.
 *
 * Prints one line `RESULT {json}`:
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
    rate: { type: "string", default: "0" },
    warmup: { type: "string", default: "0" },
  },
});

const protocol = flags.protocol;
if (protocol !== "http" && protocol !== "resp" && protocol !== "memcache") throw new Error(`--protocol: expected http, resp or memcache, got ${protocol}`);
const port = Number(flags.port);
const connections = Number(flags.connections);
const seconds = Number(flags.seconds);
const valueBytes = Number(flags["value-bytes"]);
/** Requests per second in the open loop; 0: closed loop. */
const rate = Number(flags.rate);
const warmupSeconds = Number(flags.warmup);
if (!Number.isInteger(port) || !(connections >= 1) || !(seconds > 0) || !(rate >= 0) || !(warmupSeconds >= 0) || flags.keys === undefined) {
  throw new Error("usage: tcp-get.ts --protocol=http|resp|memcache --port=N --keys=FILE [--connections=N] [--seconds=S] [--rate=N] [--warmup=S]");
}

/** A request that gets no answer within this long fails the run rather than hang it. */
const STALL_MS = 10_000;
/** Latency histogram: 1 µs buckets up to 1 s (longer ones land in the last). */
const histogram = new Uint32Array(1_000_000);

const encoder = new TextEncoder();
const keys = (await Bun.file(flags.keys).text()).split("\n").filter((k) => k !== "");
if (keys.length === 0) throw new Error(`${flags.keys}: no keys`);
const requests = keys.map((key) =>
  encoder.encode(
    protocol === "http"
      ? `GET ${flags["path-prefix"]}${key} HTTP/1.1\r\nHost: ${flags.host}:${port}\r\n\r\n`
      : protocol === "resp"
        ? `*2\r\n$3\r\nGET\r\n$${Buffer.byteLength(key)}\r\n${key}\r\n`
        : `get ${key}\r\n`,
  ),
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

/**
 * Reading an answer costs about the same for every protocol: byte searches
 * and digits read in place, no strings (the client is near a core's limit,
 * so work it did for one protocol only would lower that server's rate).
 */
const CRLF = Buffer.from("\r\n", "latin1");
const HEAD_END = Buffer.from("\r\n\r\n", "latin1");
const HTTP_200 = Buffer.from("HTTP/1.1 200 ", "latin1");
/** The gateway writes its header names in lower case; another spelling is read the slow way. */
const CONTENT_LENGTH = Buffer.from("\r\ncontent-length:", "latin1");
const MEMCACHE_VALUE = Buffer.from("VALUE ", "latin1");
const MEMCACHE_END = Buffer.from("END\r\n", "latin1");

/** The whole number written in `bytes[from, to)` after any spaces; NaN when there is none. */
function digitsAt(bytes: Buffer, from: number, to: number): number {
  let at = from;
  while (at < to && bytes[at] === 0x20) at++;
  const negative = bytes[at] === 0x2d; /* - */
  if (negative) at++;
  if (at >= to || bytes[at]! < 0x30 || bytes[at]! > 0x39) return NaN;
  let value = 0;
  for (; at < to && bytes[at]! >= 0x30 && bytes[at]! <= 0x39; at++) value = value * 10 + bytes[at]! - 0x30;
  return negative ? -value : value;
}

function startsWith(bytes: Buffer, prefix: Buffer): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

/** Looks at the head of an answer: returns the bytes of the answer it accounts for, or -1 if incomplete. */
function parseHead(c: Connection, bytes: Buffer): number {
  if (protocol === "http") {
    const end = bytes.indexOf(HEAD_END);
    if (end < 0) return -1;
    if (!startsWith(bytes, HTTP_200)) fail(c, `answer ${bytes.toString("latin1", 0, Math.min(end, 12))}`);
    let length = NaN;
    const at = bytes.indexOf(CONTENT_LENGTH);
    if (at >= 0 && at < end) length = digitsAt(bytes, at + CONTENT_LENGTH.length, end);
    else {
      const head = bytes.toString("latin1", 0, end).toLowerCase();
      const slow = head.indexOf("\r\ncontent-length:");
      if (slow >= 0) length = Number.parseInt(head.slice(slow + 17), 10);
    }
    if (!Number.isInteger(length)) {
      fail(c, "answer without content-length");
      return bytes.length;
    }
    if (valueBytes >= 0 && length !== valueBytes) fail(c, `value of ${length} bytes, expected ${valueBytes}`);
    return end + 4 + length;
  }
  const end = bytes.indexOf(CRLF);
  if (end < 0) return -1;
  if (protocol === "memcache") return memcacheAnswer(c, bytes, end);
  if (bytes[0] !== 0x24 /* $ */) {
    fail(c, `answer ${bytes.toString("latin1", 0, Math.min(end, 40))}`);
    return end + 2;
  }
  const length = digitsAt(bytes, 1, end);
  if (!(length >= 0)) {
    fail(c, Number.isNaN(length) ? `answer ${bytes.toString("latin1", 0, Math.min(end, 40))}` : "key not found");
    return end + 2;
  }
  if (valueBytes >= 0 && length !== valueBytes) fail(c, `value of ${length} bytes, expected ${valueBytes}`);
  return end + 2 + length + 2;
}

/** `VALUE <key> <flags> <bytes>` CRLF, the value, CRLF, `END` CRLF; a miss is `END` CRLF alone. */
function memcacheAnswer(c: Connection, bytes: Buffer, lineEnd: number): number {
  if (lineEnd === 3 && startsWith(bytes, MEMCACHE_END)) {
    fail(c, "key not found");
    return lineEnd + 2;
  }
  // The length is the line's last field.
  let field = lineEnd;
  while (field > 0 && bytes[field - 1] !== 0x20) field--;
  const length = startsWith(bytes, MEMCACHE_VALUE) ? digitsAt(bytes, field, lineEnd) : NaN;
  if (!Number.isInteger(length)) {
    fail(c, `answer ${bytes.toString("latin1", 0, Math.min(lineEnd, 40))}`);
    return lineEnd + 2;
  }
  if (valueBytes >= 0 && length !== valueBytes) fail(c, `value of ${length} bytes, expected ${valueBytes}`);
  return lineEnd + 2 + length + 2 + MEMCACHE_END.length;
}

/**
 * Open loop: connections with no request out, longest idle first (so the
 * load spreads over all of them), and how many requests have gone out.
 */
const idleConnections: Connection[] = [];
let dispatched = 0;
/** Open loop: the most requests that were due but had no idle connection at once. */
let mostWaiting = 0;

/** Open loop: requests that fall due within the run (its end timer may fire late; later ones are not sent). */
const dueInRun = Math.ceil(rate * (warmupSeconds + seconds));

/** Sends every request that has fallen due while a connection is idle. */
function dispatch(): void {
  const now = performance.now();
  const due = Math.min(Math.floor(((now - startedAt) * rate) / 1000) + 1, dueInRun);
  if (due - dispatched > idleConnections.length) mostWaiting = Math.max(mostWaiting, due - dispatched - idleConnections.length);
  while (dispatched < due && idleConnections.length > 0) {
    send(idleConnections.shift()!, startedAt + (dispatched * 1000) / rate);
    dispatched++;
  }
}

/** Open loop: the longest the client itself went between two polls (its own pauses delay requests too). */
let longestPollGapMs = 0;
let lastPollAt = 0;

function poll(): void {
  if (!running) return;
  const now = performance.now();
  if (lastPollAt > 0 && now - lastPollAt > longestPollGapMs) longestPollGapMs = now - lastPollAt;
  lastPollAt = now;
  dispatch();
  setImmediate(poll);
}

function send(c: Connection, dueAt: number): void {
  c.remaining = -1;
  c.head = null;
  c.failed = null;
  c.sentAt = dueAt;
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
  // Sent (or fallen due) in the warm-up: checked, not counted.
  if (c.sentAt >= measuredFrom) {
    const us = Math.round((performance.now() - c.sentAt) * 1000);
    histogram[Math.min(us, histogram.length - 1)]!++;
    latencySumUs += us;
    completed++;
  }
  if (rate === 0) {
    send(c, performance.now());
  } else {
    c.sentAt = 0; // idle: nothing to wait for
    idleConnections.push(c);
    dispatch();
  }
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

const startedAt = performance.now();
/** Answers to requests sent (or fallen due) from here on are counted. */
const measuredFrom = startedAt + warmupSeconds * 1000;
if (rate === 0) {
  for (const { connection } of opened) send(connection, startedAt);
} else {
  for (const { connection } of opened) idleConnections.push(connection);
  poll();
}
const stall = setInterval(() => {
  const now = performance.now();
  for (const { connection } of opened) {
    if (connection.sentAt > 0 && now - connection.sentAt > STALL_MS && (running || connection.remaining !== 0)) {
      console.error(`no answer within ${STALL_MS} ms`);
      process.exit(1);
    }
  }
}, 1_000);
/** Timers may fire a little early; the measured seconds are at least as long as asked. */
async function sleepUntil(at: number): Promise<void> {
  for (let now = performance.now(); now < at; now = performance.now()) await Bun.sleep(Math.max(1, at - now));
}

await sleepUntil(measuredFrom);
// The warm-up's own pauses and queues are not the measured seconds'.
longestPollGapMs = 0;
mostWaiting = 0;
const cpuBefore = process.cpuUsage();
console.log("MEASURING");
await sleepUntil(measuredFrom + seconds * 1000);
running = false;
const elapsedMs = performance.now() - measuredFrom;
// Connections with nothing out have nothing left to check.
for (const connection of idleConnections) connection.idle();
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
    mostWaiting,
    longestPollGapMs,
  })}`,
);
process.exit(0);
