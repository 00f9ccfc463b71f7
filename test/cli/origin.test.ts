/**
 * The `--origin` loader against a real HTTP origin on loopback: what it asks
 * for, what it keeps, and how each kind of answer maps to a load outcome.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { originLoader } from "../../src/cli/origin.ts";
import { isGCacheError } from "../../src/errors.ts";
import { _CancelToken } from "../../src/call.ts";
import { _LoadContext, type LoadContext, type LoadedValue } from "../../src/group.ts";
import { countAbortControllers } from "../_support/abort-count.ts";
import { waitFor } from "../_support/wait.ts";

let origin: ReturnType<typeof Bun.serve>;
const asked: string[] = [];
/** What the endless answer sent, and whether its reader went away. */
const endless = { sent: 0, cancelled: false };
const MiB = 1 << 20;
/** 64 MiB of zeros, gzipped to about 64 KiB. */
const bomb = Bun.gzipSync(new Uint8Array(64 * MiB));

/** A chunked answer of `total` bytes in 64 KiB pieces, made as they are read; `progress` tells how far it got. */
function streamed(total: number, progress = { sent: 0, cancelled: false }): ReadableStream<Uint8Array> {
  const piece = new Uint8Array(64 * 1024).fill(0x61);
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) return controller.close();
      const part = piece.subarray(0, Math.min(piece.length, total - sent));
      sent += part.length;
      progress.sent = sent;
      controller.enqueue(part);
    },
    cancel() {
      progress.cancelled = true;
    },
  });
}

/** How long the slow routes take: well past the time limits the tests set. */
const SLOW_MS = 3_000;
/** Requests the origin saw given up on, by the client. */
const abandoned = { count: 0 };

/** A body that sends one piece and then nothing until the request goes away. */
function stalled(requestSignal: AbortSignal): ReadableStream<Uint8Array> {
  requestSignal.addEventListener("abort", () => abandoned.count++, { once: true });
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array(10).fill(0x62));
    },
    cancel() {},
  });
}

/**
 * Runs `work` with the global timer functions counting what is set for
 * `delayMs` and cleared (then doing it), and puts them back: the loader's
 * time limit is a timer of its own, and every one it sets must be cleared.
 * Only that delay counts: timers of other tests in this process may run.
 */
async function countingTimers<T>(delayMs: number, work: () => Promise<T>): Promise<{ result: T; set: number; cleared: number }> {
  const realSet = globalThis.setTimeout;
  const realClear = globalThis.clearTimeout;
  const live = new Set<unknown>();
  let set = 0;
  let cleared = 0;
  globalThis.setTimeout = ((run: () => void, ms?: number) => {
    const handle = realSet(run, ms);
    if (ms === delayMs) {
      set++;
      live.add(handle);
    }
    return handle;
  }) as typeof setTimeout;
  globalThis.clearTimeout = ((handle: ReturnType<typeof setTimeout>) => {
    if (live.delete(handle)) cleared++;
    realClear(handle);
  }) as typeof clearTimeout;
  try {
    const result = await work();
    return { result, set, cleared };
  } finally {
    globalThis.setTimeout = realSet;
    globalThis.clearTimeout = realClear;
  }
}

async function outcome(promise: unknown): Promise<unknown> {
  return Promise.resolve(promise).then(
    (value) => value,
    (error: unknown) => error,
  );
}

beforeAll(() => {
  origin = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(request) {
      const path = new URL(request.url).pathname;
      asked.push(path);
      if (path.endsWith("/missing")) return new Response("no", { status: 404 });
      if (path.endsWith("/broken")) return new Response("oops", { status: 503 });
      if (path.endsWith("/endless")) return new Response(streamed(256 * MiB, endless));
      if (path.endsWith("/slow-head")) return Bun.sleep(SLOW_MS).then(() => new Response("late"));
      if (path.endsWith("/stalled-body")) return new Response(stalled(request.signal));
      if (path.endsWith("/exactly-1MiB")) return new Response(streamed(MiB));
      if (path.endsWith("/announced-2MiB")) return new Response(new Uint8Array(2 * MiB));
      if (path.endsWith("/bomb")) return new Response(bomb, { headers: { "content-encoding": "gzip" } });
      const body = new TextEncoder().encode(`value of ${path}`);
      return path.includes("/aged/")
        ? new Response(body, { headers: { "cache-control": "public, max-age=7" } })
        : new Response(body);
    },
  });
});

afterAll(async () => {
  await origin.stop(true);
});

function context(maxValueBytes = 1 << 20): LoadContext {
  return { signal: AbortSignal.timeout(2_000), deadline: Date.now() + 2_000, group: "things", maxValueBytes };
}

function template(): string {
  return `http://127.0.0.1:${origin.port}/{group}/{key}`;
}

describe("originLoader", () => {
  test("loads the bytes of the answer into an array the cache can keep, keys and groups percent-encoded", async () => {
    const load = originLoader(template(), 1_000);
    const value = await load("a b/é", context());
    expect(value).toBeInstanceOf(Uint8Array);
    const bytes = value as Uint8Array;
    expect(new TextDecoder().decode(bytes)).toBe("value of /things/a%20b%2F%C3%A9");
    // The array owns exactly its bytes: nothing else rides along in its buffer.
    expect(bytes.byteOffset).toBe(0);
    expect(bytes.buffer.byteLength).toBe(bytes.byteLength);
    expect(asked.at(-1)).toBe("/things/a%20b%2F%C3%A9");
  });

  test("Cache-Control max-age becomes the value's TTL", async () => {
    const loaded = (await originLoader(template().replace("{group}", "aged"), 1_000)("k", context())) as LoadedValue;
    expect(loaded.ttlMs).toBe(7_000);
    expect(new TextDecoder().decode(loaded.value)).toBe("value of /aged/k");
  });

  test("a 404 is 'not found' and any other failure a load error naming the status", async () => {
    const load = originLoader(template(), 1_000);
    const missing = await Promise.resolve(load("missing", context())).then(() => null, (error: unknown) => error);
    expect(isGCacheError(missing) && missing.code).toBe("ERR_NOT_FOUND");
    const broken = await Promise.resolve(load("broken", context())).then(() => null, (error: unknown) => error);
    expect(isGCacheError(broken) && broken.code).toBe("ERR_LOAD_FAILED");
    expect((broken as Error).message).toContain("503");
  });

  test("an answer larger than the group's largest value fails the load once that many bytes arrived, the rest unread", async () => {
    const load = originLoader(template(), 5_000);
    const failure = async (key: string) => Promise.resolve(load(key, context(MiB))).then(() => null, (error: unknown) => error);
    const tooLong = await failure("endless");
    expect(isGCacheError(tooLong) && tooLong.code).toBe("ERR_VALUE_TOO_LARGE");
    expect((tooLong as Error).message).toContain(`more than ${MiB} bytes for things/endless`);
    // Read up to the limit and cancelled there, not read to its 256 MiB end.
    await waitFor(() => endless.cancelled, 5_000, "the origin's answer cancelled");
    expect(endless.sent).toBeLessThan(32 * MiB);
    const announced = await failure("announced-2MiB");
    expect(isGCacheError(announced) && announced.code).toBe("ERR_VALUE_TOO_LARGE");
    // Counted as decoded: 64 KiB on the wire, 64 MiB once unzipped.
    const zipped = await failure("bomb");
    expect(isGCacheError(zipped) && zipped.code).toBe("ERR_VALUE_TOO_LARGE");
    const exact = (await load("exactly-1MiB", context(MiB))) as Uint8Array;
    expect(exact.byteLength).toBe(MiB);
    expect(exact.every((byte) => byte === 0x61)).toBe(true);
  });

  test("each request's time limit is one timer, cleared when the load settles, whatever its outcome", async () => {
    const load = originLoader(template(), 5_000);
    const timers = await countingTimers(5_000, async () => [
      await outcome(load("fine", context())),
      await outcome(load("missing", context())),
      await outcome(load("broken", context())),
      await outcome(load("announced-2MiB", context(MiB))),
    ]);
    const outcomes = timers.result;
    expect(outcomes[0]).toBeInstanceOf(Uint8Array);
    expect(outcomes.slice(1).map((error) => isGCacheError(error) && error.code)).toEqual(["ERR_NOT_FOUND", "ERR_LOAD_FAILED", "ERR_VALUE_TOO_LARGE"]);
    expect(timers.set).toBe(4);
    expect(timers.cleared).toBe(4);
  }, 10_000);

  test("an origin slower than --origin-timeout fails the load naming the limit, and the request is dropped", async () => {
    const load = originLoader(template(), 150);
    const timers = { set: 0, cleared: 0 };
    for (const key of ["slow-head", "stalled-body"]) {
      const abandonedBefore = abandoned.count;
      const started = performance.now();
      const counted = await countingTimers(150, () => outcome(load(key, context())));
      const elapsed = performance.now() - started;
      const failure = counted.result;
      timers.set += counted.set;
      timers.cleared += counted.cleared;
      expect(isGCacheError(failure) && failure.code).toBe("ERR_LOAD_FAILED");
      expect((failure as Error).message).toBe(`origin request for things/${key} took longer than 150 ms (--origin-timeout)`);
      expect(elapsed).toBeGreaterThanOrEqual(140);
      expect(elapsed).toBeLessThan(SLOW_MS);
      if (key === "stalled-body") await waitFor(() => abandoned.count > abandonedBefore, 2_000, "the stalled answer's request to be dropped");
    }
    expect(timers.cleared).toBe(timers.set);
  }, 10_000);

  test("a caller that gives up ends the request with its own reason, before the time limit", async () => {
    const load = originLoader(template(), 5_000);
    const caller = new AbortController();
    const reason = new Error("the caller left");
    setTimeout(() => caller.abort(reason), 50);
    const started = performance.now();
    const timers = await countingTimers(5_000, () => outcome(load("slow-head", { ...context(), signal: caller.signal })));
    const failure = timers.result;
    expect(failure).toBe(reason);
    expect(performance.now() - started).toBeLessThan(SLOW_MS);
    expect(timers.set).toBe(1);
    expect(timers.cleared).toBe(1);
  });

  test("requests use their signals again: loads make no AbortController each, and one that was aborted is not handed out again", async () => {
    const load = originLoader(template(), 5_000);
    const counted = countAbortControllers();
    try {
      // A group's context: the load's own signal is never read.
      const groupContext = () => new _LoadContext(new _CancelToken(), Date.now() + 2_000, "things", 1 << 20);
      for (let i = 0; i < 20; i++) expect(await load(`fine-${i}`, groupContext())).toBeInstanceOf(Uint8Array);
      expect(await outcome(load("missing", groupContext()))).toBeInstanceOf(Error);
      expect(counted.made).toBe(1);
      const token = new _CancelToken();
      const leaving = outcome(load("slow-head", new _LoadContext(token, Date.now() + 2_000, "things", 1 << 20)));
      const reason = new Error("every caller left");
      setTimeout(() => token.cancel(reason), 20);
      expect(await leaving).toBe(reason);
      expect(counted.made).toBe(1);
      expect(await load("fine-after", groupContext())).toBeInstanceOf(Uint8Array);
      expect(counted.made).toBe(2);
    } finally {
      counted.restore();
    }
  });
});
