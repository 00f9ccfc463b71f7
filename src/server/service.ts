/**
 * The pb.GCache service: decodes requests, finds the group, and maps every
 * outcome to a gRPC status. Requests marked `from_peer` are served here and
 * never forwarded again, which is what makes forwarding loops impossible.
 */
import type { Metadata, ServerDuplexStream, ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";
import type { CallOptions } from "../call.ts";
import { GCacheError } from "../errors.ts";
import type { Group } from "../group.ts";
import type { Entry } from "../cluster/peer.ts";
import type {
  BatchGetItem,
  BatchGetRequest,
  BatchGetResponse,
  ClearRequest,
  ClearResponse,
  InvalidateRequest,
  InvalidateResponse,
  ItemResult,
  ItemResults,
  KeysRequest,
  PeerLinkRequest,
  PeerLinkResponse,
  Request,
  ResponseForDelete,
  ResponseForGet,
  SetItem,
  SetManyRequest,
  WriteBatch,
  WriteBatchResponse,
} from "../wire/messages.ts";
import { WriteKind } from "../wire/messages.ts";
import { toStatus } from "../wire/status.ts";
import { LinkStream } from "../wire/link.ts";
import type { _TokenCheck } from "../auth.ts";

export type GroupLookup = (name: string) => Group | undefined;

type Unary<Req, Res> = (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void;

/** Answers a stream sends after the one that answers a message. */
interface StreamLater<Res> {
  /** One more answer will follow; the stream stays open for it. */
  expect(): void;
  /** That answer. */
  deliver(response: Res): void;
}

const NO_PEERS: string[] = [];
/** Keys one BatchGet may carry. */
export const MAX_BATCH_KEYS = 1024;
const BATCH_FRAMING_BYTES = 1024;
const ITEM_FRAMING_BYTES = 32;
const EMPTY = new Uint8Array(0);

export interface CacheServiceHooks {
  /** Whether the node accepts new work (false while draining). */
  accepting(): boolean;
  /** The token callers must present on writes (and on reads with `reads`); null: no check. */
  auth: { check: _TokenCheck; reads: boolean } | null;
  /** Largest response the node may send, in bytes. */
  maxResponseBytes(): number;
  /** Brackets every call so the node can wait for in-flight calls at shutdown. */
  begin(): void;
  end(): void;
  /**
   * A BatchGetStream or WriteStream opened: the node ends it (with `end`) when
   * it stops, so long-lived streams never hold up shutdown. Returns the call
   * to make once the stream is over.
   */
  streamOpened(end: () => void): () => void;
  /** Where peers may reach this node's peer link, and the ticket they show there; null (or no hook): no link. */
  peerLink?(): PeerLinkResponse | null;
}

function getResponse(entry: Entry): ResponseForGet {
  return { value: entry.value, expiresAtMs: entry.expiresAt, unreachablePeers: NO_PEERS };
}

export function cacheService(lookup: GroupLookup, hooks: CacheServiceHooks) {
  function groupOf(name: string): Group {
    const group = lookup(name);
    if (group === undefined) {
      throw new GCacheError("ERR_UNKNOWN_GROUP", `unknown group ${JSON.stringify(name)}`);
    }
    return group;
  }

  /** The error for a call without the token `access` needs, or null when it may go on. */
  function refusal(access: "read" | "write", metadata: Metadata): GCacheError | null {
    const auth = hooks.auth;
    if (auth === null || (access === "read" && !auth.reads)) return null;
    const header = metadata.get("authorization")[0];
    if (auth.check.accepts(typeof header === "string" ? header : undefined)) return null;
    return new GCacheError("ERR_UNAUTHENTICATED", `${access}s need a valid auth token (authorization: Bearer <token>)`);
  }

  /**
   * A batch's items, answered at once from the cache, so that no slow load
   * holds up the batch (see _GetBatcher). A key that must be loaded, and a
   * value that would overflow the response (smaller ones after it may still
   * fit), go one of two ways:
   * - `later` null: sent back to be asked for alone. A missing key's load
   *   starts now, and the Get that asks for it joins the load.
   * - with `later` (a stream whose sender takes later answers): marked
   *   deferred and handed to `later` with its position, to be answered on the
   *   stream once loaded. That saves the sender a Get call per load.
   */
  function batchItems(
    group: Group,
    keys: readonly string[],
    deadline: CallOptions["deadline"],
    later: ((position: number, entry: Entry | Promise<Entry>) => void) | null,
  ): BatchGetItem[] {
    let room = hooks.maxResponseBytes() - BATCH_FRAMING_BYTES;
    return keys.map((key, position): BatchGetItem => {
      let hit: Entry | undefined;
      try {
        hit = later === null ? group._batchLookup(key, deadline) : group.cachedEntry(key, true);
      } catch (error) {
        return failedItem(error);
      }
      if (hit === undefined) {
        if (later === null) return RETRY_ALONE;
        later(position, group._loadMissed(key, deadline === undefined ? undefined : { deadline }, true));
        return DEFERRED;
      }
      const size = hit.value.byteLength + ITEM_FRAMING_BYTES;
      if (size > room) {
        if (later === null) return RETRY_ALONE;
        later(position, hit);
        return DEFERRED;
      }
      room -= size;
      return valueItem(hit);
    });
  }

  /**
   * Answers a batch's deferred keys on its stream, each in a message of its
   * own, so each fits the response limit (which is above the largest value).
   */
  function answerLater(id: number, later: StreamLater<BatchGetResponse>) {
    return (position: number, entry: Entry | Promise<Entry>): void => {
      later.expect();
      const deliver = (item: BatchGetItem) => later.deliver({ items: [item], id, useCall: false, positions: [position] });
      if (entry instanceof Promise) entry.then((loaded) => deliver(valueItem(loaded)), (error: unknown) => deliver(failedItem(error)));
      else queueMicrotask(() => deliver(valueItem(entry)));
    };
  }

  /** One batch off a stream. What the stream cannot answer well goes back to be sent as a call, whose status tells why. */
  function streamedAnswer(request: BatchGetRequest, later: StreamLater<BatchGetResponse>): BatchGetResponse {
    const id = request.id ?? 0;
    const group = lookup(request.group);
    if (!hooks.accepting() || group === undefined || request.keys.length > MAX_BATCH_KEYS) {
      return { items: NO_ITEMS, id, useCall: true };
    }
    const timeoutMs = request.timeoutMs ?? 0;
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : undefined;
    const items = batchItems(group, request.keys, deadline, request.deferLoads === true ? answerLater(id, later) : null);
    return { items, id, useCall: false };
  }

  /** One write batch off a stream, applied in order as SetMany, DeleteMany or InvalidateMany would. */
  async function writtenAnswer(request: WriteBatch): Promise<WriteBatchResponse> {
    const id = request.id ?? 0;
    const group = lookup(request.group);
    const kind = request.kind;
    const count = kind === WriteKind.SET ? request.sets.length : request.keys.length;
    // What the calls refuse, or answer as a whole, goes back to be sent as the call.
    if (!hooks.accepting() || group === undefined || count > MAX_BATCH_KEYS) return { results: NO_RESULTS, id, useCall: true };
    switch (kind) {
      case WriteKind.SET:
        return { results: await storeItems(group, request.sets), id, useCall: false };
      case WriteKind.DELETE:
        return { results: await deleteKeys(group, request.keys), id, useCall: false };
      case WriteKind.INVALIDATE:
        // A bad key is the call's to report.
        if (request.keys.includes("")) return { results: NO_RESULTS, id, useCall: true };
        dropCopies(group, request.keys);
        return { results: NO_RESULTS, id, useCall: false };
      default:
        return { results: NO_RESULTS, id, useCall: true };
    }
  }

  /**
   * A peer's BatchGetStream or WriteStream: each batch is taken in the order
   * it came and answered as soon as it is done. The stream ends on a
   * malformed message, or once every batch taken is answered after the peer
   * ended it or the node began to stop (`hooks.streamOpened`; batches that
   * arrive meanwhile are handed back), so no write a peer sent goes
   * unanswered. An answer may also promise later ones (`StreamLater`), which
   * hold the stream open the same way.
   */
  function serveBatches<Req, Res>(call: _StreamCall<Req, Res>, answer: (request: Req, later: StreamLater<Res>) => Res | Promise<Res>): void {
    let over = false;
    let paused = false;
    let unanswered = 0;
    let ending = false;
    const abandon = () => {
      over = true;
      untrack();
    };
    const finish = (error: GCacheError | null) => {
      if (over) return;
      abandon();
      if (error !== null) call.fail(error);
      else call.end();
    };
    const endOnceAnswered = () => {
      ending = true;
      if (unanswered === 0) finish(null);
    };
    const untrack = hooks.streamOpened(endOnceAnswered);
    const resume = () => {
      paused = false;
      call.resume();
    };
    const send = (response: Res) => {
      if (over || call.write(response) || paused) return;
      // A caller that stops reading answers gets no more until it reads: answers
      // must not pile up in memory (each may be megabytes).
      paused = true;
      call.pause();
      call.onceDrained(resume);
    };
    const answered = (response: Res) => {
      send(response);
      if (--unanswered === 0 && ending) finish(null);
    };
    const failed = (error: unknown) => finish(error instanceof GCacheError ? error : new GCacheError("ERR_INTERNAL", String(error)));
    const later: StreamLater<Res> = {
      expect: () => void unanswered++,
      deliver: answered,
    };
    call.onData((request: Req | InvalidMessage) => {
      if (over) return;
      if (request instanceof InvalidMessage) {
        finish(request.error);
        return;
      }
      const response = answer(request, later);
      if (!(response instanceof Promise)) {
        send(response);
        return;
      }
      unanswered++;
      response.then(answered, failed);
    });
    call.onEnd(endOnceAnswered);
    call.onGone(abandon);
  }

  /** A batch stream over gRPC: checks the caller's token first. */
  function serveStream<Req, Res>(access: "read" | "write", answer: (request: Req, later: StreamLater<Res>) => Res | Promise<Res>) {
    return (call: ServerDuplexStream<Req | InvalidMessage, Res>): void => {
      const refused = refusal(access, call.metadata);
      if (refused !== null) {
        call.emit("error", toStatus(refused));
        return;
      }
      serveBatches(new GrpcStreamCall(call), answer);
    };
  }

  /** Runs `work` with the call's deadline and cancellation, answering exactly once. */
  function serve<Req, Res>(access: "read" | "write", work: (request: Req, options: CallOptions) => Res | Promise<Res>): Unary<Req, Res> {
    return (call, callback) => {
      if (!hooks.accepting()) {
        callback(toStatus(new GCacheError("ERR_UNAVAILABLE", "node is shutting down")));
        return;
      }
      const refused = refusal(access, call.metadata);
      if (refused !== null) {
        callback(toStatus(refused));
        return;
      }
      hooks.begin();
      const options = new ServerCallOptions(call);
      let result: Res | Promise<Res>;
      try {
        const request = call.request as Req | InvalidMessage;
        if (request instanceof InvalidMessage) throw request.error;
        result = work(request, options);
      } catch (error) {
        finish(options, callback, error);
        return;
      }
      // A result in hand (a hit) is answered without a closure; only a promise needs them.
      if (result instanceof Promise) {
        result.then(
          (response) => finish(options, callback, null, response),
          (error: unknown) => finish(options, callback, error),
        );
      } else finish(options, callback, null, result);
    };
  }

  function finish<Res>(options: ServerCallOptions, callback: sendUnaryData<Res>, error: unknown, response?: Res): void {
    options.finished = true;
    hooks.end();
    if (error === null) callback(null, response);
    else callback(toStatus(error));
  }

  const handlers = {
    Get: serve<Request, ResponseForGet>("read", (request, options) => {
      const group = groupOf(request.group);
      // A hit is answered in this turn: no promise, no microtask.
      const hit = group.cachedEntry(request.key, request.fromPeer);
      if (hit !== undefined) return getResponse(hit);
      return group._loadMissed(request.key, options, request.fromPeer).then(getResponse);
    }),
    Set: serve<Request, ResponseForGet>("write", async (request, options) => {
      const group = groupOf(request.group);
      const ttlMs = request.ttlMs;
      if (ttlMs < 0) throw new GCacheError("ERR_INVALID_ARGUMENT", `ttl_ms must be >= 0, got ${ttlMs}`);
      const result = await group.set(
        request.key,
        request.value,
        { deadline: options.deadline, signal: options.signal, ttlMs, expiresAt: request.expiresAtMs },
        request.fromPeer,
      );
      return { value: EMPTY, expiresAtMs: 0, unreachablePeers: result.unreachablePeers };
    }),
    SetMany: serve<SetManyRequest, ItemResults>("write", async (request) => {
      const group = groupOf(request.group);
      checkBatchSize(request.items.length, "items");
      return { results: await storeItems(group, request.items) };
    }),
    Delete: serve<Request, ResponseForDelete>("write", async (request, options) => {
      const result = await groupOf(request.group).delete(request.key, options, request.fromPeer);
      return { value: result.deleted, unreachablePeers: result.unreachablePeers };
    }),
    DeleteMany: serve<KeysRequest, ItemResults>("write", async (request) => {
      const group = groupOf(request.group);
      checkBatchSize(request.keys.length, "keys");
      return { results: await deleteKeys(group, request.keys) };
    }),
    Clear: serve<ClearRequest, ClearResponse>("write", async (request, options) => {
      const result = await groupOf(request.group).clear(options, request.fromPeer);
      return { unreachablePeers: result.unreachablePeers };
    }),
    BatchGet: serve<BatchGetRequest, BatchGetResponse>("read", async (request, options) => {
      const group = groupOf(request.group);
      checkBatchSize(request.keys.length, "keys");
      return { items: batchItems(group, request.keys, options.deadline, null) };
    }),
    BatchGetStream: serveStream("read", streamedAnswer),
    WriteStream: serveStream("write", writtenAnswer),
    Invalidate: serve<InvalidateRequest, InvalidateResponse>("write", (request) => {
      const group = groupOf(request.group);
      if (!request.all && request.key === "") throw new GCacheError("ERR_INVALID_ARGUMENT", "key must be non-empty");
      group.invalidateLocal(request.all ? null : request.key);
      return {};
    }),
    InvalidateMany: serve<KeysRequest, InvalidateResponse>("write", (request) => {
      const group = groupOf(request.group);
      const keys = request.keys;
      checkBatchSize(keys.length, "keys");
      dropCopies(group, keys);
      return {};
    }),
    PeerLink: serve<PeerLinkRequest, PeerLinkResponse>("write", () => hooks.peerLink?.() ?? NO_LINK),
  };
  /** The same batch streams on a peer link, whose caller showed its ticket instead of a token. */
  const linkStreams = {
    [LinkStream.BATCH_GET]: (call: _StreamCall<BatchGetRequest, BatchGetResponse>) => serveBatches(call, streamedAnswer),
    [LinkStream.WRITE]: (call: _StreamCall<WriteBatch, WriteBatchResponse>) => serveBatches(call, writtenAnswer),
  };
  return { handlers, linkStreams };
}

/** The gRPC handlers alone (tests and benchmarks call them directly). */
export function cacheServiceHandlers(lookup: GroupLookup, hooks: CacheServiceHooks) {
  return cacheService(lookup, hooks).handlers;
}

/**
 * A batch stream as the service serves it, whatever carries it (a gRPC call
 * or a peer link).
 */
export interface _StreamCall<Req, Res> {
  /** Sends one answer; false when the caller is not taking answers now (see `onceDrained`). */
  write(response: Res): boolean;
  /** Ends the stream with an error the caller receives as a status. */
  fail(error: GCacheError): void;
  /** Ends the stream cleanly. */
  end(): void;
  /** Stops taking batches until `resume`. */
  pause(): void;
  resume(): void;
  onceDrained(listener: () => void): void;
  onData(listener: (request: Req | InvalidMessage) => void): void;
  /** The caller sends no more batches. */
  onEnd(listener: () => void): void;
  /** The caller went away, or cancelled: nothing more can reach it. */
  onGone(listener: () => void): void;
}

class GrpcStreamCall<Req, Res> implements _StreamCall<Req, Res> {
  constructor(private readonly call: ServerDuplexStream<Req | InvalidMessage, Res>) {}
  write(response: Res): boolean {
    return this.call.write(response);
  }
  fail(error: GCacheError): void {
    this.call.emit("error", toStatus(error));
  }
  end(): void {
    this.call.end();
  }
  pause(): void {
    this.call.pause();
  }
  resume(): void {
    this.call.resume();
  }
  onceDrained(listener: () => void): void {
    this.call.once("drain", listener);
  }
  onData(listener: (request: Req | InvalidMessage) => void): void {
    this.call.on("data", listener);
  }
  onEnd(listener: () => void): void {
    this.call.on("end", listener);
  }
  onGone(listener: () => void): void {
    this.call.on("error", listener);
    this.call.on("cancelled", listener);
  }
}

/** A peer's batch of stores (SetMany, WriteStream): each item as a peer's Set, stored here, never forwarded; one bad item fails only itself. */
function storeItems(group: Group, items: readonly SetItem[]): Promise<ItemResult[]> {
  return eachItem(items, async (item) => {
    await group.set(item.key, item.value, { expiresAt: item.expiresAtMs }, true);
    return APPLIED;
  });
}

/** A peer's batch of deletes (DeleteMany, WriteStream): each key as a peer's Delete, dropped here, never forwarded; a bad key fails only itself. */
function deleteKeys(group: Group, keys: readonly string[]): Promise<ItemResult[]> {
  return eachItem(keys, async (key) => ((await group.delete(key, undefined, true)).deleted ? DELETED : APPLIED));
}

/** A peer's drops of copies (InvalidateMany, WriteStream), all or nothing: a bad key leaves every copy in place and says which key it was. */
function dropCopies(group: Group, keys: readonly string[]): void {
  const empty = keys.indexOf("");
  if (empty >= 0) throw new GCacheError("ERR_INVALID_ARGUMENT", `key ${empty} of the batch is empty; keys must be non-empty`);
  for (const key of keys) group.invalidateLocal(key);
}

/** Refuses a batched call that carries more than a node takes. */
function checkBatchSize(count: number, what: "keys" | "items"): void {
  if (count > MAX_BATCH_KEYS) throw new GCacheError("ERR_INVALID_ARGUMENT", `a batch holds at most ${MAX_BATCH_KEYS} ${what}, got ${count}`);
}

/** Applies `apply` to each item in order; an item that throws fails alone, answered with its error. */
async function eachItem<T>(items: readonly T[], apply: (item: T) => Promise<ItemResult>): Promise<ItemResult[]> {
  const results = new Array<ItemResult>(items.length);
  for (let i = 0; i < items.length; i++) {
    try {
      results[i] = await apply(items[i]!);
    } catch (error) {
      results[i] = itemFailure(error);
    }
  }
  return results;
}

/** A value as a batch answer carries it. */
function valueItem(entry: Entry): BatchGetItem {
  return { value: entry.value, expiresAtMs: entry.expiresAt, errorCode: "", errorMessage: "", retryAlone: false };
}

/** A key of a batch that failed, as the answer carries it. */
function failedItem(error: unknown): BatchGetItem {
  return { value: EMPTY, expiresAtMs: 0, ...itemFailure(error), retryAlone: false };
}

/** How one item of a batch failed, as the answer carries it. */
function itemFailure(error: unknown): ItemResult {
  const known = error instanceof GCacheError ? error : new GCacheError("ERR_INTERNAL", String(error));
  return { errorCode: known.code, errorMessage: known.message, deleted: false };
}

const NO_ITEMS: BatchGetItem[] = [];
const NO_LINK: PeerLinkResponse = { port: 0, ticket: EMPTY };
const NO_RESULTS: ItemResult[] = [];
/** An item done: a value stored, or a key the receiver did not hold. */
const APPLIED: ItemResult = { errorCode: "", errorMessage: "", deleted: false };
const DELETED: ItemResult = { errorCode: "", errorMessage: "", deleted: true };
const RETRY_ALONE: BatchGetItem = { value: EMPTY, expiresAtMs: 0, errorCode: "", errorMessage: "", retryAlone: true };
const DEFERRED: BatchGetItem = { value: EMPTY, expiresAtMs: 0, errorCode: "", errorMessage: "", retryAlone: false, deferred: true };

/** What the server-side decoder yields for bytes that are not a valid message. */
export class InvalidMessage {
  readonly error: GCacheError;
  constructor(cause: unknown) {
    this.error = new GCacheError(
      "ERR_INVALID_ARGUMENT",
      `malformed request message: ${cause instanceof Error ? cause.message : String(cause)}`,
    );
  }
}

/**
 * A server call's deadline and cancellation as CallOptions. The signal is
 * built on first use: a cache hit never asks for it, so hits pay nothing for
 * cancellation. grpc-js on Bun reports every finished call as cancelled too,
 * so a cancellation after the answer went out is ignored.
 */
class ServerCallOptions implements CallOptions {
  finished = false;
  private controller: AbortController | null = null;

  constructor(private readonly call: ServerUnaryCall<unknown, unknown>) {}

  /** Read only by calls that wait (loads, forwards), so a hit never asks. */
  get deadline(): number | undefined {
    const deadline = this.call.getDeadline();
    const given = typeof deadline === "number" ? deadline : deadline.getTime();
    return Number.isFinite(given) ? given : undefined;
  }

  get signal(): AbortSignal {
    if (this.controller === null) {
      const controller = new AbortController();
      const cancel = () => {
        if (!this.finished) controller.abort(new GCacheError("ERR_CANCELLED", "the caller cancelled"));
      };
      if (this.call.cancelled) cancel();
      else this.call.once("cancelled", cancel);
      this.controller = controller;
    }
    return this.controller.signal;
  }
}
