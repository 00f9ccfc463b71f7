/**
 * Registers this node in etcd so that peers discover it: one key,
 * `<prefix>/<service>/<node-name>`, holding a JSON description of the node and
 * attached to a lease the etcd client keeps alive. When the node stops, or
 * stops answering for longer than the lease TTL, the key goes away and peers
 * drop the node.
 *
 * The key is only ever created in a transaction that checks it does not exist,
 * so two nodes configured with the same name cannot both register: the second
 * one is refused. A registration that is lost (lease expired during an etcd
 * outage, lease revoked or key deleted by someone else) is re-created as soon
 * as etcd answers again, with the same check; the only key ever replaced is
 * one left behind by this very node.
 */
import type { Etcd3, Lease, Watcher } from "etcd3";
import { EtcdLeaseInvalidError } from "etcd3";
import packageJson from "../../package.json" with { type: "json" };
import { parseAddress } from "../cluster/address.ts";
import { GCacheError, invalidOption } from "../errors.ts";
import { SILENT_LOGGER, type Logger } from "../log.ts";
import { _createEtcdClient, type EtcdOptions } from "./etcd.ts";

export const DEFAULT_REGISTRY_OPTIONS = {
  /** Root of all service keys. */
  prefix: "/services",
  /** Service name; nodes of one cluster share it. */
  service: "gcache",
  /** Lease TTL: how long peers keep a node that stopped answering etcd. */
  ttlSeconds: 10,
  /** Share of keys the node asks for. */
  weight: 1,
  /** First delay between attempts to re-register after a loss; doubles per failure. */
  retryInitialMs: 100,
  /** Largest delay between re-registration attempts (and never above a quarter of the lease TTL). */
  retryMaxMs: 3_000,
  /** Deadline for revoking the lease on deregistration. */
  revokeTimeoutMs: 2_000,
} as const;

export interface RegistryOptions {
  /** Node name (ring name); unique within the service, no "/". */
  name: string;
  /** host:port peers reach this node's gRPC server at. */
  addr: string;
  /** host:port of the node's HTTP endpoint, if it has one. */
  httpAddr?: string;
  /** Default: `DEFAULT_REGISTRY_OPTIONS.weight`. */
  weight?: number;
  /** Reported version. Default: the package version. */
  version?: string;
  /** Default: `DEFAULT_REGISTRY_OPTIONS.prefix`. */
  prefix?: string;
  /** Default: `DEFAULT_REGISTRY_OPTIONS.service`. */
  service?: string;
  /** Lease TTL in whole seconds (at least 1). Default: `DEFAULT_REGISTRY_OPTIONS.ttlSeconds`. */
  ttlSeconds?: number;
  /** Where etcd is; the registry creates and closes its own client. Ignored when `client` is given. */
  etcd?: EtcdOptions;
  /** An existing client to use; the registry does not close it. */
  client?: Etcd3;
  logger?: Logger;
  retryInitialMs?: number;
  retryMaxMs?: number;
}

/** The JSON stored under the node's key. */
export interface RegistrationValue {
  name: string;
  addr: string;
  httpAddr?: string;
  weight: number;
  version: string;
}

export interface RegistrationInfo {
  key: string;
  /** Lease ID as etcd prints it (hex). */
  leaseId: string;
  value: RegistrationValue;
}

export interface LossInfo {
  key: string;
  /** The lease that was lost (hex). */
  leaseId: string;
  reason: string;
  cause?: unknown;
}

export interface RegistryEvents {
  /** The first registration succeeded. */
  registered: (info: RegistrationInfo) => void;
  /** The registration is gone; re-registration is under way. */
  lost: (info: LossInfo) => void;
  /**
   * Registered again after a loss; `downMs` since the loss. `keyWasGone`: the
   * key had been deleted meanwhile, so every other node dropped this one (and
   * stopped sending it invalidations) for a while.
   */
  reregistered: (info: RegistrationInfo & { downMs: number; keyWasGone: boolean }) => void;
  /**
   * A problem while re-registering that needs attention, e.g. `ERR_CONFLICT`
   * when another live node holds the name. Reported once per new problem;
   * retries go on.
   */
  error: (error: GCacheError) => void;
}

export type RegistryState = "idle" | "registering" | "registered" | "recovering" | "closed";

/** The directory of a service's keys: `<prefix>/<service>/`. */
export function _serviceDirectory(prefix: string, service: string): string {
  return `${prefix}/${service}/`;
}

/** Validates and normalises a prefix: starts with "/", no trailing "/". */
export function _normalisePrefix(prefix: unknown): string {
  if (typeof prefix !== "string" || !prefix.startsWith("/")) {
    throw invalidOption(`prefix must be a string starting with "/", got ${JSON.stringify(prefix)}`);
  }
  const trimmed = prefix.replace(/\/+$/, "");
  if (trimmed.includes("//")) throw invalidOption(`prefix ${JSON.stringify(prefix)} has an empty segment`);
  return trimmed;
}

/** Validates a service or node name: one non-empty key segment. */
export function _checkSegment(value: unknown, what: string): string {
  if (typeof value !== "string" || value === "" || value.includes("/") || value.trim() !== value) {
    throw invalidOption(`${what} must be a non-empty string without "/" or surrounding spaces, got ${JSON.stringify(value)}`);
  }
  return value;
}

function checkPeerAddress(value: unknown, what: string): string {
  if (typeof value !== "string") throw invalidOption(`${what} must be a host:port string`);
  let host: string;
  try {
    host = parseAddress(value).host;
  } catch (error) {
    throw invalidOption(`${what}: ${(error as Error).message}`);
  }
  if (host === "" || host === "0.0.0.0" || host === "::") {
    throw invalidOption(`${what} ${JSON.stringify(value)} must name a host peers can reach, not a wildcard`);
  }
  return value;
}

function positiveMs(value: number, what: string): number {
  if (!Number.isFinite(value) || value <= 0) throw invalidOption(`${what} must be a positive number, got ${value}`);
  return value;
}

/** etcd prints lease IDs in hex; the client gives them in decimal. */
function hexLease(id: string): string {
  try {
    return BigInt(id).toString(16);
  } catch {
    return id;
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function parseHolder(value: Buffer | undefined): { addr?: string; name?: string } {
  if (value === undefined) return {};
  try {
    const parsed = JSON.parse(value.toString("utf8")) as unknown;
    if (parsed !== null && typeof parsed === "object") {
      const { addr, name } = parsed as { addr?: unknown; name?: unknown };
      return {
        ...(typeof addr === "string" ? { addr } : {}),
        ...(typeof name === "string" ? { name } : {}),
      };
    }
  } catch {
    // not ours
  }
  return {};
}

/** What a registration attempt found when the key existed. */
interface Held {
  leaseId: string;
  addr?: string;
}

type Attempt = { ok: true; leaseId: string; lease: Lease; revision: number; created: boolean } | { ok: false; held: Held };

/** The key changed between the steps of an attempt: try again, etcd is fine. */
class KeyRace extends Error {}

type AnyListener = (...args: never[]) => void;

export class Registry {
  /** `<prefix>/<service>/<name>`. */
  readonly key: string;
  readonly value: RegistrationValue;
  private readonly ttlSeconds: number;
  private readonly client: Etcd3;
  private readonly ownsClient: boolean;
  private readonly logger: Logger;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly listeners = new Map<keyof RegistryEvents, Set<AnyListener>>();

  private stateValue: RegistryState = "idle";
  private lease: Lease | null = null;
  private leaseIdValue: string | null = null;
  /** Revision of the put that created the current registration. */
  private registeredRevision = 0;
  /** Leases this node held before (decimal IDs): their key may be replaced. */
  private readonly ownLeases = new Set<string>();
  private lastKeepAliveOk = 0;
  /** Set while etcd does not answer; logged once when it starts and once when it ends. */
  private outageSince: number | null = null;
  private outageTimer: ReturnType<typeof setTimeout> | null = null;
  private lostAt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private retryDelay = 0;
  /** The conflict last reported, so each is reported once. */
  private reportedConflict: string | null = null;
  private inFlight: Promise<unknown> | null = null;
  private stopping = false;
  private stopped: Promise<void> | null = null;
  private closing: Promise<void> | null = null;
  private watcher: Watcher | null = null;
  private watchStarting = false;
  private watchRetryTimer: ReturnType<typeof setTimeout> | null = null;
  /** Bumped to abandon a watch being set up. */
  private watchGeneration = 0;

  constructor(options: RegistryOptions) {
    if (options === null || typeof options !== "object") throw invalidOption("registry options must be an object");
    const name = _checkSegment(options.name, "node name");
    const service = _checkSegment(options.service ?? DEFAULT_REGISTRY_OPTIONS.service, "service");
    const prefix = _normalisePrefix(options.prefix ?? DEFAULT_REGISTRY_OPTIONS.prefix);
    const addr = checkPeerAddress(options.addr, "addr");
    const httpAddr = options.httpAddr === undefined ? undefined : checkPeerAddress(options.httpAddr, "httpAddr");
    const weight = options.weight ?? DEFAULT_REGISTRY_OPTIONS.weight;
    if (typeof weight !== "number" || !Number.isFinite(weight) || weight <= 0) {
      throw invalidOption(`weight must be a positive number, got ${String(weight)}`);
    }
    const ttl = options.ttlSeconds ?? DEFAULT_REGISTRY_OPTIONS.ttlSeconds;
    if (!Number.isInteger(ttl) || ttl < 1) throw invalidOption(`ttlSeconds must be a whole number of seconds >= 1, got ${ttl}`);
    const version = options.version ?? packageJson.version;
    if (typeof version !== "string") throw invalidOption("version must be a string");
    this.retryInitialMs = positiveMs(options.retryInitialMs ?? DEFAULT_REGISTRY_OPTIONS.retryInitialMs, "retryInitialMs");
    // After an etcd restart the old lease lives one more TTL: a node that tries
    // again within it moves its key off that lease (one put, peers see nothing);
    // one that comes later finds the key gone, is dropped and rejoins with its
    // cache discarded. So retry at least four times per TTL, whatever retryMaxMs says.
    this.retryMaxMs = Math.max(
      this.retryInitialMs,
      Math.min(positiveMs(options.retryMaxMs ?? DEFAULT_REGISTRY_OPTIONS.retryMaxMs, "retryMaxMs"), (ttl * 1000) / 4),
    );
    if (options.client === undefined && options.etcd === undefined) {
      throw invalidOption("registry needs etcd options (endpoints) or a client");
    }

    this.key = `${_serviceDirectory(prefix, service)}${name}`;
    this.value = { name, addr, ...(httpAddr === undefined ? {} : { httpAddr }), weight, version };
    this.ttlSeconds = ttl;
    this.logger = options.logger ?? SILENT_LOGGER;
    this.ownsClient = options.client === undefined;
    this.client = options.client ?? _createEtcdClient(options.etcd as EtcdOptions);
  }

  get state(): RegistryState {
    return this.stateValue;
  }

  /** The current lease (hex), or null when not registered. */
  get leaseId(): string | null {
    return this.leaseIdValue === null ? null : hexLease(this.leaseIdValue);
  }

  on<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as AnyListener);
    return this;
  }

  off<E extends keyof RegistryEvents>(event: E, listener: RegistryEvents[E]): this {
    this.listeners.get(event)?.delete(listener as AnyListener);
    return this;
  }

  private emit<E extends keyof RegistryEvents>(event: E, ...args: Parameters<RegistryEvents[E]>): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      try {
        (listener as unknown as (...a: Parameters<RegistryEvents[E]>) => void)(...args);
      } catch (error) {
        this.logger.error("registry event listener threw", { event, error: describeError(error) });
      }
    }
  }

  /**
   * Registers the node. Rejects with `ERR_CONFLICT` when the name is already
   * registered (a node that stopped without deregistering frees it within its
   * lease TTL), `ERR_UNAVAILABLE` when etcd cannot be reached; the registry
   * is then idle and `register()` may be called again.
   */
  async register(): Promise<RegistrationInfo> {
    if (this.closing !== null) throw new GCacheError("ERR_CLOSED", "registry is closed");
    if (this.stateValue !== "idle") throw new GCacheError("ERR_INVALID_ARGUMENT", `registry is already ${this.stateValue}`);
    this.stateValue = "registering";
    this.stopping = false;
    this.stopped = null;
    const attempt = (async () => {
      for (let tries = 1; ; tries++) {
        try {
          return await this.attempt();
        } catch (error) {
          if (!(error instanceof KeyRace) || tries >= 3 || this.stopping) throw error;
        }
      }
    })();
    this.inFlight = attempt;
    let result: Attempt;
    try {
      result = await attempt;
    } catch (error) {
      if (this.stateValue === "registering") this.stateValue = "idle";
      throw new GCacheError("ERR_UNAVAILABLE", `cannot register ${this.key} in etcd: ${describeError(error)}`, { cause: error });
    } finally {
      this.inFlight = null;
    }
    if (!result.ok) {
      if (this.stateValue === "registering") this.stateValue = "idle";
      throw this.conflictError(result.held);
    }
    if (this.stopping) {
      await this.revokeQuietly(result.lease);
      throw new GCacheError("ERR_CLOSED", "registry was deregistered while registering");
    }
    const info = this.adopt(result);
    this.logger.info("registered in etcd", { key: this.key, lease: info.leaseId, ttlSeconds: this.ttlSeconds });
    this.emit("registered", info);
    return info;
  }

  /**
   * Removes the registration: revokes the lease first, so peers drop this node
   * at once, then stops all background work. If etcd cannot be reached the key
   * expires with its lease TTL. Idempotent; `register()` may be called again.
   */
  deregister(): Promise<void> {
    if (this.stopped !== null) return this.stopped;
    this.stopping = true;
    this.stopped = this.teardown();
    return this.stopped;
  }

  /** Deregisters and releases the etcd client if the registry created it. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.deregister();
      this.stateValue = "closed";
      if (this.ownsClient) this.client.close();
    })();
    return this.closing;
  }

  private async teardown(): Promise<void> {
    this.clearTimers();
    if (this.inFlight !== null) await this.inFlight.catch(() => undefined);
    this.cancelWatch();
    const lease = this.lease;
    this.lease = null;
    this.leaseIdValue = null;
    if (lease !== null) {
      lease.removeAllListeners();
      try {
        await lease.revoke({ deadline: Date.now() + DEFAULT_REGISTRY_OPTIONS.revokeTimeoutMs });
        this.logger.info("deregistered from etcd", { key: this.key });
      } catch (error) {
        this.logger.warn("could not revoke the registration lease; the key expires with its TTL", {
          key: this.key,
          ttlSeconds: this.ttlSeconds,
          error: describeError(error),
        });
      }
    }
    this.outageSince = null;
    this.reportedConflict = null;
    this.stateValue = "idle";
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.outageTimer !== null) clearTimeout(this.outageTimer);
    this.outageTimer = null;
  }

  /**
   * One registration attempt: grant a lease, then create the key on it only if
   * it does not exist. A key still held by one of this node's earlier leases
   * (or carrying this node's address) is taken over in place.
   */
  private async attempt(): Promise<Attempt> {
    const lease = this.client.lease(this.ttlSeconds);
    let keep = false;
    try {
      const id = await lease.grant();
      const json = JSON.stringify(this.value);
      const txn = await this.client
        .if(this.key, "Create", "==", 0)
        .then(this.client.put(this.key).value(json).lease(id))
        .else(this.client.get(this.key))
        .commit();
      if (txn.succeeded) {
        keep = true;
        return { ok: true, leaseId: id, lease, revision: Number(txn.header.revision), created: true };
      }
      const existing = txn.responses[0]?.response_range?.kvs[0];
      if (existing === undefined) {
        // Deleted between the compare and the read: the next attempt will find it free.
        throw new KeyRace("registration key changed during the attempt");
      }
      const holder = parseHolder(existing.value);
      const held: Held = { leaseId: existing.lease, ...(holder.addr === undefined ? {} : { addr: holder.addr }) };
      // Ours: one of our leases, or this node's address, which no other live process can be
      // serving (a node restarted by its supervisor before its old lease expired).
      const mine = this.ownLeases.has(existing.lease) || holder.addr === this.value.addr;
      if (!mine) return { ok: false, held };
      // Our own earlier registration survived (a restart, or etcd restarted before it expired): move it to the new lease.
      const takeover = await this.client
        .if(this.key, "Mod", "==", existing.mod_revision)
        .then(this.client.put(this.key).value(json).lease(id))
        .commit();
      if (!takeover.succeeded) throw new KeyRace("registration key changed during the attempt");
      keep = true;
      if (existing.lease !== "0" && this.ownLeases.has(existing.lease)) {
        this.client.leaseClient.leaseRevoke({ ID: existing.lease }).catch(() => undefined);
      }
      return { ok: true, leaseId: id, lease, revision: Number(takeover.header.revision), created: false };
    } finally {
      if (!keep) await this.revokeQuietly(lease);
    }
  }

  private async revokeQuietly(lease: Lease): Promise<void> {
    lease.removeAllListeners();
    try {
      await lease.revoke({ deadline: Date.now() + DEFAULT_REGISTRY_OPTIONS.revokeTimeoutMs });
    } catch {
      // Unreachable: it expires with its TTL.
    }
  }

  private conflictError(held: Held): GCacheError {
    const by = held.addr === undefined ? "another node" : `the node at ${held.addr}`;
    return new GCacheError(
      "ERR_CONFLICT",
      `node name ${JSON.stringify(this.value.name)} is already registered by ${by} (key ${this.key}, lease ${hexLease(held.leaseId)}); ` +
        `give this node another name, or wait: a node that stopped without deregistering frees its name within its lease TTL`,
    );
  }

  /** Makes a successful attempt the current registration and watches over it. */
  private adopt(result: Extract<Attempt, { ok: true }>): RegistrationInfo {
    this.lease = result.lease;
    this.leaseIdValue = result.leaseId;
    this.ownLeases.add(result.leaseId);
    // Only recent leases can still hold the key; keep the set small.
    for (const old of this.ownLeases) {
      if (this.ownLeases.size <= 8) break;
      this.ownLeases.delete(old);
    }
    this.registeredRevision = result.revision;
    this.lastKeepAliveOk = Date.now();
    this.stateValue = "registered";
    this.retryDelay = 0;
    this.reportedConflict = null;
    const lease = result.lease;
    lease.on("keepaliveSucceeded", () => {
      if (lease !== this.lease) return;
      this.lastKeepAliveOk = Date.now();
      this.endOutage("registration kept");
    });
    lease.on("keepaliveFailed", (error: unknown) => {
      if (lease !== this.lease || error instanceof EtcdLeaseInvalidError) return;
      this.beginOutage(error);
    });
    lease.on("lost", (error: unknown) => {
      if (lease !== this.lease) return;
      this.onLoss(error instanceof EtcdLeaseInvalidError ? "lease expired or revoked" : "lease lost", error);
    });
    this.watchKey(result.revision + 1);
    return { key: this.key, leaseId: hexLease(result.leaseId), value: this.value };
  }

  /** etcd stopped answering: log it once, and give the lease up once its TTL has certainly passed. */
  private beginOutage(error: unknown): void {
    if (this.outageSince === null) {
      this.outageSince = Date.now();
      this.logger.warn("etcd unreachable; keeping the registration and retrying", {
        key: this.key,
        error: describeError(error),
      });
    }
    if (this.stateValue === "registered" && this.outageTimer === null) {
      const expiresIn = Math.max(0, this.lastKeepAliveOk + this.ttlSeconds * 1000 - Date.now());
      this.outageTimer = setTimeout(() => {
        this.outageTimer = null;
        if (this.outageSince !== null && this.stateValue === "registered") {
          this.onLoss("etcd unreachable for longer than the lease TTL", error);
        }
      }, expiresIn);
    }
  }

  private endOutage(outcome: string): void {
    if (this.outageTimer !== null) clearTimeout(this.outageTimer);
    this.outageTimer = null;
    if (this.outageSince === null) return;
    const downMs = Date.now() - this.outageSince;
    this.outageSince = null;
    this.logger.info(`etcd reachable again; ${outcome}`, { key: this.key, downMs });
  }

  /** The registration is gone: drop the lease and re-register in the background. */
  private onLoss(reason: string, cause?: unknown): void {
    if (this.stopping || this.stateValue !== "registered") return;
    const lease = this.lease;
    const leaseId = this.leaseIdValue ?? "0";
    this.lease = null;
    this.leaseIdValue = null;
    this.stateValue = "recovering";
    this.lostAt = Date.now();
    if (this.outageTimer !== null) clearTimeout(this.outageTimer);
    this.outageTimer = null;
    if (lease !== null) {
      lease.removeAllListeners();
      if (this.outageSince !== null) {
        // Stop its keepalives; if it outlived the outage, the re-registration moves the key off it and revokes it.
        lease.release();
      } else {
        // etcd answers: the lease may still be alive (key deleted or overwritten), give it back.
        lease.revoke({ deadline: Date.now() + DEFAULT_REGISTRY_OPTIONS.revokeTimeoutMs }).catch(() => undefined);
      }
    }
    this.logger.warn("registration lost; re-registering as soon as etcd answers", {
      key: this.key,
      lease: hexLease(leaseId),
      reason,
    });
    this.emit("lost", {
      key: this.key,
      leaseId: hexLease(leaseId),
      reason,
      ...(cause === undefined ? {} : { cause }),
    });
    this.scheduleRetry(0);
  }

  private scheduleRetry(delayMs: number): void {
    if (this.stopping || this.retryTimer !== null) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      const run = this.recover();
      this.inFlight = run;
      void run.finally(() => {
        if (this.inFlight === run) this.inFlight = null;
      });
    }, delayMs);
  }

  private nextDelay(): number {
    this.retryDelay = this.retryDelay === 0 ? this.retryInitialMs : Math.min(this.retryMaxMs, this.retryDelay * 2);
    // ±20 % jitter so a fleet that lost etcd together does not retry in lockstep.
    return Math.round(this.retryDelay * (0.8 + Math.random() * 0.4));
  }

  private async recover(): Promise<void> {
    if (this.stopping || this.stateValue !== "recovering") return;
    let result: Attempt;
    try {
      result = await this.attempt();
    } catch (error) {
      if (this.stopping) return;
      if (error instanceof KeyRace) {
        this.scheduleRetry(this.retryInitialMs);
        return;
      }
      if (this.outageSince === null) {
        this.outageSince = Date.now();
        this.logger.warn("etcd unreachable; will re-register when it answers", { key: this.key, error: describeError(error) });
      } else {
        this.logger.debug("re-registration attempt failed", { key: this.key, error: describeError(error) });
      }
      this.scheduleRetry(this.nextDelay());
      return;
    }
    if (this.stopping) {
      if (result.ok) await this.revokeQuietly(result.lease);
      return;
    }
    if (!result.ok) {
      // etcd answered, so any outage is over, but another node holds the name: report it once, keep trying.
      this.endOutage("name held by another node");
      const error = this.conflictError(result.held);
      const signature = `${result.held.leaseId}/${result.held.addr ?? ""}`;
      if (this.reportedConflict !== signature) {
        this.reportedConflict = signature;
        this.logger.error("cannot re-register: name taken; retrying", { key: this.key, error: error.message });
        this.emit("error", error);
      } else {
        this.logger.debug("re-registration attempt: name still taken", { key: this.key, holder: result.held.addr });
      }
      this.scheduleRetry(this.nextDelay());
      return;
    }
    this.endOutage("re-registering");
    const info = this.adopt(result);
    const downMs = Date.now() - this.lostAt;
    this.logger.info("re-registered in etcd", { key: this.key, lease: info.leaseId, downMs });
    this.emit("reregistered", { ...info, downMs, keyWasGone: result.created });
  }

  /**
   * Watches the node's own key so that a registration removed behind our back
   * (lease revoked, key deleted or overwritten) is noticed at once rather than
   * at the next keepalive. Without a start revision, first checks the key and
   * watches from the revision of that check.
   */
  private watchKey(fromRevision: number | null): void {
    if (this.stopping || this.watcher !== null || this.watchStarting) return;
    const generation = this.watchGeneration;
    this.watchStarting = true;
    void (async () => {
      try {
        let start = fromRevision;
        if (start === null) {
          const response = await this.client.get(this.key).exec();
          if (generation !== this.watchGeneration) return;
          const kv = response.kvs[0];
          if (kv === undefined) this.onLoss("registration key deleted");
          else if (kv.lease !== this.leaseIdValue) this.onLoss("registration key overwritten");
          start = Number(response.header.revision) + 1;
        }
        const watcher = await this.client.watch().key(this.key).startRevision(String(start)).create();
        if (generation !== this.watchGeneration) {
          watcher.cancel().catch(() => undefined);
          return;
        }
        this.watcher = watcher;
        watcher.on("delete", (kv) => {
          if (Number(kv.mod_revision) > this.registeredRevision) this.onLoss("registration key deleted");
        });
        watcher.on("put", (kv) => {
          if (Number(kv.mod_revision) > this.registeredRevision && kv.lease !== this.leaseIdValue) {
            this.onLoss("registration key overwritten");
          }
        });
        watcher.on("error", (error) => {
          // Cancelled by etcd (e.g. its revision was compacted): check the key and watch again.
          if (this.watcher !== watcher) return;
          this.watcher = null;
          this.logger.debug("registration watch cancelled; watching again", { key: this.key, error: describeError(error) });
          this.watchKey(null);
        });
      } catch (error) {
        if (generation !== this.watchGeneration) return;
        this.logger.debug("could not watch the registration key; retrying", { key: this.key, error: describeError(error) });
        this.watchRetryTimer = setTimeout(() => {
          this.watchRetryTimer = null;
          this.watchKey(null);
        }, this.retryMaxMs);
      } finally {
        if (generation === this.watchGeneration) this.watchStarting = false;
      }
    })();
  }

  private cancelWatch(): void {
    this.watchGeneration++;
    this.watchStarting = false;
    if (this.watchRetryTimer !== null) clearTimeout(this.watchRetryTimer);
    this.watchRetryTimer = null;
    const watcher = this.watcher;
    this.watcher = null;
    if (watcher !== null) {
      watcher.removeAllListeners();
      watcher.cancel().catch(() => undefined);
    }
  }
}
