/**
 * Random and mutated protobuf frames sent to every gRPC method of a running
 * gcache-node: the node stays up, answers every call with a status, never
 * with INTERNAL, keeps its memory bounded, and serves a normal get at the end.
 *
 * Frames are built from a seeded PRNG (GCACHE_FUZZ_SEED), so a failure
 * replays exactly. GCACHE_FUZZ_GRPC_FRAMES sets the frames per method.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Client, credentials, status, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { GCacheClient } from "../../src/client.ts";
import { CliNode } from "../_support/cli.ts";
import { bytes, text } from "../_support/cluster.ts";
import { RandomSource } from "../_support/random.ts";
import { rssOf, tally } from "../faults/_support.ts";

const SEED = Number(process.env.GCACHE_FUZZ_SEED ?? "20240601");
const FRAMES_PER_METHOD = Number(process.env.GCACHE_FUZZ_GRPC_FRAMES ?? "10000");
const IN_FLIGHT = 64;
/** Each call's deadline: an unanswered call is reported as DEADLINE_EXCEEDED after this long. */
const CALL_DEADLINE_MS = 3_000;
const CACHE_BYTES = 16 * 1024 * 1024;
const MAX_VALUE = 1024 * 1024;
const MAX_KEY = 4096;
/** Larger than the node accepts: 1 MiB value + 4096 key + 64 KiB framing. */
const OVER_MESSAGE_LIMIT = MAX_VALUE + MAX_KEY + 64 * 1024 + 1;
/** Growth of the node's resident memory allowed over the run: its caches plus allocator and runtime slack. */
const RSS_GROWTH_LIMIT = CACHE_BYTES + 4 * 1024 * 1024 + 200 * 1024 * 1024;

type Field =
  | { kind: "string" | "bytes"; no: number }
  | { kind: "int64" | "bool"; no: number }
  | { kind: "repeated-string"; no: number };

/** The request message of each method, as (field number, type). */
const METHODS: Record<string, Field[]> = {
  "/pb.GCache/Get": REQUEST(),
  "/pb.GCache/Set": REQUEST(),
  "/pb.GCache/Delete": REQUEST(),
  "/pb.GCache/Clear": [
    { kind: "string", no: 1 },
    { kind: "bool", no: 2 },
  ],
  "/pb.GCache/Invalidate": [
    { kind: "string", no: 1 },
    { kind: "string", no: 2 },
    { kind: "bool", no: 3 },
  ],
  // items: embedded SetItem messages, fuzzed as raw length-delimited bytes.
  "/pb.GCache/SetMany": [
    { kind: "string", no: 1 },
    { kind: "bytes", no: 2 },
  ],
  "/pb.GCache/InvalidateMany": [
    { kind: "string", no: 1 },
    { kind: "repeated-string", no: 2 },
  ],
  "/pb.GCache/DeleteMany": [
    { kind: "string", no: 1 },
    { kind: "repeated-string", no: 2 },
  ],
  "/pb.GCache/BatchGet": [
    { kind: "string", no: 1 },
    { kind: "repeated-string", no: 2 },
  ],
  // A stream (see STREAMS). Field 5 asks for later answers.
  "/pb.GCache/BatchGetStream": [
    { kind: "string", no: 1 },
    { kind: "repeated-string", no: 2 },
    { kind: "int64", no: 3 },
    { kind: "int64", no: 4 },
    { kind: "bool", no: 5 },
  ],
  // A stream too: id, timeout, group, kind, sets (embedded SetItem messages as raw bytes), keys.
  "/pb.GCache/WriteStream": [
    { kind: "int64", no: 1 },
    { kind: "int64", no: 2 },
    { kind: "string", no: 3 },
    { kind: "int64", no: 4 },
    { kind: "bytes", no: 5 },
    { kind: "repeated-string", no: 6 },
  ],
  "/grpc.health.v1.Health/Check": [{ kind: "string", no: 1 }],
};

function REQUEST(): Field[] {
  return [
    { kind: "string", no: 1 },
    { kind: "string", no: 2 },
    { kind: "bytes", no: 3 },
    { kind: "int64", no: 4 },
    { kind: "int64", no: 5 },
    { kind: "bool", no: 6 },
  ];
}

/** A minimal protobuf writer: enough to write valid, odd and invalid encodings on purpose. */
class Writer {
  private readonly parts: Uint8Array[] = [];
  varint(value: bigint): this {
    let v = BigInt.asUintN(64, value);
    const out: number[] = [];
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      out.push(byte);
    } while (v !== 0n);
    this.parts.push(Uint8Array.from(out));
    return this;
  }
  tag(no: number, wire: number): this {
    return this.varint((BigInt(no) << 3n) | BigInt(wire));
  }
  raw(data: Uint8Array): this {
    this.parts.push(data);
    return this;
  }
  lengthDelimited(no: number, data: Uint8Array, lieBy = 0): this {
    this.tag(no, 2);
    this.varint(BigInt(Math.max(0, data.byteLength + lieBy)));
    return this.raw(data);
  }
  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

class Frames extends RandomSource {
  randomBytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.int(256);
    return out;
  }

  /** A key: usually short and plain, sometimes empty, at or over the limit, or invalid UTF-8. */
  key(): Uint8Array {
    const r = this.random();
    if (r < 0.55) return bytes(`k-${this.int(2_000)}`);
    if (r < 0.65) return new Uint8Array(0);
    if (r < 0.7) return bytes("x".repeat(MAX_KEY));
    if (r < 0.75) return bytes("x".repeat(MAX_KEY + 1 + this.int(4)));
    if (r < 0.78) return bytes("é".repeat(MAX_KEY / 2 + this.int(3)));
    if (r < 0.88) return this.randomBytes(1 + this.int(24));
    if (r < 0.93) return Uint8Array.from([0xc3, 0x28, 0xff, 0xfe, 0xed, 0xa0, 0x80, 0xf4, 0x90, 0x80, 0x80]);
    return bytes(String.fromCodePoint(...Array.from({ length: 1 + this.int(8) }, () => this.int(0x10ffff - 0x800) + 0x800).filter((c) => c < 0xd800 || c > 0xdfff)));
  }

  group(): Uint8Array {
    const r = this.random();
    if (r < 0.6) return bytes("default");
    if (r < 0.7) return bytes("other");
    if (r < 0.8) return new Uint8Array(0);
    if (r < 0.9) return bytes(`nope-${this.int(100)}`);
    return this.randomBytes(this.int(40));
  }

  value(): Uint8Array {
    const r = this.random();
    if (r < 0.7) return this.randomBytes(this.int(64));
    if (r < 0.9) return new Uint8Array(this.int(8_192));
    if (r < 0.998) return new Uint8Array(0);
    // Rare: exactly the limit, or one byte over.
    return new Uint8Array(this.chance(0.5) ? MAX_VALUE : MAX_VALUE + 1);
  }

  int64(): bigint {
    return this.pick([
      0n,
      1n,
      BigInt(this.int(100_000)),
      -1n,
      -BigInt(this.int(1_000_000)),
      BigInt(Date.now() + this.int(60_000)),
      BigInt(Date.now() - this.int(60_000)),
      (1n << 53n) + 1n,
      (1n << 63n) - 1n,
      -(1n << 63n),
      BigInt(Number.MAX_SAFE_INTEGER),
    ]);
  }

  /** A well-formed message for `fields`, fields in random order, some left out, some repeated. */
  valid(fields: Field[]): Buffer {
    const w = new Writer();
    const order = [...fields].sort(() => this.random() - 0.5);
    for (const field of order) {
      if (this.chance(0.15)) continue;
      const times = this.chance(0.05) ? 2 : 1;
      for (let t = 0; t < times; t++) {
        switch (field.kind) {
          case "string":
            w.lengthDelimited(field.no, field.no === 1 ? this.group() : this.key());
            break;
          case "bytes":
            w.lengthDelimited(field.no, this.value());
            break;
          case "int64":
            w.tag(field.no, 0).varint(this.int64());
            break;
          case "bool":
            w.tag(field.no, 0).varint(this.pick([0n, 1n, 2n, 1n << 40n]));
            break;
          case "repeated-string": {
            const count = this.chance(0.01) ? 1_025 + this.int(10) : this.int(20);
            for (let i = 0; i < count; i++) w.lengthDelimited(field.no, this.key());
            break;
          }
        }
      }
    }
    return w.finish();
  }

  /** Tags with random field numbers and wire types (groups, fixed widths, lying lengths, overlong varints). */
  structuredGarbage(): Buffer {
    const w = new Writer();
    const count = 1 + this.int(8);
    for (let i = 0; i < count; i++) {
      const no = this.pick([0, 1, 2, 3, 4, 5, 6, 7, 15, 16, 2047, 536_870_911, this.int(100)]);
      const wire = this.int(8);
      w.tag(no, wire);
      switch (wire) {
        case 0:
          w.raw(this.chance(0.2) ? Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]) : new Uint8Array(0));
          w.varint(this.int64());
          break;
        case 1:
          w.raw(this.randomBytes(this.chance(0.8) ? 8 : this.int(8)));
          break;
        case 2:
          w.varint(BigInt(this.pick([0, 1, 10, 1_000, 2 ** 31, 2 ** 32 + 5, this.int(64)])));
          w.raw(this.randomBytes(this.int(32)));
          break;
        case 5:
          w.raw(this.randomBytes(this.chance(0.8) ? 4 : this.int(4)));
          break;
        default:
          // 3/4: start/end group (deprecated), 6/7: invalid wire types.
          break;
      }
    }
    return w.finish();
  }

  /** One of: a deep nest of start-group tags, a frame over the node's message limit. */
  extreme(): Buffer {
    if (this.chance(0.5)) {
      const depth = this.pick([100, 1_000, 10_000, 100_000]);
      return Buffer.concat([Buffer.alloc(depth, 0x0b), this.chance(0.5) ? Buffer.alloc(depth, 0x0c) : Buffer.alloc(0)]);
    }
    const w = new Writer();
    w.lengthDelimited(1, bytes("default")).lengthDelimited(2, bytes("huge")).lengthDelimited(3, new Uint8Array(OVER_MESSAGE_LIMIT));
    return w.finish();
  }

  mutate(frame: Buffer): Buffer {
    let out = Buffer.from(frame);
    const rounds = 1 + this.int(4);
    for (let i = 0; i < rounds; i++) {
      const at = out.length === 0 ? 0 : this.int(out.length);
      switch (this.int(7)) {
        case 0:
          if (out.length > 0) out[at] = out[at]! ^ (1 << this.int(8));
          break;
        case 1:
          if (out.length > 0) out[at] = this.int(256);
          break;
        case 2:
          out = out.subarray(0, at);
          break;
        case 3:
          out = Buffer.concat([out.subarray(0, at), this.randomBytes(1 + this.int(8)), out.subarray(at)]);
          break;
        case 4:
          out = Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + 1 + this.int(8)))]);
          break;
        case 5:
          out = Buffer.concat([out, out.subarray(at, at + this.int(32))]);
          break;
        case 6:
          out = Buffer.concat([out.subarray(0, at), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), out.subarray(at)]);
          break;
      }
    }
    return out;
  }

  next(fields: Field[]): Buffer {
    const r = this.random();
    if (r < 0.3) return this.valid(fields);
    if (r < 0.7) return this.mutate(this.valid(fields));
    if (r < 0.85) return Buffer.from(this.randomBytes(this.chance(0.9) ? this.int(64) : this.int(4_096)));
    if (r < 0.9995) return this.structuredGarbage();
    return this.extreme();
  }
}

const identity = (data: Buffer) => data;

/** Methods whose calls are streams: one request message, then a half-close; the answers (one or more) are read to the end. */
const STREAMS = new Set(["/pb.GCache/BatchGetStream", "/pb.GCache/WriteStream"]);

/** One call of `path` carrying `frame`; `done` gets null for OK, else the status. */
function send(client: Client, path: string, frame: Buffer, done: (error: StatusObject | null) => void): void {
  const deadline = Date.now() + CALL_DEADLINE_MS;
  if (!STREAMS.has(path)) {
    client.makeUnaryRequest(path, identity, identity, frame, { deadline }, (error: ServiceError | null) => done(error));
    return;
  }
  const call = client.makeBidiStreamRequest(path, identity, identity, { deadline });
  call.on("data", () => {});
  call.on("error", () => {});
  call.on("status", (final: StatusObject) => done(final.code === status.OK ? null : final));
  call.write(frame);
  call.end();
}

let node: CliNode;

beforeAll(async () => {
  node = await CliNode.start("fuzz-grpc", [
    "--port=0",
    "--node=F",
    `--cache-bytes=${CACHE_BYTES}`,
    "--group=other:4MiB",
  ]);
});

afterAll(async () => {
  await node?.stop();
});

test(
  `${FRAMES_PER_METHOD} random and mutated frames to each of ${Object.keys(METHODS).length} methods: a status for every call, no INTERNAL, bounded memory`,
  async () => {
    if (!(FRAMES_PER_METHOD >= 1 && FRAMES_PER_METHOD <= 10_000_000)) throw new Error("GCACHE_FUZZ_GRPC_FRAMES must be 1-10000000");
    const client = new Client(node.address, credentials.createInsecure(), {
      // Let this client send what the node must refuse.
      "grpc.max_send_message_length": -1,
      "grpc.max_receive_message_length": -1,
      "grpc-node.flow_control_window": 16 * 1024 * 1024,
    });
    const frames = new Frames(SEED);
    const counts: Record<string, Record<string, number>> = {};
    const examples: Record<string, { bytes: number; frame: string; details: string }[]> = {};
    const paths = Object.keys(METHODS);
    const total = FRAMES_PER_METHOD * paths.length;
    let sent = 0;
    let answered = 0;
    let rssBefore = Number.NaN;
    const started = performance.now();
    // The whole run must end: a call the node never answers fails the test at this time.
    const budgetMs = Math.max(50_000, total * 2);

    try {
      await new Promise<void>((resolve, reject) => {
        const watchdog = setTimeout(
          () => reject(new Error(`fuzz did not finish in ${budgetMs} ms: ${answered}/${total} answered, node exited: ${node.exited}`)),
          budgetMs,
        );
        const pump = () => {
          while (sent - answered < IN_FLIGHT && sent < total) {
            const path = paths[sent % paths.length]!;
            const frame = frames.next(METHODS[path]!);
            sent++;
            if (sent === 2_000) void rssOf(node.pid).then((rss) => (rssBefore = rss));
            // Over 64 KiB a request needs the server to open its HTTP/2 stream window: counted apart.
            const large = frame.byteLength + 5 > 65_535;
            send(client, path, frame, (error: StatusObject | null) => {
              answered++;
              const code = error === null ? "OK" : status[error.code] ?? String(error.code);
              const byMethod = (counts[large ? `${path} (over 64 KiB)` : path] ??= {});
              byMethod[code] = (byMethod[code] ?? 0) + 1;
              if (!["OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"].includes(code)) {
                const list = (examples[`${code} ${path}${large ? " (over 64 KiB)" : ""}`] ??= []);
                if (list.length < 3) list.push({ bytes: frame.byteLength, frame: frame.subarray(0, 40).toString("hex"), details: error?.details.slice(0, 160) ?? "" });
              }
              if (answered === total) {
                clearTimeout(watchdog);
                resolve();
              } else {
                pump();
              }
            });
          }
        };
        pump();
      });
    } finally {
      client.close();
    }
    const elapsed = performance.now() - started;
    const rssAfter = await rssOf(node.pid);

    // A normal client still gets normal answers.
    const normal = new GCacheClient(node.address);
    let finalGet: string;
    try {
      await normal.set("default", "after-fuzz", bytes("still here"), { timeoutMs: 2_000 });
      finalGet = text(await normal.get("default", "after-fuzz", { timeoutMs: 2_000 }));
    } finally {
      normal.close();
    }
    const stats = (await (await fetch(`http://${String(node.logs().find((l) => l.msg === "serving")?.httpAddress)}/v1/stats`)).json()) as {
      groups: Record<string, { caches: { main: { bytes: number }; hot: { bytes: number } } }>;
    };
    const cachedBytes = Object.values(stats.groups).reduce((sum, g) => sum + g.caches.main.bytes + g.caches.hot.bytes, 0);
    const logLevels = tally(node.logs(), (log) => log.level);

    console.info(
      JSON.stringify({
        fuzz: "gRPC",
        seed: SEED,
        framesPerMethod: FRAMES_PER_METHOD,
        total,
        seconds: +(elapsed / 1000).toFixed(1),
        perSecond: Math.round(total / (elapsed / 1000)),
        statuses: counts,
        unexpected: examples,
        rssBeforeMiB: +(rssBefore / 2 ** 20).toFixed(1),
        rssAfterMiB: +(rssAfter / 2 ** 20).toFixed(1),
        cachedBytes,
        nodeLogLevels: logLevels,
      }),
    );

    expect(node.exited).toBe(false);
    expect(answered).toBe(total);
    expect(examples).toEqual({});
    expect(finalGet).toBe("still here");
    expect(rssAfter - rssBefore).toBeLessThan(RSS_GROWTH_LIMIT);
  },
  // Generous: the watchdog inside fails first with a useful message.
  Math.max(120_000, FRAMES_PER_METHOD * Object.keys(METHODS).length * 3),
);

// The cache service answers undecodable requests with INVALID_ARGUMENT, not
// grpc-js's INTERNAL; the health service, served by the same node, must too.
test("an undecodable health check request is INVALID_ARGUMENT like every cache method, not INTERNAL", async () => {
  const client = new Client(node.address, credentials.createInsecure());
  const call = (path: string, frame: Buffer) =>
    new Promise<string>((resolve) =>
      client.makeUnaryRequest(path, identity, identity, frame, { deadline: Date.now() + 3_000 }, (error: ServiceError | null) =>
        resolve(error === null ? "OK" : status[error.code] ?? String(error.code)),
      ),
    );
  // Field 1 (a string) whose length runs past the end of the message.
  const garbage = Buffer.from([0x0a, 0x7f, 0x61]);
  try {
    const outcomes = { get: await call("/pb.GCache/Get", garbage), health: await call("/grpc.health.v1.Health/Check", garbage) };
    expect(outcomes).toEqual({ get: "INVALID_ARGUMENT", health: "INVALID_ARGUMENT" });
  } finally {
    client.close();
  }
});
