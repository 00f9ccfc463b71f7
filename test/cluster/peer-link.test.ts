import { afterEach, describe, expect, test } from "bun:test";
import { status } from "@grpc/grpc-js";
import type { Socket } from "bun";
import { GrpcPeer } from "../../src/cluster/peer.ts";
import type { GCacheError } from "../../src/errors.ts";
import { SILENT_LOGGER } from "../../src/log.ts";
import { renderMetrics } from "../../src/server/metrics.ts";
import { CacheNode, type NodeOptions } from "../../src/node.ts";
import type { _Connection } from "../../src/wire/connection.ts";
import { _frame, _FrameReader, _helloPayload, _parseError, LinkFrame, LinkStream } from "../../src/wire/link.ts";
import { codecs, GCACHE_SERVICE } from "../../src/wire/messages.ts";
import { makeCertificates } from "../_support/certs.ts";
import { bytes, text } from "../_support/cluster.ts";
import { recordUnaryCalls } from "../_support/recorded-calls.ts";
import { waitFor } from "../_support/wait.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const within = (ms: number) => ({ deadline: Date.now() + ms });

async function startNode(options: Partial<NodeOptions> = {}): Promise<CacheNode> {
  const node = new CacheNode({
    name: "B",
    port: 0,
    groups: [
      {
        name: "g",
        maxBytes: 32 << 20,
        maxValueBytes: 4 << 20,
        loader: (key) => {
          if (key === "broken") throw new Error("origin down");
          return bytes(`loaded:${key}`);
        },
      },
    ],
    ...options,
  });
  await node.start();
  cleanups.push(() => node.close());
  return node;
}

interface PeerInternals {
  connection: _Connection;
  link: { state: string } | null;
  batchStream: { stream: { call: object } | null };
  writeStream: { stream: { call: object } | null };
}

/** A peer of `node` whose unary calls are recorded, and a way to see what carries its streams. */
function linkedPeer(node: CacheNode, options: ConstructorParameters<typeof GrpcPeer>[2] = {}) {
  const peer = new GrpcPeer("B", node.address, options);
  cleanups.push(() => peer.close());
  const internals = peer as unknown as PeerInternals;
  const calls = recordUnaryCalls(peer);
  const carrier = (which: "batchStream" | "writeStream") => internals[which].stream?.call.constructor.name ?? "none";
  return { peer, calls, linkState: () => internals.link?.state ?? "off", carrier };
}

/** Gets on the peer until its batches go on the link. */
async function warmLink(peer: GrpcPeer, carrier: (which: "batchStream") => string) {
  await waitFor(
    async () => {
      await peer.get("g", "warm", within(5_000));
      return carrier("batchStream") === "LinkCall";
    },
    5_000,
    "the peer link",
  );
}

/** Gets of "k" (which holds "v") until the peer's link has failed `count` times in a row. */
async function getUntilLinkFailures(peer: GrpcPeer, count: number) {
  const link = (peer as unknown as { link: { failures: number } }).link;
  await waitFor(
    async () => {
      expect(text((await peer.get("g", "k", within(5_000))).value)).toBe("v");
      return link.failures === count;
    },
    5_000,
    `${count} failed link(s)`,
  );
}

/** A raw connection to a node's link port; frames it receives are collected. */
async function rawLink(port: number) {
  const frames: { type: number; payload: Buffer }[] = [];
  let closed = false;
  const reader = new _FrameReader(64 << 20, (type, payload) => frames.push({ type, payload: Buffer.from(payload) }));
  const socket = await Bun.connect<undefined>({
    hostname: "127.0.0.1",
    port,
    socket: {
      data: (_socket, chunk) => void reader.push(chunk),
      close: () => void (closed = true),
      error: () => void (closed = true),
    },
  });
  cleanups.push(() => socket.terminate());
  return {
    frames,
    closed: () => closed,
    send: (type: number, payload: Uint8Array) => void socket.write(_frame(type, payload)),
    sendRaw: (raw: Uint8Array) => void socket.write(raw),
    socket: socket as Socket<undefined>,
  };
}

describe("peer link", () => {
  test("batched gets go on the link once it is known: hits, deferred loads and failures answered, no Get calls", async () => {
    const node = await startNode();
    const group = node.group("g")!;
    for (let i = 0; i < 10; i++) await group.set(`k${i}`, bytes(`v${i}`));
    const { peer, calls, carrier } = linkedPeer(node);
    await warmLink(peer, carrier);
    const keys = Array.from({ length: 30 }, (_, i) => `fresh${i}`);
    const asked = [...keys, "k1", "k9", "broken"];
    const got = await Promise.all(asked.map((key) => peer.get("g", key, within(5_000)).then((e) => text(e.value), (e: GCacheError) => e.code)));
    expect(got).toEqual([...keys.map((key) => `loaded:${key}`), "v1", "v9", "ERR_LOAD_FAILED"]);
    expect(carrier("batchStream")).toBe("LinkCall");
    expect(calls.filter((call) => call !== "PeerLink")).toEqual([]);
    // Operators see the stream on the link in the node's metrics.
    await waitFor(() => node._openLinkStreams === 1 && node._openBatchStreams === 1, 5_000, "the gRPC stream to be retired");
    const metrics = renderMetrics(node);
    expect(metrics).toContain("gcache_peer_link_streams_open 1\n");
    expect(metrics).toContain("gcache_peer_streams_open 1\n");
  });

  test("large values cross the link whole, in frames that span many reads", async () => {
    const node = await startNode();
    const sizes = [1, 70_000, 1_000_000, 3_000_000];
    const value = (size: number) => bytes("x".repeat(size - 1) + String(size % 10));
    for (const size of sizes) await node.group("g")!.set(`big${size}`, value(size));
    const { peer, carrier } = linkedPeer(node);
    await warmLink(peer, carrier);
    const got = await Promise.all(sizes.map((size) => peer.get("g", `big${size}`, within(10_000))));
    expect(carrier("batchStream")).toBe("LinkCall");
    got.forEach((entry, i) => expect(Buffer.compare(Buffer.from(entry.value), Buffer.from(value(sizes[i]!)))).toBe(0));
  });

  test("writes go on the link too, and are applied at the owner", async () => {
    const node = await startNode();
    const { peer, calls, carrier } = linkedPeer(node);
    await warmLink(peer, carrier);
    await Promise.all(Array.from({ length: 20 }, (_, i) => peer.set("g", `w${i}`, bytes(`set${i}`), 0, within(5_000))));
    expect(carrier("writeStream")).toBe("LinkCall");
    const deleted = await Promise.all([peer.delete("g", "w0", within(5_000)), peer.delete("g", "absent", within(5_000))]);
    expect(deleted).toEqual([true, false]);
    const group = node.group("g")!;
    expect(group.cachedEntry("w0", true)).toBeUndefined();
    expect(text(group.cachedEntry("w19", true)!.value)).toBe("set19");
    expect(calls.filter((call) => call !== "PeerLink")).toEqual([]);
  });

  test("a connection without the node's ticket is refused with UNAUTHENTICATED and closed", async () => {
    const node = await startNode();
    const link = await rawLink(node.peerLinkPort);
    link.send(LinkFrame.HELLO, _helloPayload(LinkStream.BATCH_GET, new Uint8Array(16)));
    link.send(LinkFrame.MESSAGE, codecs.BatchGetRequest.encode({ group: "g", keys: ["k"], id: 1, timeoutMs: 1000 }));
    await waitFor(() => link.closed(), 5_000, "the refused connection to close");
    expect(link.frames.map((f) => f.type)).toEqual([LinkFrame.ERROR]);
    const error = _parseError(link.frames[0]!.payload);
    expect(error.code).toBe(status.UNAUTHENTICATED);
    expect(error.details).toContain("ticket");
  });

  test("garbage, an oversized frame and a malformed message each get a clear error and a closed connection; the node serves on", async () => {
    const node = await startNode();
    const ticket = (await new GrpcPeerProbe(node).ask()).ticket;

    const garbage = await rawLink(node.peerLinkPort);
    garbage.sendRaw(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await waitFor(() => garbage.closed(), 5_000, "the garbage connection to close");
    expect(garbage.frames.map((f) => f.type)).toEqual([LinkFrame.ERROR]);
    expect(_parseError(garbage.frames[0]!.payload).code).toBe(status.INVALID_ARGUMENT);

    const oversized = await rawLink(node.peerLinkPort);
    const head = Buffer.alloc(5);
    head.writeUInt32BE(0x7fffffff, 0);
    oversized.sendRaw(head);
    await waitFor(() => oversized.closed(), 5_000, "the oversized connection to close");
    expect(_parseError(oversized.frames[0]!.payload).details).toContain("frame of 2147483647 bytes");

    const malformed = await rawLink(node.peerLinkPort);
    malformed.send(LinkFrame.HELLO, _helloPayload(LinkStream.BATCH_GET, ticket));
    malformed.send(LinkFrame.MESSAGE, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]));
    await waitFor(() => malformed.closed(), 5_000, "the malformed stream to close");
    const last = malformed.frames.at(-1)!;
    expect(last.type).toBe(LinkFrame.ERROR);
    expect(_parseError(last.payload).code).toBe(status.INVALID_ARGUMENT);
    expect(_parseError(last.payload).details).toContain("malformed request message");

    // A well-formed stream on the same node still works.
    const good = await rawLink(node.peerLinkPort);
    await node.group("g")!.set("k", bytes("v"));
    good.send(LinkFrame.HELLO, _helloPayload(LinkStream.BATCH_GET, ticket));
    good.send(LinkFrame.MESSAGE, codecs.BatchGetRequest.encode({ group: "g", keys: ["k"], id: 7, timeoutMs: 1000 }));
    await waitFor(() => good.frames.length > 1, 5_000, "the answer");
    expect([...good.frames[0]!.payload]).toEqual([1]);
    const answer = codecs.BatchGetResponse.decode(good.frames[1]!.payload);
    expect(answer.id).toBe(7);
    expect(text(answer.items[0]!.value)).toBe("v");
    good.send(LinkFrame.END, new Uint8Array(0));
    await waitFor(() => good.closed(), 5_000, "the ended stream to close");
    expect(good.frames.map((f) => f.type)).toEqual([LinkFrame.HELLO, LinkFrame.MESSAGE, LinkFrame.END]);
  });

  test("when the link goes away, batches finish on gRPC and every get is answered", async () => {
    const node = await startNode();
    for (let i = 0; i < 10; i++) await node.group("g")!.set(`k${i}`, bytes(`v${i}`));
    const { peer, linkState, carrier } = linkedPeer(node);
    await warmLink(peer, carrier);
    expect(carrier("batchStream")).toBe("LinkCall");
    (node as unknown as { linkServer: { close(): void } }).linkServer.close();
    for (let round = 0; round < 5; round++) {
      const got = await Promise.all(Array.from({ length: 10 }, (_, i) => peer.get("g", `k${i}`, within(5_000)).then((e) => text(e.value))));
      expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `v${i}`));
    }
    expect(linkState()).toBe("none");
    expect(carrier("batchStream")).not.toBe("LinkCall");
  });

  test("a node with the link off, or with TLS, offers none; its peers keep to gRPC streams", async () => {
    const off = await startNode({ peerLink: false });
    expect(off.peerLinkPort).toBe(0);
    expect((await new GrpcPeerProbe(off).ask()).port).toBe(0);
    const { peer, linkState, carrier } = linkedPeer(off);
    await Promise.all(Array.from({ length: 5 }, (_, i) => peer.get("g", `x${i}`, within(5_000))));
    await waitFor(() => linkState() === "none", 5_000, "the peer to learn there is no link");
    await Promise.all(Array.from({ length: 5 }, (_, i) => peer.get("g", `y${i}`, within(5_000))));
    expect(carrier("batchStream")).not.toBe("LinkCall");

    const certs = makeCertificates();
    cleanups.push(() => certs.cleanup());
    const secure = await startNode({ tls: { cert: certs.node.cert, key: certs.node.key, ca: certs.ca } });
    expect(secure.peerLinkPort).toBe(0);
  });

  test("a link whose connection never opens (a firewall dropping packets): its batch goes as a call, and the link is tried again after a growing wait", async () => {
    const node = await startNode();
    await node.group("g")!.set("k", bytes("v"));
    const warnings: { message: string; fields: Record<string, unknown> | undefined }[] = [];
    const logger = { ...SILENT_LOGGER, warn: (message: string, fields?: Record<string, unknown>) => void warnings.push({ message, fields }) };
    const { peer, calls, linkState } = linkedPeer(node, {
      logger,
      _peerLinkOptions: { connect: () => new Promise(() => {}), connectTimeoutMs: 200, retryAfterMs: 300 },
    });
    const link = (peer as unknown as { link: { retryAt: number } }).link;
    const started = Date.now();
    // Until the link is known and a batch waited on the connection that never opens.
    await getUntilLinkFailures(peer, 1);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(linkState()).toBe("none");
    expect(calls).toContain("BatchGet");
    const firstWait = link.retryAt - Date.now();
    expect(firstWait).toBeGreaterThan(0);
    expect(firstWait).toBeLessThanOrEqual(300);
    await getUntilLinkFailures(peer, 2);
    expect(link.retryAt - Date.now()).toBeGreaterThan(300);
    // Each time the link is given up, operators hear why and for how long.
    expect(warnings.map((w) => [w.message, w.fields?.error, w.fields?.retryInMs])).toEqual([
      ["peer link unusable: batches go on gRPC streams meanwhile", "peer link: not accepted within 200 ms", 300],
      ["peer link unusable: batches go on gRPC streams meanwhile", "peer link: not accepted within 200 ms", 600],
    ]);
  });

  test("a port where something else listens and never takes the ticket: the batch goes as a call within the connect timeout", async () => {
    const node = await startNode();
    await node.group("g")!.set("k", bytes("v"));
    const silent = Bun.listen<undefined>({ hostname: "127.0.0.1", port: 0, socket: { data: () => {} } });
    cleanups.push(() => silent.stop(true));
    const { peer, calls, linkState } = linkedPeer(node, {
      _peerLinkOptions: { connect: (options) => Bun.connect({ ...options, port: silent.port }), connectTimeoutMs: 200 },
    });
    const started = Date.now();
    await getUntilLinkFailures(peer, 1);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(linkState()).toBe("none");
    expect(calls).toContain("BatchGet");
  });

  test("with an auth token, PeerLink needs it; peers that have it use the link", async () => {
    const token = "link-test-token-0123456789";
    const node = await startNode({ auth: { token } });
    await node.group("g")!.set("k", bytes("v"));
    await expect(new GrpcPeerProbe(node).ask()).rejects.toMatchObject({ code: "ERR_UNAUTHENTICATED" });
    const { peer, carrier } = linkedPeer(node, { token });
    await warmLink(peer, carrier);
    expect(text((await peer.get("g", "k", within(5_000))).value)).toBe("v");
    await peer.set("g", "w", bytes("x"), 0, within(5_000));
    expect(text(node.group("g")!.cachedEntry("w", true)!.value)).toBe("x");
  });

  test("a fixed link port is taken; a bad one is refused", async () => {
    expect(() => new CacheNode({ port: 0, peerLink: { port: 70_000 } })).toThrow("peerLink.port must be 0-65535");
    const first = await startNode();
    const taken = new CacheNode({ name: "C", port: 0, peerLink: { port: first.peerLinkPort } });
    await expect(taken.start()).rejects.toThrow("cannot listen for peer links");
  });
});

/** Asks a node's PeerLink call directly. */
class GrpcPeerProbe {
  constructor(private readonly node: CacheNode) {}
  async ask() {
    const peer = new GrpcPeer("probe", this.node.address, { peerLink: false });
    try {
      const connection = (peer as unknown as PeerInternals).connection;
      return await connection.unary(GCACHE_SERVICE.PeerLink, {}, within(5_000));
    } finally {
      peer.close();
    }
  }
}
