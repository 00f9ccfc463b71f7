/**
 * The one-client load generator of bench:cluster (scripts/bench/_cluster/tcp-get.ts)
 * against real sockets: an in-process Bun.serve for HTTP/1.1, a minimal RESP
 * server and a minimal server of memcached's text protocol. Its counts feed the benchmark's like-for-like comparison, so it must
 * frame answers right (also when one spans several reads) and report bad ones.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Server, TCPSocketListener } from "bun";
import { runTcpGet, type TcpGetSpec } from "../../scripts/bench/_cluster/tcp-get-run.ts";

const SMALL = 100;
const LARGE = 10_240;
const KEYS = ["a", "b%2Fc", "missing"];
const SLOW_MS = 50;

let dir: string;
let keysFile: string;
let http: Server<undefined>;
let resp: TCPSocketListener<RespState>;
let memcache: TCPSocketListener<RespState>;
/** An HTTP server whose header names are not in lower case. */
let titleCase: TCPSocketListener<undefined>;
/** Per RESP connection, the commands in the order they came. */
const respCommands: string[][] = [];
/** `/slow-at-first/` answers after SLOW_MS until then (performance.now()). */
let slowUntil = 0;

interface RespState {
  commands: string[];
  pending: Uint8Array | null;
}

function valueOf(size: number): Uint8Array {
  return new Uint8Array(size).fill(0x61);
}

/** RESP arrays of bulk strings, as tcp-get.ts sends them; one command per read is all it ever sends. */
function respArguments(text: string): string[] {
  return text.split("\r\n").filter((_, i) => i > 0 && i % 2 === 0);
}

function respWrite(socket: Bun.Socket<RespState>, bytes: Uint8Array): void {
  const written = socket.write(bytes);
  if (written < bytes.length) socket.data.pending = bytes.subarray(Math.max(0, written));
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "tcp-get-test-"));
  keysFile = join(dir, "keys");
  writeFileSync(keysFile, `${KEYS.slice(0, 2).join("\n")}\n`);
  writeFileSync(join(dir, "with-missing"), `${KEYS.join("\n")}\n`);
  http = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    routes: {
      "/small/:key": () => new Response(valueOf(SMALL)),
      "/large/:key": () => new Response(valueOf(LARGE)),
      // A server slower than the open loop's rate: answers take SLOW_MS.
      "/slow/:key": async () => {
        await Bun.sleep(SLOW_MS);
        return new Response(valueOf(SMALL));
      },
      // Slow until `slowUntil`, then fast: a client's warm-up that this covers must not show in its figures.
      "/slow-at-first/:key": async () => {
        if (performance.now() < slowUntil) await Bun.sleep(SLOW_MS);
        return new Response(valueOf(SMALL));
      },
    },
    fetch: () => new Response("no such key", { status: 404 }),
  });
  resp = Bun.listen<RespState>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.data = { commands: [], pending: null };
        respCommands.push(socket.data.commands);
      },
      data(socket, chunk) {
        const [command, argument = ""] = respArguments(chunk.toString("latin1"));
        socket.data.commands.push(`${command} ${argument}`);
        if (command === "SELECT") return void respWrite(socket, new TextEncoder().encode("+OK\r\n"));
        if (argument === "missing") return void respWrite(socket, new TextEncoder().encode("$-1\r\n"));
        const size = argument.startsWith("large") ? LARGE : SMALL;
        respWrite(socket, Buffer.concat([Buffer.from(`$${size}\r\n`), valueOf(size), Buffer.from("\r\n")]));
      },
      drain: respDrain,
    },
  });
  memcache = Bun.listen<RespState>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.data = { commands: [], pending: null };
      },
      data(socket, chunk) {
        // "get <key>\r\n": one per read, as tcp-get.ts sends them.
        const key = chunk.toString("latin1").trim().split(" ")[1] ?? "";
        if (key === "missing") return void respWrite(socket, Buffer.from("END\r\n"));
        const size = key.startsWith("large") ? LARGE : SMALL;
        respWrite(socket, Buffer.concat([Buffer.from(`VALUE ${key} 0 ${size}\r\n`), valueOf(size), Buffer.from("\r\nEND\r\n")]));
      },
      drain: respDrain,
    },
  });
  titleCase = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(socket) {
        socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${SMALL}\r\n\r\n`), valueOf(SMALL)]));
      },
    },
  });
});

function respDrain(socket: Bun.Socket<RespState>): void {
  const pending = socket.data.pending;
  socket.data.pending = null;
  if (pending !== null) respWrite(socket, pending);
}

afterAll(() => {
  void http.stop(true);
  resp.stop(true);
  memcache.stop(true);
  titleCase.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

function run(spec: Partial<TcpGetSpec> & Pick<TcpGetSpec, "protocol">, onMeasuring?: () => void) {
  return runTcpGet(
    {
      port: spec.protocol === "http" ? http.port! : spec.protocol === "resp" ? resp.port : memcache.port,
      keysFile,
      connections: 4,
      valueBytes: SMALL,
      db: 0,
      seconds: 1,
      ...spec,
    },
    onMeasuring,
  );
}

describe("tcp-get over HTTP/1.1", () => {
  test("counts whole answers of the expected size, with latency percentiles", async () => {
    const r = await run({ protocol: "http", pathPrefix: "/small/" });
    expect(r.firstError).toBeNull();
    expect(r.errors).toBe(0);
    expect(r.requests).toBeGreaterThan(100);
    expect(r.seconds).toBeGreaterThanOrEqual(1);
    expect(r.p50Ms).toBeGreaterThan(0);
    expect(r.p99Ms).toBeGreaterThanOrEqual(r.p50Ms);
    expect(r.meanMs).toBeGreaterThan(0);
  }, 20_000);

  test("frames answers that span several reads", async () => {
    const r = await run({ protocol: "http", pathPrefix: "/large/", valueBytes: LARGE });
    expect(r.firstError).toBeNull();
    expect(r.requests).toBeGreaterThan(100);
  }, 20_000);

  test("reports a value of the wrong size and a status other than 200", async () => {
    const wrongSize = await run({ protocol: "http", pathPrefix: "/small/", valueBytes: SMALL + 1 });
    expect(wrongSize.errors).toBeGreaterThan(0);
    expect(wrongSize.firstError).toBe(`value of ${SMALL} bytes, expected ${SMALL + 1}`);
    const notFound = await run({ protocol: "http", pathPrefix: "/nothing/", valueBytes: -1 });
    expect(notFound.errors).toBeGreaterThan(0);
    expect(notFound.firstError).toBe("answer HTTP/1.1 404");
  }, 20_000);

  test("reads a Content-Length header in any case", async () => {
    const r = await run({ protocol: "http", port: titleCase.port });
    expect(r.firstError).toBeNull();
    expect(r.requests).toBeGreaterThan(100);
    const wrongSize = await run({ protocol: "http", port: titleCase.port, valueBytes: SMALL + 1 });
    expect(wrongSize.firstError).toBe(`value of ${SMALL} bytes, expected ${SMALL + 1}`);
  }, 20_000);
});

describe("tcp-get in an open loop (--rate)", () => {
  test("sends at the given rate, not as fast as the server answers", async () => {
    const r = await run({ protocol: "http", pathPrefix: "/small/", rate: 2_000 });
    expect(r.firstError).toBeNull();
    // One second at 2,000/s; the closed loop against this server does many times that.
    expect(r.requests).toBeGreaterThan(1_800);
    expect(r.requests).toBeLessThanOrEqual(2_000);
    expect(r.p50Ms).toBeLessThan(SLOW_MS);
  }, 20_000);

  test("counts the wait for an idle connection as latency", async () => {
    // Two connections and answers of 50 ms carry 40 requests a second; 100 fall due.
    const r = await run({ protocol: "http", pathPrefix: "/slow/", connections: 2, rate: 100 });
    expect(r.firstError).toBeNull();
    expect(r.requests).toBeGreaterThan(20);
    expect(r.requests).toBeLessThan(60);
    expect(r.mostWaiting).toBeGreaterThan(10);
    // From the time a request fell due, not from when a connection was free to send it (about SLOW_MS).
    expect(r.p99Ms).toBeGreaterThan(4 * SLOW_MS);
  }, 20_000);

  test("counts nothing from the warm-up, and says when the measured seconds start", async () => {
    // Answers take SLOW_MS for the first 600 ms, well inside a warm-up of 1 s (the client starts after this call).
    slowUntil = performance.now() + 600;
    let measuringAt = 0;
    const calledAt = performance.now();
    const r = await run({ protocol: "http", pathPrefix: "/slow-at-first/", connections: 32, rate: 200, warmupSeconds: 1 }, () => {
      measuringAt = performance.now();
    });
    const doneAt = performance.now();
    expect(r.firstError).toBeNull();
    // One measured second at 200/s, not the two the client ran.
    expect(r.requests).toBeGreaterThan(180);
    expect(r.requests).toBeLessThanOrEqual(200);
    expect(r.seconds).toBeGreaterThanOrEqual(1);
    expect(r.seconds).toBeLessThan(1.5);
    // The slow answers all fell in the warm-up.
    expect(r.p99Ms).toBeLessThan(SLOW_MS / 2);
    expect(measuringAt - calledAt).toBeGreaterThanOrEqual(1_000);
    expect(doneAt - measuringAt).toBeGreaterThanOrEqual(1_000);
  }, 20_000);
});

describe("tcp-get over RESP", () => {
  test("selects the database on every connection before the first GET", async () => {
    respCommands.length = 0;
    const r = await run({ protocol: "resp", db: 3 });
    expect(r.firstError).toBeNull();
    expect(r.requests).toBeGreaterThan(100);
    expect(respCommands).toHaveLength(4);
    for (const commands of respCommands) {
      expect(commands[0]).toBe("SELECT 3");
      expect(commands.slice(1).every((c) => c === "GET a" || c === "GET b%2Fc")).toBe(true);
    }
  }, 20_000);

});

describe("tcp-get over memcached's text protocol", () => {
  test("counts whole answers, VALUE line, value and END", async () => {
    const r = await run({ protocol: "memcache" });
    expect(r.firstError).toBeNull();
    expect(r.errors).toBe(0);
    expect(r.requests).toBeGreaterThan(100);
  }, 20_000);

  test("reports a value of the wrong size", async () => {
    const wrongSize = await run({ protocol: "memcache", valueBytes: SMALL + 1 });
    expect(wrongSize.firstError).toBe(`value of ${SMALL} bytes, expected ${SMALL + 1}`);
  }, 20_000);
});

for (const protocol of ["resp", "memcache"] as const) {
  describe(`tcp-get over ${protocol}, as over any protocol with length-prefixed values`, () => {
    test("frames values that span several reads", async () => {
      writeFileSync(join(dir, "large"), "large1\nlarge2\n");
      const r = await run({ protocol, keysFile: join(dir, "large"), valueBytes: LARGE });
      expect(r.firstError).toBeNull();
      expect(r.requests).toBeGreaterThan(100);
    }, 20_000);

    test("reports a missing key", async () => {
      const r = await run({ protocol, keysFile: join(dir, "with-missing") });
      expect(r.errors).toBeGreaterThan(0);
      expect(r.firstError).toBe("key not found");
    }, 20_000);
  });
}
