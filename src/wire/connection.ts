/**
 * One gRPC channel to one node, shared by every call to it. Used by peers
 * (node to node) and by `GCacheClient` (application to node).
 */
import {
  Client,
  credentials as grpcCredentials,
  Metadata,
  type ChannelCredentials,
  type ClientDuplexStream,
  type ClientOptions,
} from "@grpc/grpc-js";
import { isIP } from "node:net";
import { _cancellation } from "../call.ts";
import { _grpcTarget, parseAddress } from "../cluster/address.ts";
import { GCacheError, invalidOption } from "../errors.ts";
import type { MethodDefinition } from "@grpc/grpc-js";
import { fromServiceError } from "./status.ts";

export interface ConnectionOptions {
  /** Largest message accepted or sent, in bytes. Default: 4 MiB + 64 KiB (a 4 MiB value plus framing). */
  maxMessageBytes?: number;
  /** Channel credentials. Default: insecure (loopback and private networks). */
  credentials?: ChannelCredentials;
  /** Extra grpc-js channel options (merged over ours). */
  channelOptions?: ClientOptions;
  /** Bearer token sent with every call (the nodes' `auth.token`). Default: none. */
  token?: string;
  /**
   * With TLS, the name expected in the server's certificate when the address
   * is an IP (Bun refuses IP server names). Default: "localhost" for loopback
   * addresses; other IP addresses need it.
   */
  tlsServerName?: string;
}

export const DEFAULT_CONNECTION_OPTIONS = {
  maxMessageBytes: 4 * 1024 * 1024 + 64 * 1024,
} as const;

/**
 * Bun's http2 server starves most streams on a connection when responses are
 * 4 KB or more and several calls are in flight, until load stops; a 16 MiB
 * flow-control window on the client side removes it. Every channel we open
 * must carry it (a test guards this).
 */
export const _FLOW_CONTROL_WINDOW = 16 * 1024 * 1024;

/** Per-call context: an absolute deadline (epoch ms) and an optional cancellation signal. */
export interface CallContext {
  deadline: number;
  signal?: AbortSignal;
}

export class _Connection {
  readonly address: string;
  private readonly client: Client;
  private readonly authorization: string | null;
  private closed = false;

  constructor(address: string, options: ConnectionOptions = {}) {
    this.address = address;
    this.authorization = options.token === undefined ? null : `Bearer ${options.token}`;
    const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_CONNECTION_OPTIONS.maxMessageBytes;
    const channelCredentials = options.credentials ?? grpcCredentials.createInsecure();
    const serverName = channelCredentials._isSecure() ? tlsServerName(address, options.tlsServerName) : undefined;
    this.client = new Client(_grpcTarget(address), channelCredentials, {
      ...(serverName === undefined ? {} : { "grpc.ssl_target_name_override": serverName, "grpc.default_authority": serverName }),
      "grpc-node.flow_control_window": _FLOW_CONTROL_WINDOW,
      // Nothing reads channelz; tracking it costs every call a few objects.
      "grpc.enable_channelz": 0,
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.max_receive_message_length": maxMessageBytes,
      "grpc.max_send_message_length": maxMessageBytes,
      // Reconnect quickly after a peer restarts; calls fail fast meanwhile (no wait-for-ready).
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2_000,
      ...options.channelOptions,
    });
  }

  /** One unary call. Rejects with a `GCacheError`; never waits past `context.deadline`. */
  unary<Req, Res>(method: MethodDefinition<Req, Res>, request: Req, context: CallContext): Promise<Res> {
    if (this.closed) {
      return Promise.reject(new GCacheError("ERR_CLOSED", `connection to ${this.address} is closed`));
    }
    const signal = context.signal;
    if (signal?.aborted) return Promise.reject(_cancellation(signal));
    return new Promise<Res>((resolve, reject) => {
      const call = this.client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        this.metadata(),
        { deadline: context.deadline },
        (error, response) => {
          if (signal !== undefined) signal.removeEventListener("abort", onAbort);
          if (error) reject(signal?.aborted ? _cancellation(signal) : fromServiceError(error, `${method.path} on ${this.address}`));
          else resolve(response as Res);
        },
      );
      const onAbort = () => call.cancel();
      if (signal !== undefined) signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Opens a bidirectional stream that ends by `deadline` at the latest; null once the connection is closed. */
  duplex<Req, Res>(method: MethodDefinition<Req, Res>, deadline: number): ClientDuplexStream<Req, Res> | null {
    if (this.closed) return null;
    return this.client.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, this.metadata(), {
      deadline,
    });
  }

  private metadata(): Metadata {
    const metadata = new Metadata();
    if (this.authorization !== null) metadata.set("authorization", this.authorization);
    return metadata;
  }

  /** Closes the channel; calls already in flight finish. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }
}

function tlsServerName(address: string, given: string | undefined): string | undefined {
  if (given !== undefined) return given;
  const { host } = parseAddress(address);
  if (!isIP(host)) return undefined;
  if (host.startsWith("127.") || host === "::1") return "localhost";
  throw invalidOption(`TLS to ${address}: an IP address needs tlsServerName, a DNS name found in the server's certificate`);
}

