/**
 * The gateway's own HTTP/1.1 server over real sockets: framing however the
 * bytes are split, pipelining in order behind a slow answer, chunked bodies,
 * 100-continue, limits, keep-alive and close, back-pressure on large
 * responses, and closing with requests in flight.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { connect, type Socket } from "node:net";
import type { _HttpRequest } from "../../src/server/http-request.ts";
import { _HttpServer, _ResponseHead, type _HttpHandler, type _HttpResponse } from "../../src/server/http-server.ts";
import { makeCertificates } from "../_support/certs.ts";
import { waitFor } from "../_support/wait.ts";

const TEXT = new _ResponseHead(200, "content-type: text/plain\r\n");
const ERROR = new Map<number, _ResponseHead>();
const errorHead = (status: number) => ERROR.get(status) ?? ERROR.set(status, new _ResponseHead(status, "content-type: text/plain\r\n")).get(status)!;
const servers: _HttpServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

function start(
  handler: _HttpHandler,
  options: { maxBodyBytes?: number; idleTimeoutSeconds?: number; tls?: { cert: Buffer; key: Buffer; ca: Buffer; requestCert: boolean } } = {},
): _HttpServer {
  const server = new _HttpServer(handler, {
    host: "127.0.0.1",
    port: 0,
    ...(options.tls === undefined ? {} : { tls: options.tls }),
    maxBodyBytes: options.maxBodyBytes ?? 1 << 20,
    ...(options.idleTimeoutSeconds === undefined ? {} : { idleTimeoutSeconds: options.idleTimeoutSeconds }),
    internalError: (error) => ({ head: errorHead(500), extraHeaders: "", body: `internal: ${String(error)}` }),
    refusal: (status, message) => ({ head: errorHead(status), extraHeaders: "", body: message }),
  });
  servers.push(server);
  return server;
}

/** Echoes what it read: method, path, query, the body's length and a header. */
const echo: _HttpHandler = (request: _HttpRequest): _HttpResponse => ({
  head: TEXT,
  extraHeaders: "",
  body: `${request.method} ${request.path} ?${request.query} body=${request.body.length} x=${request.header("x-test")}`,
});

interface Parsed {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Parses as many whole responses as `data` holds (content-length framing; the answers at `headAnswers` have no body). */
function parseResponses(data: Buffer, headAnswers: number[] = []): Parsed[] {
  const out: Parsed[] = [];
  let at = 0;
  while (at < data.length) {
    const end = data.indexOf("\r\n\r\n", at);
    if (end < 0) break;
    const lines = data.toString("latin1", at, end).split("\r\n");
    const status = Number(lines[0]!.split(" ")[1]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = status === 100 || headAnswers.includes(out.length) ? 0 : Number(headers["content-length"] ?? 0);
    if (end + 4 + length > data.length) break;
    out.push({ status, headers, body: data.subarray(end + 4, end + 4 + length) });
    at = end + 4 + length;
  }
  return out;
}

class RawClient {
  readonly socket: Socket;
  received = Buffer.alloc(0);
  closed = false;
  private waiters: (() => void)[] = [];

  constructor(port: number) {
    this.socket = connect(port, "127.0.0.1");
    this.socket.on("data", (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.wake();
    });
    this.socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    this.socket.on("error", () => {});
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  async write(data: string | Buffer): Promise<void> {
    await new Promise<void>((resolve, reject) => this.socket.write(data, (error) => (error ? reject(error) : resolve())));
  }

  /** Waits (up to `timeoutMs`) until `done` holds for what was received. */
  async until(done: (client: RawClient) => boolean, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this)) {
      if (Date.now() > deadline) throw new Error(`timed out; received ${JSON.stringify(this.received.toString("latin1").slice(0, 300))}, closed=${this.closed}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async responses(count: number, headAnswers: number[] = [], timeoutMs = 5_000): Promise<Parsed[]> {
    await this.until((client) => parseResponses(client.received, headAnswers).length >= count, timeoutMs);
    return parseResponses(this.received, headAnswers);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

async function withClient<T>(server: _HttpServer, run: (client: RawClient) => Promise<T>): Promise<T> {
  const client = new RawClient(server.port);
  try {
    return await run(client);
  } finally {
    client.destroy();
  }
}

describe("framing", () => {
  test("a request split into single bytes is read whole, with its body", async () => {
    const server = start(echo);
    const request = "PUT /a/b?c=d HTTP/1.1\r\nHost: x\r\nX-Test:  spaced value \t\r\nContent-Length: 5\r\n\r\nhello";
    const [response] = await withClient(server, async (client) => {
      for (const byte of Buffer.from(request)) await client.write(Buffer.from([byte]));
      return client.responses(1);
    });
    expect(response!.status).toBe(200);
    expect(response!.body.toString()).toBe("PUT /a/b ?c=d body=5 x=spaced value");
    expect(response!.headers["content-length"]).toBe(String(response!.body.length));
    expect(response!.headers.date).toMatch(/GMT$/);
  });

  test("a body over many reads is joined whole, and the request after it is read too", async () => {
    const server = start((request) => ({ head: TEXT, extraHeaders: "", body: request.path === "/body" ? request.body : "next" }));
    const body = Buffer.alloc(300_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 255;
    const responses = await withClient(server, async (client) => {
      await client.write(`PUT /body HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n`);
      for (let at = 0; at < body.length; at += 4096) {
        await client.write(body.subarray(at, at + 4096));
        // Let the server read each piece on its own.
        if (at % 65_536 === 0) await Bun.sleep(1);
      }
      await client.write("GET /after HTTP/1.1\r\n\r\n");
      return client.responses(2);
    });
    expect(Buffer.compare(responses[0]!.body, body)).toBe(0);
    expect(responses[1]!.body.toString()).toBe("next");
  });

  test("pipelined requests are answered in order, also behind a slow answer", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const dispatched: string[] = [];
    const server = start((request) => {
      dispatched.push(request.path);
      return request.path === "/slow" ? gate.then(() => echo(request)) : echo(request);
    });
    await withClient(server, async (client) => {
      await client.write("GET /slow HTTP/1.1\r\n\r\nGET /fast HTTP/1.1\r\n\r\n\r\nHEAD /head HTTP/1.1\r\n\r\nGET /last HTTP/1.1\r\n\r\n");
      await waitFor(() => dispatched.length > 0, 5_000, "the first request");
      // Nothing may overtake the slow answer: the rest wait, unread, behind it.
      expect(dispatched).toEqual(["/slow"]);
      expect(client.received.length).toBe(0);
      release();
      const responses = await client.responses(4, [2]);
      expect(responses.map((r) => r.body.toString().split(" ")[1])).toEqual(["/slow", "/fast", undefined, "/last"]);
      expect(responses[2]!.headers["content-length"]).toBe(String("HEAD /head ? body=0 x=null".length));
    });
  });

  test("bytes pipelined behind a slow answer are joined once, not copied again with every read", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const bodyBytes = 16 << 20;
    const server = start((request) => (request.path === "/slow" ? gate.then(() => echo(request)) : echo(request)), { maxBodyBytes: 2 * bodyBytes });
    const concat = Buffer.concat;
    let copied = 0;
    Buffer.concat = ((list: readonly Uint8Array[], totalLength?: number) => {
      const joined = concat(list, totalLength);
      copied += joined.length;
      return joined;
    }) as typeof Buffer.concat;
    try {
      await withClient(server, async (client) => {
        await client.write(`GET /slow HTTP/1.1\r\n\r\nPUT /big HTTP/1.1\r\nContent-Length: ${bodyBytes}\r\n\r\n`);
        const piece = Buffer.alloc(64 * 1024, 0x61);
        for (let sent = 0; sent < bodyBytes; sent += piece.length) await client.write(piece);
        release();
        const responses = await client.responses(2, [], 20_000);
        expect(responses[1]!.body.toString()).toBe(`PUT /big ? body=${bodyBytes} x=null`);
      });
    } finally {
      Buffer.concat = concat;
    }
    // Joined as they came, the reads held behind the slow answer were each copied again with every later one.
    expect(copied).toBeLessThan(3 * bodyBytes);
  });

  test("a client that pipelines more than a request may hold behind a slow answer is cut off", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    // Room held: the largest body, a head and 64 KiB more.
    const server = start((request) => (request.path === "/slow" ? gate.then(() => echo(request)) : echo(request)), { maxBodyBytes: 256 * 1024 });
    await withClient(server, async (client) => {
      await client.write("GET /slow HTTP/1.1\r\n\r\n");
      const piece = Buffer.alloc(64 * 1024, 0x61);
      for (let sent = 0; sent < 1 << 20 && !client.closed; sent += piece.length) await client.write(piece).catch(() => {});
      await client.until((c) => c.closed);
      release();
      expect(client.received.length).toBe(0);
    });
  });

  test("each request on a connection has only its own fields, body and headers", async () => {
    const server = start(echo);
    const responses = await withClient(server, async (client) => {
      await client.write("PUT /a?q=1 HTTP/1.1\r\nX-Test: one\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n");
      await client.responses(2);
      await client.write("DELETE /c?r=2 HTTP/1.1\r\nx-test: three\r\n\r\n");
      return client.responses(3);
    });
    expect(responses.map((r) => r.body.toString())).toEqual(["PUT /a ?q=1 body=3 x=one", "GET /b ? body=0 x=null", "DELETE /c ?r=2 body=0 x=three"]);
  });

  test("an answered request lets go of its body and bytes, also after a slow answer", async () => {
    const seen: _HttpRequest[] = [];
    const server = start((request) => {
      seen.push(request);
      const response = echo(request);
      return request.path === "/slow" ? Bun.sleep(5).then(() => response) : response;
    });
    await withClient(server, async (client) => {
      await client.write("PUT /fast HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody");
      await client.responses(1);
      expect([seen[0]!.body.length, seen[0]!.path]).toEqual([0, ""]);
      await client.write("PUT /slow HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody");
      const responses = await client.responses(2);
      expect(responses.map((r) => r.body.toString())).toEqual(["PUT /fast ? body=4 x=null", "PUT /slow ? body=4 x=null"]);
      expect([seen[1]!.body.length, seen[1]!.path]).toEqual([0, ""]);
      // A HEAD answered late still gets no body: the request was let go of before its answer was written.
      await client.write("HEAD /slow HTTP/1.1\r\n\r\nGET /fast HTTP/1.1\r\n\r\n");
      const [, , head, after] = await client.responses(4, [2]);
      expect(head!.headers["content-length"]).toBe(String("HEAD /slow ? body=0 x=null".length));
      expect([head!.status, after!.status, after!.body.toString()]).toEqual([200, 200, "GET /fast ? body=0 x=null"]);
    });
  });

  test("a chunked body with extensions and trailers, split anywhere, is decoded", async () => {
    const server = start(echo);
    const body = "5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n";
    const request = `POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n${body}`;
    for (const splitAt of [10, request.length - body.length + 3, request.length - 7, request.length - 1]) {
      const [response] = await withClient(server, async (client) => {
        await client.write(request.slice(0, splitAt));
        await Bun.sleep(5);
        await client.write(request.slice(splitAt));
        return client.responses(1);
      });
      expect({ splitAt, body: response!.body.toString() }).toEqual({ splitAt, body: "POST /c ? body=15 x=null" });
    }
  });

  test("absolute-form targets are read as their path", async () => {
    const server = start(echo);
    const [response] = await withClient(server, async (client) => {
      await client.write("GET http://elsewhere:80/v1/ring?x=1 HTTP/1.1\r\n\r\n");
      return client.responses(1);
    });
    expect(response!.body.toString()).toBe("GET /v1/ring ?x=1 body=0 x=null");
  });
});

describe("refusals", () => {
  const cases: [string, string, number][] = [
    ["content-length with chunked", "PUT /k HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400],
    ["an unknown transfer coding", "PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501],
    ["a space before the colon", "GET /k HTTP/1.1\r\nHost : x\r\n\r\n", 400],
    ["a folded header", "GET /k HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", 400],
    ["bare LF line ends", "GET /k HTTP/1.1\nHost: x\n\n", 400],
    ["a bare LF after a CRLF line", "GET /k HTTP/1.1\r\nHost: x\nX-A: b\n\n", 400],
    ["a signed content-length", "PUT /k HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", 400],
    ["HTTP/2.0", "GET /k HTTP/2.0\r\n\r\n", 505],
    ["a raw byte in the target", "GET /k\u00ff HTTP/1.1\r\n\r\n", 400],
    ["a target that is not a path", "GET k HTTP/1.1\r\n\r\n", 400],
    ["an unknown expectation", "PUT /k HTTP/1.1\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417],
    ["a body over the limit", `PUT /k HTTP/1.1\r\nContent-Length: ${1024 + 1}\r\n\r\n`, 413],
    ["a chunked body over the limit", `PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n`, 413],
    ["a head over the limit", `GET /k HTTP/1.1\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`, 431],
    ["a request line over the limit", `GET /${"k".repeat(20_000)} HTTP/1.1\r\n\r\n`, 414],
    ["empty lines past the head limit", `${"\r\n".repeat(10_000)}GET /k HTTP/1.1\r\n\r\n`, 400],
  ];
  for (const [name, request, status] of cases) {
    test(`${name}: ${status}, then the connection closes`, async () => {
      const server = start(echo, { maxBodyBytes: 1024 });
      const response = await withClient(server, async (client) => {
        await client.write(Buffer.from(request, "latin1"));
        await client.until((c) => c.closed);
        return parseResponses(client.received);
      });
      expect(response.map((r) => [r.status, r.headers.connection])).toEqual([[status, "close"]]);
      expect(response[0]!.body.length).toBeGreaterThan(0);
    });
  }

  test("a handler that throws gets the internal-error answer, and the connection stays usable", async () => {
    const server = start((request) => {
      if (request.path === "/throw") throw new Error("boom");
      return echo(request);
    });
    const responses = await withClient(server, async (client) => {
      await client.write("GET /throw HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n");
      return client.responses(2);
    });
    expect(responses.map((r) => [r.status, r.body.toString()])).toEqual([
      [500, "internal: Error: boom"],
      [200, "GET /ok ? body=0 x=null"],
    ]);
  });
});

describe("connections", () => {
  test("100-continue is sent before the body is, and only then the answer", async () => {
    const server = start(echo);
    const responses = await withClient(server, async (client) => {
      await client.write("PUT /k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
      const [interim] = await client.responses(1);
      expect(interim!.status).toBe(100);
      await client.write("abc");
      return client.responses(2);
    });
    expect(responses.map((r) => r.status)).toEqual([100, 200]);
    expect(responses[1]!.body.toString()).toBe("PUT /k ? body=3 x=null");
  });

  test("HTTP/1.0 closes after the answer unless it asks for keep-alive; Connection: close closes HTTP/1.1", async () => {
    const server = start(echo);
    for (const [request, closes] of [
      ["GET /a HTTP/1.0\r\n\r\n", true],
      ["GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", false],
      ["GET /a HTTP/1.1\r\nConnection: close\r\n\r\n", true],
      ["GET /a HTTP/1.1\r\n\r\n", false],
    ] as const) {
      const outcome = await withClient(server, async (client) => {
        await client.write(request);
        const [response] = await client.responses(1);
        if (closes) await client.until((c) => c.closed);
        else await Bun.sleep(30);
        return { request, status: response!.status, connection: response!.headers.connection ?? null, closed: client.closed };
      });
      expect(outcome).toEqual({ request, status: 200, connection: closes ? "close" : null, closed: closes });
    }
  });

  test("a large answer to a client that reads slowly arrives whole (back-pressure)", async () => {
    const value = new Uint8Array(8 << 20);
    for (let i = 0; i < value.length; i++) value[i] = (i * 7) & 255;
    let answered = 0;
    const server = start(() => (answered++, { head: TEXT, extraHeaders: "", body: value }));
    const received = await withClient(server, async (client) => {
      client.socket.pause();
      await client.write("GET /big HTTP/1.1\r\n\r\nGET /big HTTP/1.1\r\n\r\n");
      await waitFor(() => answered > 0, 5_000, "the first answer");
      // The first answer does not fit the socket buffers: the second waits for them to drain.
      expect(answered).toBe(1);
      client.socket.resume();
      return client.responses(2);
    });
    expect(received.map((r) => r.body.length)).toEqual([value.length, value.length]);
    expect(received.every((r) => Buffer.compare(r.body, Buffer.from(value)) === 0)).toBe(true);
  });

  // Answers up to 64 KiB are sent from one send buffer that every connection
  // shares; what a slow reader's socket does not take must be copied out
  // before another connection's answer overwrites it.
  test("answers a slow reader's socket could not take stay intact while other connections are answered", async () => {
    const size = 60_000;
    const valueOf = (i: number) => Buffer.alloc(size, i & 255);
    let slowAnswered = 0;
    const server = start((request) => {
      const i = Number(request.path.slice(1));
      if (i < 200) slowAnswered++;
      return { head: TEXT, extraHeaders: "", body: valueOf(i) };
    });
    const slow = new RawClient(server.port);
    const busy = new RawClient(server.port);
    try {
      slow.socket.pause();
      const count = 120;
      await slow.write(Array.from({ length: count }, (_, i) => `GET /${i} HTTP/1.1\r\n\r\n`).join(""));
      // The server answers until a write falls short, then waits for the socket to drain.
      await waitFor(() => slowAnswered > 0, 5_000, "the slow reader's first answer");
      const answeredBeforeDrain = slowAnswered;
      for (let round = 0; round < 5; round++) {
        await busy.write(`GET /${200 + round} HTTP/1.1\r\n\r\n`);
        await busy.responses(round + 1);
      }
      slow.socket.resume();
      const answers = await slow.responses(count, [], 10_000);
      const wrong = answers.map((r, i) => (Buffer.compare(r.body, valueOf(i)) === 0 ? -1 : i)).filter((i) => i >= 0);
      expect({ answers: answers.length, wrong }).toEqual({ answers: count, wrong: [] });
      // Else the case was not reached: every answer fit the socket buffers.
      expect(answeredBeforeDrain).toBeLessThan(count);
    } finally {
      slow.destroy();
      busy.destroy();
    }
  });

  test("close() answers the request in flight with connection: close, closes idle connections, and stops listening", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let pending = 0;
    const server = start((request) => (pending++, gate.then(() => echo(request))));
    const busy = new RawClient(server.port);
    const idle = new RawClient(server.port);
    try {
      await busy.write("GET /pending HTTP/1.1\r\n\r\n");
      await idle.write("");
      await waitFor(() => pending > 0, 5_000, "the pending request");
      const closing = server.close();
      await idle.until((c) => c.closed);
      release();
      const [response] = await busy.responses(1);
      await closing;
      expect({ status: response!.status, connection: response!.headers.connection, busyClosed: busy.closed || (await busy.until((c) => c.closed), busy.closed) }).toEqual({
        status: 200,
        connection: "close",
        busyClosed: true,
      });
      const refused = await new Promise<string>((resolve) => {
        const socket = connect(server.port, "127.0.0.1");
        socket.on("connect", () => (socket.destroy(), resolve("connected")));
        socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
      });
      expect(refused).toBe("ECONNREFUSED");
    } finally {
      busy.destroy();
      idle.destroy();
    }
  });

  test("a head trickled in a byte at a time is refused with 408 once it takes longer than the idle timeout", async () => {
    const server = start(echo, { idleTimeoutSeconds: 1 });
    const started = Date.now();
    const response = await withClient(server, async (client) => {
      await client.write("GET /slow HTTP/1.1\r\n");
      // Each byte comes well within the idle timeout, so only the head's own limit can end this.
      for (const byte of Buffer.from("X-Test: " + "a".repeat(40))) {
        if (client.closed) break;
        await Bun.sleep(200);
        await client.write(Buffer.from([byte])).catch(() => {});
      }
      await client.until((c) => c.closed);
      return parseResponses(client.received);
    });
    expect(response.map((r) => [r.status, r.headers.connection])).toEqual([[408, "close"]]);
    expect(response[0]!.body.toString()).toContain("request head not complete within 1 s");
    // Refused at the first byte after the limit, not at the end of the trickle (8 s).
    expect(Date.now() - started).toBeLessThan(4_000);
  }, 15_000);

  // Idle timeouts are checked every 4 s (the socket layer's granularity): the slow
  // answer outlasts one check, which must not close its connection.
  test("an idle connection is closed after the idle timeout, but one waiting for a slow answer is not", async () => {
    const slowMs = 4_500;
    const server = start((request) => (request.path === "/slow" ? Bun.sleep(slowMs).then(() => echo(request)) : echo(request)), { idleTimeoutSeconds: 1 });
    const idle = new RawClient(server.port);
    const waiting = new RawClient(server.port);
    try {
      await idle.write("GET /a HTTP/1.1\r\n\r\n");
      await waiting.write("GET /slow HTTP/1.1\r\n\r\n");
      await idle.until((c) => c.closed);
      const [response] = await waiting.responses(1, [], slowMs + 2_000);
      expect(response!.body.toString()).toBe("GET /slow ? body=0 x=null");
    } finally {
      idle.destroy();
      waiting.destroy();
    }
  }, 15_000);
});

test("over TLS, concurrent 1 MiB answers and uploads arrive whole", async () => {
  const certs = makeCertificates();
  try {
    const value = new Uint8Array(1 << 20);
    for (let i = 0; i < value.length; i++) value[i] = (i * 13) & 255;
    const server = start((request) => ({ head: TEXT, extraHeaders: "", body: request.method === "PUT" ? request.body : value }), {
      maxBodyBytes: 2 << 20,
      tls: { cert: certs.node.cert, key: certs.node.key, ca: certs.ca, requestCert: false },
    });
    const base = `https://127.0.0.1:${server.port}`;
    const tls = { ca: certs.ca, serverName: "localhost" };
    const results = await Promise.all(
      Array.from({ length: 16 }, async (_, i) => {
        const response =
          i % 2 === 0
            ? await fetch(`${base}/get`, { tls, signal: AbortSignal.timeout(10_000) })
            : await fetch(`${base}/put`, { method: "PUT", body: value, tls, signal: AbortSignal.timeout(10_000) });
        return Buffer.compare(Buffer.from(await response.arrayBuffer()), Buffer.from(value)) === 0;
      }),
    );
    expect(results).toEqual(Array.from({ length: 16 }, () => true));
  } finally {
    certs.cleanup();
  }
}, 20_000);
