/**
 * A cache node: groups, the gRPC server that exposes them, and the peer
 * picker that routes keys to their owners. Several nodes can live in one
 * process (that is how the tests build clusters): nothing here is global.
 */
import { ServerCredentials, type ChannelCredentials, type MethodDefinition, type Server, type ServiceDefinition } from "@grpc/grpc-js";
import { _timerDelay } from "./call.ts";
import { _grpcTarget, formatAddress, parseAddress, SelfAddress } from "./cluster/address.ts";
import { GrpcPeer, type Peer } from "./cluster/peer.ts";
import { PeerPicker, type MemberSpec } from "./cluster/picker.ts";
import type { RingOptions } from "./cluster/ring.ts";
import type { EtcdDiscovery } from "./cluster/discovery.ts";
import type { EtcdOptions } from "./registry/etcd.ts";
import type { Registry } from "./registry/registry.ts";
import { SILENT_LOGGER, type Logger } from "./log.ts";
import type { Etcd3 } from "etcd3";
import { GCacheError, invalidArgument, invalidOption } from "./errors.ts";
import { Group, type GroupOptions, type GroupStats } from "./group.ts";
import { _createGrpcServer } from "./server/grpc-server.ts";
import type { _DirectUnary } from "./server/direct-unary.ts";
import { _peerCredentials, _serverCredentials, _TokenCheck, type AuthOptions, type TlsOptions } from "./auth.ts";
import { HealthService } from "./server/health.ts";
import { cacheService, InvalidMessage } from "./server/service.ts";
import { _LinkServer } from "./server/link-server.ts";
import { _linkAvailable } from "./wire/link.ts";
import { GCACHE_SERVICE, HEALTH_SERVICE, ServingStatus } from "./wire/messages.ts";

export interface NodeOptions {
  /** Name on the ring. Default: the advertised address. */
  name?: string;
  /** Interface the gRPC server listens on. Default: "127.0.0.1". */
  host?: string;
  /** gRPC port; 0 picks a free one. Default: 8001. */
  port?: number;
  /** Address peers and clients use to reach this node. Default: host:port (after binding). */
  advertise?: string;
  /** Static membership (this node may be listed or not; it is always a member). Default: this node alone. */
  peers?: readonly MemberSpec[];
  /** Groups to create at start; more can be added with `addGroup`. */
  groups?: readonly GroupOptions[];
  /** How long `close()` waits for in-flight calls, in ms. Default: 5000. */
  drainTimeoutMs?: number;
  /**
   * How long `close()` keeps accepting calls after health turned NOT_SERVING
   * and the node left etcd, so load balancers and peers move away first, in ms. Default: 0.
   */
  drainGraceMs?: number;
  /** TLS for the server and towards peers (mutual with `clientAuth`). Default: none (plaintext). */
  tls?: TlsOptions;
  /** A shared token required on writes (and optionally reads), peers included. Default: none. */
  auth?: AuthOptions;
  /** Server credentials; overrides `tls` for the server side. */
  serverCredentials?: ServerCredentials;
  /** Credentials for connections to peers; overrides `tls` for the peer side. */
  peerCredentials?: ChannelCredentials;
  /**
   * The peer link: peers' batches of gets and writes on plain TCP instead of
   * gRPC streams (the same messages, without HTTP/2's framing; peers learn
   * the port and a ticket over gRPC). Off with TLS or custom credentials,
   * and under Node.js, where every batch stays on gRPC. `false` turns it off.
   * Default: on, on a free port of `host` (`{ port: 0 }`).
   */
  peerLink?: { port?: number } | false;
  /** Ring tuning (virtual nodes, hash). Must be the same on every node. */
  ring?: RingOptions;
  /** Builds the connection to a peer. Default: a gRPC peer. For tests. */
  createPeer?: (name: string, address: string) => Peer;
  /**
   * Membership from etcd instead of `peers`: the node registers under
   * `<prefix>/<service>/<name>` with a lease and follows the member set.
   */
  etcd?: NodeEtcdOptions;
  /** Relative share of keys this node takes (published in etcd). Default: 1. */
  weight?: number;
  /** Version published in etcd. Default: the package version. */
  version?: string;
  /** Default: silent. */
  logger?: Logger;
}

export interface NodeEtcdOptions extends EtcdOptions {
  /** Key prefix. Default: "/services". */
  prefix?: string;
  /** Service name under the prefix. Default: "gcache". */
  service?: string;
  /** Lease TTL in seconds: how long a vanished node stays a member. Default: 10. */
  leaseTtlSeconds?: number;
}

export const DEFAULT_NODE_OPTIONS = {
  host: "127.0.0.1",
  port: 8001,
  drainTimeoutMs: 5_000,
} as const;

/** Protobuf framing and the request's other fields around the largest value. */
const MESSAGE_OVERHEAD_BYTES = 64 * 1024;

type State = "new" | "starting" | "serving" | "closing" | "closed";

export class CacheNode {
  private readonly options: NodeOptions;
  private readonly groups = new Map<string, Group>();
  private readonly health = new HealthService();
  private server: Server | null = null;
  private linkServer: _LinkServer | null = null;
  /** Where the peer link listens (0: any free port). */
  private readonly linkPort: number;
  private picker: PeerPicker | null = null;
  private self: SelfAddress | null = null;
  private nodeName: string | null = null;
  private state: State = "new";
  private inFlight = 0;
  /** Open BatchGetStreams and WriteStreams, by the function that ends each. */
  private readonly batchStreams = new Set<() => void>();
  private drained: (() => void) | null = null;
  private etcdClient: Etcd3 | null = null;
  /** While closing, calls are still accepted until this time (epoch ms). */
  private graceUntil = 0;
  private discovery: EtcdDiscovery | null = null;
  private registry: Registry | null = null;
  private readonly authCheck: _TokenCheck | null;
  /** Fixed when the server starts; later groups must fit it. */
  private maxMessageBytes = 0;

  constructor(options: NodeOptions = {}) {
    this.options = options;
    checkedPort("port", options.port ?? DEFAULT_NODE_OPTIONS.port);
    this.linkPort = options.peerLink === false ? 0 : checkedPort("peerLink.port", options.peerLink?.port ?? 0);
    if (options.etcd !== undefined && options.peers !== undefined) {
      throw invalidOption("peers and etcd are alternatives: give a static member list or etcd endpoints, not both");
    }
    this.authCheck = options.auth?.token === undefined ? null : new _TokenCheck(options.auth.token);
    for (const group of options.groups ?? []) this.addGroup(group);
  }

  /** Creates a group on this node. Names are unique per node. */
  addGroup(options: GroupOptions): Group {
    if (this.groups.has(options.name)) throw invalidOption(`group ${JSON.stringify(options.name)} already exists`);
    if (this.state === "closing" || this.state === "closed") throw new GCacheError("ERR_CLOSED", "node is closed");
    const group = new Group(options);
    if (this.maxMessageBytes > 0 && group.maxValueBytes + group.maxKeyBytes + MESSAGE_OVERHEAD_BYTES > this.maxMessageBytes) {
      group.close();
      throw invalidOption(
        `group ${JSON.stringify(group.name)}: maxValueBytes + maxKeyBytes exceed what this running node's messages carry ` +
          `(${this.maxMessageBytes - MESSAGE_OVERHEAD_BYTES} bytes); declare the group before start()`,
      );
    }
    this.groups.set(group.name, group);
    if (this.picker !== null) group._attach(this.picker);
    return group;
  }

  group(name: string): Group | undefined {
    return this.groups.get(name);
  }

  /**
   * Binds the server and starts serving. Resolves once health reports SERVING.
   * `httpAddress` (the HTTP gateway, when there is one) is published in etcd for operators.
   */
  async start(options: { httpAddress?: string } = {}): Promise<void> {
    if (this.state !== "new") throw new GCacheError("ERR_INVALID_ARGUMENT", `node cannot start: it is ${this.state}`);
    this.state = "starting";
    const host = this.options.host ?? DEFAULT_NODE_OPTIONS.host;
    const maxMessage = this.maxValueBytes() + MESSAGE_OVERHEAD_BYTES;
    this.maxMessageBytes = maxMessage;
    const service = cacheService((name) => this.groups.get(name), {
      accepting: () => this.state === "serving" || Date.now() < this.graceUntil,
      maxResponseBytes: () => this.maxMessageSize,
      auth: this.authCheck === null ? null : { check: this.authCheck, reads: this.options.auth?.reads === true },
      begin: () => this.inFlight++,
      end: () => this.callEnded(),
      streamOpened: (end) => {
        this.batchStreams.add(end);
        return () => this.batchStreams.delete(end);
      },
      peerLink: () => (this.linkServer === null ? null : { port: this.linkServer.port, ticket: this.linkServer.ticket }),
    });
    const definition = validatingService(GCACHE_SERVICE as unknown as Record<string, MethodDefinition<unknown, unknown>>);
    // Get, the hot path, is answered on the stream; grpc-js serves the rest (and Gets it is handed).
    const directGet: _DirectUnary = { definition: definition.Get as MethodDefinition<unknown, unknown>, handler: service.handlers.Get as _DirectUnary["handler"] };
    const server = _createGrpcServer(
      {
        "grpc.max_receive_message_length": maxMessage,
        "grpc.max_send_message_length": maxMessage,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.min_ping_interval_without_data_ms": 5_000,
      },
      [directGet],
    );
    server.addService(definition, service.handlers);
    server.addService(validatingService(HEALTH_SERVICE as unknown as Record<string, MethodDefinition<unknown, unknown>>), this.health.handlers);
    const listen = formatAddress({ host, port: this.options.port ?? DEFAULT_NODE_OPTIONS.port });
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(_grpcTarget(listen), this.options.serverCredentials ?? _serverCredentials(this.options.tls), (error, bound) =>
        error ? reject(new GCacheError("ERR_UNAVAILABLE", `cannot listen on ${listen}: ${error.message}`)) : resolve(bound),
      );
    });
    this.server = server;
    if (this.linkWanted()) {
      try {
        this.linkServer = new _LinkServer({ host, port: this.linkPort, maxMessageBytes: maxMessage, streams: service.linkStreams });
      } catch (error) {
        this.state = "serving";
        await this.close();
        throw new GCacheError("ERR_UNAVAILABLE", `cannot listen for peer links on ${formatAddress({ host, port: this.linkPort })}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    const advertise = this.options.advertise ?? formatAddress({ host: host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host, port });
    parseAddress(advertise);
    this.self = new SelfAddress({ host: parseAddress(listen).host, port }, advertise);
    this.nodeName = this.options.name ?? advertise;
    const peerCredentials = this.options.peerCredentials ?? _peerCredentials(this.options.tls);
    const token = this.options.auth?.token;
    const createPeer =
      this.options.createPeer ??
      ((name: string, address: string) =>
        new GrpcPeer(name, address, {
          maxMessageBytes: maxMessage,
          peerLink: this.options.peerLink !== false,
          ...(this.options.logger === undefined ? {} : { logger: this.options.logger }),
          ...(peerCredentials === undefined ? {} : { credentials: peerCredentials }),
          ...(token === undefined ? {} : { token }),
          ...(this.options.tls?.serverName === undefined ? {} : { tlsServerName: this.options.tls.serverName }),
        }));
    const picker = new PeerPicker(this.nodeName, this.self, createPeer, {
      ...(this.options.ring === undefined ? {} : { ring: this.options.ring }),
      selfAlwaysMember: this.options.etcd === undefined,
    });
    this.picker = picker;
    if (this.options.peers !== undefined) picker.setMembers(this.options.peers);
    for (const group of this.groups.values()) group._attach(picker);
    if (this.options.etcd !== undefined) {
      try {
        await this.joinEtcd(this.options.etcd, advertise, options.httpAddress);
      } catch (error) {
        this.state = "serving";
        await this.close();
        throw error;
      }
    }
    this.state = "serving";
    this.health.set(ServingStatus.SERVING);
  }

  /** Follow etcd's member set, then register; this node joins its own ring as soon as registration succeeds. */
  private async joinEtcd(etcd: NodeEtcdOptions, advertise: string, httpAddress: string | undefined): Promise<void> {
    const logger = this.options.logger ?? SILENT_LOGGER;
    // Loaded on demand: the etcd client is large and a node without etcd never needs it (start-up time).
    const [{ _createEtcdClient }, { EtcdDiscovery }, { Registry }] = await Promise.all([
      import("./registry/etcd.ts"),
      import("./cluster/discovery.ts"),
      import("./registry/registry.ts"),
    ]);
    const client = _createEtcdClient(etcd);
    this.etcdClient = client;
    const where = {
      ...(etcd.prefix === undefined ? {} : { prefix: etcd.prefix }),
      ...(etcd.service === undefined ? {} : { service: etcd.service }),
    };
    const discovery = new EtcdDiscovery({
      client,
      logger,
      ...where,
      onMembers: (members) => {
        try {
          this.applyMembers(members);
          logger.info("membership changed", { members: members.map((m) => m.name) });
        } catch (error) {
          logger.error("ignored an unusable member set", { error: String(error) });
        }
      },
    });
    this.discovery = discovery;
    await discovery.start();
    const registry = new Registry({
      client,
      logger,
      ...where,
      name: this.nodeName!,
      addr: advertise,
      ...(httpAddress === undefined ? {} : { httpAddr: httpAddress }),
      ...(this.options.weight === undefined ? {} : { weight: this.options.weight }),
      ...(this.options.version === undefined ? {} : { version: this.options.version }),
      ...(etcd.leaseTtlSeconds === undefined ? {} : { ttlSeconds: etcd.leaseTtlSeconds }),
    });
    this.registry = registry;
    registry.on("reregistered", ({ keyWasGone }) => {
      if (!keyWasGone) return;
      // The other nodes dropped us and stopped sending us invalidations, while
      // writes for our keys went to other owners: what we hold may be stale.
      for (const group of this.groups.values()) group.invalidateLocal(null);
      logger.warn("rejoined after every other node had dropped this one: cached values discarded");
    });
    await registry.register();
    const self = { name: this.nodeName!, address: advertise, ...(this.options.weight === undefined ? {} : { weight: this.options.weight }) };
    this.applyMembers([...discovery.members().filter((m) => m.name !== self.name), self]);
  }

  /** Whether the node is registered in etcd (always true without etcd once serving). */
  get registered(): boolean {
    if (this.state !== "serving") return false;
    return this.registry === null || this.registry.state === "registered";
  }

  /** Replaces the membership; in-flight requests finish on the view they started with. */
  setPeers(members: readonly MemberSpec[]): void {
    this.applyMembers(members);
  }

  private applyMembers(members: readonly MemberSpec[]): void {
    if (!this.requirePicker().setMembers(members)) return;
    for (const group of this.groups.values()) group._membershipChanged();
  }

  /** The advertised address (host:port). */
  get address(): string {
    return this.requireSelf().address;
  }

  get port(): number {
    return parseAddress(this.address).port;
  }

  /** Largest message (request or response) the node accepts, in bytes. */
  get maxMessageSize(): number {
    return this.maxMessageBytes > 0 ? this.maxMessageBytes : this.maxValueBytes() + MESSAGE_OVERHEAD_BYTES;
  }

  /** This node's name on the ring. */
  get name(): string {
    return this.picker?.ringName ?? this.nodeName ?? this.options.name ?? "";
  }

  get serving(): boolean {
    return this.state === "serving";
  }

  /** BatchGetStreams and WriteStreams peers hold open to this node (for metrics). */
  get _openBatchStreams(): number {
    return this.batchStreams.size;
  }

  members(): readonly MemberSpec[] {
    return this.requirePicker().members();
  }

  /** Name of the member that owns `key`. */
  ownerOf(key: string): string {
    return this.requirePicker().ownerName(key);
  }

  stats(): Record<string, GroupStats> {
    const out: Record<string, GroupStats> = {};
    for (const [name, group] of this.groups) out[name] = group.stats();
    return out;
  }

  /**
   * Drains and stops: health turns NOT_SERVING, new calls are refused with
   * UNAVAILABLE, calls in flight get up to `drainTimeoutMs` to finish, then
   * the server, peer connections and groups close.
   */
  async close(): Promise<void> {
    if (this.state === "closed" || this.state === "closing") return;
    const wasServing = this.state === "serving";
    this.state = "closing";
    this.health.set(ServingStatus.NOT_SERVING);
    // Leave etcd first: peers drop this node at once and stop sending it work.
    // Until they have, keep answering what they still send.
    const grace = this.options.drainGraceMs ?? 0;
    if (wasServing && this.registry !== null) this.graceUntil = Infinity;
    await this.registry?.close().catch(() => {});
    this.graceUntil = wasServing && grace > 0 ? Date.now() + grace : 0;
    if (this.graceUntil > 0) await new Promise((resolve) => setTimeout(resolve, _timerDelay(grace)));
    if (wasServing && this.inFlight > 0) {
      const timeout = this.options.drainTimeoutMs ?? DEFAULT_NODE_OPTIONS.drainTimeoutMs;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, _timerDelay(timeout));
        this.drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    this.health.endWatches();
    // Peers send what a stream still carries as calls, which the closing server refuses with UNAVAILABLE.
    for (const end of [...this.batchStreams]) end();
    const server = this.server;
    if (server !== null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.linkServer?.close();
    await this.discovery?.close().catch(() => {});
    this.etcdClient?.close();
    this.picker?.close();
    for (const group of this.groups.values()) group.close();
    this.state = "closed";
  }

  /** The link carries no TLS: a node with TLS or its own credentials keeps its peers on gRPC (as under Node.js). */
  private linkWanted(): boolean {
    const options = this.options;
    return _linkAvailable && options.peerLink !== false && options.tls === undefined && options.serverCredentials === undefined && options.peerCredentials === undefined;
  }

  /** Of the streams peers hold open to this node, those on the peer link (for metrics). */
  get _openLinkStreams(): number {
    return this.linkServer?.openStreams ?? 0;
  }

  /** Port of the peer link (0: none). */
  get peerLinkPort(): number {
    return this.linkServer?.port ?? 0;
  }

  private callEnded(): void {
    if (--this.inFlight === 0 && this.drained !== null) {
      const drained = this.drained;
      this.drained = null;
      drained();
    }
  }

  private maxValueBytes(): number {
    let max = 0;
    for (const group of this.groups.values()) max = Math.max(max, group.maxValueBytes + group.maxKeyBytes);
    return Math.max(max, 1024 * 1024);
  }

  private requirePicker(): PeerPicker {
    if (this.picker === null) throw new GCacheError("ERR_INVALID_ARGUMENT", "node is not started");
    return this.picker;
  }

  private requireSelf(): SelfAddress {
    if (this.self === null) throw invalidArgument("node is not started: it has no address yet");
    return this.self;
  }
}

function checkedPort(name: string, port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalidOption(`${name} must be 0-65535, got ${port}`);
  return port;
}

/** The cache service with decoders that turn garbage into INVALID_ARGUMENT instead of grpc-js's INTERNAL. */
function validatingService(service: Record<string, MethodDefinition<unknown, unknown>>): ServiceDefinition {
  const out: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(service)) {
    const decode = method.requestDeserialize as (bytes: Buffer) => unknown;
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes);
        } catch (error) {
          return new InvalidMessage(error);
        }
      },
    };
  }
  return out as ServiceDefinition;
}
