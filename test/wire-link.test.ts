import { describe, expect, test } from "bun:test";
import { linkFrame } from "./_support/link-frames.ts";
import { _FrameReader } from "../src/wire/link.ts";
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
    const stream = Buffer.concat(sent.map((f) => linkFrame(f.type, f.payload)));
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
