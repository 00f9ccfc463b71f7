import { Server, type ServerOptions } from "@grpc/grpc-js";
import type { Http2Server, ServerHttp2Session } from "node:http2";

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

/**
 * A grpc-js server whose sessions get the large receive window. Per instance: nothing global is patched.
 * Channelz is off: a node serves no channelz service, and tracking it costs every call two `Date`s
 * and a tracker of four closures.
 */
export function _createGrpcServer(options: ServerOptions): Server {
  const server = new Server({ "grpc.enable_channelz": 0, ...options });
  const hooks = server as unknown as { createHttp2Server: (credentials: unknown) => Http2Server };
  const create = hooks.createHttp2Server;
  if (typeof create !== "function") {
    // A grpc-js upgrade moved the hook: fail loudly rather than silently losing the fix.
    throw new Error("grpc-js Server.createHttp2Server is missing: the session window hook needs updating");
  }
  hooks.createHttp2Server = function (this: unknown, credentials: unknown) {
    const http2Server = create.call(this, credentials);
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
