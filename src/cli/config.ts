/**
 * The serve command's configuration: every flag has an environment twin
 * (GCACHE_<FLAG>) and a default, declared once here; `--help` is generated
 * from the same table. Flags win over the environment, which wins over the
 * default. Bad values raise a `UsageError` naming the flag and the accepted form.
 */
import { readFileSync } from "node:fs";
import type { MemberSpec } from "../cluster/picker.ts";
import { parseAddress } from "../cluster/address.ts";
import { STORE_KINDS, type StoreKind } from "../store/index.ts";
import type { LogLevel } from "../log.ts";
import { formatBytes, parseBytes, parseDuration } from "../units.ts";

export class UsageError extends Error {
  override readonly name = "UsageError";
}

interface FlagSpec {
  description: string;
  /** Shown in --help; `undefined` when there is no default. */
  default?: string;
  valueHint?: string;
  repeatable?: boolean;
}

export const SERVE_FLAGS = {
  port: { description: "gRPC port", default: "8001", valueHint: "PORT" },
  host: { description: "interface to listen on", default: "127.0.0.1", valueHint: "HOST" },
  advertise: { description: "address peers and clients use to reach this node", default: "HOST:PORT", valueHint: "HOST:PORT" },
  node: { description: "node name on the ring", default: "the advertised address", valueHint: "NAME" },
  peers: {
    description: "static membership, comma-separated NAME=HOST:PORT (this node may be listed)",
    valueHint: "A=HOST:PORT,…",
  },
  etcd: { description: "etcd endpoints for discovery, comma-separated (instead of --peers)", valueHint: "URL,…" },
  service: { description: "service name in etcd (key prefix /services/<service>/)", default: "gcache", valueHint: "NAME" },
  "lease-ttl": { description: "etcd lease TTL: how long a vanished node stays a member", default: "10s", valueHint: "DURATION" },
  "etcd-ca": { description: "CA certificate file for etcd over TLS", valueHint: "PATH" },
  "etcd-cert": { description: "client certificate file for etcd", valueHint: "PATH" },
  "etcd-key": { description: "client key file for etcd", valueHint: "PATH" },
  "etcd-user": { description: "etcd user name", valueHint: "NAME" },
  "etcd-password": { description: "etcd password (prefer the environment variable)", valueHint: "SECRET" },
  "etcd-dial-timeout": { description: "time limit to reach etcd", default: "5s", valueHint: "DURATION" },
  weight: { description: "relative share of keys this node takes", default: "1", valueHint: "NUMBER" },
  "drain-grace": {
    description: "on SIGTERM, keep serving this long after leaving the cluster so clients and peers move away",
    default: "1s",
    valueHint: "DURATION",
  },
  group: {
    description:
      "extra group NAME[:BYTES[:STORE[:HOT_SHARE]]] (repeatable or comma-separated); group 'default' always exists",
    valueHint: "NAME[:BYTES[:STORE[:HOT_SHARE]]]",
    repeatable: true,
  },
  "http-port": {
    description: "HTTP admin and gateway port (0 disables)",
    default: "gRPC port + 1000, or any free port when --port is 0",
    valueHint: "PORT",
  },
  "peer-link-port": {
    description: "TCP port for peers' batches (plain TCP, the gRPC port tells peers where it is; none with TLS); off disables",
    default: "any free port",
    valueHint: "PORT|off",
  },
  "cache-bytes": { description: "bytes per group unless the group says otherwise", default: "64MiB", valueHint: "SIZE" },
  store: { description: `store algorithm: ${STORE_KINDS.join(" | ")}`, default: "lru2", valueHint: "KIND" },
  ttl: { description: "default time to live of values (e.g. 30s, 5m; 0 = never)", default: "0", valueHint: "DURATION" },
  "hot-cache-share": {
    description: "most of each group's bytes that copies of values other nodes own may hold; the main cache uses the rest and what the copies leave (0 = no copies)",
    default: "0.125",
    valueHint: "FRACTION",
  },
  "hot-cache-admission": {
    description: "chance that a value fetched from its owner is copied into the hot cache (1 = every fetch)",
    default: "0.1",
    valueHint: "FRACTION",
  },
  "max-value-bytes": { description: "largest value accepted", default: "1MiB", valueHint: "SIZE" },
  origin: {
    description: "loader for misses: HTTP GET of this URL with {group} and {key} placeholders; 404 = not found",
    valueHint: "URL",
  },
  "origin-timeout": { description: "time limit of one origin request", default: "5s", valueHint: "DURATION" },
  "tls-cert": { description: "TLS certificate (PEM file) for gRPC, peers and HTTPS", valueHint: "PATH" },
  "tls-key": { description: "TLS private key (PEM file)", valueHint: "PATH" },
  "tls-ca": { description: "CA bundle (PEM file) that signs peers' and clients' certificates", valueHint: "PATH" },
  "tls-server-name": { description: "name expected in peers' certificates when peers are addressed by IP", default: "localhost on loopback", valueHint: "NAME" },
  "tls-client-auth": { description: "require client certificates signed by --tls-ca: true | false", default: "false", valueHint: "BOOL" },
  "auth-token": { description: "shared token required on writes, peers included (prefer the env twin or --auth-token-file)", valueHint: "SECRET" },
  "auth-token-file": { description: "read the shared token from this file", valueHint: "PATH" },
  "auth-reads": { description: "require the token on reads too: true | false", default: "false", valueHint: "BOOL" },
  "gc-interval": {
    description: "while busy, collect young garbage this often, to shorten long collection stops where much garbage piles up (0 = leave it to the runtime)",
    default: "0",
    valueHint: "DURATION",
  },
  "gc-idle": {
    description: "once the node has been quiet this long after work, stop it for one full collection, so young collections stay short after bursts of loads (0 = leave it to the runtime)",
    default: "0",
    valueHint: "DURATION",
  },
  "log-format": { description: "log line format: json | pretty", default: "json", valueHint: "FORMAT" },
  "log-level": { description: "least severe level logged: debug | info | warn | error", default: "info", valueHint: "LEVEL" },
} as const satisfies Record<string, FlagSpec>;

export type ServeFlag = keyof typeof SERVE_FLAGS;

export function envName(flag: string): string {
  return `GCACHE_${flag.toUpperCase().replaceAll("-", "_")}`;
}

export interface GroupSpec {
  name: string;
  maxBytes: number;
  store: StoreKind;
  /** Overrides --hot-cache-share for this group. */
  hotCacheShare?: number;
}

export interface ServeConfig {
  port: number;
  host: string;
  advertise: string | undefined;
  node: string | undefined;
  peers: MemberSpec[] | undefined;
  groups: GroupSpec[];
  ttlMs: number;
  hotCacheShare: number;
  hotCacheAdmission: number;
  maxValueBytes: number;
  origin: string | undefined;
  originTimeoutMs: number;
  logFormat: "json" | "pretty";
  logLevel: LogLevel;
  etcd: EtcdConfig | undefined;
  tls: { certFile: string; keyFile: string; caFile: string | undefined; clientAuth: boolean; serverName: string | undefined } | undefined;
  authToken: string | undefined;
  authReads: boolean;
  /** HTTP port; 0 picks a free one; null disables the gateway. */
  httpPort: number | null;
  /** The peer link: a port (0 = any free one), or false for none. */
  peerLink: { port: number } | false;
  weight: number;
  drainGraceMs: number;
  /** Young-generation collection beat while busy, in ms; 0 leaves collections to the runtime. */
  gcIntervalMs: number;
  /** Quiet time after work before one full collection, in ms; 0 leaves full collections to the runtime. */
  gcIdleMs: number;
}

export interface EtcdConfig {
  endpoints: string[];
  service: string;
  leaseTtlSeconds: number;
  caFile: string | undefined;
  certFile: string | undefined;
  keyFile: string | undefined;
  username: string | undefined;
  password: string | undefined;
  dialTimeoutMs: number;
}

type RawValue = string | string[] | boolean | undefined;

/** Resolves flags (as parsed by citty) and the environment into a checked configuration. */
export function resolveServeConfig(args: Record<string, RawValue>, env: Record<string, string | undefined>): ServeConfig {
  const raw = (flag: ServeFlag): string | undefined => {
    const given = args[flag];
    if (Array.isArray(given)) return given.join(",");
    if (typeof given === "string") return given;
    if (given === true) {
      if (SERVE_FLAGS[flag].valueHint === "BOOL") return "true";
      throw new UsageError(`--${flag} needs a value (${SERVE_FLAGS[flag].valueHint})`);
    }
    return env[envName(flag)];
  };
  const port = integerIn("port", raw("port") ?? "8001", 0, 65535);
  const host = raw("host") ?? "127.0.0.1";
  if (!/^[\w.:-]*$/.test(host)) throw new UsageError(`--host: expected a host name or IP address, got ${JSON.stringify(host)}`);
  const advertise = raw("advertise");
  if (advertise !== undefined) address("advertise", advertise);
  const store = storeKind("store", raw("store") ?? "lru2");
  const cacheBytes = size("cache-bytes", raw("cache-bytes") ?? "64MiB");
  const groups: GroupSpec[] = [{ name: "default", maxBytes: cacheBytes, store }];
  for (const spec of list(raw("group"))) {
    const group = groupSpec(spec, cacheBytes, store);
    if (groups.some((g) => g.name === group.name)) throw new UsageError(`--group: group ${group.name} is given twice`);
    groups.push(group);
  }
  const peersText = raw("peers");
  const logFormat = raw("log-format") ?? "json";
  if (logFormat !== "json" && logFormat !== "pretty") {
    throw new UsageError(`--log-format: expected json or pretty, got ${JSON.stringify(logFormat)}`);
  }
  const logLevel = raw("log-level") ?? "info";
  if (!["debug", "info", "warn", "error"].includes(logLevel)) {
    throw new UsageError(`--log-level: expected debug, info, warn or error, got ${JSON.stringify(logLevel)}`);
  }
  const origin = raw("origin");
  if (origin !== undefined) originUrl(origin);
  const etcdText = raw("etcd");
  if (etcdText !== undefined && peersText !== undefined) {
    throw new UsageError("--etcd and --peers are alternatives: give one of them");
  }
  const weight = Number(raw("weight") ?? "1");
  if (!(weight > 0) || !Number.isFinite(weight)) {
    throw new UsageError(`--weight: expected a positive number, got ${JSON.stringify(raw("weight"))}`);
  }
  return {
    port,
    host,
    advertise,
    node: raw("node"),
    peers: peersText === undefined ? undefined : peers(peersText),
    groups,
    ttlMs: duration("ttl", raw("ttl") ?? "0", "s"),
    hotCacheShare: fraction("hot-cache-share", raw("hot-cache-share") ?? "0.125", 0, 0.9),
    hotCacheAdmission: fraction("hot-cache-admission", raw("hot-cache-admission") ?? "0.1", 0, 1),
    maxValueBytes: size("max-value-bytes", raw("max-value-bytes") ?? "1MiB"),
    origin,
    originTimeoutMs: duration("origin-timeout", raw("origin-timeout") ?? "5s", "s"),
    logFormat,
    logLevel: logLevel as LogLevel,
    etcd: etcdText === undefined ? undefined : etcdConfig(etcdText, raw),
    httpPort: httpPort(raw("http-port"), port),
    peerLink: peerLink(raw("peer-link-port")),
    tls: tlsConfig(raw),
    authToken: authToken(raw("auth-token"), raw("auth-token-file")),
    authReads: bool("auth-reads", raw("auth-reads") ?? "false"),
    weight,
    drainGraceMs: duration("drain-grace", raw("drain-grace") ?? "1s", "s"),
    // Off by default: a node's own collections stop it no longer than paced ones, four times less often (docs/benchmarks.md).
    gcIntervalMs: duration("gc-interval", raw("gc-interval") ?? "0", "ms"),
    // Off by default: the collection stops the node, for longer the larger its heap, and the runtime's own full collection comes in gaps of a second or more (docs/benchmarks.md).
    gcIdleMs: duration("gc-idle", raw("gc-idle") ?? "0", "ms"),
  };
}

function etcdConfig(text: string, raw: (flag: ServeFlag) => string | undefined): EtcdConfig {
  const endpoints = list(text);
  for (const endpoint of endpoints) {
    if (!/^https?:\/\/[^/\s]+:\d+\/?$/.test(endpoint)) {
      throw new UsageError(`--etcd: expected http(s)://HOST:PORT[,…], got ${JSON.stringify(endpoint)}`);
    }
  }
  if (endpoints.length === 0) throw new UsageError("--etcd: expected at least one http(s)://HOST:PORT");
  const service = raw("service") ?? "gcache";
  if (!/^[\w.-]+$/.test(service)) throw new UsageError(`--service: expected letters, digits, . _ -, got ${JSON.stringify(service)}`);
  const leaseMs = duration("lease-ttl", raw("lease-ttl") ?? "10s", "s");
  if (leaseMs < 1000 || leaseMs % 1000 !== 0) {
    throw new UsageError(`--lease-ttl: expected whole seconds of at least 1s, got ${JSON.stringify(raw("lease-ttl"))}`);
  }
  return {
    endpoints,
    service,
    leaseTtlSeconds: leaseMs / 1000,
    caFile: raw("etcd-ca"),
    certFile: raw("etcd-cert"),
    keyFile: raw("etcd-key"),
    username: raw("etcd-user"),
    password: raw("etcd-password"),
    dialTimeoutMs: duration("etcd-dial-timeout", raw("etcd-dial-timeout") ?? "5s", "s"),
  };
}

function bool(flag: string, text: string): boolean {
  if (text === "true" || text === "1") return true;
  if (text === "false" || text === "0") return false;
  throw new UsageError(`--${flag}: expected true or false, got ${JSON.stringify(text)}`);
}

function tlsConfig(raw: (flag: ServeFlag) => string | undefined): ServeConfig["tls"] {
  const certFile = raw("tls-cert");
  const keyFile = raw("tls-key");
  const caFile = raw("tls-ca");
  const clientAuth = bool("tls-client-auth", raw("tls-client-auth") ?? "false");
  if (certFile === undefined && keyFile === undefined) {
    if (caFile !== undefined || clientAuth) throw new UsageError("--tls-ca and --tls-client-auth need --tls-cert and --tls-key");
    return undefined;
  }
  if (certFile === undefined || keyFile === undefined) throw new UsageError("--tls-cert and --tls-key go together");
  if (clientAuth && caFile === undefined) throw new UsageError("--tls-client-auth needs --tls-ca to check client certificates against");
  return { certFile, keyFile, caFile, clientAuth, serverName: raw("tls-server-name") };
}

function authToken(token: string | undefined, file: string | undefined): string | undefined {
  if (token !== undefined && file !== undefined) throw new UsageError("--auth-token and --auth-token-file are alternatives");
  let value = token;
  if (file !== undefined) {
    try {
      value = readFileSync(file, "utf8").trim();
    } catch (error) {
      throw new UsageError(`--auth-token-file: cannot read ${file}: ${(error as Error).message}`);
    }
  }
  if (value !== undefined && value.length < 16) throw new UsageError("--auth-token: use at least 16 characters");
  return value;
}

function httpPort(text: string | undefined, grpcPort: number): number | null {
  if (text === undefined) {
    if (grpcPort === 0) return 0;
    if (grpcPort + 1000 > 65535) {
      throw new UsageError(`--http-port: gRPC port ${grpcPort} + 1000 is not a port; give --http-port explicitly (0 disables)`);
    }
    return grpcPort + 1000;
  }
  const port = integerIn("http-port", text, 0, 65535);
  return port === 0 ? null : port;
}

function peerLink(text: string | undefined): ServeConfig["peerLink"] {
  if (text === undefined) return { port: 0 };
  if (text === "off") return false;
  return { port: integerIn("peer-link-port", text, 0, 65535) };
}

function list(text: string | undefined): string[] {
  if (text === undefined) return [];
  return text
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

function integerIn(flag: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || value < min || value > max) {
    throw new UsageError(`--${flag}: expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}

function fraction(flag: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < min || value > max) {
    throw new UsageError(`--${flag}: expected a number from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}

function size(flag: string, text: string): number {
  const bytes = parseBytes(text);
  if (bytes === null || bytes <= 0) {
    throw new UsageError(`--${flag}: expected a size such as 64MiB, 512KB or 1048576, got ${JSON.stringify(text)}`);
  }
  return bytes;
}

function duration(flag: string, text: string, plainUnit: "ms" | "s"): number {
  const ms = parseDuration(text, plainUnit);
  if (ms === null) {
    throw new UsageError(`--${flag}: expected a duration such as 250ms, 30s, 5m or 1h, got ${JSON.stringify(text)}`);
  }
  return ms;
}

function storeKind(flag: string, text: string): StoreKind {
  if (!(STORE_KINDS as readonly string[]).includes(text)) {
    throw new UsageError(`--${flag}: expected ${STORE_KINDS.join(" or ")}, got ${JSON.stringify(text)}`);
  }
  return text as StoreKind;
}

function address(flag: string, text: string): string {
  try {
    parseAddress(text);
  } catch {
    throw new UsageError(`--${flag}: expected HOST:PORT, got ${JSON.stringify(text)}`);
  }
  return text;
}

function groupSpec(text: string, cacheBytes: number, store: StoreKind): GroupSpec {
  const [name = "", bytesText, storeText, hotText, ...rest] = text.split(":");
  if (!/^[\w.-]+$/.test(name) || rest.length > 0) {
    throw new UsageError(
      `--group: expected NAME[:BYTES[:STORE[:HOT_SHARE]]] with NAME of letters, digits, . _ -, got ${JSON.stringify(text)}`,
    );
  }
  return {
    name,
    maxBytes: bytesText === undefined || bytesText === "" ? cacheBytes : size("group", bytesText),
    store: storeText === undefined || storeText === "" ? store : storeKind("group", storeText),
    ...(hotText === undefined || hotText === "" ? {} : { hotCacheShare: fraction("group", hotText, 0, 0.9) }),
  };
}

function peers(text: string): MemberSpec[] {
  const members: MemberSpec[] = [];
  for (const item of list(text)) {
    const eq = item.indexOf("=");
    const name = eq < 0 ? item : item.slice(0, eq);
    const at = eq < 0 ? item : item.slice(eq + 1);
    if (name === "") throw new UsageError(`--peers: expected NAME=HOST:PORT, got ${JSON.stringify(item)}`);
    address("peers", at);
    if (members.some((m) => m.name === name)) throw new UsageError(`--peers: ${name} is listed twice`);
    members.push({ name, address: at });
  }
  if (members.length === 0) throw new UsageError("--peers: expected at least one NAME=HOST:PORT");
  return members;
}

function originUrl(text: string): void {
  let url: URL;
  try {
    url = new URL(text.replaceAll("{group}", "g").replaceAll("{key}", "k"));
  } catch {
    throw new UsageError(`--origin: expected an http(s) URL with {key} (and optionally {group}), got ${JSON.stringify(text)}`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || !text.includes("{key}")) {
    throw new UsageError(`--origin: expected an http(s) URL with {key} (and optionally {group}), got ${JSON.stringify(text)}`);
  }
}

/** Every value of a repeatable flag in raw arguments (citty keeps only the last). */
export function repeatedFlag(rawArgs: readonly string[], flag: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === `--${flag}` && i + 1 < rawArgs.length) values.push(rawArgs[++i]!);
    else if (arg.startsWith(`--${flag}=`)) values.push(arg.slice(flag.length + 3));
  }
  return values;
}

/** One help line per flag: the description, its default and its environment twin. */
export function describeFlag(flag: ServeFlag): string {
  const spec: FlagSpec = SERVE_FLAGS[flag];
  const parts = [spec.description];
  if (spec.default !== undefined) parts.push(`default ${spec.default}`);
  parts.push(`env ${envName(flag)}`);
  return `${parts[0]} (${parts.slice(1).join(", ")})`;
}

export { formatBytes };
