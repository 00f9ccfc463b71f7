/**
 * Wire compatibility: a client built from the original pb.GCache definition
 * (three RPCs, three fields) the way its users build it — @grpc/proto-loader
 * and @grpc/grpc-js — works against a gcache node unchanged. And the standard
 * grpc.health.v1 service reports SERVING, then NOT_SERVING while draining.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { CacheNode } from "../../src/node.ts";
import { keyOwnedBy, startCluster, type TestCluster } from "../_support/cluster.ts";
import { call, originalClient, type OriginalClient } from "../_support/original-client.ts";
import { waitFor } from "../_support/wait.ts";

const get = (client: OriginalClient, group: string, key: string) =>
  call(client.Get, client, { group, key });
const set = (client: OriginalClient, group: string, key: string, value: string) =>
  call(client.Set, client, { group, key, value: Buffer.from(value) });
const del = (client: OriginalClient, group: string, key: string) =>
  call(client.Delete, client, { group, key });

function statusOf(error: unknown): grpc.status | undefined {
  return (error as Partial<grpc.ServiceError>)?.code;
}

// The standard health protocol, as published by gRPC (not the copy this project serves from).
const HEALTH_PROTO = `
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
`;
const healthRoot = protobuf.parse(HEALTH_PROTO).root;
const HealthCheckRequest = healthRoot.lookupType("grpc.health.v1.HealthCheckRequest");
const HealthCheckResponse = healthRoot.lookupType("grpc.health.v1.HealthCheckResponse");
const ServingStatus = healthRoot.lookupEnum("grpc.health.v1.HealthCheckResponse.ServingStatus");

/** Calls grpc.health.v1.Health/Check; resolves with the status name. */
function healthCheck(address: string, service = ""): Promise<string> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise<string>((resolve, reject) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      (request: { service: string }) => Buffer.from(HealthCheckRequest.encode(request).finish()),
      (bytes: Buffer) => HealthCheckResponse.toObject(HealthCheckResponse.decode(bytes)) as { status?: number },
      { service },
      { deadline: Date.now() + 5_000 },
      (error, response) => {
        client.close();
        if (error) reject(error);
        else resolve(ServingStatus.valuesById[response?.status ?? 0] ?? `status ${response?.status}`);
      },
    );
  });
}

describe("a client built from the original pb.GCache definition", () => {
  let node: CacheNode;
  let client: OriginalClient;

  beforeAll(async () => {
    node = new CacheNode({ port: 0, groups: [{ name: "g" }] });
    await node.start();
    client = originalClient(node.address);
  });

  afterAll(async () => {
    client?.close();
    await node?.close();
  });

  test("Set then Get returns the value; Delete returns true; Get after it is NOT_FOUND", async () => {
    const stored = await set(client, "g", "greeting", "hello, world");
    expect(Buffer.from(stored.value).length).toBe(0);
    const got = await get(client, "g", "greeting");
    expect(Buffer.from(got.value).toString()).toBe("hello, world");

    const deleted = await del(client, "g", "greeting");
    expect(deleted.value).toBe(true);

    const error = await get(client, "g", "greeting").catch((e: unknown) => e);
    expect(statusOf(error)).toBe(grpc.status.NOT_FOUND);
    // A second delete finds nothing.
    expect((await del(client, "g", "greeting")).value).toBe(false);
  });

  test("binary values round-trip byte for byte", async () => {
    const value = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await call(client.Set, client, { group: "g", key: "bytes", value });
    const got = await get(client, "g", "bytes");
    expect(Buffer.compare(Buffer.from(got.value), value)).toBe(0);
  });

  test("Get of a key nobody set, in a group without a loader, is NOT_FOUND", async () => {
    const error = await get(client, "g", "never-set").catch((e: unknown) => e);
    expect(statusOf(error)).toBe(grpc.status.NOT_FOUND);
  });

  test("the health service answers SERVING for the server and for pb.GCache", async () => {
    expect(await healthCheck(node.address)).toBe("SERVING");
    expect(await healthCheck(node.address, "pb.GCache")).toBe("SERVING");
    const unknown = await healthCheck(node.address, "no.Such").catch((e: unknown) => e);
    expect(statusOf(unknown)).toBe(grpc.status.NOT_FOUND);
  });
});

describe("original clients on a two-node cluster", () => {
  let cluster: TestCluster;
  let clients: OriginalClient[] = [];

  beforeAll(async () => {
    cluster = await startCluster(["n1", "n2"], () => [{ name: "g" }]);
    clients = cluster.nodes.map((node) => originalClient(node.address));
  });

  afterAll(async () => {
    for (const client of clients) client.close();
    await cluster?.close();
  });

  test("a write through one node is read and deleted through the other", async () => {
    const [n1, n2] = cluster.nodes as [CacheNode, CacheNode];
    const [c1, c2] = clients as [OriginalClient, OriginalClient];
    const key = keyOwnedBy(n1, n2.name, "compat");

    await set(c1, "g", key, "v1");
    expect(Buffer.from((await get(c2, "g", key)).value).toString()).toBe("v1");
    expect(Buffer.from((await get(c1, "g", key)).value).toString()).toBe("v1");

    // Overwrite through the owner: the non-owner must not keep serving its old copy.
    await set(c2, "g", key, "v2");
    expect(Buffer.from((await get(c1, "g", key)).value).toString()).toBe("v2");

    expect((await del(c1, "g", key)).value).toBe(true);
    expect(statusOf(await get(c2, "g", key).catch((e: unknown) => e))).toBe(grpc.status.NOT_FOUND);
    expect(statusOf(await get(c1, "g", key).catch((e: unknown) => e))).toBe(grpc.status.NOT_FOUND);
  });
});

describe("health while a node drains", () => {
  test("Watch streams SERVING, then NOT_SERVING when close() starts, then ends", async () => {
    const node = new CacheNode({ port: 0, groups: [{ name: "g" }] });
    await node.start();
    const client = new grpc.Client(node.address, grpc.credentials.createInsecure());
    const seen: string[] = [];
    let ended: grpc.StatusObject | null = null;
    try {
      const stream = client.makeServerStreamRequest(
        "/grpc.health.v1.Health/Watch",
        (request: { service: string }) => Buffer.from(HealthCheckRequest.encode(request).finish()),
        (bytes: Buffer) => HealthCheckResponse.toObject(HealthCheckResponse.decode(bytes)) as { status?: number },
        { service: "pb.GCache" },
        { deadline: Date.now() + 10_000 },
      );
      stream.on("data", (message: { status?: number }) => seen.push(ServingStatus.valuesById[message.status ?? 0] ?? "?"));
      stream.on("status", (status: grpc.StatusObject) => {
        ended = status;
      });
      stream.on("error", () => {});
      await waitFor(() => seen.length > 0, 5_000, "the first Watch message");
      expect(seen).toEqual(["SERVING"]);

      await node.close();
      await waitFor(() => ended !== null, 5_000, "the end of the Watch stream");
      expect(seen).toEqual(["SERVING", "NOT_SERVING"]);
      expect(ended!.code).toBe(grpc.status.OK);
    } finally {
      client.close();
      await node.close();
    }
  });


  test("Check turns NOT_SERVING once close() starts; in-flight calls finish; then the server is gone", async () => {
    const gate = Promise.withResolvers<void>();
    const loading = Promise.withResolvers<void>();
    const node = new CacheNode({
      port: 0,
      drainTimeoutMs: 10_000,
      groups: [
        { name: "g" },
        {
          name: "slow",
          loader: async (key) => {
            loading.resolve();
            await gate.promise;
            return new TextEncoder().encode(`slow-${key}`);
          },
        },
      ],
    });
    await node.start();
    const client = originalClient(node.address);
    let closing: Promise<void> | null = null;
    try {
      expect(await healthCheck(node.address)).toBe("SERVING");

      const inFlight = get(client, "slow", "k");
      await loading.promise;
      closing = node.close();

      expect(await healthCheck(node.address)).toBe("NOT_SERVING");
      expect(await healthCheck(node.address, "pb.GCache")).toBe("NOT_SERVING");
      // New cache calls are refused while draining.
      const refused = await get(client, "g", "other").catch((e: unknown) => e);
      expect(statusOf(refused)).toBe(grpc.status.UNAVAILABLE);

      gate.resolve();
      expect(Buffer.from((await inFlight).value).toString()).toBe("slow-k");
      await closing;

      const after = await healthCheck(node.address).catch((e: unknown) => e);
      expect(statusOf(after)).toBe(grpc.status.UNAVAILABLE);
    } finally {
      gate.resolve();
      client.close();
      await (closing ?? node.close());
    }
  });
});
