/**
 * The HTTP baselines of the benchmarks (scripts/bench/_cluster/bare-http.ts),
 * each in its own process as the benchmarks start them: what they answer is
 * what the gateway is compared with, so each must answer a gateway path with
 * a value of the asked size, over one keep-alive connection.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { startWithReadyLine, stopAll } from "../../scripts/bench/_cluster/procs.ts";

const SCRIPT = new URL("../../scripts/bench/_cluster/bare-http.ts", import.meta.url).pathname;

afterEach(async () => {
  await stopAll();
});

async function start(args: string[]): Promise<string> {
  const { address } = await startWithReadyLine("bare-http", [process.execPath, SCRIPT, ...args], 20_000);
  return `http://${address}`;
}

describe("bare-http", () => {
  for (const mode of ["--http-server", "--sockets", ""]) {
    test(`${mode || "Bun.serve"} answers each GET with a value of --value-bytes`, async () => {
      const base = await start(["--value-bytes=321", ...(mode === "" ? [] : [mode])]);
      for (const key of ["a", "b", "c"]) {
        const response = await fetch(`${base}/v1/groups/default/keys/${key}`, { signal: AbortSignal.timeout(5_000) });
        expect(response.status).toBe(200);
        expect(response.headers.get("content-type")).toBe("application/octet-stream");
        const body = new Uint8Array(await response.arrayBuffer());
        expect(body.length).toBe(321);
        expect(body.every((byte) => byte === 7)).toBe(true);
      }
    });
  }

  test("startWithReadyLine gives the process the environment it is passed", async () => {
    // The layers benchmark starts its baselines with the node's runtime settings this way.
    const { address } = await startWithReadyLine(
      "bare-http env",
      [process.execPath, "-e", 'console.log(`READY ${process.env.GCACHE_TEST_MARK}`); process.stdin.resume(); process.stdin.on("end", () => process.exit(0));'],
      20_000,
      { ...process.env, GCACHE_TEST_MARK: "marked" },
    );
    expect(address).toBe("marked");
  });
});
