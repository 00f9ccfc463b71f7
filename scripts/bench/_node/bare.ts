/**
 * The baseline for the node benchmark: a bare grpc-js unary server that
 * answers `/pb.GCache/Get` with a fixed value, through the same protobufjs
 * codecs and with the same server options as a cache node, and nothing else
 * (no groups, no cache, no health service, no request checks).
 *
 *   bun scripts/bench/_node/bare.ts [--value-bytes=100]
 *
 * Prints `READY <address>`, then serves until `{ op: "exit" }` or end of stdin.
 */
import { parseArgs } from "node:util";
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall, type ServiceDefinition } from "@grpc/grpc-js";
import { GCACHE_SERVICE, type Request, type ResponseForGet } from "../../../src/wire/messages.ts";
import { serveCommands } from "./commands.ts";

const { values: args } = parseArgs({ options: { "value-bytes": { type: "string", default: "100" } } });
const valueBytes = Number(args["value-bytes"]);
if (!Number.isInteger(valueBytes) || valueBytes < 0) throw new Error(`--value-bytes must be a whole number, got ${args["value-bytes"]}`);

const RESPONSE: ResponseForGet = { value: new Uint8Array(valueBytes).fill(7), expiresAtMs: 0, unreachablePeers: [] };

// What a node with default groups configures: 1 MiB + 4 KiB largest entry, plus 64 KiB framing.
const MAX_MESSAGE = 1024 * 1024 + 4096 + 64 * 1024;
const server = new Server({
  "grpc.max_receive_message_length": MAX_MESSAGE,
  "grpc.max_send_message_length": MAX_MESSAGE,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 5_000,
});
server.addService({ Get: GCACHE_SERVICE.Get } as unknown as ServiceDefinition, {
  Get: (_call: ServerUnaryCall<Request, ResponseForGet>, callback: sendUnaryData<ResponseForGet>) => callback(null, RESPONSE),
});
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
);

serveCommands(
  `127.0.0.1:${port}`,
  () => {
    throw new Error("the bare server takes no commands");
  },
  () =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 1_000);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    }),
);
