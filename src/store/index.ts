import { invalidOption } from "../errors.ts";
import { LRUStore, type LRUStoreOptions } from "./lru.ts";
import { LRU2Store, type LRU2StoreOptions } from "./lru2.ts";

export { LRUStore, type LRUStoreOptions } from "./lru.ts";
export { LRU2Store, DEFAULT_LRU2_OPTIONS, type LRU2StoreOptions } from "./lru2.ts";
export {
  DEFAULT_STORE_OPTIONS,
  type Clock,
  type EvictListener,
  type EvictReason,
  type SetOptions,
  type Store,
  type StoreOptions,
} from "./store.ts";

export type StoreKind = "lru" | "lru2";
export const STORE_KINDS: readonly StoreKind[] = ["lru", "lru2"];

/** Builds a store by name, as configuration names it. An unknown kind is an error, never a silent fallback. */
export function createStore<V = Uint8Array>(kind: "lru", options: LRUStoreOptions<V>): LRUStore<V>;
export function createStore<V = Uint8Array>(kind: "lru2", options: LRU2StoreOptions<V>): LRU2Store<V>;
export function createStore<V = Uint8Array>(kind: string, options: LRU2StoreOptions<V>): LRUStore<V> | LRU2Store<V>;
export function createStore<V = Uint8Array>(kind: string, options: LRU2StoreOptions<V>): LRUStore<V> | LRU2Store<V> {
  switch (kind) {
    case "lru":
      return new LRUStore<V>(options);
    case "lru2":
      return new LRU2Store<V>(options);
    default:
      throw invalidOption(`unknown store kind ${JSON.stringify(kind)}: expected one of ${STORE_KINDS.join(", ")}`);
  }
}
