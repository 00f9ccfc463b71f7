/**
 * Random bytes, random frames and mutated messages sent to a running
 * gcache-node's peer link: every connection ends (with the node's ERROR or
 * END frame, or the answers it asked for) within a deadline, the node never
 * sends an INTERNAL status or a frame type it does not define, and it serves
 * a normal get at the end.
 *
 * Seeded (GCACHE_FUZZ_SEED); GCACHE_FUZZ_LINK_CONNECTIONS sets how many
 * connections are tried.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { status } from "@grpc/grpc-js";
import { GCacheClient } from "../../src/client.ts";
import { _Connection } from "../../src/wire/connection.ts";
import { _frame, _FrameReader, _helloPayload, _parseError, LinkFrame, LinkStream } from "../../src/wire/link.ts";
import { codecs, GCACHE_SERVICE, WriteKind } from "../../src/wire/messages.ts";
import { CliNode } from "../_support/cli.ts";
import { bytes, text } from "../_support/cluster.ts";
import { RandomSource } from "../_support/random.ts";

const SEED = Number(process.env.GCACHE_FUZZ_SEED ?? "20240601");
const CONNECTIONS = Number(process.env.GCACHE_FUZZ_LINK_CONNECTIONS ?? "600");
const IN_FLIGHT = 16;
/** A connection still open this long after its last frame was sent fails the test. */
const CLOSE_DEADLINE_MS = 5_000;

let node: CliNode;

beforeAll(async () => {
  node = await CliNode.start("fuzz-link", ["--port=0", "--node=F", "--cache-bytes=16MiB"]);
});

afterAll(async () => {
  await node?.stop();
});


class Fuzz extends RandomSource {
  bytes(max: number): Uint8Array {
    const out = new Uint8Array(this.int(max + 1));
    for (let i = 0; i < out.length; i++) out[i] = this.int(256);
    return out;
  }

  /** A valid message of the stream, then maybe flipped bytes or a cut end. */
  message(stream: LinkStream): Uint8Array {
    const keys = Array.from({ length: this.int(5) }, () => (this.chance(0.1) ? "" : `k${this.int(50)}`));
    const encoded =
      stream === LinkStream.BATCH_GET
        ? codecs.BatchGetRequest.encode({ group: this.pick(["default", "nope", ""]), keys, id: this.int(1000), timeoutMs: this.int(3000), deferLoads: this.chance(0.5) })
        : codecs.WriteBatch.encode({
            group: this.pick(["default", "nope"]),
            kind: this.pick([WriteKind.SET, WriteKind.DELETE, WriteKind.INVALIDATE, 7 as WriteKind]),
            sets: keys.map((key) => ({ key, value: this.bytes(64), expiresAtMs: this.chance(0.2) ? Date.now() - 1 : 0 })),
            keys,
            id: this.int(1000),
            timeoutMs: this.int(3000),
          });
    const out = new Uint8Array(encoded);
    if (this.chance(0.5)) for (let i = 0; i < 1 + this.int(4); i++) if (out.length > 0) out[this.int(out.length)] = this.int(256);
    return this.chance(0.2) ? out.subarray(0, this.int(out.length + 1)) : out;
  }
}

interface Outcome {
  closed: boolean;
  types: number[];
  errors: { code: number; details: string }[];
}

async function oneConnection(port: number, ticket: Uint8Array, fuzz: Fuzz): Promise<Outcome> {
  const outcome: Outcome = { closed: false, types: [], errors: [] };
  const reader = new _FrameReader(64 << 20, (type, payload) => {
    outcome.types.push(type);
    if (type === LinkFrame.ERROR) outcome.errors.push(_parseError(payload));
  });
  let closedNow: () => void = () => {};
  const closed = new Promise<void>((resolve) => (closedNow = resolve));
  const socket = await Bun.connect<undefined>({
    hostname: "127.0.0.1",
    port,
    socket: {
      data: (_socket, chunk) => void reader.push(chunk),
      close: () => {
        outcome.closed = true;
        closedNow();
      },
      error: () => closedNow(),
    },
  });
  const stream = fuzz.pick([LinkStream.BATCH_GET, LinkStream.WRITE]);
  const out: Buffer[] = [];
  switch (fuzz.int(4)) {
    case 0: // bytes that are no frame at all, or a frame header cut short
      out.push(Buffer.from(fuzz.bytes(2000)));
      break;
    case 1: // a HELLO with a wrong ticket, version or stream
      out.push(_frame(LinkFrame.HELLO, fuzz.chance(0.5) ? _helloPayload(stream, fuzz.bytes(20)) : fuzz.bytes(20)));
      break;
    default: // the right HELLO, then frames of any type: random payloads and mutated messages
      out.push(_frame(LinkFrame.HELLO, _helloPayload(stream, ticket)));
      for (let i = 0; i < 1 + fuzz.int(6); i++) {
        const type = fuzz.chance(0.7) ? LinkFrame.MESSAGE : fuzz.int(8);
        out.push(_frame(type, type === LinkFrame.MESSAGE && fuzz.chance(0.7) ? fuzz.message(stream) : fuzz.bytes(300)));
      }
  }
  // Whatever the node has not refused by now ends cleanly once it has answered.
  out.push(_frame(LinkFrame.END, new Uint8Array(0)));
  socket.write(Buffer.concat(out));
  const timer = setTimeout(closedNow, CLOSE_DEADLINE_MS);
  await closed;
  clearTimeout(timer);
  socket.terminate();
  return outcome;
}

test(`${CONNECTIONS} connections of random bytes, frames and mutated messages to the peer link: each ends, no INTERNAL, the node serves on`, async () => {
  if (!(CONNECTIONS >= 1 && CONNECTIONS <= 1_000_000)) throw new Error("GCACHE_FUZZ_LINK_CONNECTIONS must be 1-1000000");
  const connection = new _Connection(node.address);
  const link = await connection.unary(GCACHE_SERVICE.PeerLink, {}, { deadline: Date.now() + 5_000 });
  connection.close();
  expect(link.port).toBeGreaterThan(0);
  const fuzz = new Fuzz(SEED);
  const outcomes: Outcome[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < CONNECTIONS) {
        next++;
        outcomes.push(await oneConnection(link.port, link.ticket, fuzz));
      }
    }),
  );
  const stillOpen = outcomes.filter((o) => !o.closed).length;
  const unknownTypes = outcomes.flatMap((o) => o.types).filter((type) => ![LinkFrame.HELLO, LinkFrame.MESSAGE, LinkFrame.END, LinkFrame.ERROR].includes(type as 0));
  const codes = new Map<number, number>();
  for (const error of outcomes.flatMap((o) => o.errors)) codes.set(error.code, (codes.get(error.code) ?? 0) + 1);
  console.log(JSON.stringify({ connections: outcomes.length, stillOpen, errorsByCode: Object.fromEntries(codes), answered: outcomes.filter((o) => o.types.includes(LinkFrame.MESSAGE)).length }));

  expect(node.exited).toBe(false);
  expect(stillOpen).toBe(0);
  expect(unknownTypes).toEqual([]);
  expect(codes.get(status.INTERNAL) ?? 0).toBe(0);
  // Refusals happened, and so did answers: the fuzz reached both sides of the check.
  expect(codes.get(status.INVALID_ARGUMENT) ?? 0).toBeGreaterThan(0);
  expect(codes.get(status.UNAUTHENTICATED) ?? 0).toBeGreaterThan(0);
  expect(outcomes.some((o) => o.types.includes(LinkFrame.MESSAGE))).toBe(true);

  const client = new GCacheClient(node.address);
  try {
    await client.set("default", "after-fuzz", bytes("still here"));
    expect(text(await client.get("default", "after-fuzz"))).toBe("still here");
  } finally {
    client.close();
  }
}, 120_000);
