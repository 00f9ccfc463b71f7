/** One timer for many deadlines (src/deadlines.ts): each wait still ends at its own deadline, and only then. */
import { expect, test } from "bun:test";
import { _Deadlines, type _Expiring } from "../src/deadlines.ts";

/** A wait that records when it expired (ms after `start`). */
function wait(start: number, afterMs: number, log: { name: string; at: number }[], name: string): _Expiring {
  return { deadline: start + afterMs, deadlineSlot: -1, expire: () => log.push({ name, at: Date.now() - start }) };
}

/** Resolves once `log` holds `count` entries, or rejects after `withinMs`. */
async function expiries(log: unknown[], count: number, withinMs: number): Promise<void> {
  const end = Date.now() + withinMs;
  while (log.length < count) {
    if (Date.now() > end) throw new Error(`${log.length} of ${count} expiries within ${withinMs} ms`);
    await Bun.sleep(2);
  }
}

test("each wait expires at its own deadline, in deadline order, whatever order they came in", async () => {
  const deadlines = new _Deadlines();
  const log: { name: string; at: number }[] = [];
  const start = Date.now();
  // The timer is armed for 120 ms first, then brought forward twice.
  deadlines.add(wait(start, 120, log, "c"));
  deadlines.add(wait(start, 40, log, "a"));
  deadlines.add(wait(start, 80, log, "b"));
  await expiries(log, 3, 2_000);
  expect(log.map((e) => e.name)).toEqual(["a", "b", "c"]);
  for (const [i, target] of [40, 80, 120].entries()) {
    expect(log[i]!.at).toBeGreaterThanOrEqual(target);
    expect(log[i]!.at).toBeLessThan(target + 60);
  }
  expect(deadlines.size).toBe(0);
});

test("a wait removed before its deadline never expires, and the others still do when the earliest is removed", async () => {
  const deadlines = new _Deadlines();
  const log: { name: string; at: number }[] = [];
  const start = Date.now();
  const early = wait(start, 30, log, "early");
  deadlines.add(early);
  deadlines.add(wait(start, 60, log, "later"));
  deadlines.delete(early);
  await expiries(log, 1, 2_000);
  await Bun.sleep(50);
  expect(log.map((e) => e.name)).toEqual(["later"]);
  expect(log[0]!.at).toBeGreaterThanOrEqual(60);
});

test("a wait added by an expiry expires too, and one due sooner than the rest is not held back by them", async () => {
  const deadlines = new _Deadlines();
  const log: { name: string; at: number }[] = [];
  const start = Date.now();
  deadlines.add(wait(start, 400, log, "far"));
  deadlines.add({
    deadline: start + 20,
    deadlineSlot: -1,
    expire: () => {
      log.push({ name: "first", at: Date.now() - start });
      deadlines.add(wait(start, 60, log, "retry"));
    },
  });
  await expiries(log, 2, 2_000);
  expect(log.map((e) => e.name)).toEqual(["first", "retry"]);
  expect(log[1]!.at).toBeLessThan(300);
  await expiries(log, 3, 2_000);
  expect(log[2]!.name).toBe("far");
});

test("a deadline beyond what a timer takes (about 24.8 days) does not expire at once", async () => {
  const deadlines = new _Deadlines();
  let expired = false;
  const far: _Expiring = { deadline: Date.now() + 30 * 24 * 3_600_000, deadlineSlot: -1, expire: () => (expired = true) };
  deadlines.add(far);
  await Bun.sleep(30);
  expect(expired).toBe(false);
  deadlines.delete(far);
});

test("waits removed from among others never expire; the rest all do, once each", async () => {
  const deadlines = new _Deadlines();
  const log: { name: string; at: number }[] = [];
  const start = Date.now();
  const waits = ["a", "b", "c", "d", "e"].map((name, i) => wait(start, 30 + 10 * i, log, name));
  for (const w of waits) deadlines.add(w);
  deadlines.delete(waits[1]!);
  // The last wait took the slot given back: it must still be found there.
  deadlines.delete(waits[4]!);
  // Removing twice, or removing what was never added, changes nothing.
  deadlines.delete(waits[1]!);
  deadlines.delete(wait(start, 10, log, "stranger"));
  expect(deadlines.size).toBe(3);
  await expiries(log, 3, 2_000);
  await Bun.sleep(60);
  expect(log.map((e) => e.name)).toEqual(["a", "c", "d"]);
  expect(deadlines.size).toBe(0);
});

test("pending waits hold no process open", async () => {
  const script = `
    import { _Deadlines } from ${JSON.stringify(new URL("../src/deadlines.ts", import.meta.url).pathname)};
    const deadlines = new _Deadlines();
    for (const i of [1, 2, 3]) deadlines.add({ deadline: Date.now() + 60_000 * i, deadlineSlot: -1, expire() { console.log("expired"); } });
    console.log("waiting", deadlines.size);
  `;
  const started = Date.now();
  const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
  const killer = setTimeout(() => child.kill(), 3_000);
  const [output, code] = await Promise.all([new Response(child.stdout).text(), child.exited]);
  clearTimeout(killer);
  expect(output.trim()).toBe("waiting 3");
  expect(code).toBe(0);
  expect(Date.now() - started).toBeLessThan(2_500);
});
