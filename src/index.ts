/**
 * gcache's public API. Anything not exported here is internal and may change
 * without notice.
 */
export { CacheNode, DEFAULT_NODE_OPTIONS, type NodeOptions } from "./node.ts";
export {
  Group,
  DEFAULT_GROUP_OPTIONS,
  type GroupOptions,
  type GroupStats,
  type Loader,
  type LoadContext,
  type LoadedValue,
  type SetOptions as GroupSetOptions,
  type WriteResult,
  type DeleteResult,
} from "./group.ts";
export {
  GCacheClient,
  DEFAULT_CLIENT_OPTIONS,
  type ClientOptions,
  type ClientSetOptions,
  type ClientEntry,
} from "./client.ts";
export type { CallOptions } from "./call.ts";
export { Cache, DEFAULT_CACHE_OPTIONS, type CacheOptions, type CacheStats } from "./cache.ts";
export {
  createStore,
  LRUStore,
  LRU2Store,
  STORE_KINDS,
  DEFAULT_STORE_OPTIONS,
  DEFAULT_LRU2_OPTIONS,
  type Store,
  type StoreKind,
  type StoreOptions,
  type LRUStoreOptions,
  type LRU2StoreOptions,
  type SetOptions,
  type EvictReason,
  type EvictListener,
  type Clock,
} from "./store/index.ts";
export { SingleFlight } from "./singleflight.ts";
export { HashRing, DEFAULT_RING_OPTIONS, type RingOptions, type RingMember } from "./cluster/ring.ts";
export { hash32, type HashFn } from "./cluster/hash.ts";
export type { MemberSpec } from "./cluster/picker.ts";
export type { Entry, FetchDone, Peer, Membership } from "./cluster/peer.ts";
export { startGcPacer, DEFAULT_GC_PACER_OPTIONS, type GcPacer, type GcPacerOptions } from "./server/gc-pacer.ts";
export { startIdleCollector, DEFAULT_IDLE_COLLECTOR_OPTIONS, type IdleCollector, type IdleCollectorOptions } from "./server/idle-collector.ts";
export { GCacheError, NotFoundError, isGCacheError, type ErrorCode } from "./errors.ts";
