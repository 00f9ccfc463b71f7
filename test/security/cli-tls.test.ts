/**
 * gcache-node as an operator runs it with certificates: the HTTP gateway is
 * HTTPS with the gRPC certificate, mutual TLS reaches it too, and a node bound
 * beyond loopback without TLS and a token says so once. The bind tests run the
 * node in a network namespace of its own, so nothing is exposed to the network.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials } from "@grpc/grpc-js";
import { GCacheClient } from "../../src/client.ts";
import { makeCertificates, type TestCertificates } from "../_support/certs.ts";
import { CliNode } from "../_support/cli.ts";
import { freePort } from "../_support/etcd.ts";

const TOKEN = "a-long-enough-shared-secret";
const BIND_WARNING = "listening beyond loopback without TLS and an auth token: anyone who can reach this port can read and write";

let certs: TestCertificates;
let dir: string;
let files: { cert: string; key: string; ca: string; token: string };
const nodes: CliNode[] = [];

beforeAll(() => {
  certs = makeCertificates();
  dir = mkdtempSync(join(tmpdir(), "gcache-cli-tls-"));
  files = { cert: join(dir, "node.crt"), key: join(dir, "node.key"), ca: join(dir, "ca.crt"), token: join(dir, "token") };
  writeFileSync(files.cert, certs.node.cert);
  writeFileSync(files.key, certs.node.key);
  writeFileSync(files.ca, certs.ca);
  writeFileSync(files.token, `${TOKEN}\n`);
});

afterAll(async () => {
  await Promise.all(nodes.map((node) => node.stop()));
  certs?.cleanup();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

async function startNode(name: string, args: string[], wrap?: string[]): Promise<CliNode> {
  const node = await CliNode.start(name, args, wrap === undefined ? {} : { wrap });
  nodes.push(node);
  return node;
}

/** The outcome of a fetch: its status, or the error that kept it from getting one. */
async function attempt(url: string, init: RequestInit & { tls?: Record<string, unknown> } = {}): Promise<number | string> {
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(3_000) });
    await response.arrayBuffer();
    return response.status;
  } catch (error) {
    return `failed: ${(error as Error).name}`;
  }
}

describe("HTTPS gateway", () => {
  test("with --tls-cert the gateway speaks HTTPS only, with the token required on writes", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const node = await startNode("tls", [
      `--port=${grpcPort}`,
      `--http-port=${httpPort}`,
      `--tls-cert=${files.cert}`,
      `--tls-key=${files.key}`,
      `--tls-ca=${files.ca}`,
      `--auth-token-file=${files.token}`,
    ]);
    const base = `https://127.0.0.1:${httpPort}`;
    const tls = { ca: certs.ca };
    expect(await attempt(`${base}/healthz`, { tls })).toBe(200);
    expect(await attempt(`${base}/v1/groups/default/keys/k`, { method: "PUT", body: "v", tls })).toBe(401);
    expect(await attempt(`${base}/v1/groups/default/keys/k`, { method: "PUT", body: "over https", headers: { authorization: `Bearer ${TOKEN}` }, tls })).toBe(200);
    const read = await fetch(`${base}/v1/groups/default/keys/k`, { tls, signal: AbortSignal.timeout(3_000) });
    expect(await read.text()).toBe("over https");

    // The same value over gRPC with TLS: one certificate serves both.
    const client = new GCacheClient(node.address, { credentials: credentials.createSsl(certs.ca), timeoutMs: 3_000 });
    try {
      expect(new TextDecoder().decode(await client.get("default", "k"))).toBe("over https");
    } finally {
      client.close();
    }

    // Plain HTTP gets no answer, and a client that does not trust the CA refuses the server.
    expect(await attempt(`http://127.0.0.1:${httpPort}/healthz`)).toMatch(/^failed/);
    expect(await attempt(`${base}/healthz`)).toMatch(/^failed/);
    expect(node.logs().filter((log) => log.msg === BIND_WARNING)).toEqual([]);
    await node.stop();
  }, 30_000);

  test("with --tls-client-auth the gateway wants a client certificate from the CA", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const node = await startNode("mtls", [
      `--port=${grpcPort}`,
      `--http-port=${httpPort}`,
      `--tls-cert=${files.cert}`,
      `--tls-key=${files.key}`,
      `--tls-ca=${files.ca}`,
      "--tls-client-auth=true",
    ]);
    const url = `https://127.0.0.1:${httpPort}/healthz`;
    expect(await attempt(url, { tls: { ca: certs.ca, cert: certs.client.cert, key: certs.client.key } })).toBe(200);
    expect(await attempt(url, { tls: { ca: certs.ca } })).toMatch(/^failed/);
    expect(await attempt(url, { tls: { ca: certs.ca, cert: certs.stranger.cert, key: certs.stranger.key } })).toMatch(/^failed/);
    await node.stop();
  }, 30_000);
});

describe("binding beyond loopback", () => {
  // A fresh network namespace (unprivileged, via a user namespace) has only its own
  // loopback: the node can bind 0.0.0.0 there without being reachable from anywhere.
  const isolated = ["unshare", "--user", "--map-root-user", "--net"];

  test("without TLS and a token, the node logs one clear warning naming what is missing", async () => {
    const node = await startNode("exposed", ["--host=0.0.0.0", "--port=0", "--http-port=0"], isolated);
    const warnings = node.logs().filter((log) => log.level === "warn");
    expect(warnings).toEqual([expect.objectContaining({ msg: BIND_WARNING, host: "0.0.0.0", tls: false, authToken: false })]);
    await node.stop();

    const tokenOnly = await startNode("token-only", ["--host=0.0.0.0", "--port=0", "--http-port=0", `--auth-token-file=${files.token}`], isolated);
    expect(tokenOnly.logs().filter((log) => log.level === "warn")).toEqual([
      expect.objectContaining({ msg: BIND_WARNING, tls: false, authToken: true }),
    ]);
    await tokenOnly.stop();
  }, 30_000);

  test("with TLS and a token, or on loopback, there is no warning", async () => {
    const guarded = await startNode(
      "guarded",
      ["--host=0.0.0.0", "--port=0", "--http-port=0", `--tls-cert=${files.cert}`, `--tls-key=${files.key}`, `--auth-token-file=${files.token}`],
      isolated,
    );
    const local = await startNode("local", ["--port=0", "--http-port=0"]);
    for (const node of [guarded, local]) {
      expect(node.logs().filter((log) => log.level === "warn")).toEqual([]);
      await node.stop();
    }
  }, 30_000);
});
