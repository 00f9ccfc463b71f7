/**
 * The benchmarks' per-process samples (scripts/bench/_node/commands.ts): CPU
 * time and the main thread's run-queue wait, read from /proc. bench:cluster's
 * "waited" column rests on the wait being read, and read per process.
 */
import { afterEach, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import type { Subprocess } from "bun";
import { processDeltas, sampleProcess } from "../../scripts/bench/_node/commands.ts";

const BUSY_MS = 600;
/** Linux keeps per-task scheduler statistics unless built without them. */
const SCHEDSTATS = process.platform === "linux" && existsSync("/proc/self/schedstat");
const spinners: Subprocess[] = [];

afterEach(() => {
  for (const child of spinners.splice(0)) child.kill();
});

/** A process that keeps one CPU busy for BUSY_MS, pinned to `cpu`; resolves once it runs. */
async function spinner(cpu: number): Promise<Subprocess<"ignore", "pipe", "inherit">> {
  const code = `process.stdout.write("go\\n"); const end = Date.now() + ${BUSY_MS}; while (Date.now() < end) {}`;
  const child = Bun.spawn(["taskset", "-c", String(cpu), process.execPath, "-e", code], { stdout: "pipe", stderr: "inherit" });
  spinners.push(child);
  const reader = child.stdout.getReader();
  await reader.read();
  reader.releaseLock();
  return child;
}

test.skipIf(!SCHEDSTATS)("two busy processes on one CPU each wait for it about half the time", async () => {
  const [a, b] = await Promise.all([spinner(0), spinner(0)]);
  const pids = [a.pid, b.pid];
  const before = pids.map(sampleProcess);
  await Bun.sleep(BUSY_MS / 2);
  const deltas = processDeltas(pids, before, pids.map(sampleProcess));
  for (const delta of deltas) {
    // Each had the CPU about half the window and waited for it the other half.
    expect(delta.waitMs).toBeGreaterThan(BUSY_MS / 2 / 5);
    expect(delta.cpuMs).toBeGreaterThan(BUSY_MS / 2 / 5);
    expect(delta.waitMs + delta.cpuMs).toBeLessThan(BUSY_MS * 2);
  }
  await Promise.all([a.exited, b.exited]);
});

test.skipIf(!SCHEDSTATS || navigator.hardwareConcurrency < 2)("a busy process alone on its CPU mostly runs", async () => {
  // CPU 1: the test runner is not pinned, and the machine may run other work, so the bound is loose.
  const child = await spinner(1);
  const before = [sampleProcess(child.pid)];
  await Bun.sleep(BUSY_MS / 2);
  const [delta] = processDeltas([child.pid], before, [sampleProcess(child.pid)]);
  expect(delta!.cpuMs).toBeGreaterThan(BUSY_MS / 2 / 3);
  expect(delta!.waitMs).toBeLessThan(delta!.cpuMs * 0.8);
  await child.exited;
});

test.skipIf(!SCHEDSTATS)("a process that sleeps waits for no CPU", async () => {
  const child = Bun.spawn([process.execPath, "-e", "setTimeout(() => {}, 5000)"], { stdout: "ignore", stderr: "inherit" });
  spinners.push(child);
  await Bun.sleep(100);
  const before = [sampleProcess(child.pid)];
  await Bun.sleep(300);
  const [delta] = processDeltas([child.pid], before, [sampleProcess(child.pid)]);
  expect(delta!.waitMs).toBeLessThan(20);
  expect(delta!.cpuMs).toBeLessThan(50);
});

test.skipIf(process.platform !== "linux")("memory a process touches afresh shows as minor faults", async () => {
  // Waits for a line on stdin, then touches 64 MiB it never touched before (at least 32 faults even in 2 MiB pages).
  const code =
    `process.stdout.write("ready\\n"); for await (const _ of process.stdin) { ` +
    `const b = new Uint8Array(64 * 1024 * 1024); for (let i = 0; i < b.length; i += 4096) b[i] = 1; process.stdout.write("done\\n"); break; } ` +
    `setTimeout(() => {}, 5000);`;
  const child = Bun.spawn([process.execPath, "-e", code], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  spinners.push(child);
  const reader = child.stdout.getReader();
  await reader.read();
  const before = [sampleProcess(child.pid)];
  child.stdin.write("go\n");
  child.stdin.flush();
  expect(new TextDecoder().decode((await reader.read()).value)).toContain("done");
  reader.releaseLock();
  const [touched] = processDeltas([child.pid], before, [sampleProcess(child.pid)]);
  expect(touched!.minorFaults).toBeGreaterThanOrEqual(32);
});

test("a process that is gone samples as zeros", () => {
  expect(sampleProcess(0x7ffffff0)).toEqual({ cpuMs: 0, rssBytes: 0, waitMs: 0, minorFaults: 0 });
});
