/**
 * Values up to the limit (maxValueBytes, 1 MiB by default) travel in requests
 * too: a client's Set, and a node forwarding a Set to the key's owner. HTTP/2
 * lets a peer send 64 KiB on a stream before the receiver opens its window
 * further, so requests larger than that depend on the server doing so.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { GCacheClient } from "../../src/client.ts";
import { _HttpGateway } from "../../src/server/http-gateway.ts";
import { startCluster, type TestCluster } from "../_support/cluster.ts";
import { codeOf } from "./_support.ts";

const SIZES = [16 * 1024, 64 * 1024 + 1, 1024 * 1024];

function valueOf(size: number): Uint8Array {
  const value = new Uint8Array(size);
  for (let i = 0; i < size; i++) value[i] = (i * 131 + size) & 0xff;
  return value;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

describe("large values in requests", () => {
  let cluster: TestCluster;
  let gateway: _HttpGateway;

  beforeAll(async () => {
    cluster = await startCluster(["A", "B"], () => [{ name: "g" }]);
    gateway = new _HttpGateway(cluster.byName("A"), { host: "127.0.0.1", port: 0 });
  });

  afterAll(async () => {
    await gateway?.close();
    await cluster?.close();
  });

  const keyOwnedBy = (owner: string, prefix: string) => {
    for (let i = 0; i < 10_000; i++) if (cluster.nodes[0]!.ownerOf(`${prefix}-${i}`) === owner) return `${prefix}-${i}`;
    throw new Error(`no key owned by ${owner}`);
  };

  for (const size of SIZES) {
    test(`a client sets a ${size}-byte value on the owner and reads it back`, async () => {
      const key = keyOwnedBy("A", `direct-${size}`);
      const client = new GCacheClient(cluster.byName("A").address);
      try {
        const started = performance.now();
        const outcome = await client.set("g", key, valueOf(size), { timeoutMs: 3_000 }).then(() => "stored", codeOf);
        const ms = performance.now() - started;
        expect({ size, outcome }).toEqual({ size, outcome: "stored" });
        expect(ms).toBeLessThan(1_000);
        expect(same(await client.get("g", key, { timeoutMs: 3_000 }), valueOf(size))).toBe(true);
      } finally {
        client.close();
      }
    }, 10_000);

    test(`a ${size}-byte value PUT through A's gateway reaches its owner B over the peer hop`, async () => {
      const key = keyOwnedBy("B", `forwarded-${size}`);
      const response = await fetch(`http://${gateway.address}/v1/groups/g/keys/${key}?timeout=3s`, { method: "PUT", body: valueOf(size) });
      const body = await response.text();
      expect({ size, status: response.status, body: response.status === 200 ? "" : body }).toEqual({ size, status: 200, body: "" });
      const viaB = new GCacheClient(cluster.byName("B").address);
      try {
        expect(same(await viaB.get("g", key, { timeoutMs: 3_000 }), valueOf(size))).toBe(true);
      } finally {
        viaB.close();
      }
    }, 10_000);
  }
});
