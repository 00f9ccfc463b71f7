/**
 * Cluster membership from etcd: the nodes registered under
 * `<prefix>/<service>/` (see the registry), kept up to date by a watch.
 *
 * The member set is listed once, then watched from the revision right after
 * the listing, so no change falls in between. If etcd cancels the watch (its
 * revision was compacted while we were disconnected, for instance), the set is
 * listed again and the watch restarted from the new listing. Bursts of changes
 * are coalesced: `onMembers` gets the full, sorted set once the burst settles.
 */
import type { Etcd3, IKeyValue, Watcher } from "etcd3";
import { GCacheError, invalidOption } from "../errors.ts";
import { SILENT_LOGGER, type Logger } from "../log.ts";
import { _createEtcdClient, type EtcdOptions } from "../registry/etcd.ts";
import { DEFAULT_REGISTRY_OPTIONS, _checkSegment, _normalisePrefix, _serviceDirectory } from "../registry/registry.ts";
import { parseAddress } from "./address.ts";
import type { MemberSpec } from "./picker.ts";

export const DEFAULT_DISCOVERY_OPTIONS = {
  prefix: DEFAULT_REGISTRY_OPTIONS.prefix,
  service: DEFAULT_REGISTRY_OPTIONS.service,
  /** Changes arriving within this window are delivered as one update. */
  coalesceMs: 20,
  /** First delay before listing again after a failure; doubles per failure. */
  retryInitialMs: 100,
  /** Largest delay between listing attempts. */
  retryMaxMs: 5_000,
} as const;

export interface EtcdDiscoveryOptions {
  /** Called with the full member set, sorted by name, after every change. Must not block. */
  onMembers: (members: MemberSpec[]) => void;
  /** Where etcd is; discovery creates and closes its own client. Ignored when `client` is given. */
  etcd?: EtcdOptions;
  /** An existing client to use; discovery does not close it. */
  client?: Etcd3;
  /** Default: `DEFAULT_DISCOVERY_OPTIONS.prefix`. */
  prefix?: string;
  /** Default: `DEFAULT_DISCOVERY_OPTIONS.service`. */
  service?: string;
  /** Default: `DEFAULT_DISCOVERY_OPTIONS.coalesceMs`; 0 delivers on the next tick. */
  coalesceMs?: number;
  logger?: Logger;
  retryInitialMs?: number;
  retryMaxMs?: number;
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function byName(a: MemberSpec, b: MemberSpec): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function sameMembers(a: readonly MemberSpec[], b: readonly MemberSpec[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((m, i) => {
    const o = b[i];
    return o !== undefined && m.name === o.name && m.address === o.address && m.weight === o.weight;
  });
}

function nonNegativeMs(value: number, what: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw invalidOption(`${what} must be a non-negative number of milliseconds, got ${String(value)}`);
  }
  return value;
}

type State = "new" | "starting" | "running" | "closed";

export class EtcdDiscovery {
  /** `<prefix>/<service>/`. */
  readonly directory: string;
  private readonly client: Etcd3;
  private readonly ownsClient: boolean;
  private readonly onMembers: (members: MemberSpec[]) => void;
  private readonly logger: Logger;
  private readonly coalesceMs: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;

  private state: State = "new";
  /** Current members by key. */
  private entries = new Map<string, MemberSpec>();
  private delivered: MemberSpec[] | null = null;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private watcher: Watcher | null = null;
  /** Bumped whenever the current listing/watch is abandoned. */
  private generation = 0;
  private resyncTimer: ReturnType<typeof setTimeout> | null = null;
  private retryDelay = 0;
  private disconnected = false;
  private closing: Promise<void> | null = null;

  constructor(options: EtcdDiscoveryOptions) {
    if (options === null || typeof options !== "object") throw invalidOption("discovery options must be an object");
    if (typeof options.onMembers !== "function") throw invalidOption("discovery needs an onMembers callback");
    const prefix = _normalisePrefix(options.prefix ?? DEFAULT_DISCOVERY_OPTIONS.prefix);
    const service = _checkSegment(options.service ?? DEFAULT_DISCOVERY_OPTIONS.service, "service");
    this.coalesceMs = nonNegativeMs(options.coalesceMs ?? DEFAULT_DISCOVERY_OPTIONS.coalesceMs, "coalesceMs");
    this.retryInitialMs = nonNegativeMs(options.retryInitialMs ?? DEFAULT_DISCOVERY_OPTIONS.retryInitialMs, "retryInitialMs") || 1;
    this.retryMaxMs = Math.max(this.retryInitialMs, nonNegativeMs(options.retryMaxMs ?? DEFAULT_DISCOVERY_OPTIONS.retryMaxMs, "retryMaxMs"));
    if (options.client === undefined && options.etcd === undefined) {
      throw invalidOption("discovery needs etcd options (endpoints) or a client");
    }
    this.directory = _serviceDirectory(prefix, service);
    this.onMembers = options.onMembers;
    this.logger = options.logger ?? SILENT_LOGGER;
    this.ownsClient = options.client === undefined;
    this.client = options.client ?? _createEtcdClient(options.etcd as EtcdOptions);
  }

  /** The members as last delivered (empty before `start()`). */
  members(): MemberSpec[] {
    return (this.delivered ?? []).map((m) => ({ ...m }));
  }

  /**
   * Lists the members, calls `onMembers` once with them, and starts watching.
   * Rejects with `ERR_UNAVAILABLE` if etcd cannot be listed (call `close()` to
   * release the client).
   */
  async start(): Promise<void> {
    if (this.state !== "new") throw new GCacheError("ERR_INVALID_ARGUMENT", `discovery cannot start: it is ${this.state}`);
    this.state = "starting";
    const generation = this.generation;
    let revision: number;
    try {
      revision = await this.list(generation);
    } catch (error) {
      if (this.state === "starting") this.state = "new";
      throw new GCacheError("ERR_UNAVAILABLE", `cannot list ${this.directory} in etcd: ${describeError(error)}`, { cause: error });
    }
    if (this.state !== "starting" || generation !== this.generation) {
      throw new GCacheError("ERR_CLOSED", "discovery was closed while starting");
    }
    this.state = "running";
    this.deliver();
    this.watchFrom(revision + 1, generation);
  }

  /** Stops watching and releases the client if discovery created it. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.state = "closed";
      this.generation++;
      if (this.flushTimer !== null) clearTimeout(this.flushTimer);
      this.flushTimer = null;
      if (this.resyncTimer !== null) clearTimeout(this.resyncTimer);
      this.resyncTimer = null;
      const watcher = this.watcher;
      this.watcher = null;
      if (watcher !== null) {
        watcher.removeAllListeners();
        // Cancelling needs etcd; do not let an unreachable etcd hold up closing.
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          watcher.cancel().catch(() => undefined),
          new Promise((resolve) => {
            timer = setTimeout(resolve, 1_000);
          }),
        ]);
        clearTimeout(timer);
      }
      if (this.ownsClient) this.client.close();
    })();
    return this.closing;
  }

  /** Lists the directory into `entries`; returns the listing's revision. */
  private async list(generation: number): Promise<number> {
    const response = await this.client.getAll().prefix(this.directory).exec();
    if (generation !== this.generation) return 0;
    const entries = new Map<string, MemberSpec>();
    for (const kv of response.kvs) {
      const key = kv.key.toString("utf8");
      const member = this.parse(key, kv);
      if (member !== null) entries.set(key, member);
    }
    this.entries = entries;
    return Number(response.header.revision);
  }

  /** The member a key/value describes, or null (logged) when it is not a valid registration. */
  private parse(key: string, kv: IKeyValue): MemberSpec | null {
    const segment = key.slice(this.directory.length);
    if (segment === "" || segment.includes("/")) {
      this.logger.debug("ignoring a key that is not a node registration", { key });
      return null;
    }
    const reject = (why: string): null => {
      this.logger.warn("ignoring a malformed registration", { key, why });
      return null;
    };
    let value: unknown;
    try {
      value = JSON.parse(kv.value.toString("utf8"));
    } catch {
      return reject("value is not JSON");
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) return reject("value is not a JSON object");
    const { name, addr, weight } = value as { name?: unknown; addr?: unknown; weight?: unknown };
    if (name !== undefined && name !== segment) {
      return reject(`name ${JSON.stringify(name)} does not match the key's last segment ${JSON.stringify(segment)}`);
    }
    if (typeof addr !== "string") return reject("addr is missing");
    try {
      if (parseAddress(addr).host === "") return reject(`addr ${JSON.stringify(addr)} has no host`);
    } catch {
      return reject(`addr ${JSON.stringify(addr)} is not host:port`);
    }
    if (weight !== undefined && (typeof weight !== "number" || !Number.isFinite(weight) || weight <= 0)) {
      return reject(`weight ${JSON.stringify(weight)} is not a positive number`);
    }
    return { name: segment, address: addr, weight: weight ?? 1 };
  }

  private watchFrom(startRevision: number, generation: number): void {
    if (generation !== this.generation || this.state !== "running") return;
    let watcher: Watcher;
    try {
      watcher = this.client.watch().prefix(this.directory).startRevision(String(startRevision)).watcher();
    } catch (error) {
      this.resyncLater(`cannot watch: ${describeError(error)}`);
      return;
    }
    this.watcher = watcher;
    watcher.on("put", (kv) => this.guard(() => this.onPut(kv)));
    watcher.on("delete", (kv) => this.guard(() => this.onDelete(kv)));
    watcher.on("connected", () =>
      this.guard(() => {
        this.retryDelay = 0;
        if (this.disconnected) {
          this.disconnected = false;
          this.logger.info("etcd watch resumed", { directory: this.directory });
        }
      }),
    );
    watcher.on("disconnected", (error) =>
      this.guard(() => {
        if (!this.disconnected) {
          this.disconnected = true;
          this.logger.warn("etcd watch disconnected; reconnecting", { directory: this.directory, error: describeError(error) });
        }
      }),
    );
    watcher.on("error", (error) =>
      this.guard(() => {
        if (this.watcher !== watcher) return;
        // etcd cancelled the watch, e.g. its revision was compacted: list again and watch from there.
        // The client has already dropped a watcher it reports as cancelled: no cancel() here.
        this.watcher = null;
        watcher.removeAllListeners();
        this.resyncLater(`watch cancelled: ${describeError(error)}`, true);
      }),
    );
  }

  /** Runs an event handler; nothing escapes into the etcd client. */
  private guard(handler: () => void): void {
    try {
      handler();
    } catch (error) {
      this.logger.error("discovery event handler failed", { error: describeError(error) });
    }
  }

  private onPut(kv: IKeyValue): void {
    const key = kv.key.toString("utf8");
    if (!key.startsWith(this.directory)) return;
    const member = this.parse(key, kv);
    if (member === null) {
      // A malformed value replaces a valid one: the old address is not to be trusted either.
      if (!this.entries.delete(key)) return;
    } else {
      this.entries.set(key, member);
    }
    this.scheduleFlush();
  }

  private onDelete(kv: IKeyValue): void {
    // A delete event carries only the key; its last segment is the member's name.
    if (this.entries.delete(kv.key.toString("utf8"))) this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushTimer !== null || this.state !== "running") return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.deliver();
    }, this.coalesceMs);
  }

  /** Calls `onMembers` with the current set if it differs from the last one delivered. */
  private deliver(): void {
    if (this.state !== "running") return;
    const members = [...this.entries.values()].sort(byName);
    if (this.delivered !== null && sameMembers(members, this.delivered)) return;
    this.delivered = members;
    try {
      this.onMembers(members.map((m) => ({ ...m })));
    } catch (error) {
      this.logger.error("onMembers threw", { error: describeError(error) });
    }
  }

  /** Abandons the current watch and lists again, after a backoff unless `now`. */
  private resyncLater(reason: string, now = false): void {
    if (this.state !== "running" || this.resyncTimer !== null) return;
    this.generation++;
    const delay = now ? 0 : this.nextDelay();
    this.logger.warn("re-listing members", { directory: this.directory, reason, inMs: delay });
    this.resyncTimer = setTimeout(() => {
      this.resyncTimer = null;
      void this.resync();
    }, delay);
  }

  private async resync(): Promise<void> {
    if (this.state !== "running") return;
    const generation = this.generation;
    let revision: number;
    try {
      revision = await this.list(generation);
    } catch (error) {
      if (generation !== this.generation || this.state !== "running") return;
      this.logger.debug("listing members failed; retrying", { directory: this.directory, error: describeError(error) });
      this.resyncTimer = setTimeout(() => {
        this.resyncTimer = null;
        void this.resync();
      }, this.nextDelay());
      return;
    }
    if (generation !== this.generation || this.state !== "running") return;
    this.retryDelay = 0;
    this.scheduleFlush();
    this.watchFrom(revision + 1, generation);
  }

  private nextDelay(): number {
    this.retryDelay = this.retryDelay === 0 ? this.retryInitialMs : Math.min(this.retryMaxMs, this.retryDelay * 2);
    return Math.round(this.retryDelay * (0.8 + Math.random() * 0.4));
  }
}
