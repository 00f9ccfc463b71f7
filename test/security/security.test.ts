/** TLS, mutual TLS and the shared auth token, over real gRPC and HTTP on loopback. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { credentials } from "@grpc/grpc-js";
import { GCacheClient } from "../../src/client.ts";
import { GrpcPeer } from "../../src/cluster/peer.ts";
import { GCacheError } from "../../src/errors.ts";
import { _HttpGateway } from "../../src/server/http-gateway.ts";
import { bytes, keyOwnedBy, startCluster, text, type TestCluster } from "../_support/cluster.ts";
import { makeCertificates, type TestCertificates } from "../_support/certs.ts";

const TOKEN = "a-long-enough-shared-secret";

async function errorOf(promise: Promise<unknown>): Promise<GCacheError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(GCacheError);
  return error as GCacheError;
}

let certs: TestCertificates;
beforeAll(() => {
  certs = makeCertificates();
});
afterAll(() => certs?.cleanup());

describe("mutual TLS", () => {
  let cluster: TestCluster;
  const clients: GCacheClient[] = [];

  beforeAll(async () => {
    cluster = await startCluster(["A", "B"], () => [{ name: "g", loader: async (key) => bytes(`origin:${key}`) }], {
      tls: { cert: certs.node.cert, key: certs.node.key, ca: certs.ca, clientAuth: true },
    });
    // startCluster's own plaintext clients cannot talk to TLS nodes; these can.
    for (const node of cluster.nodes) {
      clients.push(
        new GCacheClient(node.address, { credentials: credentials.createSsl(certs.ca, certs.client.key, certs.client.cert), timeoutMs: 3_000 }),
      );
    }
  });

  afterAll(async () => {
    for (const client of clients) client.close();
    await cluster?.close();
  });

  test("a client with a certificate from the cluster's CA is served, across the peer hop too", async () => {
    const key = keyOwnedBy(cluster.nodes[0]!, "B");
    expect(text(await clients[0]!.get("g", key))).toBe(`origin:${key}`);
    await clients[1]!.set("g", key, bytes("over tls"));
    expect(text(await clients[0]!.get("g", key))).toBe("over tls");
    expect(cluster.byName("A").group("g")!.stats().peerErrors).toBe(0);
  });

  test("a client without a certificate, or with a stranger's, or in plaintext, is refused", async () => {
    const address = cluster.nodes[0]!.address;
    const attempts = [
      new GCacheClient(address, { credentials: credentials.createSsl(certs.ca), timeoutMs: 2_000 }),
      new GCacheClient(address, { credentials: credentials.createSsl(certs.ca, certs.stranger.key, certs.stranger.cert), timeoutMs: 2_000 }),
      new GCacheClient(address, { timeoutMs: 2_000 }),
    ];
    try {
      for (const client of attempts) {
        const error = await errorOf(client.get("g", "k"));
        expect(["ERR_UNAVAILABLE", "ERR_DEADLINE_EXCEEDED"]).toContain(error.code);
      }
    } finally {
      for (const client of attempts) client.close();
    }
    expect(text(await clients[0]!.get("g", "still-fine"))).toBe("origin:still-fine");
  });
});

describe("auth token", () => {
  let cluster: TestCluster;
  let gateway: _HttpGateway;
  let withToken: GCacheClient;

  beforeAll(async () => {
    cluster = await startCluster(["A", "B"], () => [{ name: "g" }], { auth: { token: TOKEN } });
    withToken = new GCacheClient(cluster.nodes[0]!.address, { token: TOKEN });
    gateway = new _HttpGateway(cluster.nodes[0]!, { host: "127.0.0.1", port: 0, auth: { token: TOKEN } });
  });

  afterAll(async () => {
    withToken?.close();
    await gateway?.close();
    await cluster?.close();
  });

  test("writes without the token are UNAUTHENTICATED; reads are open by default", async () => {
    const anonymous = cluster.clients[0]!;
    for (const write of [anonymous.set("g", "k", bytes("v")), anonymous.delete("g", "k"), anonymous.clear("g")]) {
      expect((await errorOf(write)).code).toBe("ERR_UNAUTHENTICATED");
    }
    const wrong = new GCacheClient(cluster.nodes[0]!.address, { token: `${TOKEN}x` });
    try {
      expect((await errorOf(wrong.set("g", "k", bytes("v")))).code).toBe("ERR_UNAUTHENTICATED");
    } finally {
      wrong.close();
    }
    expect((await errorOf(anonymous.get("g", "k"))).code).toBe("ERR_NOT_FOUND");
  });

  test("a pretend peer without the token cannot store, delete or drop copies (SetMany, DeleteMany, InvalidateMany, Invalidate)", async () => {
    const stranger = new GrpcPeer("stranger", cluster.nodes[0]!.address);
    try {
      const context = { deadline: Date.now() + 5_000 };
      const refusals = await Promise.all(
        [
          stranger.set("g", "k", bytes("forged"), 0, context),
          stranger.delete("g", "k", context),
          stranger.invalidate("g", "k", context),
          stranger.invalidate("g", null, context),
        ].map(errorOf),
      );
      expect(refusals.map((error) => error.code)).toEqual(Array(4).fill("ERR_UNAUTHENTICATED"));
    } finally {
      stranger.close();
    }
    expect((await errorOf(cluster.clients[0]!.get("g", "k"))).code).toBe("ERR_NOT_FOUND");
  });

  test("with the token, writes work cluster-wide: peers present it to each other", async () => {
    const key = keyOwnedBy(cluster.nodes[0]!, "B");
    expect(await withToken.set("g", key, bytes("secret-ok"))).toEqual({ unreachablePeers: [] });
    expect(text(await cluster.clients[1]!.get("g", key))).toBe("secret-ok");
    expect((await withToken.delete("g", key)).deleted).toBe(true);
  });

  test("the HTTP gateway answers 401 to writes without the token", async () => {
    const url = `http://${gateway.address}/v1/groups/g/keys/h`;
    expect((await fetch(url, { method: "PUT", body: "v" })).status).toBe(401);
    expect((await fetch(url, { method: "PUT", body: "v", headers: { authorization: "Bearer nope-nope-nope-nope" } })).status).toBe(401);
    const ok = await fetch(url, { method: "PUT", body: "v", headers: { authorization: `Bearer ${TOKEN}` } });
    expect(ok.status).toBe(200);
    expect(await (await fetch(url)).text()).toBe("v");
  });

  test("reads can require the token too", async () => {
    const strict = await startCluster(["S"], () => [{ name: "g" }], { auth: { token: TOKEN, reads: true } });
    const reader = new GCacheClient(strict.nodes[0]!.address, { token: TOKEN });
    try {
      expect((await errorOf(strict.clients[0]!.get("g", "k"))).code).toBe("ERR_UNAUTHENTICATED");
      expect((await errorOf(reader.get("g", "k"))).code).toBe("ERR_NOT_FOUND");
    } finally {
      reader.close();
      await strict.close();
    }
  });
});
