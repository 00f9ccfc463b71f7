/**
 * Random and malformed HTTP requests to a running gcache-node's gateway:
 * random methods and paths, oversized keys and values, bad UTF-8 and bad
 * percent-encoding, unknown groups, odd queries and content types, and, over
 * raw sockets, requests HTTP clients never send (truncated bodies, broken
 * request lines, headers and chunking). The node must answer every complete
 * request with a status, never 500, keep its memory bounded, and serve a
 * normal get at the end.
 *
 * Seeded (GCACHE_FUZZ_SEED); GCACHE_FUZZ_HTTP_REQUESTS sets the request count.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connect } from "node:net";
import { CacheNode } from "../../src/node.ts";
import { _HttpGateway } from "../../src/server/http-gateway.ts";
import { CliNode } from "../_support/cli.ts";
import { RandomSource, randomInt, seededRandom } from "../_support/random.ts";
import { httpAddressOf, rssOf, tally } from "../faults/_support.ts";

const SEED = Number(process.env.GCACHE_FUZZ_SEED ?? "20240601");
const REQUESTS = Number(process.env.GCACHE_FUZZ_HTTP_REQUESTS ?? "50000");
const IN_FLIGHT = 32;
const CACHE_BYTES = 16 * 1024 * 1024;
const MAX_VALUE = 1024 * 1024;
/** The gateway refuses bodies above this before reading them: the largest value + key + framing. */
const MAX_BODY = MAX_VALUE + 4096 + 64 * 1024;
const RSS_GROWTH_LIMIT = CACHE_BYTES + 4 * 1024 * 1024 + 200 * 1024 * 1024;

let node: CliNode;
let base: string;
let port: number;

beforeAll(async () => {
  node = await CliNode.start("fuzz-http", ["--port=0", "--node=F", `--cache-bytes=${CACHE_BYTES}`, "--group=other:4MiB"]);
  const address = httpAddressOf(node);
  base = `http://${address}`;
  port = Number(address.slice(address.lastIndexOf(":") + 1));
});

afterAll(async () => {
  await node?.stop();
});

class Requests extends RandomSource {
  ascii(length: number): string {
    let out = "";
    for (let i = 0; i < length; i++) out += String.fromCharCode(33 + this.int(94));
    return out;
  }
  /** Percent-encoded random bytes: valid or invalid UTF-8 once decoded. */
  encodedBytes(length: number): string {
    let out = "";
    for (let i = 0; i < length; i++) out += `%${this.int(256).toString(16).padStart(2, "0")}`;
    return out;
  }

  segment(kind: "group" | "key"): string {
    const r = this.random();
    if (kind === "group" && r < 0.55) return "default";
    if (kind === "group" && r < 0.65) return "other";
    if (kind === "key" && r < 0.45) return `k-${this.int(500)}`;
    return this.pick([
      () => "",
      () => `unknown-${this.int(50)}`,
      () => "x".repeat(this.pick([4096, 4097, 8_000, 20_000])),
      () => encodeURIComponent("é".repeat(2049)),
      () => this.encodedBytes(1 + this.int(12)),
      () => this.pick(["%", "%z", "%zz", "%E0%80", "%C0%AF", "%ED%A0%80", "%F4%90%80%80", "%FF%FE", "%00", "a%2Fb", "..", "."]),
      () => encodeURIComponent(this.ascii(1 + this.int(40))),
      () => this.ascii(1 + this.int(20)).replaceAll("?", "").replaceAll("#", ""),
      () => encodeURIComponent(String.fromCodePoint(0x1f600 + this.int(50), 0x4e00 + this.int(1000))),
      () => "a/b/c",
    ])();
  }

  path(): string {
    const r = this.random();
    if (r < 0.7) return `/v1/groups/${this.segment("group")}/keys/${this.segment("key")}`;
    if (r < 0.85) {
      return this.pick(["/healthz", "/readyz", "/metrics", "/v1/ring", "/v1/stats"]) + this.pick(["", "", "/", "/x", "?a=1", "%20"]);
    }
    return this.pick([
      () => "/",
      () => "//",
      () => "/v1/groups/",
      () => "/v1/groups/default",
      () => "/v1/groups/default/keys",
      () => "/v1/groups/default/keys/",
      () => "/v1/groups//keys/k",
      () => `/${this.ascii(1 + this.int(60)).replaceAll("?", "").replaceAll("#", "")}`,
      () => `/v1/${this.encodedBytes(this.int(10))}`,
    ])();
  }

  query(): string {
    if (this.chance(0.6)) return "";
    const value = () =>
      this.pick(["5m", "250ms", "0", "-1", "1e309", "99999999999999999999", "abc", "", "5 m", "NaN", "Infinity", "1.5s", "%zz", String(this.int(100_000))]);
    const parts: string[] = [];
    const count = 1 + this.int(3);
    for (let i = 0; i < count; i++) {
      parts.push(this.pick([() => `ttl=${value()}`, () => `timeout=${value()}`, () => this.ascii(this.int(10)).replaceAll("#", ""), () => "&&=&"])());
    }
    return `?${parts.join("&")}`;
  }

  headers(): Record<string, string> {
    const headers: Record<string, string> = {};
    if (this.chance(0.5)) {
      headers["content-type"] = this.pick([
        "application/octet-stream",
        "text/plain; charset=utf-8",
        "application/json",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        this.ascii(10),
      ]);
    }
    if (this.chance(0.2)) headers["x-gcache-ttl"] = this.pick(["5m", "-3", "abc", "0", "1e400"]);
    if (this.chance(0.2)) headers["x-gcache-timeout"] = this.pick(["1ms", "0", "-1", "abc", "10s", "99999999999s"]);
    if (this.chance(0.05)) headers["content-encoding"] = "gzip";
    if (this.chance(0.05)) headers.authorization = `Bearer ${this.ascii(20)}`;
    return headers;
  }

  body(): Uint8Array | undefined {
    const r = this.random();
    if (r < 0.2) return undefined;
    if (r < 0.75) {
      const out = new Uint8Array(this.int(256));
      for (let i = 0; i < out.length; i++) out[i] = this.int(256);
      return out;
    }
    if (r < 0.95) return new Uint8Array(this.int(70_000));
    // Rare: the largest value, one byte more, and more than the gateway reads at all.
    return new Uint8Array(this.pick([MAX_VALUE, MAX_VALUE + 1, MAX_BODY + 1]));
  }

  next(): { method: string; url: string; headers: Record<string, string>; body: Uint8Array | undefined } {
    const method = this.pick(["GET", "GET", "GET", "PUT", "PUT", "PUT", "DELETE", "HEAD", "POST", "PATCH", "OPTIONS", "PROPFIND"]);
    const url = this.path() + this.query();
    const body = method === "GET" || method === "HEAD" ? undefined : this.body();
    return { method, url, headers: this.headers(), body };
  }
}

/** Raw requests no HTTP client would send. `open` ones keep the socket open with the body incomplete. */
function rawRequests(random: () => number): { name: string; data: Buffer; halfClose: boolean }[] {
  const host = "Host: fuzz\r\n";
  const put = (headers: string, body: string) => `PUT /v1/groups/default/keys/raw HTTP/1.1\r\n${host}${headers}\r\n${body}`;
  const cases: [string, string | Buffer][] = [
    ["truncated body", put("Content-Length: 100\r\n", "abc")],
    ["bad request line", "GARBAGE\r\n\r\n"],
    ["no version", "GET /healthz\r\n\r\n"],
    ["unknown version", "GET /healthz HTTP/3.7\r\n\r\n"],
    ["http2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
    ["NUL in header", `GET /healthz HTTP/1.1\r\n${host}X-A\0: b\r\n\r\n`],
    ["header without colon", `GET /healthz HTTP/1.1\r\n${host}NoColonHere\r\n\r\n`],
    ["folded header", `GET /healthz HTTP/1.1\r\n${host}X-A: b\r\n c\r\n\r\n`],
    ["huge header", `GET /healthz HTTP/1.1\r\n${host}X-Big: ${"a".repeat(100_000)}\r\n\r\n`],
    ["many headers", `GET /healthz HTTP/1.1\r\n${host}${Array.from({ length: 2_000 }, (_, i) => `X-${i}: ${i}\r\n`).join("")}\r\n`],
    ["bad chunk size", put("Transfer-Encoding: chunked\r\n", "zz\r\nabc\r\n0\r\n\r\n")],
    ["unterminated chunks", put("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n")],
    ["content-length and chunked", put("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n")],
    ["huge content-length", put("Content-Length: 99999999999999\r\n", "abc")],
    ["negative content-length", put("Content-Length: -5\r\n", "abc")],
    ["non-numeric content-length", put("Content-Length: ten\r\n", "abc")],
    ["conflicting content-lengths", put("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd")],
    ["raw bytes in path", Buffer.concat([Buffer.from("GET /v1/groups/default/keys/"), Buffer.from([0xc3, 0x28, 0xff, 0x80]), Buffer.from(` HTTP/1.1\r\n${host}\r\n`)])],
    ["64 KiB url", `GET /v1/groups/default/keys/${"k".repeat(65_536)} HTTP/1.1\r\n${host}\r\n`],
    ["absolute-form url", `GET http://elsewhere/v1/ring HTTP/1.1\r\n${host}\r\n`],
    ["asterisk form", `OPTIONS * HTTP/1.1\r\n${host}\r\n`],
    ["pipelined", `GET /healthz HTTP/1.1\r\n${host}\r\nGET /v1/ring HTTP/1.1\r\n${host}\r\n`],
    ["lf only", "GET /healthz HTTP/1.1\nHost: fuzz\n\n"],
  ];
  const out = cases.map(([name, data]) => ({ name, data: Buffer.from(data), halfClose: true }));
  for (let i = 0; i < 40; i++) {
    const data = Buffer.alloc(1 + randomInt(random, 300));
    for (let j = 0; j < data.length; j++) data[j] = randomInt(random, 256);
    out.push({ name: "random bytes", data, halfClose: true });
  }
  return out;
}

/** Sends raw bytes; resolves with the first status line's code, "closed" (no answer), or "open" (no answer within `waitMs`). */
function sendRaw(data: Buffer, halfClose: boolean, waitMs: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let received = "";
    let settled = false;
    const finish = (outcome: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish(received === "" ? "open" : statusOf(received)), waitMs);
    socket.on("data", (chunk) => {
      received += chunk.toString("latin1");
      if (received.includes("\r\n")) finish(statusOf(received));
    });
    socket.on("error", () => finish(received === "" ? "closed" : statusOf(received)));
    socket.on("close", () => finish(received === "" ? "closed" : statusOf(received)));
    socket.write(data, () => {
      if (halfClose) socket.end();
    });
  });
}

function statusOf(response: string): string {
  const match = /^HTTP\/\d\.\d (\d{3})/.exec(response);
  return match === null ? `garbled: ${JSON.stringify(response.slice(0, 40))}` : match[1]!;
}

test(
  `${REQUESTS} random HTTP requests and malformed raw ones: a status for every complete request, no 500, bounded memory`,
  async () => {
    if (!(REQUESTS >= 1 && REQUESTS <= 10_000_000)) throw new Error("GCACHE_FUZZ_HTTP_REQUESTS must be 1-10000000");
    const gen = new Requests(SEED);
    const statuses: Record<string, number> = {};
    const byRoute: Record<string, Record<string, number>> = {};
    const unexpected: { method: string; url: string; outcome: string; body: string }[] = [];
    let sent = 0;
    let answered = 0;
    let rssBefore = Number.NaN;
    const started = performance.now();
    const budgetMs = Math.max(50_000, REQUESTS * 3);

    const worker = async () => {
      while (sent < REQUESTS && performance.now() - started < budgetMs) {
        const request = gen.next();
        sent++;
        if (sent === 1_000) rssBefore = await rssOf(node.pid);
        let outcome: string;
        let body = "";
        try {
          const response = await fetch(base + request.url, {
            method: request.method,
            headers: request.headers,
            ...(request.body === undefined ? {} : { body: request.body }),
            signal: AbortSignal.timeout(10_000),
          });
          outcome = String(response.status);
          body = response.status >= 500 ? (await response.text()).slice(0, 200) : "";
          if (response.status < 500) await response.body?.cancel();
        } catch (error) {
          outcome = `no answer: ${error instanceof Error ? `${error.name} ${error.message}` : String(error)}`.slice(0, 120);
        }
        answered++;
        statuses[outcome] = (statuses[outcome] ?? 0) + 1;
        const route = request.url.startsWith("/v1/groups/") ? `${request.method} key route` : `${request.method} other`;
        const forRoute = (byRoute[route] ??= {});
        forRoute[outcome] = (forRoute[outcome] ?? 0) + 1;
        // 503/504 need a cause (draining, a deadline); the node is neither draining nor loading anything slow.
        if (!/^[234]\d\d$/.test(outcome) && unexpected.length < 20) {
          unexpected.push({ method: request.method, url: request.url.slice(0, 120), outcome, body });
        }
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    const fetchSeconds = (performance.now() - started) / 1000;

    // Raw requests, 8 at a time.
    const raw = rawRequests(seededRandom(SEED + 1));
    const rawOutcomes: { name: string; outcome: string }[] = [];
    for (let i = 0; i < raw.length; i += 8) {
      const batch = raw.slice(i, i + 8);
      const outcomes = await Promise.all(batch.map((r) => sendRaw(r.data, r.halfClose, 3_000)));
      batch.forEach((r, j) => rawOutcomes.push({ name: r.name, outcome: outcomes[j]! }));
    }
    // Bodies that never complete, sockets left open: the node must not wait on them for anything else.
    const open = await Promise.all(
      Array.from({ length: 16 }, () => sendRaw(Buffer.from("PUT /v1/groups/default/keys/open HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 1000\r\n\r\nabc"), false, 500)),
    );

    const rssAfter = await rssOf(node.pid);
    const put = await fetch(`${base}/v1/groups/default/keys/after-fuzz`, { method: "PUT", body: "still here" });
    await put.body?.cancel();
    const get = await fetch(`${base}/v1/groups/default/keys/after-fuzz`);
    const finalGet = `${get.status} ${await get.text()}`;

    const rawSummary = tally(rawOutcomes, (r) => `${r.name}: ${r.outcome}`);
    console.info(
      JSON.stringify({
        fuzz: "HTTP",
        seed: SEED,
        requests: sent,
        seconds: +fetchSeconds.toFixed(1),
        statuses,
        byRoute,
        unexpected,
        raw: rawSummary,
        openBodies: tally(open, (o) => o),
        rssBeforeMiB: +(rssBefore / 2 ** 20).toFixed(1),
        rssAfterMiB: +(rssAfter / 2 ** 20).toFixed(1),
      }),
    );

    expect(node.exited).toBe(false);
    expect(answered).toBe(REQUESTS);
    expect(unexpected).toEqual([]);
    // Raw requests: a status (never 500), or, for a body cut short or bytes that are not HTTP, a closed connection.
    for (const { name, outcome } of rawOutcomes) {
      expect(`${name}: ${outcome}`).not.toMatch(/: (500|open|garbled.*)$/);
    }
    expect(rawOutcomes.filter((r) => r.name === "bad request line")[0]?.outcome).toBe("400");
    expect(open.every((o) => o === "open")).toBe(true);
    expect(finalGet).toBe("200 still here");
    expect(rssAfter - rssBefore).toBeLessThan(RSS_GROWTH_LIMIT);
  },
  120_000,
);

// A malformed timeout is the caller's mistake on every method, whether or not the
// key is cached: a GET or HEAD that misses the cache once answered 500 ERR_INTERNAL.
test("a malformed timeout is a 400 on every method, not a 500", async () => {
  const outcomes: Record<string, string> = {};
  for (const method of ["GET", "HEAD", "PUT", "DELETE"]) {
    for (const [how, init] of [
      ["query", { url: `${base}/v1/groups/default/keys/never-set?timeout=abc`, headers: {} }],
      ["header", { url: `${base}/v1/groups/default/keys/never-set`, headers: { "x-gcache-timeout": "-1" } }],
    ] as const) {
      const response = await fetch(init.url, { method, headers: init.headers, ...(method === "PUT" ? { body: "v" } : {}) });
      await response.body?.cancel();
      outcomes[`${method} ${how}`] = String(response.status);
    }
  }
  expect(outcomes).toEqual({
    "GET query": "400",
    "GET header": "400",
    "HEAD query": "400",
    "HEAD header": "400",
    "PUT query": "400",
    "PUT header": "400",
    "DELETE query": "400",
    "DELETE header": "400",
  });
});

// gRPC Get refuses an empty key or one over maxKeyBytes (INVALID_ARGUMENT), and so
// do the gateway's PUT and DELETE; the gateway's GET must too, before any loader
// runs with the bad key or anything is cached under it.
test("GET through the gateway refuses an empty or over-long key like PUT does, without calling the loader", async () => {
  const loaderKeys: number[] = [];
  const inProcess = new CacheNode({
    port: 0,
    groups: [{ name: "g", maxKeyBytes: 64, loader: (key) => (loaderKeys.push(key.length), new TextEncoder().encode("loaded")) }],
  });
  await inProcess.start();
  const gateway = new _HttpGateway(inProcess, { host: "127.0.0.1", port: 0 });
  try {
    const outcomes: Record<string, number> = {};
    for (const [name, key] of [
      ["empty", ""],
      ["65 bytes", "x".repeat(65)],
    ] as const) {
      for (const method of ["GET", "PUT"]) {
        const response = await fetch(`http://${gateway.address}/v1/groups/g/keys/${key}`, { method, ...(method === "PUT" ? { body: "v" } : {}) });
        await response.body?.cancel();
        outcomes[`${method} ${name}`] = response.status;
      }
    }
    expect({ outcomes, loaderKeys, cached: inProcess.stats().g!.caches.main.items }).toEqual({
      outcomes: { "GET empty": 400, "PUT empty": 400, "GET 65 bytes": 400, "PUT 65 bytes": 400 },
      loaderKeys: [],
      cached: 0,
    });
  } finally {
    await gateway.close();
    await inProcess.close();
  }
});
