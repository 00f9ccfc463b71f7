/**
 * A remote node as a group sees it: the four things a group asks of another
 * node. `GrpcPeer` is the real one; tests may pass in-process fakes.
 */
import { invalidArgument, type GCacheError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { _Connection, DEFAULT_CONNECTION_OPTIONS, type CallContext, type ConnectionOptions } from "../wire/connection.ts";
import { _linkAvailable, LinkStream } from "../wire/link.ts";
import {
  GCACHE_SERVICE,
  WriteKind,
  type BatchGetItem,
  type BatchGetRequest,
  type BatchGetResponse,
  type ItemResult,
  type SetItem,
  type WriteBatch,
  type WriteBatchResponse,
} from "../wire/messages.ts";
import { remoteVerdict } from "../wire/status.ts";
import { _BatchStream, DEFAULT_BATCH_STREAM_OPTIONS, type LaterAnswers } from "./batch-stream.ts";
import { _PeerLink, DEFAULT_PEER_LINK_OPTIONS, type PeerLinkOptions } from "./peer-link.ts";
import { _GetBatcher, type BatchResult } from "./batcher.ts";
import { _CallBatcher } from "./call-batcher.ts";

/** A value with its absolute expiry (epoch ms; 0 = never). */
export interface Entry {
  value: Uint8Array;
  expiresAt: number;
}

export interface Peer {
  /** Member name on the ring. */
  readonly name: string;
  /** Address it is reached at (host:port). */
  readonly address: string;
  /** Fetch a key the peer owns; it loads it if needed and never forwards. */
  get(group: string, key: string, context: CallContext): Promise<Entry>;
  /**
   * Optional: `get` reporting to a callback instead of a promise. The peer hop
   * is the cluster's hot path; groups use this when a peer has it.
   */
  fetch?(group: string, key: string, context: CallContext, done: FetchDone): void;
  /** Store a value at the owner. */
  set(group: string, key: string, value: Uint8Array, expiresAt: number, context: CallContext): Promise<void>;
  /** Delete a key at the owner; `true` when it held the key. */
  delete(group: string, key: string, context: CallContext): Promise<boolean>;
  /** Drop local copies of a key, or of the whole group when `key` is null. */
  invalidate(group: string, key: string | null, context: CallContext): Promise<void>;
  close(): void;
}

/** Called once with the entry, or with `null` and the error. */
export type FetchDone = (entry: Entry | null, error: unknown) => void;

/** What a group needs from the cluster: who owns a key, and who else is there. */
export interface Membership {
  /** The owner of `key`, or `null` when this node owns it. */
  ownerOf(key: string): Peer | null;
  /** Every other live member. */
  peers(): readonly Peer[];
  /**
   * Whether a member that dies leaves on its own (discovery with leases), so
   * that waiting for the membership to change is worth it. Default: false
   * (static lists).
   */
  readonly dropsDeadMembers?: boolean;
}

const EMPTY = new Uint8Array(0);
const NO_KEYS: string[] = [];
const NO_SETS: SetItem[] = [];
const NO_RESULTS: ItemResult[] = [];
/** Items per InvalidateMany, SetMany or DeleteMany call (a node takes up to 1024). */
const MAX_BATCH_ITEMS = 512;
/**
 * Bytes of sets per SetMany call. Any node accepts a message of its largest
 * value plus 64 KiB, so a batch within 48 KiB fits every node however small
 * its values; a larger set goes alone, the size of a plain Set.
 */
const MAX_SET_BATCH_BYTES = 48 * 1024;
/** What an item adds to a SetMany message besides its value: its key (at most 3 bytes a unit in UTF-8) and framing. */
const setItemBytes = (item: SetItem) => item.value.byteLength + item.key.length * 3 + 16;

type LateResult = (index: number, result: Exclude<BatchResult, "later">) => void;

function batchVerdict(item: BatchGetItem, what: string): BatchResult {
  if (item.retryAlone) return "alone";
  if (item.deferred === true) return "later";
  if (item.errorCode !== "") return remoteVerdict(item.errorCode, item.errorMessage, what);
  return { value: item.value, expiresAt: item.expiresAtMs };
}

/** The keys of one batch the owner answers later on the stream: each is reported once, by its position in the batch. */
class _LaterGets implements LaterAnswers<BatchGetResponse> {
  private waiting: Set<number> | null = null;

  constructor(
    private readonly late: LateResult,
    private readonly what: string,
  ) {}

  expected(first: BatchGetResponse): number {
    const items = first.items;
    for (let i = 0; i < items.length; i++) {
      if (items[i]!.deferred === true) (this.waiting ??= new Set()).add(i);
    }
    return this.waiting === null ? 0 : this.waiting.size;
  }

  received(later: BatchGetResponse): number {
    const waiting = this.waiting!;
    const positions = later.positions ?? [];
    const items = later.items;
    for (let i = 0; i < items.length && i < positions.length; i++) {
      const position = positions[i]!;
      if (!waiting.delete(position)) continue; // not one we wait for, or answered already
      const verdict = batchVerdict(items[i]!, this.what);
      // A key deferred twice is asked for alone rather than waited on forever.
      this.late(position, verdict === "later" ? "alone" : verdict);
    }
    return waiting.size;
  }

  lost(error: GCacheError | null): void {
    const waiting = this.waiting!;
    this.waiting = null;
    // The stream ended: the owner's load goes on, and a Get joins it or finds its value.
    for (const position of waiting) this.late(position, error ?? "alone");
  }
}

export interface GrpcPeerOptions extends ConnectionOptions {
  /**
   * Send batches over the peer's link (plain TCP) when it offers one. Never
   * over TLS (a secure channel keeps every batch on it), nor under Node.js.
   * Default: true.
   */
  peerLink?: boolean;
  /** Hears when the link is given up for a while. Default: silent. */
  logger?: Logger;
  /** @internal Link tuning, for tests. */
  _peerLinkOptions?: Partial<PeerLinkOptions>;
}

export class GrpcPeer implements Peer {
  readonly name: string;
  readonly address: string;
  private readonly connection: _Connection;
  private readonly link: _PeerLink | null;
  private readonly batchStream: _BatchStream<BatchGetRequest, BatchGetResponse>;
  /** Batches of sets, deletes and drops of copies, one stream for every group. */
  private readonly writeStream: _BatchStream<WriteBatch, WriteBatchResponse>;
  /** One batcher per group: concurrent gets to this peer travel together. */
  private readonly batchers = new Map<string, _GetBatcher>();
  /** One per group: concurrent invalidations sent to this peer travel together, and so do sets and deletes. */
  private readonly invalidators = new Map<string, _CallBatcher<string>>();
  private readonly setters = new Map<string, _CallBatcher<SetItem>>();
  private readonly deleters = new Map<string, _CallBatcher<string, boolean>>();

  constructor(name: string, address: string, options: GrpcPeerOptions = {}) {
    if (name === "" || address === "") throw invalidArgument("a peer needs a name and an address");
    this.name = name;
    this.address = address;
    const connection = new _Connection(address, options);
    this.connection = connection;
    const secure = options.credentials?._isSecure() === true;
    const link =
      options.peerLink === false || secure || !_linkAvailable
        ? null
        : new _PeerLink(connection, options.maxMessageBytes ?? DEFAULT_CONNECTION_OPTIONS.maxMessageBytes, {
            ...DEFAULT_PEER_LINK_OPTIONS,
            ...(options.logger === undefined ? {} : { logger: options.logger }),
            ...options._peerLinkOptions,
          });
    this.link = link;
    this.batchStream = new _BatchStream(
      connection,
      GCACHE_SERVICE.BatchGetStream,
      (request, context) => connection.unary(GCACHE_SERVICE.BatchGet, request, context),
      DEFAULT_BATCH_STREAM_OPTIONS,
      link === null ? null : (deadline) => link.open(LinkStream.BATCH_GET, deadline),
    );
    this.writeStream = new _BatchStream(
      connection,
      GCACHE_SERVICE.WriteStream,
      (batch, context) => _writeBatchCall(connection, batch, context),
      DEFAULT_BATCH_STREAM_OPTIONS,
      link === null ? null : (deadline) => link.open(LinkStream.WRITE, deadline),
    );
    link?.onReady(() => {
      this.batchStream.reopen();
      this.writeStream.reopen();
    });
  }

  get(group: string, key: string, context: CallContext): Promise<Entry> {
    return this.batcherFor(group).get(key, context);
  }

  fetch(group: string, key: string, context: CallContext, done: FetchDone): void {
    this.batcherFor(group).fetch(key, context, done);
  }

  private batcherFor(group: string): _GetBatcher {
    let batcher = this.batchers.get(group);
    if (batcher === undefined) {
      batcher = new _GetBatcher({
        getOne: (one, oneContext) => this.getOne(group, one, oneContext),
        getMany: (keys, manyContext, late) => this.getMany(group, keys, manyContext, late),
      });
      this.batchers.set(group, batcher);
    }
    return batcher;
  }

  private async getMany(group: string, keys: string[], context: CallContext, late: LateResult): Promise<BatchResult[]> {
    const what = `/pb.GCache/BatchGet on ${this.address}`;
    const response = await this.batchStream.send({ group, keys, deferLoads: true }, context, new _LaterGets(late, what));
    return response.items.map((item) => batchVerdict(item, what));
  }

  private async getOne(group: string, key: string, context: CallContext): Promise<Entry> {
    const response = await this.connection.unary(
      GCACHE_SERVICE.Get,
      { group, key, value: EMPTY, ttlMs: 0, expiresAtMs: 0, fromPeer: true },
      context,
    );
    return { value: response.value, expiresAt: response.expiresAtMs };
  }

  set(group: string, key: string, value: Uint8Array, expiresAt: number, context: CallContext): Promise<void> {
    return this.setterFor(group).submit({ key, value, expiresAtMs: expiresAt }, context);
  }

  private setterFor(group: string): _CallBatcher<SetItem> {
    let setter = this.setters.get(group);
    if (setter === undefined) {
      const what = `/pb.GCache/SetMany on ${this.address}`;
      setter = new _CallBatcher<SetItem>(
        {
          one: async (item, context) => {
            await this.connection.unary(
              GCACHE_SERVICE.Set,
              { group, key: item.key, value: item.value, ttlMs: 0, expiresAtMs: item.expiresAtMs, fromPeer: true },
              context,
            );
          },
          many: async (items, context) => {
            const response = await this.writeStream.send({ group, kind: WriteKind.SET, sets: items, keys: NO_KEYS }, context);
            return response.results.map((result) => (result.errorCode === "" ? undefined : remoteVerdict(result.errorCode, result.errorMessage, what)));
          },
        },
        { maxItems: MAX_BATCH_ITEMS, maxBytes: MAX_SET_BATCH_BYTES, bytesOf: setItemBytes },
      );
      this.setters.set(group, setter);
    }
    return setter;
  }

  delete(group: string, key: string, context: CallContext): Promise<boolean> {
    return this.deleterFor(group).submit(key, context);
  }

  private deleterFor(group: string): _CallBatcher<string, boolean> {
    let deleter = this.deleters.get(group);
    if (deleter === undefined) {
      const what = `/pb.GCache/DeleteMany on ${this.address}`;
      deleter = new _CallBatcher<string, boolean>(
        {
          one: async (key, context) => {
            const response = await this.connection.unary(
              GCACHE_SERVICE.Delete,
              { group, key, value: EMPTY, ttlMs: 0, expiresAtMs: 0, fromPeer: true },
              context,
            );
            return response.value;
          },
          many: async (keys, context) => {
            const response = await this.writeStream.send({ group, kind: WriteKind.DELETE, sets: NO_SETS, keys }, context);
            return response.results.map((result) => (result.errorCode === "" ? result.deleted : remoteVerdict(result.errorCode, result.errorMessage, what)));
          },
        },
        { maxItems: MAX_BATCH_ITEMS },
      );
      this.deleters.set(group, deleter);
    }
    return deleter;
  }

  async invalidate(group: string, key: string | null, context: CallContext): Promise<void> {
    if (key === null) await this.connection.unary(GCACHE_SERVICE.Invalidate, { group, key: "", all: true }, context);
    else await this.invalidatorFor(group).submit(key, context);
  }

  private invalidatorFor(group: string): _CallBatcher<string> {
    let invalidator = this.invalidators.get(group);
    if (invalidator === undefined) {
      invalidator = new _CallBatcher<string>(
        {
          one: async (key, context) => {
            await this.connection.unary(GCACHE_SERVICE.Invalidate, { group, key, all: false }, context);
          },
          many: async (keys, context) => {
            await this.writeStream.send({ group, kind: WriteKind.INVALIDATE, sets: NO_SETS, keys }, context);
            return keys.map(() => undefined);
          },
        },
        { maxItems: MAX_BATCH_ITEMS },
      );
      this.invalidators.set(group, invalidator);
    }
    return invalidator;
  }

  close(): void {
    this.batchStream.close();
    this.writeStream.close();
    this.link?.close();
    this.connection.close();
  }
}

/** A write batch a WriteStream could not carry, as the call for its kind. */
export async function _writeBatchCall(connection: _Connection, batch: WriteBatch, context: CallContext): Promise<WriteBatchResponse> {
  const { group, keys } = batch;
  switch (batch.kind) {
    case WriteKind.SET:
      return connection.unary(GCACHE_SERVICE.SetMany, { group, items: batch.sets }, context);
    case WriteKind.DELETE:
      return connection.unary(GCACHE_SERVICE.DeleteMany, { group, keys }, context);
    default:
      await connection.unary(GCACHE_SERVICE.InvalidateMany, { group, keys }, context);
      return { results: NO_RESULTS };
  }
}
