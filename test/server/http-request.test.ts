/**
 * The request head reader on its own: a head that arrives in pieces is found
 * whichever byte it was cut at, though each call searches only the new bytes.
 */
import { expect, test } from "bun:test";
import { heapStats } from "bun:jsc";
import { _ChunkedBody, _HttpError, _readHead, type _HttpRequest } from "../../src/server/http-request.ts";

const LIMITS = { maxHeadBytes: 16 * 1024, maxHeaders: 100, maxBodyBytes: 1024 };

test("a head cut at any byte is read once the rest arrives, and only then", () => {
  const head = "\r\nPUT /k?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
  const whole = Buffer.from(`${head}abc`, "latin1");
  const outcomes: string[] = [];
  for (let cut = 1; cut < head.length; cut++) {
    const first = _readHead(whole.subarray(0, cut), 0, LIMITS);
    const second = _readHead(whole, cut, LIMITS);
    outcomes.push(`${first === null} ${second?.method} ${second?.path} ${second?.query} ${second?.bodyLength} ${second?.headLength}`);
  }
  expect(new Set(outcomes)).toEqual(new Set([`true PUT /k q=1 3 ${head.length}`]));
});

test("a head that ends its read is read as when its end is searched for: up to its own blank line, or refused alike", () => {
  const heads = [
    "GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /a HTTP/1.1\r\n\r\n",
    "\r\n\r\nGET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    // Pipelined: the read ends in the second head's blank line.
    "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: y\r\n\r\n",
    // A body that is itself a blank line.
    "PUT /a HTTP/1.1\r\nContent-Length: 4\r\n\r\n\r\n\r\n",
    "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    // Refused, each for what comes first in it.
    "GET\r\n\r\n",
    "GET /a\r\n\r\n",
    "GET /a HTTP/1.1\r\nHost x\r\n\r\n",
    "GET /a HTTP/1.1\r\nHost: x\ry\r\n\r\n",
    "GET /a HTTP/1.1\r\n Host: x\r\n\r\n",
    "GET /a HTTP/2.0\r\n\r\n",
    "GET /a HTTP/1.1\r\r\n\r\n",
    "GET /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET /a HTTP/1.1\r\n\r\nGET /b\r\n\r\n",
    "\r\n\r\n",
  ];
  const outcome = (input: Buffer, scanned: number): string => {
    try {
      const r = _readHead(input, scanned, LIMITS);
      return r === null ? "incomplete" : `${r.method} ${r.path} ${r.keepAlive} ${r.bodyLength} ${r.headLength} ${r.header("host")}`;
    } catch (error) {
      return error instanceof _HttpError ? `${error.status} ${error.message}` : `crash ${String(error)}`;
    }
  };
  const compared = heads.map((head) => {
    const input = Buffer.from(head, "latin1");
    // scanned = 1: not the first look at this head, so its end is searched for.
    return [outcome(input, 0), outcome(input, 1)];
  });
  for (const [whole, searched] of compared) expect(whole).toBe(searched!);
  expect(compared.map(([whole]) => whole!.split(" ")[0])).toEqual([
    ...["GET", "GET", "GET", "GET", "PUT", "POST"],
    ...["400", "400", "400", "400", "400", "505", "505", "400", "GET", "incomplete"],
  ]);
  // Each pipelined head ends at its own blank line.
  expect(outcome(Buffer.from(heads[3]!, "latin1"), 0)).toBe("GET /a true 0 28 x");
});

test("a bare LF is refused in whichever piece it arrives", () => {
  const request = Buffer.from("GET /k HTTP/1.1\r\nHost: x\nX-A: b\r\n", "latin1");
  const lf = request.indexOf("x\n") + 1;
  const outcomes: string[] = [];
  for (let cut = 1; cut < request.length; cut++) {
    try {
      const first = _readHead(request.subarray(0, cut), 0, LIMITS);
      _readHead(request, first === null ? cut : 0, LIMITS);
      outcomes.push("read");
    } catch (error) {
      outcomes.push(error instanceof _HttpError ? `${error.status} at ${cut > lf ? "first" : "second"} call` : String(error));
    }
  }
  expect(new Set(outcomes)).toEqual(new Set(["400 at first call", "400 at second call"]));
});

test("headers are found by name in any case, trimmed, the first of repeats, and only in the head", () => {
  const head =
    "\r\nGET /k HTTP/1.1\r\nHost: example\r\nX-Gcache-TTL: \t 5m \t\r\nX-Empty:\r\nX-Colon: a:b: c\r\nx-gcache-ttl: 9m\r\nX-Last:z\r\n\r\n";
  const request = _readHead(Buffer.from(`${head}x-body: not a header`, "latin1"), 0, LIMITS)!;
  expect(request.header("x-gcache-ttl")).toBe("5m");
  expect(request.header("host")).toBe("example");
  expect(request.header("x-empty")).toBe("");
  expect(request.header("x-colon")).toBe("a:b: c");
  expect(request.header("x-last")).toBe("z");
  expect(request.header("x-body")).toBeNull();
  expect(request.header("get /k http/1.1")).toBeNull();
  const bare = _readHead(Buffer.from("GET / HTTP/1.0\r\n\r\n", "latin1"), 0, LIMITS)!;
  expect(bare.header("host")).toBeNull();
});

test("empty lines before the request line are skipped up to the head's limit, and refused past it", () => {
  const request = "GET /k HTTP/1.1\r\n\r\n";
  const limits = { ...LIMITS, maxHeadBytes: 64 };
  const within = Buffer.from(`${"\r\n".repeat(32)}${request}`, "latin1");
  expect(_readHead(within, 0, limits)?.path).toBe("/k");
  const outcomes: string[] = [];
  // Past the limit, whether the request follows in the same read, later, or never.
  for (const input of [`${"\r\n".repeat(33)}${request}`, "\r\n".repeat(33), "\r\n".repeat(5_000)]) {
    try {
      outcomes.push(String(_readHead(Buffer.from(input, "latin1"), 0, limits)));
    } catch (error) {
      outcomes.push(error instanceof _HttpError ? `${error.status} ${error.message}` : String(error));
    }
  }
  expect(outcomes).toEqual(Array(3).fill("400 more than 64 bytes of empty lines before the request line"));
});

test("more header lines than the limit are refused with 431", () => {
  const lines = Array.from({ length: 4 }, (_, i) => `X-${i}: v\r\n`).join("");
  const request = Buffer.from(`GET / HTTP/1.1\r\n${lines}\r\n`, "latin1");
  expect(_readHead(request, 0, { ...LIMITS, maxHeaders: 4 })?.header("x-3")).toBe("v");
  let status = 0;
  try {
    _readHead(request, 0, { ...LIMITS, maxHeaders: 3 });
  } catch (error) {
    status = error instanceof _HttpError ? error.status : -1;
  }
  expect(status).toBe(431);
});

test("the path is read from the bytes: a prefix, a part, where a segment is, and never the query", () => {
  const bytes = (text: string) => Buffer.from(text, "latin1");
  const read = (line: string, into?: _HttpRequest) => _readHead(bytes(`${line}\r\nHost: h\r\n\r\n`), 0, LIMITS, into)!;
  const request = read("GET /v1/groups/g%20x/keys/a/b?k=/keys/z HTTP/1.1");
  expect(request.path).toBe("/v1/groups/g%20x/keys/a/b");
  expect(request.pathLength).toBe(request.path.length);
  expect(request.pathStartsWith(bytes("/v1/groups/"))).toBe(true);
  expect(request.pathStartsWith(bytes("/v1/groupz"))).toBe(false);
  expect(request.pathStartsWith(bytes("/v1/groups/g%20x/keys/a/b?"))).toBe(false);
  const keysAt = request.pathIndexOf(bytes("/keys/"), 11);
  expect(keysAt).toBe(request.path.indexOf("/keys/"));
  expect(request.pathIndexOf(bytes("/keys/"), keysAt + 1)).toBe(-1);
  expect(request.pathIndexOf(bytes("/b?"), 0)).toBe(-1);
  expect(request.pathPart(11, keysAt)).toBe("g%20x");
  expect(request.pathPart(keysAt + 6)).toBe("a/b");
  expect(request.pathEscaped).toBe(true);
  expect([bytes("g%20x"), bytes("g%20xyz"), bytes("g%20"), bytes("h%20x")].map((b) => request.pathPartIs(11, keysAt, b))).toEqual([true, true, false, false]);

  // The same object, filled in again: absolute form, then the targets that are not in the bytes.
  const absolute = read("GET http://h:1/v1/groups/g/keys/k?q HTTP/1.1", request);
  expect(absolute).toBe(request);
  expect([absolute.path, absolute.pathPart(11, 12), absolute.pathIndexOf(bytes("/keys/"), 0)]).toEqual(["/v1/groups/g/keys/k", "g", 12]);
  // A percent sign in the query only leaves the path without escapes.
  expect([absolute.pathEscaped, read("GET /a?x=%20 HTTP/1.1", request).pathEscaped, read("GET /a%20?x HTTP/1.1", request).pathEscaped]).toEqual([false, false, true]);
  const asterisk = read("OPTIONS * HTTP/1.1", request);
  expect([asterisk.path, asterisk.pathStartsWith(bytes("/")), asterisk.pathStartsWith(bytes("*"))]).toEqual(["*", false, true]);
  const root = read("GET http://h HTTP/1.1", request);
  expect([root.path, root.pathLength, root.pathStartsWith(bytes("/")), root.pathPart(0)]).toEqual(["/", 1, true, "/"]);
});

test("a chunked body is decoded whole whatever its chunk sizes, at a few objects however many chunks", () => {
  const sizes = [1, 4095, 1, 4096, 3, 10_000, 1, 1, 70_000, 7];
  const expected = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  for (let i = 0; i < expected.length; i++) expected[i] = (i * 7) & 255;
  let encoded = "";
  let at = 0;
  for (const size of sizes) {
    encoded += `${size.toString(16)}\r\n${Buffer.from(expected.subarray(at, at + size)).toString("latin1")}\r\n`;
    at += size;
  }
  const wire = Buffer.from(`${encoded}0\r\n\r\n`, "latin1");
  // Fed in pieces of every size from 1 byte up, keeping what a call leaves unused for the next, as the server does.
  for (const piece of [1, 2, 13, 4096, wire.length]) {
    const body = new _ChunkedBody(1 << 20);
    let pending = Buffer.alloc(0);
    for (let from = 0; from < wire.length; from += piece) {
      pending = Buffer.concat([pending, wire.subarray(from, from + piece)]);
      pending = pending.subarray(body.feed(pending, 0));
    }
    expect(body.done).toBe(true);
    expect(Buffer.compare(Buffer.from(body.body()), Buffer.from(expected))).toBe(0);
  }

  // 100,000 chunks of one byte each: kept as a list of views, they were 100,000 objects.
  const tiny = new _ChunkedBody(1 << 20);
  const oneByteChunks = Buffer.from("1\r\nx\r\n".repeat(100_000), "latin1");
  Bun.gc(true);
  const before = heapStats().objectCount;
  expect(tiny.feed(oneByteChunks, 0)).toBe(oneByteChunks.length);
  Bun.gc(true);
  expect(heapStats().objectCount - before).toBeLessThan(10_000);
  expect(tiny.feed(Buffer.from("0\r\n\r\n"), 0)).toBe(5);
  expect(Buffer.from(tiny.body()).toString()).toBe("x".repeat(100_000));
});

test("a chunked body holds memory for the bytes it received, not for the sizes it announced", () => {
  const bodies: _ChunkedBody[] = [];
  Bun.gc(true);
  const before = heapStats().extraMemorySize;
  // 32 bodies that each announce a chunk of almost 1 MiB and send one byte of it.
  for (let i = 0; i < 32; i++) {
    const body = new _ChunkedBody(1 << 20);
    body.feed(Buffer.from("fffff\r\nx", "latin1"), 0);
    bodies.push(body);
  }
  Bun.gc(true);
  expect(heapStats().extraMemorySize - before).toBeLessThan(8 << 20);
  expect(bodies.every((body) => !body.done)).toBe(true);
});
