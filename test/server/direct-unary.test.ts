/**
 * A unary method answered on the HTTP/2 stream directly (src/server/direct-unary.ts)
 * must answer as grpc-js does. Each case is sent twice over real HTTP/2 on
 * loopback: once as a plain call, which the direct path takes, and once marked
 * `grpc-encoding: gzip` (its message left uncompressed, which the flag byte
 * says), which goes to grpc-js with the same handler. The answers must match.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http2 from "node:http2";
import {
  Client,
  credentials,
  Metadata,
  ServerCredentials,
  status,
  type MethodDefinition,
  type Server,
  type ServerUnaryCall,
  type ServiceDefinition,
  type ServiceError,
  type sendUnaryData,
} from "@grpc/grpc-js";
import { GCacheError } from "../../src/errors.ts";
import { _createGrpcServer } from "../../src/server/grpc-server.ts";
import type { _DirectUnary } from "../../src/server/direct-unary.ts";
import { codecs, GCACHE_SERVICE, type Request, type ResponseForGet } from "../../src/wire/messages.ts";
import { toStatus } from "../../src/wire/status.ts";

const MAX_RECEIVE = 1024;
const MAX_SEND = 2048;
const GET = GCACHE_SERVICE.Get as unknown as MethodDefinition<unknown, unknown>;
const CALL_TIMEOUT_MS = 5_000;

type Handler = (call: ServerUnaryCall<Request, ResponseForGet>, callback: sendUnaryData<ResponseForGet>) => void;

/** What the next calls do; set per test. */
let behaviour: Handler = (call, callback) => callback(null, response(`value of ${call.request.key}`));
/** Which path served each call, in order. */
const servedBy: string[] = [];

function response(text: string): ResponseForGet {
  return { value: new TextEncoder().encode(text), expiresAtMs: 0, unreachablePeers: [] };
}

function handlerFor(path: string): Handler {
  return (call, callback) => {
    servedBy.push(path);
    behaviour(call, callback);
  };
}

let server: Server;
let address: string;
let client: Client;

beforeAll(async () => {
  const direct: _DirectUnary = { definition: GET, handler: handlerFor("direct") as unknown as _DirectUnary["handler"] };
  server = _createGrpcServer({ "grpc.max_receive_message_length": MAX_RECEIVE, "grpc.max_send_message_length": MAX_SEND }, [direct]);
  server.addService({ Get: GET } as unknown as ServiceDefinition, { Get: handlerFor("grpc-js") } as never);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  address = `127.0.0.1:${port}`;
  client = new Client(address, credentials.createInsecure());
});

afterAll(() => {
  client.close();
  server.forceShutdown();
});

function call(request: Partial<Request>, options: { metadata?: Metadata; deadline?: number } = {}, on: Client = client): Promise<ResponseForGet> {
  return new Promise((resolve, reject) =>
    on.makeUnaryRequest(
      GET.path,
      (message: Request) => codecs.Request.encode(message),
      (bytes: Buffer) => codecs.ResponseForGet.decode(bytes),
      { group: "g", key: "k", value: new Uint8Array(0), ttlMs: 0, expiresAtMs: 0, fromPeer: false, ...request },
      options.metadata ?? new Metadata(),
      { deadline: options.deadline ?? Date.now() + CALL_TIMEOUT_MS },
      (error: ServiceError | null, value?: ResponseForGet) => (error ? reject(error) : resolve(value!)),
    ),
  );
}

interface RawAnswer {
  headers: Record<string, unknown>;
  trailers: Record<string, unknown>;
  data: Buffer;
  /** grpc-status, from the trailers or, for a trailers-only answer, the headers. */
  status: number;
  message: string;
}

/** One call over a bare HTTP/2 client: whatever headers and body the test gives. */
function rawCall(extraHeaders: Record<string, string>, body: Buffer): Promise<RawAnswer> {
  const session = http2.connect(`http://${address}`);
  return new Promise<RawAnswer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no answer within 5 s")), CALL_TIMEOUT_MS);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": GET.path, "content-type": "application/grpc", te: "trailers", ...extraHeaders });
    let headers: Record<string, unknown> = {};
    let trailers: Record<string, unknown> = {};
    const chunks: Buffer[] = [];
    stream.on("response", (received) => (headers = { ...received }));
    stream.on("trailers", (received) => (trailers = { ...received }));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", reject);
    stream.on("close", () => {
      clearTimeout(timer);
      const statusText = trailers["grpc-status"] ?? headers["grpc-status"];
      const message = String(trailers["grpc-message"] ?? headers["grpc-message"] ?? "");
      resolve({ headers, trailers, data: Buffer.concat(chunks), status: Number(statusText), message: decodeURIComponent(message) });
    });
    stream.end(body);
  }).finally(() => session.close());
}

/** The same raw call as the direct path and as grpc-js take it. */
async function bothWays(extraHeaders: Record<string, string>, body: Buffer): Promise<{ direct: RawAnswer; grpcJs: RawAnswer }> {
  servedBy.length = 0;
  const direct = await rawCall(extraHeaders, body);
  const grpcJs = await rawCall({ ...extraHeaders, "grpc-encoding": "gzip" }, body);
  return { direct, grpcJs };
}

function framed(message: Uint8Array, flag = 0): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame[0] = flag;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

const REQUEST = framed(codecs.Request.encode({ group: "g", key: "k1", value: new Uint8Array(0), ttlMs: 0, expiresAtMs: 0, fromPeer: false }));

/** Headers that differ from call to call. */
function stable(headers: Record<string, unknown>): Record<string, unknown> {
  const { date: _date, ...rest } = headers;
  return rest;
}

function expectSameAnswer({ direct, grpcJs }: { direct: RawAnswer; grpcJs: RawAnswer }): void {
  expect(stable(direct.headers)).toEqual(stable(grpcJs.headers));
  expect(direct.trailers).toEqual(grpcJs.trailers);
  expect(direct.data).toEqual(grpcJs.data);
}

describe("a unary method answered on the stream", () => {
  test("a plain call takes the direct path, and its answer is grpc-js's, byte for byte", async () => {
    behaviour = (call, callback) => callback(null, response(`value of ${call.request.key}`));
    const answers = await bothWays({}, REQUEST);
    expect(servedBy).toEqual(["direct", "grpc-js"]);
    expect(answers.direct.status).toBe(status.OK);
    expect(codecs.ResponseForGet.decode(answers.direct.data.subarray(5)).value).toEqual(new TextEncoder().encode("value of k1"));
    expectSameAnswer(answers);
  });

  test("a grpc-js client gets the value, and a compressed call still reaches grpc-js", async () => {
    behaviour = (call, callback) => callback(null, response(`value of ${call.request.key}`));
    servedBy.length = 0;
    const value = await call({ key: "plain" });
    expect(new TextDecoder().decode(value.value)).toBe("value of plain");
    const gzipClient = new Client(address, credentials.createInsecure(), { "grpc.default_compression_algorithm": 2 });
    try {
      const compressed = await call({ key: "zipped" }, {}, gzipClient);
      expect(new TextDecoder().decode(compressed.value)).toBe("value of zipped");
    } finally {
      gzipClient.close();
    }
    expect(servedBy).toEqual(["direct", "grpc-js"]);
  });

  test("a handler's error arrives with its status, message and metadata, as grpc-js sends them", async () => {
    behaviour = (_call, callback) => callback(toStatus(new GCacheError("ERR_UNKNOWN_GROUP", 'unknown group "gä 100%"')));
    const answers = await bothWays({}, REQUEST);
    expect(servedBy).toEqual(["direct", "grpc-js"]);
    expect(answers.direct.status).toBe(status.NOT_FOUND);
    expect(answers.direct.message).toBe('unknown group "gä 100%"');
    expect(answers.direct.headers["gcache-code"]).toBe("ERR_UNKNOWN_GROUP");
    expectSameAnswer(answers);
    const error = (await call({}).catch((caught: unknown) => caught)) as ServiceError;
    expect(error.code).toBe(status.NOT_FOUND);
    expect(error.details).toBe('unknown group "gä 100%"');
    expect(error.metadata.get("gcache-code")).toEqual(["ERR_UNKNOWN_GROUP"]);
  });

  test("an answer larger than the send limit is RESOURCE_EXHAUSTED", async () => {
    behaviour = (_call, callback) => callback(null, response("x".repeat(MAX_SEND + 1)));
    const answers = await bothWays({}, REQUEST);
    expect(answers.direct.status).toBe(status.RESOURCE_EXHAUSTED);
    expect(answers.grpcJs.status).toBe(status.RESOURCE_EXHAUSTED);
    expect(answers.direct.data.length).toBe(0);
  });

  const badRequests: [string, Record<string, string>, Buffer, status][] = [
    ["no message", {}, Buffer.alloc(0), status.UNIMPLEMENTED],
    ["half a frame header", {}, Buffer.from([0, 0, 0]), status.UNIMPLEMENTED],
    ["a message cut short", {}, REQUEST.subarray(0, REQUEST.length - 1), status.UNIMPLEMENTED],
    ["two messages", {}, Buffer.concat([REQUEST, REQUEST]), status.UNIMPLEMENTED],
    ["a message above the receive limit", {}, framed(new Uint8Array(MAX_RECEIVE + 1)), status.RESOURCE_EXHAUSTED],
    ["bytes that are not a Request", {}, framed(Uint8Array.from([0xff, 0xff, 0xff])), status.INTERNAL],
    ["a grpc-timeout that is not one", { "grpc-timeout": "soon" }, REQUEST, status.INTERNAL],
  ];
  for (const [what, headers, body, expected] of badRequests) {
    test(`${what}: ${status[expected]}, as from grpc-js, and the handler never runs`, async () => {
      behaviour = (_call, callback) => callback(null, response("should not be answered"));
      const answers = await bothWays(headers, body);
      expect(answers.direct.status).toBe(expected);
      expect(answers.grpcJs.status).toBe(expected);
      expect(servedBy).toEqual([]);
    });
  }

  test("a request whose header declares more than the limit is refused before the rest arrives", async () => {
    behaviour = (_call, callback) => callback(null, response("should not be answered"));
    servedBy.length = 0;
    for (const headers of [{}, { "grpc-encoding": "gzip" }]) {
      const session = http2.connect(`http://${address}`);
      try {
        const stream = session.request({ ":method": "POST", ":path": GET.path, "content-type": "application/grpc", te: "trailers", ...headers });
        stream.on("error", () => {});
        const answered = new Promise<Record<string, unknown>>((resolve) => stream.on("response", (received) => resolve({ ...received })));
        // The header and the first bytes of a message of 64 KiB; the stream stays open.
        stream.write(framed(new Uint8Array(64 * 1024)).subarray(0, 100));
        const answer = await Promise.race([answered, Bun.sleep(CALL_TIMEOUT_MS).then(() => null)]);
        expect(answer).not.toBeNull();
        expect(Number(answer!["grpc-status"])).toBe(status.RESOURCE_EXHAUSTED);
        expect(decodeURIComponent(String(answer!["grpc-message"]))).toBe(`Received message larger than max (${64 * 1024} vs ${MAX_RECEIVE})`);
      } finally {
        session.destroy();
      }
    }
    expect(servedBy).toEqual([]);
  });

  test("a request stream that goes on past the limit is cut off, not held", async () => {
    behaviour = (_call, callback) => callback(null, response("should not be answered"));
    servedBy.length = 0;
    // A message within the limit followed by more bytes than the limit allows.
    const answer = await rawCall({}, Buffer.concat([REQUEST, Buffer.alloc(MAX_RECEIVE + 10)]));
    expect(answer.status).toBe(status.RESOURCE_EXHAUSTED);
    expect(servedBy).toEqual([]);
  });

  test("the handler sees the call's deadline and metadata, without the transport's headers", async () => {
    let seen: { deadline: number; auth: unknown[]; timeout: unknown[]; contentType: unknown[] } | null = null;
    behaviour = (call, callback) => {
      seen = {
        deadline: call.getDeadline() as number,
        auth: call.metadata.get("authorization"),
        timeout: call.metadata.get("grpc-timeout"),
        contentType: call.metadata.get("content-type"),
      };
      callback(null, response("ok"));
    };
    const metadata = new Metadata();
    metadata.set("authorization", "Bearer secret");
    const before = Date.now();
    await call({}, { metadata, deadline: before + 3_000 });
    expect(seen).not.toBeNull();
    expect(seen!.auth).toEqual(["Bearer secret"]);
    expect(seen!.timeout).toEqual([]);
    expect(seen!.contentType).toEqual([]);
    expect(seen!.deadline).toBeGreaterThan(before + 2_000);
    expect(seen!.deadline).toBeLessThanOrEqual(Date.now() + 3_000);
    behaviour = (call, callback) => {
      seen = { deadline: call.getDeadline() as number, auth: [], timeout: [], contentType: [] };
      callback(null, response("ok"));
    };
    await rawCall({}, REQUEST);
    expect(seen!.deadline).toBe(Infinity);
  });

  test("a caller that gives up cancels the call; one that was answered is not cancelled", async () => {
    let cancelled = false;
    let onCancelled: () => void = () => {};
    const cancelledNow = new Promise<void>((resolve) => (onCancelled = resolve));
    let started: () => void = () => {};
    const handlerStarted = new Promise<void>((resolve) => (started = resolve));
    behaviour = (call) => {
      call.once("cancelled", () => {
        cancelled = true;
        onCancelled();
      });
      started();
    };
    const session = http2.connect(`http://${address}`);
    try {
      const stream = session.request({ ":method": "POST", ":path": GET.path, "content-type": "application/grpc", te: "trailers" });
      stream.on("error", () => {});
      stream.end(REQUEST);
      await handlerStarted;
      stream.close(http2.constants.NGHTTP2_CANCEL);
      await Promise.race([cancelledNow, Bun.sleep(CALL_TIMEOUT_MS).then(() => Promise.reject(new Error("not cancelled within 5 s")))]);
      expect(cancelled).toBe(true);
    } finally {
      session.close();
    }

    let lateCancel = false;
    behaviour = (call, callback) => {
      call.once("cancelled", () => (lateCancel = true));
      callback(null, response("answered"));
    };
    const answer = await rawCall({}, REQUEST);
    expect(answer.status).toBe(status.OK);
    // The server has closed the first stream by the time it answers a second call on a new session.
    behaviour = (_call, callback) => callback(null, response("second"));
    await rawCall({}, REQUEST);
    expect(lateCancel).toBe(false);
  });

  test("a request that is not gRPC goes to grpc-js, which refuses it", async () => {
    servedBy.length = 0;
    const answer = await rawCall({ "content-type": "application/json" }, Buffer.from("{}"));
    expect(answer.headers[":status"]).toBe(415);
    expect(servedBy).toEqual([]);
  });
});
