import { invalidOption } from "../errors.ts";
import { _bound, _LinkedStore } from "./_linked-store.ts";
import type { StoreOptions } from "./store.ts";

export type LRUStoreOptions<V = Uint8Array> = StoreOptions<V>;

/**
 * Classic least-recently-used store, bounded by entries and/or bytes. Every
 * operation is O(1); when a bound is hit the least recently used entries go.
 */
export class LRUStore<V = Uint8Array> extends _LinkedStore<V> {
  constructor(options: LRUStoreOptions<V>) {
    const maxEntries = _bound("maxEntries", options.maxEntries, true);
    const maxBytes = _bound("maxBytes", options.maxBytes, false);
    if (maxEntries === Infinity && maxBytes === Infinity) {
      throw invalidOption("LRUStore needs a bound: set maxEntries, maxBytes or both");
    }
    super(options, [{ maxEntries, maxBytes }]);
  }

  protected listForNewKey(): number {
    return 0;
  }

  protected splitByteBound(maxBytes: number, bounds: Float64Array): void {
    bounds[0] = maxBytes;
  }

  protected touch(_key: string, _entry: number, i: number): void {
    this.moveToHead(i, 0);
  }
}
