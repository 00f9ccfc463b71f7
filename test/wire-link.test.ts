import { describe, expect, test } from "bun:test";
import { _frame, _FrameReader, _messageFrame, LINK_HEADER_BYTES, LinkFrame } from "../src/wire/link.ts";
import { codecs } from "../src/wire/messages.ts";
import { _SocketWriter } from "../src/wire/socket-writer.ts";
import { seededRandom } from "./_support/random.ts";


describe("peer link frames", () => {
  test("frames cut at any byte boundaries come out whole and in order", () => {
    const random = seededRandom(7);
    const sent = Array.from({ length: 200 }, (_, i) => {
      const size = [0, 1, 4, 5, 100, 70_000][i % 6]!;
      const payload = Buffer.alloc(size);
      for (let j = 0; j < size; j++) payload[j] = (i + j) & 0xff;
      return { type: i % 4, payload };
    });
    const stream = Buffer.concat(sent.map((f) => _frame(f.type, f.payload)));
    for (let trial = 0; trial < 20; trial++) {
      const got: { type: number; payload: Buffer }[] = [];
      const reader = new _FrameReader(1 << 20, (type, payload) => got.push({ type, payload: Buffer.from(payload) }));
      const problems: string[] = [];
      let at = 0;
      while (at < stream.byteLength) {
        const size = 1 + Math.floor(random() * (trial % 2 === 0 ? 7 : 90_000));
        const problem = reader.push(stream.subarray(at, at + size));
        if (problem !== null) problems.push(problem);
        at += size;
      }
      expect(problems).toEqual([]);
      expect(got.length).toBe(sent.length);
      got.forEach((f, i) => {
        expect(f.type).toBe(sent[i]!.type);
        expect(Buffer.compare(f.payload, sent[i]!.payload)).toBe(0);
      });
    }
  });

  test("a frame longer than the limit, or of length 0, is refused with what was wrong", () => {
    const reader = new _FrameReader(1000, () => {
      throw new Error("no frame expected");
    });
    const head = Buffer.alloc(5);
    head.writeUInt32BE(1002, 0);
    expect(reader.push(head)).toBe("peer link: a frame of 1002 bytes (at most 1000)");
    const empty = new _FrameReader(1000, () => {});
    expect(empty.push(Buffer.alloc(5))).toBe("peer link: a frame of 0 bytes (at most 1000)");
  });
});

describe("peer link messages", () => {
  test("a message encoded with the header's room becomes a frame in place, and reads back whole", () => {
    const request = { group: "g", keys: ["a", "bb", "ccc"], id: 7, timeoutMs: 250, deferLoads: true };
    const frame = _messageFrame(codecs.BatchGetRequest.encodeTransient(request, LINK_HEADER_BYTES));
    expect(frame.byteLength).toBe(LINK_HEADER_BYTES + codecs.BatchGetRequest.encode(request).byteLength);
    const got: { type: number; payload: Buffer }[] = [];
    expect(new _FrameReader(1 << 20, (type, payload) => got.push({ type, payload })).push(frame)).toBeNull();
    expect(got.map((f) => f.type)).toEqual([LinkFrame.MESSAGE]);
    expect(codecs.BatchGetRequest.decode(got[0]!.payload)).toEqual(request);
  });
});

describe("socket writer", () => {
  /** A socket that takes at most `take` bytes a write (-1 once closed), recording what it took. */
  function socket(take: number) {
    const taken: number[] = [];
    const fake = {
      take,
      closed: false,
      write(data: Uint8Array, offset = 0, length = data.byteLength - offset): number {
        if (fake.closed) return -1;
        const n = Math.min(fake.take, length);
        for (let i = 0; i < n; i++) taken.push(data[offset + i]!);
        return n;
      },
    };
    return { fake, taken };
  }

  test("what the socket does not take waits in order, copied when the caller reuses its bytes", () => {
    const { fake, taken } = socket(3);
    const writer = new _SocketWriter(fake);
    const reused = Uint8Array.of(1, 2, 3, 4, 5);
    expect(writer.write(reused, 5, true)).toBe(false);
    reused.fill(0); // the caller writes over its buffer: the 2 waiting bytes were copied
    const kept = Uint8Array.of(6, 7, 8);
    expect(writer.write(kept, 2, false)).toBe(false);
    expect(writer.backedUp).toBe(true);
    fake.take = 100;
    expect(writer.drain()).toBe(true);
    expect(writer.backedUp).toBe(false);
    expect(taken).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(writer.write(kept, 3, false)).toBe(true);
    expect(taken.slice(7)).toEqual([6, 7, 8]);
  });

  test("a socket that refuses a write closes the writer: nothing more is written", () => {
    const { fake, taken } = socket(2);
    const writer = new _SocketWriter(fake);
    expect(writer.write(Uint8Array.of(1, 2, 3), 3, false)).toBe(false);
    fake.closed = true;
    expect(writer.drain()).toBe(false);
    expect(writer.closed).toBe(true);
    expect(writer.backedUp).toBe(false);
    expect(writer.write(Uint8Array.of(9), 1, false)).toBe(false);
    expect(taken).toEqual([1, 2]);
  });
});
