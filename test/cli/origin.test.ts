/**
 * The `--origin` loader against a real HTTP origin on loopback: what it asks
 * for, what it keeps, and how each kind of answer maps to a load outcome.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { originLoader } from "../../src/cli/origin.ts";
import { isGCacheError } from "../../src/errors.ts";
import type { LoadContext, LoadedValue } from "../../src/group.ts";

let origin: ReturnType<typeof Bun.serve>;
const asked: string[] = [];

beforeAll(() => {
  origin = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(request) {
      const path = new URL(request.url).pathname;
      asked.push(path);
      if (path.endsWith("/missing")) return new Response("no", { status: 404 });
      if (path.endsWith("/broken")) return new Response("oops", { status: 503 });
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

function context(): LoadContext {
  return { signal: AbortSignal.timeout(2_000), deadline: Date.now() + 2_000, group: "things" };
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
});
