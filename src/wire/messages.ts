/**
 * Message codecs and gRPC service definitions, built with protobufjs from the
 * embedded descriptor of proto/ (nothing is read from disk or parsed at run time).
 */
import type { MethodDefinition } from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { PROTO_DESCRIPTOR } from "./_proto-descriptor.ts";

export interface Request {
  group: string;
  key: string;
  value: Uint8Array;
  ttlMs: number;
  expiresAtMs: number;
  fromPeer: boolean;
}

export interface ResponseForGet {
  value: Uint8Array;
  expiresAtMs: number;
  unreachablePeers: string[];
}

export interface ResponseForDelete {
  value: boolean;
  unreachablePeers: string[];
}

export interface InvalidateRequest {
  group: string;
  key: string;
  all: boolean;
}

export type InvalidateResponse = Record<string, never>;

/** InvalidateMany and DeleteMany. */
export interface KeysRequest {
  group: string;
  keys: string[];
}

export interface SetItem {
  key: string;
  value: Uint8Array;
  expiresAtMs: number;
}

export interface SetManyRequest {
  group: string;
  items: SetItem[];
}

export interface ItemResult {
  errorCode: string;
  errorMessage: string;
  /** DeleteMany only: the receiver held the key. */
  deleted: boolean;
}

/** The answer to SetMany and DeleteMany. */
export interface ItemResults {
  results: ItemResult[];
}

export interface ClearRequest {
  group: string;
  fromPeer: boolean;
}

export interface ClearResponse {
  unreachablePeers: string[];
}

export interface BatchGetRequest {
  group: string;
  keys: string[];
  /** Stream only: the sender's id for the batch. */
  id?: number;
  /** Stream only: the batch's time budget, ms. */
  timeoutMs?: number;
  /** Stream only: keys to load are answered later, by id, instead of "ask alone". */
  deferLoads?: boolean;
}

export interface BatchGetItem {
  value: Uint8Array;
  expiresAtMs: number;
  errorCode: string;
  errorMessage: string;
  retryAlone: boolean;
  /** Answered in a later response with the same id (only when the request had `deferLoads`). */
  deferred?: boolean;
}

export interface BatchGetResponse {
  items: BatchGetItem[];
  /** Stream only: the id of the batch answered. */
  id?: number;
  /** Stream only: ask again with a BatchGet call. */
  useCall?: boolean;
  /** Stream only, a later answer: `items[i]` answers the request's key at `positions[i]`. Empty in a first answer. */
  positions?: number[];
}

export const WriteKind = { SET: 0, DELETE: 1, INVALIDATE: 2 } as const;
export type WriteKind = (typeof WriteKind)[keyof typeof WriteKind];

/** One batch on a WriteStream: SetMany, DeleteMany or InvalidateMany items. */
export interface WriteBatch {
  group: string;
  kind: WriteKind;
  /** WriteKind.SET only. */
  sets: SetItem[];
  /** WriteKind.DELETE and INVALIDATE. */
  keys: string[];
  id?: number;
  timeoutMs?: number;
}

export interface WriteBatchResponse {
  /** One per item, in order (none for invalidations). */
  results: ItemResult[];
  id?: number;
  /** Send the batch again as the matching call. */
  useCall?: boolean;
}

export type PeerLinkRequest = Record<string, never>;

export interface PeerLinkResponse {
  /** 0: no link. */
  port: number;
  ticket: Uint8Array;
}

export interface HealthCheckRequest {
  service: string;
}

export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;
export type ServingStatus = (typeof ServingStatus)[keyof typeof ServingStatus];

export interface HealthCheckResponse {
  status: ServingStatus;
}

const root = protobuf.Root.fromJSON(PROTO_DESCRIPTOR);

/** int64 fields decode as Long objects where the `long` package loads (not in the executable: scripts/build.ts); we only need doubles. */
function int64(value: unknown): number {
  if (typeof value === "number") return value;
  if (value !== null && typeof value === "object" && "toNumber" in value) {
    return (value as { toNumber(): number }).toNumber();
  }
  return 0;
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export interface Codec<T> {
  encode(message: T): Buffer;
  /**
   * Like `encode`, but the bytes live in a buffer the next call reuses: only
   * for a caller that copies them before encoding again. grpc-js's server
   * does (it copies every response into its frame at once); its client does
   * not (it frames requests after an await). `headroom` bytes (default 0)
   * come first, left for the caller to fill (a peer link's frame header).
   */
  encodeTransient(message: T, headroom?: number): Buffer;
  decode(bytes: Uint8Array): T;
}

/**
 * Encoding buffers up to this size are kept for the next message. A fresh
 * writer grows by doubling and then copies its result out; for large batch
 * responses those copies, and the garbage they leave, cost the owner more
 * than the encoding itself.
 */
const KEPT_WRITER_BYTES = 1024 * 1024;

function codec<T>(typeName: string, normalize: (decoded: Record<string, unknown>) => T): Codec<T> {
  const type = root.lookupType(typeName);
  let kept: protobuf.Writer | null = null;
  return {
    encode: (message) => toBuffer(type.encode(message as object).finish()),
    encodeTransient: (message, headroom = 0) => {
      // Taken, not shared, while in use: a throw mid-encoding leaves it behind, half-written.
      const writer = kept?.reset() ?? protobuf.Writer.create();
      kept = null;
      // Room for a frame header ahead of the message (see wire/link.ts): a zero varint is one byte.
      for (let i = 0; i < headroom; i++) writer.uint32(0);
      const bytes = type.encode(message as object, writer).finish(true);
      if (bytes.byteLength <= KEPT_WRITER_BYTES) kept = writer;
      return toBuffer(bytes);
    },
    decode: (bytes) => normalize(type.decode(bytes) as unknown as Record<string, unknown>),
  };
}

const EMPTY = new Uint8Array(0);

const setItemOf = (item: Record<string, unknown>): SetItem => ({
  key: item.key as string,
  value: (item.value as Uint8Array | undefined) ?? EMPTY,
  expiresAtMs: int64(item.expiresAtMs),
});

const itemResultOf = (result: Record<string, unknown>): ItemResult => ({
  errorCode: result.errorCode as string,
  errorMessage: result.errorMessage as string,
  deleted: result.deleted as boolean,
});

export const codecs = {
  Request: codec<Request>("pb.Request", (m) => ({
    group: m.group as string,
    key: m.key as string,
    value: (m.value as Uint8Array | undefined) ?? EMPTY,
    ttlMs: int64(m.ttlMs),
    expiresAtMs: int64(m.expiresAtMs),
    fromPeer: m.fromPeer as boolean,
  })),
  ResponseForGet: codec<ResponseForGet>("pb.ResponseForGet", (m) => ({
    value: (m.value as Uint8Array | undefined) ?? EMPTY,
    expiresAtMs: int64(m.expiresAtMs),
    unreachablePeers: m.unreachablePeers as string[],
  })),
  ResponseForDelete: codec<ResponseForDelete>("pb.ResponseForDelete", (m) => ({
    value: m.value as boolean,
    unreachablePeers: m.unreachablePeers as string[],
  })),
  InvalidateRequest: codec<InvalidateRequest>("pb.InvalidateRequest", (m) => ({
    group: m.group as string,
    key: m.key as string,
    all: m.all as boolean,
  })),
  InvalidateResponse: codec<InvalidateResponse>("pb.InvalidateResponse", () => ({})),
  KeysRequest: codec<KeysRequest>("pb.KeysRequest", (m) => ({
    group: m.group as string,
    keys: m.keys as string[],
  })),
  SetManyRequest: codec<SetManyRequest>("pb.SetManyRequest", (m) => ({
    group: m.group as string,
    items: (m.items as Record<string, unknown>[]).map(setItemOf),
  })),
  ItemResults: codec<ItemResults>("pb.ItemResults", (m) => ({
    results: (m.results as Record<string, unknown>[]).map(itemResultOf),
  })),
  ClearRequest: codec<ClearRequest>("pb.ClearRequest", (m) => ({
    group: m.group as string,
    fromPeer: m.fromPeer as boolean,
  })),
  ClearResponse: codec<ClearResponse>("pb.ClearResponse", (m) => ({
    unreachablePeers: m.unreachablePeers as string[],
  })),
  BatchGetRequest: codec<BatchGetRequest>("pb.BatchGetRequest", (m) => ({
    group: m.group as string,
    keys: m.keys as string[],
    id: m.id as number,
    timeoutMs: m.timeoutMs as number,
    deferLoads: m.deferLoads as boolean,
  })),
  BatchGetResponse: codec<BatchGetResponse>("pb.BatchGetResponse", (m) => ({
    items: (m.items as Record<string, unknown>[]).map((item) => ({
      value: (item.value as Uint8Array | undefined) ?? EMPTY,
      expiresAtMs: int64(item.expiresAtMs),
      errorCode: item.errorCode as string,
      errorMessage: item.errorMessage as string,
      retryAlone: item.retryAlone as boolean,
      deferred: item.deferred as boolean,
    })),
    id: m.id as number,
    useCall: m.useCall as boolean,
    positions: m.positions as number[],
  })),
  WriteBatch: codec<WriteBatch>("pb.WriteBatch", (m) => ({
    group: m.group as string,
    kind: m.kind as WriteKind,
    sets: (m.sets as Record<string, unknown>[]).map(setItemOf),
    keys: m.keys as string[],
    id: m.id as number,
    timeoutMs: m.timeoutMs as number,
  })),
  WriteBatchResponse: codec<WriteBatchResponse>("pb.WriteBatchResponse", (m) => ({
    results: (m.results as Record<string, unknown>[]).map(itemResultOf),
    id: m.id as number,
    useCall: m.useCall as boolean,
  })),
  PeerLinkRequest: codec<PeerLinkRequest>("pb.PeerLinkRequest", () => ({})),
  PeerLinkResponse: codec<PeerLinkResponse>("pb.PeerLinkResponse", (m) => ({
    port: m.port as number,
    ticket: (m.ticket as Uint8Array | undefined) ?? EMPTY,
  })),
  HealthCheckRequest: codec<HealthCheckRequest>("grpc.health.v1.HealthCheckRequest", (m) => ({
    service: m.service as string,
  })),
  HealthCheckResponse: codec<HealthCheckResponse>("grpc.health.v1.HealthCheckResponse", (m) => ({
    status: m.status as ServingStatus,
  })),
} as const;

function unary<Req, Res>(path: string, req: Codec<Req>, res: Codec<Res>): MethodDefinition<Req, Res> {
  return {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: req.encode,
    requestDeserialize: req.decode,
    // Responses are encoded only by our server (see Codec.encodeTransient).
    responseSerialize: res.encodeTransient,
    responseDeserialize: res.decode,
  };
}

export const GCACHE_SERVICE = {
  Get: unary("/pb.GCache/Get", codecs.Request, codecs.ResponseForGet),
  Set: unary("/pb.GCache/Set", codecs.Request, codecs.ResponseForGet),
  Delete: unary("/pb.GCache/Delete", codecs.Request, codecs.ResponseForDelete),
  Clear: unary("/pb.GCache/Clear", codecs.ClearRequest, codecs.ClearResponse),
  Invalidate: unary("/pb.GCache/Invalidate", codecs.InvalidateRequest, codecs.InvalidateResponse),
  InvalidateMany: unary("/pb.GCache/InvalidateMany", codecs.KeysRequest, codecs.InvalidateResponse),
  SetMany: unary("/pb.GCache/SetMany", codecs.SetManyRequest, codecs.ItemResults),
  DeleteMany: unary("/pb.GCache/DeleteMany", codecs.KeysRequest, codecs.ItemResults),
  BatchGet: unary("/pb.GCache/BatchGet", codecs.BatchGetRequest, codecs.BatchGetResponse),
  BatchGetStream: {
    ...unary("/pb.GCache/BatchGetStream", codecs.BatchGetRequest, codecs.BatchGetResponse),
    requestStream: true,
    responseStream: true,
  },
  WriteStream: {
    ...unary("/pb.GCache/WriteStream", codecs.WriteBatch, codecs.WriteBatchResponse),
    requestStream: true,
    responseStream: true,
  },
  PeerLink: unary("/pb.GCache/PeerLink", codecs.PeerLinkRequest, codecs.PeerLinkResponse),
} as const;

export const HEALTH_SERVICE = {
  Check: unary("/grpc.health.v1.Health/Check", codecs.HealthCheckRequest, codecs.HealthCheckResponse),
  Watch: {
    ...unary("/grpc.health.v1.Health/Watch", codecs.HealthCheckRequest, codecs.HealthCheckResponse),
    responseStream: true,
  },
} as const;
