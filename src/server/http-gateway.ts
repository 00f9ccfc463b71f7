/**
 * The node's HTTP face (its own HTTP/1.1 server, same process): health and readiness for
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
import { GCacheError, isGCacheError, type ErrorCode } from "../errors.ts";
import type { Group } from "../group.ts";
import type { CacheNode } from "../node.ts";
import { parseDuration } from "../units.ts";
import { renderMetrics } from "./metrics.ts";
import { _TokenCheck, type AuthOptions, type TlsOptions } from "../auth.ts";
import type { _HttpRequest } from "./http-request.ts";
import { _HttpServer, _ResponseHead, type _HttpResponse } from "./http-server.ts";

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

/** The key routes are read from the request's bytes: a hit makes no string of its path, only of its group and key. */
const KEY_ROUTE = Buffer.from("/v1/groups/", "latin1");
const KEYS_SEGMENT = Buffer.from("/keys/", "latin1");
const VALUE_HEAD = new _ResponseHead(200, "content-type: application/octet-stream\r\n");
const TEXT_HEAD = new _ResponseHead(200, "content-type: text/plain; charset=utf-8\r\n");
const NOT_READY_HEAD = new _ResponseHead(503, "content-type: text/plain; charset=utf-8\r\n");
const METRICS_HEAD = new _ResponseHead(200, "content-type: text/plain; version=0.0.4; charset=utf-8\r\n");
const NO_VALUE: Uint8Array = new Uint8Array(0);
/** Longer group names are not remembered between requests. */
const MAX_REMEMBERED_GROUP_BYTES = 128;
/** JSON heads by status, made on first use. */
const jsonHeads = new Map<number, _ResponseHead>();

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

/** Error codes of the server's refusals where not ERR_INVALID_ARGUMENT. */
const REFUSAL_CODES: Partial<Record<number, ErrorCode>> = { 408: "ERR_DEADLINE_EXCEEDED", 413: "ERR_VALUE_TOO_LARGE" };

export class _HttpGateway {
  private readonly server: _HttpServer;
  private readonly check: _TokenCheck | null;
  private readonly checkReads: boolean;
  private readonly timeoutMs: number;
  /**
   * The answer to every hit, refilled each time: the server writes a returned
   * response before it asks again. It holds on to the last value answered.
   */
  private readonly hit = { head: VALUE_HEAD, extraHeaders: "", body: NO_VALUE };
  /** The group named by the last key request without escapes: its name, and its bytes (as many as the name has characters). */
  private lastGroupName = "";
  private readonly lastGroupBytes = Buffer.alloc(MAX_REMEMBERED_GROUP_BYTES);

  constructor(
    private readonly node: CacheNode,
    options: HttpGatewayOptions,
  ) {
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.check = options.auth?.token === undefined ? null : new _TokenCheck(options.auth.token);
    this.checkReads = options.auth?.reads === true;
    const tls = options.tls;
    this.server = new _HttpServer((request) => this.handle(request), {
      host: options.host,
      port: options.port,
      ...(tls === undefined
        ? {}
        : { tls: { cert: tls.cert, key: tls.key, ...(tls.ca === undefined ? {} : { ca: tls.ca }), requestCert: tls.clientAuth === true } }),
      // Room for the largest value plus slack; larger bodies are refused before they are read.
      maxBodyBytes: node.maxMessageSize,
      internalError: errorResponse,
      refusal: (status, message) => jsonResponse(status, { error: REFUSAL_CODES[status] ?? "ERR_INVALID_ARGUMENT", message }),
    });
  }

  get address(): string {
    return `${this.server.hostname}:${this.server.port}`;
  }

  async close(): Promise<void> {
    await this.server.close();
  }

  private handle(request: _HttpRequest): _HttpResponse | Promise<_HttpResponse> {
    if (request.pathStartsWith(KEY_ROUTE)) return this.handleKey(request);
    const path = request.path;
    if (request.method !== "GET" && request.method !== "HEAD") return methodNotAllowed("GET");
    switch (path) {
      case "/healthz":
        return plainResponse(TEXT_HEAD, "ok\n");
      case "/readyz":
        return this.node.serving && this.node.registered
          ? plainResponse(TEXT_HEAD, "ready\n")
          : plainResponse(NOT_READY_HEAD, "not ready\n");
      case "/metrics":
        return plainResponse(METRICS_HEAD, renderMetrics(this.node));
      case "/v1/ring":
        return jsonResponse(200, { self: this.node.name, address: this.node.address, members: this.node.members() });
      case "/v1/stats":
        return jsonResponse(200, { node: this.node.name, groups: this.node.stats() });
      default:
        return errorResponse(new GCacheError("ERR_NOT_FOUND", `no route ${request.method} ${path}`));
    }
  }

  private handleKey(request: _HttpRequest): _HttpResponse | Promise<_HttpResponse> {
    const keysAt = request.pathIndexOf(KEYS_SEGMENT, KEY_ROUTE.length);
    let groupName: string;
    let key: string;
    try {
      if (keysAt < 0) throw new GCacheError("ERR_NOT_FOUND", `no route ${request.path}: expected /v1/groups/{group}/keys/{key}`);
      if (request.pathEscaped) {
        groupName = decoded(request.pathPart(KEY_ROUTE.length, keysAt));
        key = decoded(request.pathPart(keysAt + KEYS_SEGMENT.length));
      } else {
        groupName = this.groupNameAt(request, keysAt);
        key = request.pathPart(keysAt + KEYS_SEGMENT.length);
      }
    } catch (error) {
      if (isGCacheError(error)) return errorResponse(error);
      return errorResponse(new GCacheError("ERR_INVALID_ARGUMENT", "malformed percent-encoding in the path"));
    }
    const method = request.method;
    const isRead = method === "GET" || method === "HEAD";
    if (this.check !== null && (this.checkReads || !isRead) && !this.check.accepts(request.header("authorization"))) {
      return errorResponse(new GCacheError("ERR_UNAUTHENTICATED", "this call needs a valid auth token (Authorization: Bearer <token>)"));
    }
    const group = this.node.group(groupName);
    if (group === undefined) return unknownGroup(groupName);
    if (isRead) return this.get(group, key, request);
    switch (method) {
      case "PUT":
        return this.put(group, key, request);
      case "DELETE":
        return this.delete(group, key, request);
      default:
        return methodNotAllowed("GET, PUT, DELETE");
    }
  }

  /**
   * The group's name in a path without escapes. Most requests name the same
   * group as the one before: its bytes are compared and its string reused,
   * which also spares the group lookup hashing a new string.
   */
  private groupNameAt(request: _HttpRequest, keysAt: number): string {
    // Path bytes become characters one for one (latin1), so the name's length is its bytes'.
    if (keysAt - KEY_ROUTE.length === this.lastGroupName.length && request.pathPartIs(KEY_ROUTE.length, keysAt, this.lastGroupBytes)) {
      return this.lastGroupName;
    }
    const name = request.pathPart(KEY_ROUTE.length, keysAt);
    if (name.length <= this.lastGroupBytes.length) {
      this.lastGroupBytes.write(name, "latin1");
      this.lastGroupName = name;
    }
    return name;
  }

  private get(group: Group, key: string, request: _HttpRequest): _HttpResponse | Promise<_HttpResponse> {
    let timeout: number;
    try {
      const hit = group._cachedValue(key);
      if (hit !== undefined) return this.hitResponse(hit, group._foundExpiresAt);
      // The time limit bounds a load, so a hit does not read it.
      timeout = this.callTimeout(request);
    } catch (error) {
      return errorResponse(error);
    }
    return group
      // A client that hangs up is not noticed: the time limit still bounds the work.
      ._loadMissed(key, { timeoutMs: timeout })
      .then((entry) => valueResponse(entry.value, entry.expiresAt), errorResponse);
  }

  private hitResponse(value: Uint8Array, expiresAt: number): _HttpResponse {
    const hit = this.hit;
    hit.extraHeaders = expiresHeader(expiresAt);
    hit.body = value;
    return hit;
  }

  private async put(group: Group, key: string, request: _HttpRequest): Promise<_HttpResponse> {
    try {
      const value = request.body;
      if (value.length > group.maxValueBytes) {
        throw new GCacheError("ERR_VALUE_TOO_LARGE", `value of ${value.length} bytes exceeds the maximum of ${group.maxValueBytes} for group ${group.name}`);
      }
      const ttlText = queryParam(request.query, "ttl") ?? request.header("x-gcache-ttl") ?? undefined;
      const ttlMs = ttlText === undefined ? undefined : parseMs(ttlText, "ttl");
      const result = await group.set(key, value, {
        ...(ttlMs === undefined ? {} : { ttlMs }),
        timeoutMs: this.callTimeout(request),
      });
      return jsonResponse(200, { stored: true, unreachablePeers: result.unreachablePeers });
    } catch (error) {
      return errorResponse(error);
    }
  }

  private async delete(group: Group, key: string, request: _HttpRequest): Promise<_HttpResponse> {
    try {
      const result = await group.delete(key, { timeoutMs: this.callTimeout(request) });
      return jsonResponse(result.deleted ? 200 : 404, result);
    } catch (error) {
      return errorResponse(error);
    }
  }

  private callTimeout(request: _HttpRequest): number {
    const text = queryParam(request.query, "timeout") ?? request.header("x-gcache-timeout");
    return text === null || text === undefined ? this.timeoutMs : parseMs(text, "timeout");
  }
}

/** Most path segments hold no escapes: skip the decoder for them (it shows on the hit path). */
function decoded(segment: string): string {
  return segment.includes("%") ? decodeURIComponent(segment) : segment;
}

function valueResponse(value: Uint8Array, expiresAt: number): _HttpResponse {
  return { head: VALUE_HEAD, extraHeaders: expiresHeader(expiresAt), body: value };
}

/** The expiry header line of a value, "" for one that never expires. */
function expiresHeader(expiresAt: number): string {
  return expiresAt === 0 ? "" : `x-gcache-expires-at: ${expiresAt}\r\n`;
}

function plainResponse(head: _ResponseHead, body: string): _HttpResponse {
  return { head, extraHeaders: "", body };
}

function jsonResponse(status: number, body: unknown, extraHeaders = ""): _HttpResponse {
  let head = jsonHeads.get(status);
  if (head === undefined) jsonHeads.set(status, (head = new _ResponseHead(status, "content-type: application/json\r\n")));
  return { head, extraHeaders, body: JSON.stringify(body) };
}

function errorResponse(error: unknown): _HttpResponse {
  const known = error instanceof GCacheError ? error : new GCacheError("ERR_INTERNAL", `internal error: ${error instanceof Error ? error.message : String(error)}`);
  return jsonResponse(HTTP_STATUS[known.code], { error: known.code, message: known.message });
}

function methodNotAllowed(allowed: string): _HttpResponse {
  return jsonResponse(405, { error: "ERR_INVALID_ARGUMENT", message: `method not allowed; use ${allowed}` }, `allow: ${allowed}\r\n`);
}

function unknownGroup(name: string): _HttpResponse {
  return errorResponse(new GCacheError("ERR_UNKNOWN_GROUP", `unknown group ${JSON.stringify(name)}`));
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
