import { Server, type ServerOptions } from "@grpc/grpc-js";
import type { Http2Server, IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from "node:http2";
import { _serveDirectly, _takesDirectly, type _DirectLimits, type _DirectUnary } from "./direct-unary.ts";

/**
 * Receive windows for every HTTP/2 session the server accepts. Bun's http2
 * starves most streams of a connection when large messages (about 4 KB and
 * up) flow while many calls are in flight; a client channel's 16 MiB window
 * covers responses, and this covers requests (large Sets, forwarded Sets).
 * Both windows are raised: the connection's alone makes Bun stop granting
 * stream credit, and any request above 64 KiB then stalls. grpc-js has no
 * option for either, hence the hook below.
 */
const SESSION_WINDOW_BYTES = 16 * 1024 * 1024;

type StreamListener = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => void;

/**
 * A grpc-js server whose sessions get the large receive window, and whose
 * `direct` methods are answered on the stream (see direct-unary.ts; register
 * them with grpc-js too, which serves the calls they do not take). Per
 * instance: nothing global is patched. Channelz is off: a node serves no
 * channelz service, and tracking it costs every call two `Date`s and a
 * tracker of four closures.
 */
export function _createGrpcServer(options: ServerOptions, direct: readonly _DirectUnary[] = []): Server {
  const server = new Server({ "grpc.enable_channelz": 0, ...options });
  const hooks = server as unknown as { createHttp2Server: (credentials: unknown) => Http2Server };
  const create = hooks.createHttp2Server;
  if (typeof create !== "function") {
    // A grpc-js upgrade moved the hook: fail loudly rather than silently losing the fix.
    throw new Error("grpc-js Server.createHttp2Server is missing: the session window hook needs updating");
  }
  const directByPath = new Map(direct.map((method) => [method.definition.path, method]));
  const limits: _DirectLimits = {
    maxReceiveBytes: options["grpc.max_receive_message_length"] ?? 4 * 1024 * 1024,
    maxSendBytes: options["grpc.max_send_message_length"] ?? Number.MAX_SAFE_INTEGER,
  };
  hooks.createHttp2Server = function (this: unknown, credentials: unknown) {
    const http2Server = create.call(this, credentials);
    if (directByPath.size > 0) routeDirectCalls(http2Server, directByPath, limits);
    http2Server.on("session", (session: ServerHttp2Session) => {
      try {
        session.settings({ initialWindowSize: SESSION_WINDOW_BYTES });
        session.setLocalWindowSize(SESSION_WINDOW_BYTES);
      } catch {
        // A session that closed before we got to it needs no window.
      }
    });
    return http2Server;
  };
  return server;
}

/**
 * Puts the direct methods ahead of grpc-js's stream listener (which grpc-js
 * added while creating the server): a stream for one of them that it can take
 * never reaches grpc-js.
 */
function routeDirectCalls(http2Server: Http2Server, directByPath: ReadonlyMap<string, _DirectUnary>, limits: _DirectLimits): void {
  const grpcListeners = http2Server.listeners("stream") as StreamListener[];
  if (grpcListeners.length !== 1) {
    // A grpc-js upgrade changed how it listens: fail loudly rather than answer some calls twice.
    throw new Error(`grpc-js added ${grpcListeners.length} stream listeners, expected 1: the direct methods' routing needs updating`);
  }
  const grpcListener = grpcListeners[0]!;
  http2Server.removeListener("stream", grpcListener);
  http2Server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
    const method = directByPath.get(headers[":path"] as string);
    if (method !== undefined && _takesDirectly(headers)) _serveDirectly(stream, headers, method, limits);
    else grpcListener.call(http2Server, stream, headers, ...rest);
  });
}
