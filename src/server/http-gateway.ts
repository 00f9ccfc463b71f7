/**
 * The node's HTTP face (Bun.serve, same process): health and readiness for
 * orchestrators, Prometheus metrics, ring and stats for operators, and a
 * key/value gateway with the same semantics as the gRPC service.
 *
 *   GET    /healthz                           200 while the process runs
 *   GET    /readyz                            200 while serving (and registered, with etcd), else 503
 *   GET    /metrics                           Prometheus text format
 *   GET    /v1/ring                           members and this node (JSON)
 *   GET    /v1/stats                          group and cache counters (JSON)
 *   GET    /v1/groups/{group}/keys/{key}      the value (404 when not found)
 *   PUT    /v1/groups/{group}/keys/{key}      store the body; TTL from ?ttl= or X-Gcache-Ttl
 *   DELETE /v1/groups/{group}/keys/{key}      delete everywhere
 */
import type { BunRequest, Server } from "bun";
import { GCacheError, isGCacheError, type ErrorCode } from "../errors.ts";
import type { Group } from "../group.ts";
import type { CacheNode } from "../node.ts";
import { parseDuration } from "../units.ts";
import { renderMetrics } from "./metrics.ts";
import { _TokenCheck, type AuthOptions, type TlsOptions } from "../auth.ts";

export interface HttpGatewayOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Time limit of a gateway call when the request gives none, in ms. Default: 5000. */
  timeoutMs?: number;
  /** Serve HTTPS with this certificate. Default: plain HTTP. */
  tls?: TlsOptions;
  /** Require `Authorization: Bearer <token>` on PUT/DELETE (and reads with `reads`). Default: no check. */
  auth?: AuthOptions;
}

const KEY_PATTERN = "/v1/groups/:group/keys/:key";
const KEY_ROUTE = "/v1/groups/";
/** What Bun's router puts in a parameter for an escape it could not decode. */
const REPLACEMENT_CHARACTER = "\uFFFD";
const KEYS_SEGMENT = "/keys/";
const OCTETS = { "content-type": "application/octet-stream" };
const JSON_TYPE = { "content-type": "application/json" };
const TEXT_TYPE = { "content-type": "text/plain; charset=utf-8" };

const HTTP_STATUS: Record<ErrorCode, number> = {
  ERR_INVALID_OPTION: 400,
  ERR_INVALID_ARGUMENT: 400,
  ERR_NOT_FOUND: 404,
  ERR_UNKNOWN_GROUP: 404,
  ERR_VALUE_TOO_LARGE: 413,
  ERR_LOAD_FAILED: 502,
  ERR_CONFLICT: 409,
  ERR_UNAUTHENTICATED: 401,
  ERR_UNAVAILABLE: 503,
  ERR_DEADLINE_EXCEEDED: 504,
  ERR_CANCELLED: 499,
  ERR_CLOSED: 503,
  ERR_INTERNAL: 500,
};

export class _HttpGateway {
  private readonly server: Server<undefined>;
  private readonly check: _TokenCheck | null;
  private readonly checkReads: boolean;

  constructor(
    private readonly node: CacheNode,
    options: HttpGatewayOptions,
  ) {
    const timeoutMs = options.timeoutMs ?? 5_000;
    this.check = options.auth?.token === undefined ? null : new _TokenCheck(options.auth.token);
    this.checkReads = options.auth?.reads === true;
    const tls = options.tls;
    this.server = Bun.serve({
      ...(tls === undefined
        ? {}
        : { tls: { cert: tls.cert, key: tls.key, ...(tls.ca === undefined ? {} : { ca: tls.ca }), requestCert: tls.clientAuth === true } }),
      hostname: options.host,
      port: options.port,
      // Room for the largest value plus slack; larger bodies are refused before they are read.
      maxRequestBodySize: node.maxMessageSize,
      // Gets of single-segment keys take Bun's native router: no URL string, no parsing here.
      routes: { [KEY_PATTERN]: { GET: (request) => this.routedGet(request, timeoutMs), HEAD: (request) => this.routedGet(request, timeoutMs) } },
      fetch: (request) => this.handle(request, timeoutMs),
      error: (error) => errorResponse(new GCacheError("ERR_INTERNAL", `internal error: ${error.message}`)),
    });
  }

  get address(): string {
    return `${this.server.hostname}:${this.server.port}`;
  }

  async close(): Promise<void> {
    await this.server.stop(false);
  }

  private handle(request: Request, timeoutMs: number): Response | Promise<Response> {
    const url = request.url;
    // Routing on the raw path: no URL object on the hot path.
    const pathStart = url.indexOf("/", url.indexOf("//") + 2);
    const queryStart = url.indexOf("?", pathStart);
    const path = queryStart < 0 ? url.slice(pathStart) : url.slice(pathStart, queryStart);
    if (path.startsWith(KEY_ROUTE)) return this.handleKey(request, path, queryStart < 0 ? "" : url.slice(queryStart + 1), timeoutMs);
    if (request.method !== "GET" && request.method !== "HEAD") return methodNotAllowed("GET");
    switch (path) {
      case "/healthz":
        return new Response("ok\n", { headers: TEXT_TYPE });
      case "/readyz":
        return this.node.serving && this.node.registered
          ? new Response("ready\n", { headers: TEXT_TYPE })
          : new Response("not ready\n", { status: 503, headers: TEXT_TYPE });
      case "/metrics":
        return new Response(renderMetrics(this.node), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } });
      case "/v1/ring":
        return Response.json({ self: this.node.name, address: this.node.address, members: this.node.members() });
      case "/v1/stats":
        return Response.json({ node: this.node.name, groups: this.node.stats() });
      default:
        return errorResponse(new GCacheError("ERR_NOT_FOUND", `no route ${request.method} ${path}`));
    }
  }

  private handleKey(request: Request, path: string, query: string, timeoutMs: number): Response | Promise<Response> {
    const keysAt = path.indexOf(KEYS_SEGMENT, KEY_ROUTE.length);
    let groupName: string;
    let key: string;
    try {
      if (keysAt < 0) throw new GCacheError("ERR_NOT_FOUND", `no route ${path}: expected /v1/groups/{group}/keys/{key}`);
      groupName = decoded(path.slice(KEY_ROUTE.length, keysAt));
      key = decoded(path.slice(keysAt + KEYS_SEGMENT.length));
    } catch (error) {
      if (isGCacheError(error)) return errorResponse(error);
      return errorResponse(new GCacheError("ERR_INVALID_ARGUMENT", "malformed percent-encoding in the path"));
    }
    if (this.check !== null && (this.checkReads || (request.method !== "GET" && request.method !== "HEAD"))) {
      if (!this.check.accepts(request.headers.get("authorization"))) {
        return errorResponse(new GCacheError("ERR_UNAUTHENTICATED", "this call needs a valid auth token (Authorization: Bearer <token>)"));
      }
    }
    const group = this.node.group(groupName);
    if (group === undefined) return unknownGroup(groupName);
    switch (request.method) {
      case "GET":
      case "HEAD":
        return this.get(group, key, request, query, timeoutMs);
      case "PUT":
        return this.put(group, key, request, query, timeoutMs);
      case "DELETE":
        return this.delete(group, key, request, query, timeoutMs);
      default:
        return methodNotAllowed("GET, PUT, DELETE");
    }
  }

  /**
   * A GET or HEAD the router matched. Bun decodes the parameters but turns a
   * malformed escape into U+FFFD, which must be a 400: such paths (and a
   * genuine U+FFFD, rare in keys) go through the strict decoder of `handle`.
   */
  private routedGet(request: BunRequest<typeof KEY_PATTERN>, timeoutMs: number): Response | Promise<Response> {
    const { group: groupName, key } = request.params;
    if (this.checkReads || groupName.includes(REPLACEMENT_CHARACTER) || key.includes(REPLACEMENT_CHARACTER)) {
      return this.handle(request, timeoutMs);
    }
    const group = this.node.group(groupName);
    if (group === undefined) return unknownGroup(groupName);
    return this.get(group, key, request, null, timeoutMs);
  }

  /** `query`: the query string, or null when not parsed yet (only a miss needs it). */
  private get(group: Group, key: string, request: Request, query: string | null, timeoutMs: number): Response | Promise<Response> {
    let timeout: number;
    try {
      const hit = group.cachedEntry(key);
      if (hit !== undefined) return valueResponse(hit.value, hit.expiresAt);
      // The time limit bounds a load, so a hit does not read it: reading the
      // headers costs a hit about a fifth of its time here.
      timeout = callTimeout(request, query ?? queryOf(request.url), timeoutMs);
    } catch (error) {
      return errorResponse(error);
    }
    return group
      // No request.signal: a client that hangs up is rare, and listening for it
      // costs every forwarded get; the time limit still bounds the work.
      ._loadMissed(key, { timeoutMs: timeout })
      .then((entry) => valueResponse(entry.value, entry.expiresAt), errorResponse);
  }

  private async put(group: Group, key: string, request: Request, query: string, timeoutMs: number): Promise<Response> {
    try {
      const declared = Number(request.headers.get("content-length") ?? "0");
      if (declared > group.maxValueBytes) {
        throw new GCacheError("ERR_VALUE_TOO_LARGE", `value of ${declared} bytes exceeds the maximum of ${group.maxValueBytes} for group ${group.name}`);
      }
      const value = new Uint8Array(await request.arrayBuffer());
      const ttlText = queryParam(query, "ttl") ?? request.headers.get("x-gcache-ttl") ?? undefined;
      const ttlMs = ttlText === undefined ? undefined : parseMs(ttlText, "ttl");
      const result = await group.set(key, value, {
        ...(ttlMs === undefined ? {} : { ttlMs }),
        timeoutMs: callTimeout(request, query, timeoutMs),
      });
      return Response.json({ stored: true, unreachablePeers: result.unreachablePeers });
    } catch (error) {
      return errorResponse(error);
    }
  }

  private async delete(group: Group, key: string, request: Request, query: string, timeoutMs: number): Promise<Response> {
    try {
      const result = await group.delete(key, { timeoutMs: callTimeout(request, query, timeoutMs) });
      return Response.json(result, { status: result.deleted ? 200 : 404 });
    } catch (error) {
      return errorResponse(error);
    }
  }
}

/** Most path segments hold no escapes: skip the decoder for them (it shows on the hit path). */
function decoded(segment: string): string {
  return segment.includes("%") ? decodeURIComponent(segment) : segment;
}

/** Shared by every response without an expiry: Response copies it, and a ready Headers converts faster than an object. */
const OCTET_INIT: ResponseInit = { headers: new Headers(OCTETS) };

function valueResponse(value: Uint8Array, expiresAt: number): Response {
  return new Response(value, expiresAt === 0 ? OCTET_INIT : { headers: { ...OCTETS, "x-gcache-expires-at": String(expiresAt) } });
}

function errorResponse(error: unknown): Response {
  const known = error instanceof GCacheError ? error : new GCacheError("ERR_INTERNAL", `internal error: ${String(error)}`);
  return new Response(JSON.stringify({ error: known.code, message: known.message }), {
    status: HTTP_STATUS[known.code],
    headers: JSON_TYPE,
  });
}

function methodNotAllowed(allowed: string): Response {
  return new Response(JSON.stringify({ error: "ERR_INVALID_ARGUMENT", message: `method not allowed; use ${allowed}` }), {
    status: 405,
    headers: { ...JSON_TYPE, allow: allowed },
  });
}

function unknownGroup(name: string): Response {
  return errorResponse(new GCacheError("ERR_UNKNOWN_GROUP", `unknown group ${JSON.stringify(name)}`));
}

function queryOf(url: string): string {
  const at = url.indexOf("?");
  return at < 0 ? "" : url.slice(at + 1);
}

function queryParam(query: string, name: string): string | undefined {
  if (query === "") return undefined;
  return new URLSearchParams(query).get(name) ?? undefined;
}

/** A duration from a request: "250ms", "30s", "5m", or a plain number of milliseconds. */
function parseMs(text: string, what: string): number {
  const ms = parseDuration(text, "ms");
  if (ms === null) throw new GCacheError("ERR_INVALID_ARGUMENT", `${what} must be a duration such as 250ms, 30s or 5m, got ${JSON.stringify(text)}`);
  return ms;
}

function callTimeout(request: Request, query: string, fallback: number): number {
  const text = queryParam(query, "timeout") ?? request.headers.get("x-gcache-timeout");
  return text === null || text === undefined ? fallback : parseMs(text, "timeout");
}
