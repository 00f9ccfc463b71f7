/**
 * A binary min-heap of (expiry time, slot, generation) kept in typed arrays,
 * so sweeping costs O(expired · log n) instead of a scan of every entry.
 *
 * Entries are never removed from the middle: when a slot is freed or its
 * expiry changes, the heap entry simply goes stale and is discarded when it
 * surfaces (the owner checks generation and time). The owner calls `rebuild`
 * when stale entries outnumber live ones, which keeps memory bounded.
 */
export class _ExpiryHeap {
  private times: Float64Array;
  private slots: Uint32Array;
  private gens: Uint32Array;
  private count = 0;

  constructor(initialCapacity = 64) {
    this.times = new Float64Array(initialCapacity);
    this.slots = new Uint32Array(initialCapacity);
    this.gens = new Uint32Array(initialCapacity);
  }

  get length(): number {
    return this.count;
  }

  /** Earliest expiry time, or +Infinity when empty. */
  peekTime(): number {
    return this.count === 0 ? Infinity : this.times[0]!;
  }

  peekSlot(): number {
    return this.slots[0]!;
  }

  peekGen(): number {
    return this.gens[0]!;
  }

  push(time: number, slot: number, gen: number): void {
    if (this.count === this.times.length) this.grow();
    let i = this.count++;
    // Sift up with a hole instead of swaps: one write per level.
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pt = this.times[parent]!;
      if (pt <= time) break;
      this.times[i] = pt;
      this.slots[i] = this.slots[parent]!;
      this.gens[i] = this.gens[parent]!;
      i = parent;
    }
    this.times[i] = time;
    this.slots[i] = slot;
    this.gens[i] = gen;
  }

  pop(): void {
    if (this.count === 0) return;
    const last = --this.count;
    if (last === 0) return;
    this.times[0] = this.times[last]!;
    this.slots[0] = this.slots[last]!;
    this.gens[0] = this.gens[last]!;
    this.siftDown(0);
  }

  clear(): void {
    this.count = 0;
  }

  /** Replaces the contents with the given live entries (heapified in O(n)). */
  rebuild(entries: Iterable<readonly [time: number, slot: number, gen: number]>): void {
    this.count = 0;
    for (const [time, slot, gen] of entries) {
      if (this.count === this.times.length) this.grow();
      this.times[this.count] = time;
      this.slots[this.count] = slot;
      this.gens[this.count] = gen;
      this.count++;
    }
    for (let i = (this.count >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  private siftDown(start: number): void {
    const time = this.times[start]!;
    const slot = this.slots[start]!;
    const gen = this.gens[start]!;
    let i = start;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= this.count) break;
      if (child + 1 < this.count && this.times[child + 1]! < this.times[child]!) child++;
      if (this.times[child]! >= time) break;
      this.times[i] = this.times[child]!;
      this.slots[i] = this.slots[child]!;
      this.gens[i] = this.gens[child]!;
      i = child;
    }
    this.times[i] = time;
    this.slots[i] = slot;
    this.gens[i] = gen;
  }

  private grow(): void {
    const cap = this.times.length * 2;
    const times = new Float64Array(cap);
    times.set(this.times);
    const slots = new Uint32Array(cap);
    slots.set(this.slots);
    const gens = new Uint32Array(cap);
    gens.set(this.gens);
    this.times = times;
    this.slots = slots;
    this.gens = gens;
  }
}
