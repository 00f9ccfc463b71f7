/**
 * Channelz is off on the servers and channels a node makes: nothing serves or
 * reads it, and with it on every call pays for its bookkeeping (two `Date`s
 * and a tracker of four closures on the server). grpc-js turns it on by default.
 */
import { expect, test } from "bun:test";
import type { Client, Server } from "@grpc/grpc-js";
import { _createGrpcServer } from "../../src/server/grpc-server.ts";
import { _Connection } from "../../src/wire/connection.ts";

function serverTracksChannelz(server: Server): boolean {
  return (server as unknown as { channelzEnabled: boolean }).channelzEnabled;
}

test("a node's gRPC server keeps no channelz records", () => {
  const server = _createGrpcServer({ "grpc.max_receive_message_length": 1024 });
  expect(serverTracksChannelz(server)).toBe(false);
  server.forceShutdown();
});

test("the caller's options still apply", () => {
  const server = _createGrpcServer({ "grpc.enable_channelz": 1 });
  expect(serverTracksChannelz(server)).toBe(true);
  server.forceShutdown();
});

test("a connection's channel keeps no channelz records", () => {
  const connection = new _Connection("127.0.0.1:1");
  try {
    const client = (connection as unknown as { client: Client }).client;
    const channel = client.getChannel() as unknown as { internalChannel: { channelzEnabled: boolean } };
    expect(channel.internalChannel.channelzEnabled).toBe(false);
  } finally {
    connection.close();
  }
});
