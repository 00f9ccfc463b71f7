/**
 * Connection settings for etcd, shared by the registry (this node's entry) and
 * discovery (everyone's entries), and the one place that turns them into an
 * etcd client.
 */
import { readFileSync } from "node:fs";
import { Etcd3, isRecoverableError, type IOptions } from "etcd3";
import { invalidOption } from "../errors.ts";

export interface EtcdOptions {
  /** etcd client URLs, `http://host:port` or `https://host:port`; all of one scheme. */
  endpoints: string[];
  /** CA bundle that signs the servers' certificates: PEM contents, or a path via `caFile`. */
  ca?: Buffer | string;
  /** Path of the CA bundle (read at client creation). Ignored when `ca` is given. */
  caFile?: string;
  /** Client certificate (PEM) for mutual TLS; needs `key`. */
  cert?: Buffer | string;
  /** Private key (PEM) of `cert`. */
  key?: Buffer | string;
  /** User name for etcd password authentication; needs `password`. */
  username?: string;
  password?: string;
  /** How long to wait while connecting. Default: `DEFAULT_ETCD_OPTIONS.dialTimeoutMs`. */
  dialTimeoutMs?: number;
  /** Deadline of each unary request (streams excluded). Default: `DEFAULT_ETCD_OPTIONS.requestTimeoutMs`. */
  requestTimeoutMs?: number;
  /**
   * After 3 failures in a row an endpoint is skipped for this long, then tried
   * again with one request. Default: `DEFAULT_ETCD_OPTIONS.hostBackoffMs`.
   */
  hostBackoffMs?: number;
  /** Longest wait between attempts to re-open watches. Default: `DEFAULT_ETCD_OPTIONS.watchReconnectMaxMs`. */
  watchReconnectMaxMs?: number;
}

export const DEFAULT_ETCD_OPTIONS = {
  /** etcd's own default client URL. */
  endpoints: ["http://127.0.0.1:2379"],
  dialTimeoutMs: 5_000,
  requestTimeoutMs: 5_000,
  /**
   * Short, so that the node notices etcd is back within about a second (the
   * client's own default keeps a failed endpoint closed for 5 s).
   */
  hostBackoffMs: 1_000,
  /** Watches re-open within this long after etcd is back (the client's own default grows to 30 s). */
  watchReconnectMaxMs: 2_000,
} as const;

type FaultHandling = NonNullable<IOptions["faultHandling"]>;
type HostPolicy = ReturnType<NonNullable<FaultHandling["host"]>>;
type WatchBackoff = NonNullable<FaultHandling["watchBackoff"]>;

/** Consecutive failures after which an endpoint is skipped for a while. */
const HOST_FAILURE_THRESHOLD = 3;

/** Thrown instead of calling an endpoint that keeps failing; the client treats it like its own breaker's error. */
class EndpointSkippedError extends Error {
  readonly isBrokenCircuitError = true;
}

/**
 * Per-endpoint fault handling: after `HOST_FAILURE_THRESHOLD` retryable
 * failures in a row the endpoint is skipped for `backoffMs` (the client then
 * tries another endpoint), then a single request probes it.
 */
function endpointBreaker(host: string, backoffMs: number): HostPolicy {
  let failures = 0;
  let skipUntil = 0;
  let probing = false;
  const noEvent = () => ({ dispose: () => undefined });
  const policy = {
    onSuccess: noEvent,
    onFailure: noEvent,
    async execute<T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> {
      const tripped = failures >= HOST_FAILURE_THRESHOLD;
      if (tripped && (Date.now() < skipUntil || probing)) {
        throw new EndpointSkippedError(`etcd endpoint ${host} failed ${failures} times in a row; retrying it shortly`);
      }
      if (tripped) probing = true;
      try {
        const result = await fn({ signal: new AbortController().signal });
        failures = 0;
        return result;
      } catch (error) {
        if (error instanceof Error && isRecoverableError(error)) {
          failures++;
          if (failures >= HOST_FAILURE_THRESHOLD) skipUntil = Date.now() + backoffMs;
        } else {
          // The endpoint answered (with an application error): it is up.
          failures = 0;
        }
        throw error;
      } finally {
        if (tripped) probing = false;
      }
    },
  };
  return policy as unknown as HostPolicy;
}

/** Exponential backoff with jitter, capped at `maxMs`. */
function watchBackoff(durationMs: number, maxMs: number): WatchBackoff {
  const duration = Math.round(durationMs * (0.8 + Math.random() * 0.4));
  return { duration, next: () => watchBackoff(Math.min(maxMs, durationMs * 2), maxMs) };
}

/** Checks one endpoint and returns it normalised (no trailing slash). */
function checkEndpoint(endpoint: unknown, index: number): { url: string; secure: boolean } {
  const where = `etcd endpoints[${index}]`;
  if (typeof endpoint !== "string" || endpoint.trim() === "") {
    throw invalidOption(`${where} must be a non-empty string like "http://127.0.0.1:2379"`);
  }
  const text = endpoint.trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw invalidOption(`${where} ${JSON.stringify(text)} must start with http:// or https://, e.g. "http://${text}"`);
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalidOption(`${where} ${JSON.stringify(text)} is not a URL; expected "http://host:port" or "https://host:port"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalidOption(`${where} ${JSON.stringify(text)} must start with http:// or https://`);
  }
  if (url.hostname === "") throw invalidOption(`${where} ${JSON.stringify(text)} has no host`);
  // URL drops a port equal to the scheme's default: look at the text itself.
  const hostPart = text.slice(url.protocol.length + 2).split("/")[0] ?? "";
  const portText = /:(\d+)$/.exec(hostPart)?.[1];
  if (portText === undefined) {
    throw invalidOption(`${where} ${JSON.stringify(text)} needs an explicit port, e.g. "${url.protocol}//${url.hostname}:2379"`);
  }
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalidOption(`${where} ${JSON.stringify(text)} has port ${portText}, outside 1-65535`);
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "") {
    throw invalidOption(`${where} ${JSON.stringify(text)} must be just scheme://host:port`);
  }
  return { url: `${url.protocol}//${hostPart}`, secure: url.protocol === "https:" };
}

function toBuffer(value: Buffer | string, what: string): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (typeof value === "string" && value !== "") return Buffer.from(value);
  throw invalidOption(`etcd ${what} must be PEM contents (a Buffer or a non-empty string)`);
}

function positiveMs(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw invalidOption(`etcd ${what} must be a positive number of milliseconds, got ${String(value)}`);
  }
  return value;
}

/** Validates `options` and maps them to the etcd client's options. */
export function _etcdClientOptions(options: EtcdOptions): IOptions {
  if (options === null || typeof options !== "object") throw invalidOption("etcd options must be an object");
  if (!Array.isArray(options.endpoints) || options.endpoints.length === 0) {
    throw invalidOption('etcd endpoints must be a non-empty list like ["http://127.0.0.1:2379"]');
  }
  const endpoints = options.endpoints.map(checkEndpoint);
  const secure = endpoints.filter((e) => e.secure).length;
  if (secure !== 0 && secure !== endpoints.length) {
    throw invalidOption("etcd endpoints must all use http:// or all use https://, not a mix");
  }
  const dialTimeout = positiveMs(options.dialTimeoutMs ?? DEFAULT_ETCD_OPTIONS.dialTimeoutMs, "dialTimeoutMs");
  const requestTimeout = positiveMs(options.requestTimeoutMs ?? DEFAULT_ETCD_OPTIONS.requestTimeoutMs, "requestTimeoutMs");
  const hostBackoff = positiveMs(options.hostBackoffMs ?? DEFAULT_ETCD_OPTIONS.hostBackoffMs, "hostBackoffMs");
  const watchReconnectMax = positiveMs(options.watchReconnectMaxMs ?? DEFAULT_ETCD_OPTIONS.watchReconnectMaxMs, "watchReconnectMaxMs");

  const mapped: IOptions = {
    hosts: endpoints.map((e) => e.url),
    dialTimeout,
    // A deadline on every unary call, so an unreachable (not refusing) host cannot stall a caller.
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + requestTimeout }),
    faultHandling: {
      host: (host) => endpointBreaker(host, hostBackoff),
      watchBackoff: watchBackoff(Math.min(100, watchReconnectMax), watchReconnectMax),
    },
  };

  let ca: Buffer | undefined;
  if (options.ca !== undefined) {
    ca = toBuffer(options.ca, "ca");
  } else if (options.caFile !== undefined) {
    if (typeof options.caFile !== "string" || options.caFile === "") throw invalidOption("etcd caFile must be a file path");
    try {
      ca = readFileSync(options.caFile);
    } catch (error) {
      throw invalidOption(`etcd caFile ${JSON.stringify(options.caFile)} cannot be read: ${(error as Error).message}`);
    }
  }
  const cert = options.cert === undefined ? undefined : toBuffer(options.cert, "cert");
  const key = options.key === undefined ? undefined : toBuffer(options.key, "key");
  if ((cert === undefined) !== (key === undefined)) {
    throw invalidOption("etcd cert and key go together: give both or neither");
  }
  if ((ca !== undefined || cert !== undefined) && secure === 0) {
    throw invalidOption("etcd TLS settings (ca/caFile/cert/key) need https:// endpoints");
  }
  if (ca !== undefined || cert !== undefined) {
    if (ca === undefined) {
      throw invalidOption("etcd client certificates need the CA too (ca or caFile)");
    }
    mapped.credentials = { rootCertificate: ca, privateKey: key, certChain: cert };
  }

  if ((options.username === undefined) !== (options.password === undefined)) {
    throw invalidOption("etcd username and password go together: give both or neither");
  }
  if (options.username !== undefined && options.password !== undefined) {
    if (typeof options.username !== "string" || options.username === "") throw invalidOption("etcd username must be a non-empty string");
    if (typeof options.password !== "string") throw invalidOption("etcd password must be a string");
    mapped.auth = { username: options.username, password: options.password };
  }
  return mapped;
}

/** Creates an etcd client from validated options. The caller closes it. */
export function _createEtcdClient(options: EtcdOptions): Etcd3 {
  return new Etcd3(_etcdClientOptions(options));
}
