import { describe, expect, test } from "bun:test";
import { fileURLToPath } from "node:url";
import { createConsoleLogger } from "../src/log.ts";

const LOG_MODULE = fileURLToPath(new URL("../src/log.ts", import.meta.url));

const padLength = (i: number) => (i % 100 === 0 ? 200_000 : 1_000);

/**
 * A child that logs `count` lines through the default writer, most of about
 * 1 KB and every 100th (the first among them) of 200 KB, into a pipe whose
 * reader starts late: writes meet a full pipe, and with the pipe in
 * non-blocking mode a long line goes only in part. With `streamFirst` bytes
 * (a line of "s"), process.stderr is in use, and the pipe non-blocking, before
 * the first line; 100 KB fill the pipe, so the first line cannot go at all.
 */
async function logThroughPipe(count: number, streamFirst: number): Promise<{ lines: string[]; code: number }> {
  const script = `
    import { createConsoleLogger } from ${JSON.stringify(LOG_MODULE)};
    const padLength = ${padLength.toString()};
    ${streamFirst > 0 ? `process.stderr.write("s".repeat(${streamFirst - 1}) + "\\n");` : ""}
    const logger = createConsoleLogger();
    for (let i = 0; i < ${count}; i++) logger.info("line", { i, pad: "x".repeat(padLength(i)) });
  `;
  // The shell's pipe, not Bun's: Bun drains a child's pipe as fast as it fills.
  const child = Bun.spawn(["sh", "-c", '"$BUN" -e "$SCRIPT" 2>&1 >/dev/null | { sleep 0.2; cat; }'], {
    env: { ...process.env, BUN: process.execPath, SCRIPT: script },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
  });
  try {
    const text = await new Response(child.stdout).text();
    return { lines: text.split("\n").filter((line) => line.length > 0), code: await child.exited };
  } finally {
    child.kill();
  }
}

describe("createConsoleLogger", () => {
  test("writes JSON lines with the level, message and fields, below the threshold nothing", () => {
    const lines: string[] = [];
    const logger = createConsoleLogger({ level: "warn", write: (line) => lines.push(line) });
    logger.info("dropped");
    logger.warn("kept", { peer: "B" });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: "warn", msg: "kept", peer: "B" });
  });

  test.each([0, 20, 100_000])("stderr through a pipe that fills: every line arrives whole and in order (bytes through the stream first: %p)", async (streamFirst) => {
    const count = 2_000;
    const { lines, code } = await logThroughPipe(count, streamFirst);
    expect(code).toBe(0);
    const logged = streamFirst > 0 ? lines.slice(1) : lines;
    if (streamFirst > 0) expect(lines[0]).toBe("s".repeat(streamFirst - 1));
    expect(logged).toHaveLength(count);
    logged.forEach((line, i) => {
      const parsed = JSON.parse(line) as { msg: string; i: number; pad: string };
      expect(parsed.i).toBe(i);
      expect(parsed.pad).toHaveLength(padLength(i));
    });
  }, 20_000);
});
