/**
 * Addresses as operators write them ("host:port", ":port", "[::1]:port") and
 * the question every node must answer right: is this address me? A node that
 * mistakes itself for a peer sends RPCs to itself and waits on its own
 * singleflight, so every spelling of our own address must be recognised.
 */
import { isIPv4, isIPv6 } from "node:net";
import { networkInterfaces } from "node:os";
import { invalidArgument } from "../errors.ts";

export interface HostPort {
  host: string;
  port: number;
}

export function parseAddress(address: string): HostPort {
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(address.trim());
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || !(port >= 0 && port <= 65535)) {
    throw invalidArgument(`invalid address ${JSON.stringify(address)}: expected host:port, [ipv6]:port or :port`);
  }
  return { host: (match[1] ?? match[2] ?? "").toLowerCase(), port };
}

export function formatAddress({ host, port }: HostPort): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * The target to hand grpc-js for `address`, to dial or to bind. grpc-js
 * resolves an unprefixed target through its DNS resolver, which builds a
 * c-ares resolver for every channel and every bind, even for an IP address:
 * about 10 ms of a node's start-up. An IP address goes to its `ipv4:` or
 * `ipv6:` resolver instead, which takes it as it is; names still go to DNS.
 */
export function _grpcTarget(address: string): string {
  let parsed: HostPort;
  try {
    parsed = parseAddress(address);
  } catch {
    return address;
  }
  if (isIPv4(parsed.host)) return `ipv4:${parsed.host}:${parsed.port}`;
  if (isIPv6(parsed.host)) return `ipv6:[${parsed.host}]:${parsed.port}`;
  return address;
}

const WILDCARD_HOSTS = new Set(["", "0.0.0.0", "::", "0:0:0:0:0:0:0:0"]);

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

function localInterfaceHosts(): string[] {
  const hosts: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) hosts.push(info.address.toLowerCase());
  }
  return hosts;
}

/** Every spelling of this node's own address. */
export class SelfAddress {
  private readonly port: number;
  private readonly hosts = new Set<string>();
  private readonly advertised: string;
  private readonly advertisedAt: HostPort;

  constructor(listen: HostPort, advertise: string) {
    this.port = listen.port;
    this.advertised = advertise;
    this.advertisedAt = parseAddress(advertise);
    // An address that only names our port ("" or a wildcard host) means "this port here".
    for (const host of WILDCARD_HOSTS) this.hosts.add(host);
    if (WILDCARD_HOSTS.has(listen.host)) {
      for (const host of localInterfaceHosts()) this.hosts.add(host);
      this.hosts.add("localhost");
    } else {
      this.hosts.add(listen.host);
      if (isLoopback(listen.host)) for (const host of ["localhost", "127.0.0.1", "::1"]) this.hosts.add(host);
    }
  }

  get address(): string {
    return this.advertised;
  }

  matches(address: string): boolean {
    let parsed: HostPort;
    try {
      parsed = parseAddress(address);
    } catch {
      return false;
    }
    if (parsed.host === this.advertisedAt.host && parsed.port === this.advertisedAt.port) return true;
    return parsed.port === this.port && this.hosts.has(parsed.host);
  }
}
