/**
 * The gateway's key routes: whatever a key's shape (escaped, nested, with
 * characters that look like a query), the gateway must mean the same key as
 * the library, and refuse malformed escapes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { NotFoundError } from "../../src/errors.ts";
import { CacheNode } from "../../src/node.ts";
import { _HttpGateway } from "../../src/server/http-gateway.ts";

const TOKEN = "a-long-enough-shared-secret";
const encoder = new TextEncoder();

describe("HTTP gateway keys", () => {
  let node: CacheNode;
  let gateway: _HttpGateway;
  let base: string;
  const loaded: string[] = [];

  beforeAll(async () => {
    node = new CacheNode({
      port: 0,
      groups: [
        {
          name: "g",
          loader: (key) => {
            loaded.push(key);
            if (key.startsWith("missing")) throw new NotFoundError(key);
            return encoder.encode(`loaded:${key}`);
          },
        },
      ],
    });
    await node.start();
    gateway = new _HttpGateway(node, { host: "127.0.0.1", port: 0 });
    base = `http://${gateway.address}/v1/groups`;
  });

  afterAll(async () => {
    await gateway?.close();
    await node?.close();
  });

  const keys = ["plain", "with space", "plus+sign", "slash/inside", "ünïcödé", "emoji 🦀", "percent%sign", "\uFFFD", "a\uFFFDb", "?query-like", "#hash", "dot."];

  test("every key written through the gateway is the same key for the library, nested or escaped", async () => {
    for (const key of keys) {
      const put = await fetch(`${base}/g/keys/${encodeURIComponent(key)}`, { method: "PUT", body: `value of ${key}` });
      expect({ key, status: put.status }).toEqual({ key, status: 200 });
      expect(new TextDecoder().decode(await node.group("g")!.get(key))).toBe(`value of ${key}`);
      const get = await fetch(`${base}/g/keys/${encodeURIComponent(key)}`);
      expect({ key, status: get.status, body: await get.text() }).toEqual({ key, status: 200, body: `value of ${key}` });
    }
    // Slashes left unescaped are part of the key too (the router does not take these).
    const nested = await fetch(`${base}/g/keys/slash/inside`);
    expect(await nested.text()).toBe("value of slash/inside");
    expect(loaded).toEqual([]);
  });

  test("pipelined hits on one connection each get their own value and expiry header", async () => {
    const g = node.group("g")!;
    await g.set("kept", encoder.encode("kept forever"));
    await g.set("short", encoder.encode("short-lived"), { ttlMs: 60_000 });
    const expiresAt = (await g.getEntry("short")).expiresAt;
    const order = ["kept", "short", "kept", "short"];
    const raw = await pipelined(gateway.address, order.map((key) => `GET /v1/groups/g/keys/${key} HTTP/1.1\r\nhost: x\r\n\r\n`).join(""), order.length);
    expect(raw.map((r) => [r.body, r.head.includes("x-gcache-expires-at")])).toEqual([
      ["kept forever", false],
      ["short-lived", true],
      ["kept forever", false],
      ["short-lived", true],
    ]);
    expect(raw[1]!.head).toContain(`x-gcache-expires-at: ${expiresAt}\r\n`);
  });

  test("malformed escapes are a 400 in the group and in the key, and nothing is loaded", async () => {
    for (const path of ["g/keys/a%zz", "g/keys/a%", "g/keys/%E0%80", "g/keys/%ED%A0%80", "g%zz/keys/k", "g/keys/x%FFy"]) {
      const response = await fetch(`${base}/${path}`);
      expect({ path, status: response.status }).toEqual({ path, status: 400 });
      expect(((await response.json()) as { error: string }).error).toBe("ERR_INVALID_ARGUMENT");
    }
    expect(loaded).toEqual([]);
  });

  test("HEAD answers like GET without a body; an unknown group is a 404 naming it", async () => {
    await node.group("g")!.set("head", encoder.encode("12345"));
    const head = await fetch(`${base}/g/keys/head`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    const unknown = await fetch(`${base}/nope/keys/k`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: "ERR_UNKNOWN_GROUP", message: 'unknown group "nope"' });
  });

  test("a miss loads through the loader and reads the time limit; a hit does not need one", async () => {
    const miss = await fetch(`${base}/g/keys/fresh?timeout=2s`);
    expect(await miss.text()).toBe("loaded:fresh");
    expect((await fetch(`${base}/g/keys/missing-1`)).status).toBe(404);
    expect((await fetch(`${base}/g/keys/other`, { headers: { "x-gcache-timeout": "soon" } })).status).toBe(400);
    expect((await fetch(`${base}/g/keys/other?timeout=-1`)).status).toBe(400);
    expect(loaded).toEqual(["fresh", "missing-1"]);
    // The value is cached now: the limit has nothing to bound.
    const hit = await fetch(`${base}/g/keys/fresh`, { headers: { "x-gcache-timeout": "soon" } });
    expect(await hit.text()).toBe("loaded:fresh");
    expect(loaded).toEqual(["fresh", "missing-1"]);
  });
});

test("requests naming different groups one after another each read their own group, escaped or not", async () => {
  const long = "l".repeat(200);
  const names = ["g", "h", "gg", long];
  const node = new CacheNode({ port: 0, groups: names.map((name) => ({ name })) });
  await node.start();
  const gateway = new _HttpGateway(node, { host: "127.0.0.1", port: 0 });
  try {
    for (const name of names) await node.group(name)!.set("k", encoder.encode(`k in ${name}`));
    const paths = ["g", "h", "g", "%67", "h", "gg", long, "g", long, "x", "h"];
    const responses = await pipelined(gateway.address, paths.map((group) => `GET /v1/groups/${group}/keys/k HTTP/1.1\r\nhost: x\r\n\r\n`).join(""), paths.length);
    expect(responses.map((r) => r.body)).toEqual([
      ...["k in g", "k in h", "k in g", "k in g", "k in h", "k in gg", `k in ${long}`, "k in g", `k in ${long}`],
      JSON.stringify({ error: "ERR_UNKNOWN_GROUP", message: 'unknown group "x"' }),
      "k in h",
    ]);
  } finally {
    await gateway.close();
    await node.close();
  }
});

test("with the token required on reads, gets are refused without it", async () => {
  const node = new CacheNode({ port: 0, groups: [{ name: "g" }] });
  await node.start();
  const gateway = new _HttpGateway(node, { host: "127.0.0.1", port: 0, auth: { token: TOKEN, reads: true } });
  try {
    await node.group("g")!.set("k", encoder.encode("secret"));
    const url = `http://${gateway.address}/v1/groups/g/keys/k`;
    expect((await fetch(url)).status).toBe(401);
    const allowed = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(await allowed.text()).toBe("secret");
  } finally {
    await gateway.close();
    await node.close();
  }
});

/** Sends `requests` in one write and reads `count` responses with a Content-Length body. */
async function pipelined(address: string, requests: string, count: number): Promise<{ head: string; body: string }[]> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  let received = Buffer.alloc(0);
  const { promise, resolve, reject } = Promise.withResolvers<{ head: string; body: string }[]>();
  const parse = (): { head: string; body: string }[] | null => {
    const out: { head: string; body: string }[] = [];
    let at = 0;
    while (out.length < count) {
      const end = received.indexOf("\r\n\r\n", at);
      if (end < 0) return null;
      const head = received.toString("latin1", at, end + 4);
      const length = Number(/content-length: (\d+)/i.exec(head)?.[1]);
      if (received.length < end + 4 + length) return null;
      out.push({ head, body: received.toString("utf8", end + 4, end + 4 + length) });
      at = end + 4 + length;
    }
    return out;
  };
  const socket = await Bun.connect({
    hostname: host,
    port,
    socket: {
      data(_socket, chunk) {
        received = Buffer.concat([received, chunk]);
        const done = parse();
        if (done !== null) resolve(done);
      },
      error: (_socket, error) => reject(error),
      close: () => reject(new Error(`connection closed after ${received.length} bytes`)),
    },
  });
  socket.write(requests);
  const timer = setTimeout(() => reject(new Error("no complete answers within 5 s")), 5_000);
  try {
    return await promise;
  } finally {
    clearTimeout(timer);
    socket.end();
  }
}
