/**
 * The raw HTTP/2 client of the gRPC load generator (scripts/bench/_node/raw-grpc.ts)
 * against a real grpc-js server on loopback. bench:cluster's gRPC ratios come
 * from its counts, so it must tell answers from errors (it reads no headers:
 * an error is a response without a message), keep to flow control in both
 * directions (more bytes than either default window), and give up on calls
 * past their deadline instead of hanging.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, type AddressInfo, type Socket } from "node:net";
import { Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall, type ServiceDefinition } from "@grpc/grpc-js";
import { RawUnaryChannel } from "../../scripts/bench/_node/raw-grpc.ts";
import { codecs, GCACHE_SERVICE, type Request, type ResponseForGet } from "../../src/wire/messages.ts";

const LARGE = 10_240;
/** Makes a request long enough that a few thousand of them need more send window than a connection starts with. */
const PADDING = "x".repeat(50);
let server: Server;
let address: string;
/** Calls the server never answers, answered at the end so the server can stop. */
const held: sendUnaryData<ResponseForGet>[] = [];

function request(key: string): Uint8Array {
  return codecs.Request.encode({ group: "g", key, value: new Uint8Array(0), ttlMs: 0, expiresAtMs: 0, fromPeer: false });
}

function get(call: ServerUnaryCall<Request, ResponseForGet>, callback: sendUnaryData<ResponseForGet>): void {
  const key = call.request.key;
  if (key === "missing") callback({ code: status.NOT_FOUND, details: "no such key" });
  else if (key === "never") held.push(callback);
  else {
    // The value tells which key it answers: its length is the key's, repeated to the size asked for.
    const size = key.startsWith("large") ? LARGE : 100;
    callback(null, { value: new Uint8Array(size).fill(key.charCodeAt(key.length - 1)), expiresAtMs: 0, unreachablePeers: [] });
  }
}

/** The frames a client sent, after its 24-byte connection preface. */
function framesOf(bytes: Buffer): { type: number; streamId: number }[] {
  const frames: { type: number; streamId: number }[] = [];
  for (let at = 24; at + 9 <= bytes.length; at += 9 + bytes.readUIntBE(at, 3)) {
    frames.push({ type: bytes[at + 3]!, streamId: bytes.readUInt32BE(at + 5) & 0x7fffffff });
  }
  return frames;
}

function callOnce(channel: RawUnaryChannel, key: string): Promise<{ error: string | null; response?: Buffer }> {
  return new Promise((resolve) => channel.call(request(key), (error, response) => resolve({ error, response })));
}

beforeAll(async () => {
  server = new Server();
  server.addService({ Get: GCACHE_SERVICE.Get } as unknown as ServiceDefinition, { Get: get });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  address = `127.0.0.1:${port}`;
});

afterAll(async () => {
  for (const callback of held) callback({ code: status.CANCELLED, details: "test over" });
  server.forceShutdown();
});

describe("raw gRPC unary client", () => {
  test("an answer comes back as the message the server sent, per call", async () => {
    const channel = await RawUnaryChannel.connect({ address, path: GCACHE_SERVICE.Get.path, timeoutMs: 5_000 });
    try {
      const answers = await Promise.all(["a1", "b2", "large3"].map((key) => callOnce(channel, key)));
      expect(answers.map((a) => a.error)).toEqual([null, null, null]);
      const values = answers.map((a) => codecs.ResponseForGet.decode(a.response!).value);
      expect(values.map((v) => [v.byteLength, v[0]])).toEqual([
        [100, "1".charCodeAt(0)],
        [100, "2".charCodeAt(0)],
        [LARGE, "3".charCodeAt(0)],
      ]);
    } finally {
      channel.close();
    }
  });

  test("a gRPC error status (a response without a message) fails the call, and the channel goes on", async () => {
    const channel = await RawUnaryChannel.connect({ address, path: GCACHE_SERVICE.Get.path, timeoutMs: 5_000 });
    try {
      const failed = await callOnce(channel, "missing");
      expect(failed.error).toContain("no message before the trailers");
      expect(failed.response).toBeUndefined();
      const after = await callOnce(channel, "a1");
      expect(after.error).toBeNull();
    } finally {
      channel.close();
    }
  });

  test("keeps to flow control both ways: 40 MB of answers and 280 KB of requests on one connection", async () => {
    const channel = await RawUnaryChannel.connect({ address, path: GCACHE_SERVICE.Get.path, timeoutMs: 3_000 });
    try {
      // 4,000 answers of 10 KB pass the 16 MiB receive window twice over; 4,000 requests of ~70 bytes
      // each pass the 64 KiB send window the server starts us with four times. 64 in flight, as the benchmark runs;
      // a stall ends in deadline errors, and the first error stops new calls.
      let started = 0;
      let ok = 0;
      let wrongSize = 0;
      const errors: string[] = [];
      await new Promise<void>((resolve) => {
        const next = () => {
          if (started === 4_000 || errors.length > 0) {
            if (ok + errors.length === started) resolve();
            return;
          }
          started++;
          channel.call(request(`large-${PADDING}${started % 10}`), (error, response) => {
            if (error !== null) errors.push(error);
            else {
              ok++;
              if (codecs.ResponseForGet.decode(response!).value.byteLength !== LARGE) wrongSize++;
            }
            next();
          });
        };
        for (let i = 0; i < 64; i++) next();
      });
      expect(errors.slice(0, 1)).toEqual([]);
      expect(ok).toBe(4_000);
      expect(wrongSize).toBe(0);
      expect(channel.inFlight).toBe(0);
    } finally {
      channel.close();
    }
  }, 30_000);

  test("what the socket does not take at once goes out when it drains, in order", async () => {
    // A server that opens every window wide, then stops reading until the client has written more than the socket holds.
    const CALLS = 64;
    const MESSAGE = 256 * 1024;
    const chunks: Buffer[] = [];
    let connection: Socket | undefined;
    const server = createServer((socket) => {
      connection = socket;
      const windowUpdate = Buffer.from([0, 0, 4, 8, 0, 0, 0, 0, 0, 0x40, 0, 0, 0]); // connection window + 2^30
      socket.write(Buffer.concat([Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]), windowUpdate]));
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      socket.pause();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const channel = await RawUnaryChannel.connect({ address: `127.0.0.1:${port}`, path: GCACHE_SERVICE.Get.path, timeoutMs: 10_000 });
    try {
      await Bun.sleep(20);
      for (let i = 0; i < CALLS; i++) channel.call(new Uint8Array(MESSAGE).fill(i), () => {});
      await Bun.sleep(50);
      connection!.resume();
      const dataFrames = () => framesOf(Buffer.concat(chunks)).filter((f) => f.type === 0);
      const until = performance.now() + 3_000;
      while (dataFrames().length < CALLS && performance.now() < until) await Bun.sleep(10);
      // Every request's DATA frame arrived whole, each on its own stream, in the order the calls were made.
      expect(dataFrames().map((f) => f.streamId)).toEqual(Array.from({ length: CALLS }, (_, i) => 1 + 2 * i));
    } finally {
      channel.close();
      connection?.destroy();
      server.close();
    }
  });

  test("a call past its deadline fails on time, and its stream is reset", async () => {
    // A server that completes the handshake and then answers nothing, not even by its own deadline as grpc-js does.
    const received: Buffer[] = [];
    const silent = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(socket) {
          socket.write(new Uint8Array([0, 0, 0, 4, 0, 0, 0, 0, 0])); // an empty SETTINGS frame
        },
        data(_socket, chunk) {
          received.push(Buffer.from(chunk));
        },
      },
    });
    const channel = await RawUnaryChannel.connect({ address: `127.0.0.1:${silent.port}`, path: GCACHE_SERVICE.Get.path, timeoutMs: 300 });
    try {
      const start = performance.now();
      const late = await callOnce(channel, "never");
      const elapsed = performance.now() - start;
      expect(late.error).toBe("deadline of 300 ms exceeded");
      expect(elapsed).toBeGreaterThanOrEqual(290);
      expect(elapsed).toBeLessThan(2_000);
      expect(channel.inFlight).toBe(0);
      const resets = () => framesOf(Buffer.concat(received)).filter((f) => f.type === 3 && f.streamId === 1).length;
      const until = performance.now() + 2_000;
      while (resets() === 0 && performance.now() < until) await Bun.sleep(5);
      expect(resets()).toBe(1);
    } finally {
      channel.close();
      silent.stop(true);
    }
  });

  test("against grpc-js, a call past its deadline fails within it", async () => {
    const channel = await RawUnaryChannel.connect({ address, path: GCACHE_SERVICE.Get.path, timeoutMs: 300 });
    try {
      const start = performance.now();
      const late = await callOnce(channel, "never");
      expect(late.error).not.toBeNull();
      expect(performance.now() - start).toBeLessThan(2_000);
      expect((await callOnce(channel, "b2")).error).toBeNull();
    } finally {
      channel.close();
    }
  });

  test("a closed connection fails the calls in flight and every later one", async () => {
    const channel = await RawUnaryChannel.connect({ address, path: GCACHE_SERVICE.Get.path, timeoutMs: 5_000 });
    const pending = callOnce(channel, "never");
    channel.close();
    expect((await pending).error).toBe("channel closed");
    expect((await callOnce(channel, "a1")).error).toBe("channel closed");
  });

  test("on a failed channel, a loop that starts a call each time one fails neither recurses nor starves the timers", async () => {
    const channel = await RawUnaryChannel.connect({ address, path: GCACHE_SERVICE.Get.path, timeoutMs: 5_000 });
    channel.close();
    let failures = 0;
    let stop = false;
    const loop = () => {
      if (!stop) channel.call(request("a1"), () => (failures++, loop()));
    };
    for (let i = 0; i < 64; i++) loop();
    await new Promise((resolve) => setTimeout(resolve, 50));
    stop = true;
    expect(failures).toBeGreaterThan(64);
  });

  test("connecting to a port where no HTTP/2 server answers fails clearly", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      await expect(RawUnaryChannel.connect({ address: `127.0.0.1:${silent.port}`, path: GCACHE_SERVICE.Get.path, timeoutMs: 300 })).rejects.toThrow(
        /no HTTP\/2 SETTINGS/,
      );
    } finally {
      silent.stop(true);
    }
  });
});
