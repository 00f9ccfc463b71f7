/**
 * A named, read-through cache spread over the cluster. Each key has one owner
 * (by the consistent-hash ring); the owner loads misses through the loader,
 * exactly once however many callers ask; other nodes ask the owner and keep
 * what they fetched in a small "hot" cache that writes invalidate.
 */
import { Cache, type CacheStats } from "./cache.ts";
import { _CancelToken, _cancellation, _cancellationFor, _deadlineOf, _startCall, _timerDelay, deadlineExceeded, type _ActiveCall, type CallOptions } from "./call.ts";
import type { Entry, FetchDone, Membership, Peer } from "./cluster/peer.ts";
import { _Deadlines, type _Expiring } from "./deadlines.ts";
import { GCacheError, invalidArgument, invalidOption, isGCacheError } from "./errors.ts";
import { SingleFlight } from "./singleflight.ts";
import type { StoreKind } from "./store/index.ts";
import { utf8Length } from "./store/_size.ts";
import type { Clock } from "./store/store.ts";
import type { CallContext } from "./wire/connection.ts";
import { isServerVerdict } from "./wire/status.ts";

export interface LoadContext {
  /**
   * Aborts when every caller waiting for this load has given up, or at the
   * load's deadline. Made when first read: a loader that never reads it
   * costs no AbortSignal.
   */
  readonly signal: AbortSignal;
  /** Absolute deadline (epoch ms) of the caller that started the load. */
  deadline: number;
  /** Name of the group loading. */
  group: string;
  /** The largest value the group takes: a loader reading a stream may stop beyond it (a larger value fails the load anyway). */
  maxValueBytes: number;
}

/** A loaded value with its own lifetime; a plain Uint8Array uses the group's TTL. */
export interface LoadedValue {
  value: Uint8Array;
  /** Time to live in ms; 0 means never expire. */
  ttlMs?: number;
  /** Absolute expiry (epoch ms); wins over `ttlMs`. */
  expiresAt?: number;
}

/** Fills a miss. Throw `NotFoundError` when the key does not exist at the source. */
export type Loader = (key: string, context: LoadContext) => Uint8Array | LoadedValue | Promise<Uint8Array | LoadedValue>;

export interface GroupOptions {
  /** Group name, the same on every node. Required. */
  name: string;
  /** Fills misses on the owner. Default: none (a miss on a key nobody set is ERR_NOT_FOUND). */
  loader?: Loader;
  /** Store algorithm for the main cache. Default: "lru2". */
  store?: StoreKind;
  /** Bytes for this group on this node, hot cache included. Default: 64 MiB. */
  maxBytes?: number;
  /**
   * The most of `maxBytes` that copies of values other nodes own may hold (0
   * disables them). The main cache has the rest, and whatever of this share
   * the copies leave unused. Default: 0.125.
   */
  hotCacheShare?: number;
  /**
   * Chance that a value fetched from its owner is also copied into the hot
   * cache, drawn for each fetch (0 to 1). A key fetched often is copied soon;
   * one fetched once rarely is, so keys read once do not churn out the hot
   * cache's popular copies (groupcache copies one fetch in ten for the same
   * reason; docs/benchmarks.md has the figures). 1 copies every fetch.
   * Default: 0.1.
   */
  hotCacheAdmission?: number;
  /** Source of the hot cache's admission draws, uniform in [0, 1). Default: `Math.random`. */
  random?: () => number;
  /** Default time to live of values in ms; 0 means never expire. Default: 0. */
  ttlMs?: number;
  /** Largest value accepted, in bytes. Default: 1 MiB. */
  maxValueBytes?: number;
  /** Longest key accepted, in UTF-8 bytes. Default: 4096. */
  maxKeyBytes?: number;
  /** Time limit of a get (loader and peer hop included) when the caller sets none, in ms. Default: 10000. */
  timeoutMs?: number;
  /** Time limit of one set/delete/invalidate call to a peer when the caller sets none, in ms. Default: 5000. */
  peerTimeoutMs?: number;
  /** Loader calls allowed at once on this node; more are refused with ERR_UNAVAILABLE (retryable). Default: 1024. */
  maxConcurrentLoads?: number;
  /** Time source for expiry. Default: `Date.now`. */
  clock?: Clock;
}

export const DEFAULT_GROUP_OPTIONS = {
  store: "lru2",
  maxBytes: 64 * 1024 * 1024,
  hotCacheShare: 0.125,
  hotCacheAdmission: 0.1,
  ttlMs: 0,
  maxValueBytes: 1024 * 1024,
  maxKeyBytes: 4096,
  timeoutMs: 10_000,
  peerTimeoutMs: 5_000,
  maxConcurrentLoads: 1024,
} as const satisfies Partial<GroupOptions>;

export interface SetOptions extends CallOptions {
  /** Time to live in ms. Unset or 0: the group's `ttlMs` (whose 0 means never expire), as on the wire. */
  ttlMs?: number;
  /** Absolute expiry (epoch ms); wins over `ttlMs`. Unset or 0: use `ttlMs`. */
  expiresAt?: number;
}

/** Outcome of a write: which peers could not be told to drop their copies (they may serve a stale value). */
export interface WriteResult {
  unreachablePeers: string[];
}

export interface DeleteResult extends WriteResult {
  /** Whether the owner held the key. */
  deleted: boolean;
}

export interface GroupStats {
  /** Every get, from callers and from peers. */
  gets: number;
  /** Gets answered from the main or hot cache. */
  cacheHits: number;
  /** Of those, answered from the hot cache. */
  hotHits: number;
  /** Gets that missed both caches. */
  loads: number;
  /** Loads that actually ran after concurrent ones for the same key were merged. */
  loadsDeduped: number;
  /** Values fetched from the owning peer. */
  peerLoads: number;
  /** Failed fetches from peers. */
  peerErrors: number;
  /** Successful loader calls on this node. */
  localLoads: number;
  /** Failed loader calls on this node (not-found included). */
  localLoadErrors: number;
  /** Local loads made because the owning peer could not answer. */
  fallbackLoads: number;
  /** Gets that arrived from peers. */
  serverRequests: number;
  /** Sets and deletes sent on to a new owner after the ring dropped the one that could not be reached. */
  writesRerouted: number;
  caches: { main: CacheStats; hot: CacheStats };
}

type Counters = Omit<GroupStats, "caches">;

export class Group {
  readonly name: string;
  readonly maxValueBytes: number;
  readonly maxKeyBytes: number;
  private readonly loader: Loader | null;
  private readonly main: Cache;
  private readonly hot: Cache | null;
  /** `maxBytes`: the main cache's bound is this less what the hot cache holds. */
  private readonly budget: number;
  private readonly hotAdmission: number;
  private readonly random: () => number;
  private readonly ttlMs: number;
  private readonly timeoutMs: number;
  private readonly peerTimeoutMs: number;
  private readonly clock: Clock;
  private readonly maxConcurrentLoads: number;
  private loading = 0;
  private readonly flight = new SingleFlight<Entry>();
  private readonly forwards = new Map<string, ForwardFlight>();
  /** The fetches' deadlines, on one timer rather than one each. */
  private readonly forwardDeadlines = new _Deadlines();
  /** Loads a peer's batch started, until the Get the peer sends next arrives (see `_batchLookup`). */
  private readonly prefetches = new Map<string, Prefetch>();
  private membership: Membership | null = null;
  /** Writes waiting for the ring to replace an owner they could not reach. */
  private readonly ringWaiters = new Set<() => void>();
  /**
   * Loads in flight, by key. A write or invalidation of the key marks the
   * load stale: its result, read before the write, is returned to the callers
   * that asked before the write but never cached over the newer state.
   */
  private readonly pending = new Map<string, { stale: boolean }>();
  /**
   * Per key, the newest write this node sent to a remote owner that has not
   * reached it yet. Sets and deletes travel in different batched calls, so
   * without a line a delete issued after a set could overtake it.
   */
  private readonly writeLines = new Map<string, Promise<void>>();
  /** Expiry (0 for none) of the value the last cache lookup found; read right after `_cachedValue`. */
  _foundExpiresAt = 0;
  private closed = false;
  private readonly counters: Counters = {
    gets: 0,
    cacheHits: 0,
    hotHits: 0,
    loads: 0,
    loadsDeduped: 0,
    peerLoads: 0,
    peerErrors: 0,
    localLoads: 0,
    localLoadErrors: 0,
    writesRerouted: 0,
    fallbackLoads: 0,
    serverRequests: 0,
  };

  constructor(options: GroupOptions) {
    if (typeof options.name !== "string" || options.name === "") throw invalidOption("a group needs a non-empty name");
    this.name = options.name;
    this.loader = options.loader ?? null;
    const maxBytes = positive("maxBytes", options.maxBytes ?? DEFAULT_GROUP_OPTIONS.maxBytes);
    const share = options.hotCacheShare ?? DEFAULT_GROUP_OPTIONS.hotCacheShare;
    if (!(share >= 0 && share < 1)) throw invalidOption(`hotCacheShare must be at least 0 and below 1, got ${share}`);
    const admission = options.hotCacheAdmission ?? DEFAULT_GROUP_OPTIONS.hotCacheAdmission;
    if (!(admission >= 0 && admission <= 1)) throw invalidOption(`hotCacheAdmission must be from 0 to 1, got ${admission}`);
    this.hotAdmission = admission;
    this.random = options.random ?? Math.random;
    this.ttlMs = nonNegative("ttlMs", options.ttlMs ?? DEFAULT_GROUP_OPTIONS.ttlMs);
    this.maxValueBytes = positive("maxValueBytes", options.maxValueBytes ?? DEFAULT_GROUP_OPTIONS.maxValueBytes);
    this.maxKeyBytes = positive("maxKeyBytes", options.maxKeyBytes ?? DEFAULT_GROUP_OPTIONS.maxKeyBytes);
    this.timeoutMs = positive("timeoutMs", options.timeoutMs ?? DEFAULT_GROUP_OPTIONS.timeoutMs);
    this.peerTimeoutMs = positive("peerTimeoutMs", options.peerTimeoutMs ?? DEFAULT_GROUP_OPTIONS.peerTimeoutMs);
    this.clock = options.clock ?? Date.now;
    this.maxConcurrentLoads = positive("maxConcurrentLoads", options.maxConcurrentLoads ?? DEFAULT_GROUP_OPTIONS.maxConcurrentLoads);
    const hotBytes = Math.floor(maxBytes * share);
    const mainBytes = maxBytes - hotBytes;
    const store = options.store ?? DEFAULT_GROUP_OPTIONS.store;
    const largestEntry = this.maxValueBytes + this.maxKeyBytes;
    if (largestEntry > mainBytes / 2) {
      throw invalidOption(
        `group ${this.name}: maxBytes (${maxBytes}) must leave room for at least two of the largest entries ` +
          `(maxValueBytes + maxKeyBytes = ${largestEntry}) in the main cache`,
      );
    }
    this.budget = maxBytes;
    // Its bound moves between mainBytes and maxBytes as the hot cache fills and empties.
    this.main = new Cache({ store, maxBytes, clock: this.clock });
    // The hot cache is small and sees peer-owned keys only: plain LRU.
    this.hot =
      hotBytes > 0
        ? new Cache({
            store: "lru",
            maxBytes: hotBytes,
            clock: this.clock,
            onEvict: (_key, _value, reason) => {
              // Evictions make room for what it stores next, after which `copyToHot` fits the
              // main cache; a clear fits it once, after the last entry (`dropCopies`).
              if (reason === "deleted" || reason === "expired") this.fitMainToBudget();
            },
          })
        : null;
  }

  /** The main cache's bound: the group's bytes less what the hot cache holds. Call after the hot cache changed. */
  private fitMainToBudget(): void {
    this.main._setMaxBytes(this.budget - (this.hot?.bytes ?? 0));
  }

  /** Drops every copy of a value another node owns; the main cache gets their bytes back. */
  private dropCopies(): void {
    this.hot?.clear();
    this.fitMainToBudget();
  }

  /** Stores a copy of a value another node owns, then makes room for it in the main cache. */
  private copyToHot(key: string, value: Uint8Array, expiresAt: number): void {
    this.hot!.set(key, value, { expiresAt });
    this.fitMainToBudget();
  }

  /**
   * The value of `key`: from this node's caches, else from its owner, else
   * loaded. Rejects with ERR_NOT_FOUND when the loader says so, ERR_DEADLINE_EXCEEDED
   * or ERR_CANCELLED per `options`, ERR_LOAD_FAILED when the loader fails.
   */
  async get(key: string, options?: CallOptions): Promise<Uint8Array> {
    return (await this.getEntry(key, options)).value;
  }

  /** Like `get`, with the value's absolute expiry (epoch ms; 0 = never). */
  getEntry(key: string, options?: CallOptions, fromPeer = false): Promise<Entry> {
    let cached: Entry | undefined;
    try {
      cached = this.cachedEntry(key, fromPeer);
    } catch (error) {
      return Promise.reject(error);
    }
    if (cached !== undefined) return Promise.resolve(cached);
    return this._loadMissed(key, options, fromPeer);
  }

  /**
   * Looks only in this node's caches and counts the get; throws
   * ERR_INVALID_ARGUMENT for a bad key. For the servers' hot path: a hit is
   * answered without a promise.
   */
  cachedEntry(key: string, fromPeer = false): Entry | undefined {
    const value = this._cachedValue(key, fromPeer);
    return value === undefined ? undefined : { value, expiresAt: this._foundExpiresAt };
  }

  /**
   * `cachedEntry` without the Entry, for the HTTP gateway's hits: the value's
   * expiry (0 for none) is in `_foundExpiresAt` until the next lookup.
   */
  _cachedValue(key: string, fromPeer = false): Uint8Array | undefined {
    this.checkKey(key);
    const c = this.counters;
    c.gets++;
    if (fromPeer) c.serverRequests++;
    return this.lookup(key);
  }

  /**
   * For a peer's batch: the cached value of `key`, or undefined after starting
   * its load, which the Get the peer sends for it next will join. A hit
   * counts as a get; a miss is counted by that Get. Throws for a bad key.
   */
  _batchLookup(key: string, deadline: number | Date | undefined): Entry | undefined {
    this.checkKey(key);
    // A miss is counted by the Get the peer sends next, in the caches as in the group.
    const hit = this.lookup(key, false);
    if (hit !== undefined) {
      this.counters.gets++;
      this.counters.serverRequests++;
      return { value: hit, expiresAt: this._foundExpiresAt };
    }
    const prefetch: Prefetch = { failed: false, error: undefined, timer: undefined };
    clearTimeout(this.prefetches.get(key)?.timer);
    this.prefetches.set(key, prefetch);
    const done = () => this.prefetches.get(key) === prefetch && this.prefetches.delete(key);
    this.loadHere(key, deadline === undefined ? undefined : { deadline }, true).then(done, (error: unknown) => {
      // The peer's Get is still on its way (one that arrived joined the load and
      // has the error): hand it this outcome rather than load again.
      if (this.prefetches.get(key) !== prefetch) return;
      prefetch.failed = true;
      prefetch.error = error;
      prefetch.timer = setTimeout(done, PREFETCH_FAILURE_KEPT_MS);
    });
    return undefined;
  }

  /** The cached value of `key`, its expiry left in `_foundExpiresAt`: no object per hit. */
  private lookup(key: string, countMisses = true): Uint8Array | undefined {
    const c = this.counters;
    let value = countMisses ? this.main.get(key) : this.main._getIfHit(key);
    if (value !== undefined) {
      c.cacheHits++;
      this._foundExpiresAt = this.main._expiresAtOfFound(key);
      return value;
    }
    if (this.hot !== null) {
      value = countMisses ? this.hot.get(key) : this.hot._getIfHit(key);
      if (value !== undefined) {
        c.cacheHits++;
        c.hotHits++;
        this._foundExpiresAt = this.hot._expiresAtOfFound(key);
        return value;
      }
    }
    return undefined;
  }

  /**
   * Stores `value` at the key's owner and drops every other copy in the
   * cluster. Resolves once the owner stored it and every reachable peer
   * dropped its copy; peers that could not be reached are listed.
   */
  async set(key: string, value: Uint8Array, options?: SetOptions, fromPeer = false): Promise<WriteResult> {
    this.checkKey(key);
    this.checkValue(value);
    const expiresAt = this.expiryFor(options?.ttlMs, options?.expiresAt, fromPeer);
    const owner = fromPeer ? null : this.ownerOf(key);
    if (owner === null) {
      this.storeOwned(key, value, expiresAt);
      if (fromPeer) return { unreachablePeers: [] };
    }
    const call = _startCall(options, this.peerTimeoutMs);
    try {
      let storedAt = owner;
      if (owner !== null) {
        storedAt = await this.inWriteLine(key, call, async () => {
          const at = await this.writeAtOwner(key, owner, call, (peer) => peer.set(this.name, key, value, expiresAt, call.context));
          if (at === null) this.storeOwned(key, value, expiresAt);
          else this.dropLocal(key);
          return at;
        });
      }
      return { unreachablePeers: await this.broadcastInvalidate(key, storedAt, call.context) };
    } finally {
      call.dispose();
    }
  }

  /** Deletes `key` at its owner and drops every copy in the cluster. */
  async delete(key: string, options?: CallOptions, fromPeer = false): Promise<DeleteResult> {
    this.checkKey(key);
    const owner = fromPeer ? null : this.ownerOf(key);
    // Owned here: applied before the first await, as `set` is, so the two keep the order they were called in.
    const droppedFirst = owner === null ? this.dropLocal(key) : false;
    if (fromPeer) return { deleted: droppedFirst, unreachablePeers: [] };
    const call = _startCall(options, this.peerTimeoutMs);
    try {
      let deleted = droppedFirst;
      let deletedAt: Peer | null = null;
      if (owner !== null) {
        deletedAt = await this.inWriteLine(key, call, async () => {
          const at = await this.writeAtOwner(key, owner, call, async (peer) => {
            deleted = await peer.delete(this.name, key, call.context);
          });
          const droppedHere = this.dropLocal(key);
          if (at === null) deleted = droppedHere;
          return at;
        });
      }
      return { deleted, unreachablePeers: await this.broadcastInvalidate(key, deletedAt, call.context) };
    } finally {
      call.dispose();
    }
  }

  /**
   * Runs a remote write of `key` in the key's line: after the write ahead of
   * it has reached its owner (or failed), or not at all when `signal` aborts
   * first. A write that gave up before its turn still holds back the ones
   * behind it until the write ahead is done. Waiting listens on the call's
   * cancellation, which makes no AbortSignal.
   */
  private async inWriteLine<T>(key: string, call: _ActiveCall, write: () => Promise<T>): Promise<T> {
    const ahead = this.writeLines.get(key) ?? null;
    let settle!: () => void;
    const done = new Promise<void>((resolve) => (settle = resolve));
    this.writeLines.set(key, done);
    const letNextGo = () => {
      settle();
      if (this.writeLines.get(key) === done) this.writeLines.delete(key);
    };
    try {
      if (ahead !== null) await raceCancel(ahead, call.cancellation);
      return await write();
    } finally {
      // `ahead` never rejects.
      if (ahead === null) letNextGo();
      else void ahead.then(letNextGo);
    }
  }

  /** Empties this group on every node. */
  async clear(options?: CallOptions, fromPeer = false): Promise<WriteResult> {
    this.invalidateLocal(null);
    if (fromPeer) return { unreachablePeers: [] };
    const call = _startCall(options, this.peerTimeoutMs);
    try {
      return { unreachablePeers: await this.broadcastInvalidate(null, null, call.context) };
    } finally {
      call.dispose();
    }
  }

  /** Drops this node's copies of `key` (or of everything when null). What a peer's invalidation does here. */
  invalidateLocal(key: string | null): void {
    if (key === null) {
      for (const load of this.pending.values()) load.stale = true;
      this.main.clear();
      this.dropCopies();
    } else {
      this.dropLocal(key);
    }
  }

  stats(): GroupStats {
    return {
      ...this.counters,
      caches: { main: this.main.stats(), hot: this.hot?.stats() ?? EMPTY_CACHE_STATS },
    };
  }

  /**
   * The member set changed. Copies of other nodes' values (and fallback loads)
   * may have missed invalidations while nodes disagreed about ownership: drop
   * them and the values of keys this node no longer owns (O(n), once per
   * change), and keep loads already in flight from caching what they fetch.
   */
  _membershipChanged(): void {
    for (const load of this.pending.values()) load.stale = true;
    this.dropCopies();
    // Keys that moved to another owner: their new owner answers for them now, and a
    // copy left here would keep answering readers of this node with an older value.
    for (const key of this.main.keys()) if (this.ownerOf(key) !== null) this.main.delete(key);
    for (const wake of [...this.ringWaiters]) wake();
  }

  /**
   * Sends a write to `owner`, following the key to its next owner when one
   * cannot be reached (see `ownerAfterFailure`). Resolves with the member that
   * took the write, or `null` when the key came to this node (or `owner` was
   * null): the caller applies it here.
   */
  private async writeAtOwner(key: string, owner: Peer | null, call: _ActiveCall, write: (peer: Peer) => Promise<void>): Promise<Peer | null> {
    while (owner !== null) {
      try {
        await write(owner);
        return owner;
      } catch (error) {
        owner = await this.ownerAfterFailure(key, owner, error, call.cancellation);
      }
    }
    return null;
  }

  /**
   * After a write to `owner` failed: the member to send it to now (`null`: this
   * node). Under discovery an owner that cannot be reached is about to lose its
   * lease, so wait, within the call's deadline, for the ring to name another
   * owner: a crash then costs writers latency, not errors. Rethrows `error`
   * when retrying elsewhere cannot help.
   */
  private async ownerAfterFailure(key: string, owner: Peer, error: unknown, cancellation: _CancelToken): Promise<Peer | null> {
    if (!(this.membership?.dropsDeadMembers ?? false) || !ownerIsUnreachable(error) || cancellation.cancelled) throw error;
    const next = await new Promise<Peer | null | undefined>((resolve) => {
      const check = () => {
        const now = this.ownerOf(key);
        if (now === owner) return;
        finish(now);
      };
      const onCancel = () => finish(undefined);
      const finish = (result: Peer | null | undefined) => {
        this.ringWaiters.delete(check);
        cancellation.offCancel(onCancel);
        resolve(result);
      };
      this.ringWaiters.add(check);
      cancellation.onCancel(onCancel);
      check();
    });
    if (next === undefined) throw error;
    this.counters.writesRerouted++;
    return next;
  }

  /** Routes keys through `membership` (set by the node that hosts the group); `null` serves everything locally. */
  _attach(membership: Membership | null): void {
    this.membership = membership;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.main.close();
    this.hot?.close();
  }

  private ownerOf(key: string): Peer | null {
    return this.membership === null ? null : this.membership.ownerOf(key);
  }

  /** The slow half of `getEntry`, for callers that already looked in the caches with `cachedEntry`. */
  _loadMissed(key: string, options: CallOptions | undefined, fromPeer = false): Promise<Entry> {
    if (this.closed) return Promise.reject(new GCacheError("ERR_CLOSED", `group ${this.name} is closed`));
    if (fromPeer && this.prefetches.size > 0) {
      const prefetch = this.prefetches.get(key);
      if (prefetch !== undefined) {
        // The Get a batch announced: it takes a failure the load already had, or joins the load below.
        this.prefetches.delete(key);
        clearTimeout(prefetch.timer);
        if (prefetch.failed) return Promise.reject(prefetch.error);
      }
    }
    this.counters.loads++;
    const owner = fromPeer ? null : this.ownerOf(key);
    return owner === null ? this.loadHere(key, options, fromPeer) : this.forward(key, owner, options);
  }

  /**
   * Fetches a key another node owns. Concurrent callers share one fetch;
   * this is the peer hop's hot path, so a caller costs no AbortController and
   * no listener unless it brings a signal or is less patient than the fetch.
   * The fetch carries the deadline of the caller that started it across the
   * hop (the owner's load ends with it); a caller that is more patient by
   * more than FORWARD_JOIN_SLACK_MS starts a fetch of its own instead.
   */
  private forward(key: string, owner: Peer, options: CallOptions | undefined): Promise<Entry> {
    const now = Date.now();
    const deadline = _deadlineOf(options, this.timeoutMs, now);
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(_cancellation(signal));
    if (deadline <= now) return Promise.reject(deadlineExceeded(deadline - now));
    let flight = this.forwards.get(key);
    if (flight === undefined || flight.deadline < deadline - FORWARD_JOIN_SLACK_MS) {
      flight = this.startForward(key, owner, deadline);
    }
    if (signal === undefined && deadline >= flight.deadline) return flight.promise;
    return leaveEarly(flight.promise, deadline < flight.deadline ? deadline - now : -1, signal);
  }

  private startForward(key: string, owner: Peer, deadline: number): ForwardFlight {
    this.counters.loadsDeduped++;
    const load = { stale: false };
    // `promise` is assigned before anything below can settle.
    const flight = { deadline, deadlineSlot: -1 } as ForwardFlight;
    this.pending.set(key, load);
    this.forwards.set(key, flight);
    flight.promise = new Promise<Entry>((resolve, reject) => {
      const budget = deadline - Date.now();
      let settled = false;
      const finish = (entry: Entry | null, error: unknown) => {
        if (settled) return;
        settled = true;
        this.forwardDeadlines.delete(flight);
        this.endForward(key, flight, load);
        if (entry !== null) resolve(entry);
        else reject(error);
      };
      // The fetch answers by its deadline even while the batch it waits in is held up.
      flight.expire = () => finish(null, deadlineExceeded(budget));
      this.forwardDeadlines.add(flight);
      const fetched: FetchDone = (entry, error) => {
        if (entry !== null) {
          this.counters.peerLoads++;
          if (!load.stale && !settled && this.hot !== null && this.admitsCopy()) this.copyToHot(key, copyOf(entry.value), entry.expiresAt);
          finish(entry, null);
          return;
        }
        this.counters.peerErrors++;
        if (settled || !shouldFallBack(error, deadline)) {
          finish(null, error);
          return;
        }
        this.fallBack(key, deadline, load).then(
          (fallback) => finish(fallback, null),
          (fallbackError: unknown) => finish(null, fallbackError),
        );
      };
      if (owner.fetch !== undefined) owner.fetch(this.name, key, { deadline }, fetched);
      else owner.get(this.name, key, { deadline }).then((entry) => fetched(entry, null), (error: unknown) => fetched(null, error));
    });
    return flight;
  }

  /** Whether this fetch's value is copied into the hot cache (see `hotCacheAdmission`). */
  private admitsCopy(): boolean {
    return this.hotAdmission >= 1 || (this.hotAdmission > 0 && this.random() < this.hotAdmission);
  }

  private endForward(key: string, flight: ForwardFlight, load: { stale: boolean }): void {
    if (this.forwards.get(key) === flight) this.forwards.delete(key);
    if (this.pending.get(key) === load) this.pending.delete(key);
  }

  /** The owner could not answer: serve the callers anyway, and keep the copy where writes will find and drop it. */
  private async fallBack(key: string, deadline: number, load: { stale: boolean }): Promise<Entry> {
    this.counters.fallbackLoads++;
    const call = _startCall({ deadline }, this.timeoutMs);
    try {
      const entry = await this.loadLocally(key, deadline, call.cancellation);
      if (!load.stale && this.hot !== null) this.copyToHot(key, entry.value, entry.expiresAt);
      return entry;
    } finally {
      call.dispose();
    }
  }

  /** A miss of a key this node owns (or is asked for by a peer): one load, however many callers. */
  private loadHere(key: string, options: CallOptions | undefined, fromPeer: boolean): Promise<Entry> {
    const now = Date.now();
    const deadline = _deadlineOf(options, this.timeoutMs, now);
    const budget = deadline - now;
    // The shared load may serve later, more patient callers: it gets the group's time
    // limit (or this caller's, if longer). Each caller still leaves at its own deadline,
    // and the load is cancelled once every caller has left.
    const loadDeadline = Math.max(deadline, now + this.timeoutMs);
    return this.flight._doUntil(
      key,
      (token) => this.loadOnce(key, fromPeer, loadDeadline, token),
      deadline,
      () => deadlineExceeded(budget),
      options?.signal,
      _cancellation,
    );
  }

  /** Runs once per key however many callers wait. */
  private async loadOnce(key: string, fromPeer: boolean, deadline: number, token: _CancelToken): Promise<Entry> {
    this.counters.loadsDeduped++;
    // Another flight may have filled the cache between our miss and now.
    const again = this.main.peek(key) ?? this.hot?.peek(key);
    if (again !== undefined) {
      return { value: again, expiresAt: this.main.expiresAt(key) ?? this.hot?.expiresAt(key) ?? 0 };
    }
    const load = { stale: false };
    this.pending.set(key, load);
    try {
      const entry = await this.loadLocally(key, deadline, token);
      // A peer asks the owner; the owner keeps what it loaded.
      if (!load.stale && (fromPeer || this.ownerOf(key) === null)) this.main.set(key, entry.value, { expiresAt: entry.expiresAt });
      return entry;
    } finally {
      if (this.pending.get(key) === load) this.pending.delete(key);
    }
  }

  private async loadLocally(key: string, deadline: number, token: _CancelToken): Promise<Entry> {
    if (this.loader === null) {
      this.counters.localLoadErrors++;
      throw new GCacheError("ERR_NOT_FOUND", `key not found in group ${this.name}`);
    }
    if (this.loading >= this.maxConcurrentLoads) {
      this.counters.localLoadErrors++;
      throw new GCacheError("ERR_UNAVAILABLE", `group ${this.name} is already running ${this.loading} loads (maxConcurrentLoads); try again`);
    }
    let loaded: Uint8Array | LoadedValue;
    this.loading++;
    try {
      loaded = await raceCancel(this.loader(key, new _LoadContext(token, deadline, this.name, this.maxValueBytes)), token);
    } catch (error) {
      this.counters.localLoadErrors++;
      if (isGCacheError(error)) throw error;
      throw new GCacheError("ERR_LOAD_FAILED", `loader failed for group ${this.name}: ${messageOf(error)}`, {
        cause: error,
      });
    } finally {
      this.loading--;
    }
    const entry = this.entryOf(loaded);
    this.counters.localLoads++;
    return entry;
  }

  private entryOf(loaded: Uint8Array | LoadedValue): Entry {
    const isBytes = loaded instanceof Uint8Array;
    const value = isBytes ? loaded : loaded?.value;
    if (!(value instanceof Uint8Array)) {
      this.counters.localLoadErrors++;
      throw new GCacheError("ERR_LOAD_FAILED", `loader for group ${this.name} returned no Uint8Array value`);
    }
    if (value.byteLength > this.maxValueBytes) {
      this.counters.localLoadErrors++;
      throw new GCacheError(
        "ERR_VALUE_TOO_LARGE",
        `loaded value of ${value.byteLength} bytes exceeds the maximum of ${this.maxValueBytes} for group ${this.name}`,
      );
    }
    const expiresAt = isBytes ? this.expiryFor(undefined, undefined, false) : this.expiryFor(loaded.ttlMs, loaded.expiresAt, false);
    return { value, expiresAt };
  }

  private storeOwned(key: string, value: Uint8Array, expiresAt: number): void {
    this.markStale(key);
    this.hot?.delete(key);
    // Own the bytes: a view into a network buffer would pin the whole buffer.
    if (!this.main.set(key, copyOf(value), { expiresAt }) && (expiresAt === 0 || expiresAt > this.clock())) {
      throw new GCacheError("ERR_INTERNAL", `group ${this.name} could not store a value it accepted`);
    }
  }

  private markStale(key: string): void {
    const load = this.pending.get(key);
    if (load !== undefined) load.stale = true;
  }

  private dropLocal(key: string): boolean {
    this.markStale(key);
    const inMain = this.main.delete(key);
    const inHot = this.hot?.delete(key) ?? false;
    return inMain || inHot;
  }

  /** Tells every peer but `except` to drop its copies; returns the names of those that did not confirm. */
  private async broadcastInvalidate(key: string | null, except: Peer | null, context: CallContext): Promise<string[]> {
    const peers = this.membership?.peers() ?? [];
    const unreachable: string[] = [];
    // Keep a quarter of the caller's time for the answer: a hung peer must be
    // reported as unreachable, not turn an applied write into a timeout.
    const now = Date.now();
    const budget = { deadline: now + Math.max(0, (context.deadline - now) * 0.75), ...(context.signal === undefined ? {} : { signal: context.signal }) };
    await Promise.all(
      peers.map(async (peer) => {
        if (peer === except) return;
        try {
          await peer.invalidate(this.name, key, budget);
        } catch {
          unreachable.push(peer.name);
        }
      }),
    );
    return unreachable.sort();
  }

  private expiryFor(ttlMs: number | undefined, expiresAt: number | undefined, exact: boolean): number {
    if (expiresAt !== undefined && (expiresAt !== 0 || exact)) {
      if (!(expiresAt >= 0) || !Number.isFinite(expiresAt)) throw invalidArgument(`expiresAt must be a finite time >= 0, got ${expiresAt}`);
      return expiresAt;
    }
    if (exact) return 0;
    const ttl = ttlMs === undefined || ttlMs === 0 ? this.ttlMs : ttlMs;
    if (!(ttl >= 0) || !Number.isFinite(ttl)) throw invalidArgument(`ttlMs must be a finite number >= 0, got ${ttl}`);
    return ttl === 0 ? 0 : this.clock() + ttl;
  }

  private checkKey(key: string): void {
    if (typeof key !== "string" || key === "") throw invalidArgument("key must be a non-empty string");
    // A UTF-16 unit is at most 3 UTF-8 bytes: short keys need no byte count.
    if (key.length * 3 > this.maxKeyBytes && (key.length > this.maxKeyBytes || utf8Length(key) > this.maxKeyBytes)) {
      throw invalidArgument(`key is longer than the maximum of ${this.maxKeyBytes} bytes`);
    }
  }

  private checkValue(value: Uint8Array): void {
    if (!(value instanceof Uint8Array)) throw invalidArgument("value must be a Uint8Array");
    if (value.byteLength > this.maxValueBytes) {
      throw new GCacheError(
        "ERR_VALUE_TOO_LARGE",
        `value of ${value.byteLength} bytes exceeds the maximum of ${this.maxValueBytes} for group ${this.name}`,
      );
    }
  }
}

/** A fetch in flight of a key another node owns, shared by concurrent callers. */
interface ForwardFlight extends _Expiring {
  promise: Promise<Entry>;
}

/**
 * How much more patient than a shared fetch a caller may be and still join
 * it (and so be answered up to this much before its own deadline when the
 * owner is slow); callers of one service with one timeout differ by the
 * milliseconds between their arrivals.
 */
const FORWARD_JOIN_SLACK_MS = 50;

/** A load started for a key a peer's batch missed; a failure waits here for the peer's Get. */
interface Prefetch {
  failed: boolean;
  error: unknown;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** How long the outcome of a failed load started for a peer's batch waits for the peer's Get. */
const PREFETCH_FAILURE_KEPT_MS = 1_000;

const EMPTY_CACHE_STATS: CacheStats = { gets: 0, hits: 0, misses: 0, evictions: 0, expirations: 0, bytes: 0, items: 0 };

/**
 * A failed peer fetch falls back to a local load when the peer, not the key
 * or the caller, is the problem: not for not-found, not for an owner whose
 * loader failed (that would double the load on a failing origin), not when
 * our own caller gave up.
 */
function shouldFallBack(error: unknown, deadline: number): boolean {
  if (Date.now() >= deadline) return false;
  if (!isGCacheError(error)) return true;
  if (error.code === "ERR_NOT_FOUND") return false;
  return !isServerVerdict(error) || FALLBACK_VERDICTS.has(error.code);
}

/**
 * The owner did not take the write because it is gone or going: no connection,
 * or its own answer that it is closing. Its successor on the ring may take it.
 */
function ownerIsUnreachable(error: unknown): boolean {
  if (!isGCacheError(error)) return false;
  if (error.code === "ERR_CLOSED") return true;
  return error.code === "ERR_UNAVAILABLE" && !isServerVerdict(error);
}

/** Answers from a live owner that still justify loading here: it is draining, or runs another configuration. */
const FALLBACK_VERDICTS: ReadonlySet<string> = new Set(["ERR_UNAVAILABLE", "ERR_CLOSED", "ERR_UNKNOWN_GROUP", "ERR_INTERNAL"]);

/**
 * A caller's view of a shared fetch: settles with it, or earlier when the
 * caller's own time (`budgetMs`; negative: none of its own) runs out or its
 * signal aborts.
 */
function leaveEarly<T>(shared: Promise<T>, budgetMs: number, signal: AbortSignal | undefined): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = budgetMs < 0 ? undefined : setTimeout(() => reject(deadlineExceeded(budgetMs)), _timerDelay(budgetMs));
    const onAbort = () => {
      clearTimeout(timer);
      reject(_cancellation(signal!));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    shared.then(
      (value) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/** Settles with `work`, or with the cancellation as soon as it comes, even if the work ignores it. */
function raceCancel<T>(work: T | Promise<T>, token: _CancelToken): Promise<T> {
  if (!(work instanceof Promise)) return Promise.resolve(work);
  if (token.cancelled) return Promise.reject(_cancellationFor(token.reason));
  return new Promise<T>((resolve, reject) => {
    const onCancel = (reason: unknown) => reject(_cancellationFor(reason));
    token.onCancel(onCancel);
    work.then(
      (value) => {
        token.offCancel(onCancel);
        resolve(value);
      },
      (error: unknown) => {
        token.offCancel(onCancel);
        reject(error);
      },
    );
  });
}

/**
 * What a loader is given. Its signal is the load's cancellation's, made when
 * first read; `_cancel` lets the node's own loaders (the origin's) listen
 * without one.
 */
export class _LoadContext implements LoadContext {
  constructor(
    readonly _cancel: _CancelToken,
    readonly deadline: number,
    readonly group: string,
    readonly maxValueBytes: number,
  ) {}

  get signal(): AbortSignal {
    return this._cancel.signal;
  }
}

function copyOf(value: Uint8Array): Uint8Array {
  return new Uint8Array(value);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function positive(name: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) throw invalidOption(`${name} must be a positive number, got ${value}`);
  return value;
}

function nonNegative(name: string, value: number): number {
  if (!(value >= 0) || !Number.isFinite(value)) throw invalidOption(`${name} must be a finite number >= 0, got ${value}`);
  return value;
}
