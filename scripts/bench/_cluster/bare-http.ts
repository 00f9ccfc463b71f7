/**
 * The HTTP baselines of the cluster benchmark. By default a bare Bun.serve
 * that answers every request with the same fixed body (and the content type
 * the gateway uses), doing nothing else. With `--keys-file`, one that serves
 * the gateway's own paths from a Map of those keys, each with a value of its
 * own: what any cache built on Bun.serve pays to find and send a value,
 * without the cache. With `--sockets`, no HTTP server at all: Bun's TCP
 * sockets (as the gateway uses), answering each request head (each blank
 * line ending one) with the same prepared bytes, without reading the
 * request: the least any HTTP server on Bun's sockets can cost. With
 * `--http-server`, the gateway's own HTTP server (src/server/http-server.ts)
 * answering every request with the same value as the gateway answers a hit,
 * without routing, key or lookup: what the gateway's HTTP layer costs alone.
 *
 *   bun scripts/bench/_cluster/bare-http.ts --value-bytes=100 [--keys-file=PATH | --sockets | --http-server]
 *
 * Prints `READY 127.0.0.1:<port>`; stops on SIGTERM or when stdin closes.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { _HttpServer, _ResponseHead, type _HttpResponse } from "../../../src/server/http-server.ts";

const { values: args } = parseArgs({
  options: {
    "value-bytes": { type: "string", default: "100" },
    "keys-file": { type: "string" },
    sockets: { type: "boolean", default: false },
    "http-server": { type: "boolean", default: false },
  },
});
const valueBytes = Number(args["value-bytes"]);
if (!Number.isInteger(valueBytes) || valueBytes < 0) throw new Error(`--value-bytes must be a whole number, got ${args["value-bytes"]}`);

const HEADERS = { "content-type": "application/octet-stream" };
const keysFile = args["keys-file"];
const server = args.sockets
  ? socketServer()
  : args["http-server"]
    ? gatewayHttpServer()
    : keysFile === undefined
      ? fixedBodyServer()
      : mapServer(keysFile);

function fixedBodyServer() {
  const body = new Uint8Array(valueBytes).fill(7);
  return Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(body, { headers: HEADERS }) });
}

/**
 * One fixed answer per request head, straight onto the socket. A head ends in
 * CR LF CR LF, which may be split across reads: each connection keeps how much
 * of it the last read ended with. Requests carry no body (GETs only).
 */
function socketServer() {
  const answer = Buffer.from(
    `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${valueBytes}\r\n\r\n`,
    "latin1",
  );
  const response = Buffer.concat([answer, Buffer.alloc(valueBytes, 7)]);
  const END = [13, 10, 13, 10];
  interface Connection {
    matched: number;
    unsent: Uint8Array[];
  }
  const send = (socket: import("bun").Socket<Connection>, bytes: Uint8Array) => {
    const state = socket.data;
    if (state.unsent.length > 0) return void state.unsent.push(bytes);
    const written = socket.write(bytes);
    if (written >= 0 && written < bytes.length) state.unsent.push(bytes.subarray(written));
  };
  const listener = Bun.listen<Connection>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open: (socket) => void (socket.data = { matched: 0, unsent: [] }),
      data: (socket, chunk) => {
        const state = socket.data;
        let heads = 0;
        let matched = state.matched;
        for (let i = 0; i < chunk.length; i++) {
          const byte = chunk[i]!;
          matched = byte === END[matched] ? matched + 1 : byte === 13 ? 1 : 0;
          if (matched === 4) {
            heads++;
            matched = 0;
          }
        }
        state.matched = matched;
        for (let i = 0; i < heads; i++) send(socket, response);
      },
      drain: (socket) => {
        const unsent = socket.data.unsent;
        while (unsent.length > 0) {
          const bytes = unsent[0]!;
          const written = socket.write(bytes);
          if (written < bytes.length) {
            if (written > 0) unsent[0] = bytes.subarray(written);
            return;
          }
          unsent.shift();
        }
      },
    },
  });
  return { port: listener.port, stop: () => listener.stop(true) };
}

/** The gateway's HTTP server with the answer a hit gets, the same response object every time (as the gateway hands back). */
function gatewayHttpServer() {
  const hit: _HttpResponse = {
    head: new _ResponseHead(200, "content-type: application/octet-stream\r\n"),
    extraHeaders: "",
    body: new Uint8Array(valueBytes).fill(7),
  };
  const refuse = (status: number, message: string): _HttpResponse => ({
    head: new _ResponseHead(status, "content-type: text/plain; charset=utf-8\r\n"),
    extraHeaders: "",
    body: `${message}\n`,
  });
  const http = new _HttpServer(() => hit, {
    host: "127.0.0.1",
    port: 0,
    maxBodyBytes: 1024 * 1024,
    internalError: (error) => refuse(500, String(error)),
    refusal: refuse,
  });
  return { port: http.port, stop: () => void http.close() };
}

/** The gateway's route through Bun's router, one value per key (keys: one per line, as sent). */
function mapServer(file: string) {
  const keys = readFileSync(file, "utf8").split("\n").filter((key) => key !== "");
  const values = new Map<string, Uint8Array>();
  keys.forEach((key, i) => values.set(key, new Uint8Array(valueBytes).fill(i & 255)));
  const notFound = () => new Response("not found\n", { status: 404 });
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    routes: {
      "/v1/groups/:group/keys/:key": (request) => {
        const value = values.get(request.params.key);
        return value === undefined ? notFound() : new Response(value, { headers: HEADERS });
      },
    },
    fetch: notFound,
  });
}

process.stdout.write(`READY 127.0.0.1:${server.port}\n`);
const stop = () => {
  void server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
