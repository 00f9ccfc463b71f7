/**
 * Transport security and access control shared by the gRPC server, peer
 * connections, the client and the HTTP gateway: TLS (optionally mutual) and a
 * shared bearer token required on writes (and optionally reads).
 */
import { createRequire } from "node:module";
import { credentials, ServerCredentials, type ChannelCredentials } from "@grpc/grpc-js";
import { invalidOption } from "./errors.ts";

export interface TlsOptions {
  /** This node's certificate chain (PEM). */
  cert: Buffer | string;
  /** Its private key (PEM). */
  key: Buffer | string;
  /** CA bundle that signs peers' (and, with `clientAuth`, clients') certificates. Default: the system's roots. */
  ca?: Buffer | string;
  /** Require clients to present a certificate signed by `ca`. Default: false. */
  clientAuth?: boolean;
  /** Name expected in peers' certificates when they are addressed by IP. Default: "localhost" on loopback. */
  serverName?: string;
}

export interface AuthOptions {
  /** Shared secret; callers send `authorization: Bearer <token>`. Default: none (no check). */
  token?: string;
  /** Require the token on reads too, not only on writes. Default: false. */
  reads?: boolean;
}

/**
 * node:crypto, loaded when first needed: the runtime compiles it from source
 * at every start (1-2 ms of the executable's start-up), and a node uses it
 * only to check a token or a peer's link ticket (docs/benchmarks.md,
 * "Deferred at start-up"). Random bytes come from the Web Crypto global,
 * which needs no module.
 */
let nodeCrypto: typeof import("node:crypto") | undefined;
/** @internal */
export function _nodeCrypto(): typeof import("node:crypto") {
  return (nodeCrypto ??= createRequire(import.meta.url)("node:crypto") as typeof import("node:crypto"));
}

const pem = (value: Buffer | string) => (typeof value === "string" ? Buffer.from(value) : value);

export function _serverCredentials(tls: TlsOptions | undefined): ServerCredentials {
  if (tls === undefined) return ServerCredentials.createInsecure();
  if (tls.clientAuth === true && tls.ca === undefined) throw invalidOption("tls.clientAuth needs tls.ca to check client certificates against");
  return ServerCredentials.createSsl(tls.ca === undefined ? null : pem(tls.ca), [{ cert_chain: pem(tls.cert), private_key: pem(tls.key) }], tls.clientAuth === true);
}

/** Credentials a node uses towards its peers: trust `ca`, and present its own certificate (for mutual TLS). */
export function _peerCredentials(tls: TlsOptions | undefined): ChannelCredentials | undefined {
  if (tls === undefined) return undefined;
  return credentials.createSsl(tls.ca === undefined ? null : pem(tls.ca), pem(tls.key), pem(tls.cert));
}

/** Compares a presented token with the expected one in constant time (lengths are hidden by hashing). */
export class _TokenCheck {
  private readonly expected: Buffer;

  constructor(token: string) {
    if (token.length < 16) throw invalidOption("an auth token must be at least 16 characters");
    this.expected = _nodeCrypto().createHash("sha256").update(token).digest();
  }

  /** `header` is the Authorization value ("Bearer <token>") or undefined. */
  accepts(header: string | undefined | null): boolean {
    if (header === undefined || header === null || !header.startsWith("Bearer ")) return false;
    const crypto = _nodeCrypto();
    const presented = crypto.createHash("sha256").update(header.slice("Bearer ".length)).digest();
    return crypto.timingSafeEqual(presented, this.expected);
  }
}
