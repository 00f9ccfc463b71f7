/**
 * The deadlines of many short waits, kept with one timer.
 *
 * A peer hop's fetch must fail by its deadline even while the batch it waits
 * in is held up, yet nearly every fetch is answered within milliseconds of a
 * deadline seconds away. A setTimeout and a clearTimeout per fetch cost 0.24
 * µs, and were about 3 % of the forwarding node's samples in a profile of the
 * hop; an array slot taken and given back here costs 0.03 µs (docs/benchmarks.md,
 * "One timer for the hop's deadlines"). The timer is armed for the earliest
 * deadline; when it fires it expires what is due and is armed again for the
 * earliest left, so a wait still ends at its own deadline, not on a tick.
 */
import { _timerDelay } from "./call.ts";

/** A wait with a deadline (epoch ms). */
export interface _Expiring {
  readonly deadline: number;
  /** Where the wait is registered: set by `_Deadlines`, -1 while it is not. */
  deadlineSlot: number;
  /** Called once, when the deadline has passed and the wait is still registered. */
  expire(): void;
}

export class _Deadlines {
  /** The waits, unordered; each knows its slot, so one is removed in O(1) without hashing. */
  private readonly waiting: _Expiring[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** The deadline the timer fires for; Infinity when it is not armed. */
  private armedFor = Infinity;

  /** Waits registered and not yet removed or expired. */
  get size(): number {
    return this.waiting.length;
  }

  add(wait: _Expiring): void {
    wait.deadlineSlot = this.waiting.length;
    this.waiting.push(wait);
    if (wait.deadline < this.armedFor) this.arm(wait.deadline);
  }

  /**
   * Removes a wait that ended. The timer stays armed: under load the earliest
   * deadline is seconds away and later ones come after it, so it is armed
   * about once per time limit, not per wait. It may then fire for a wait
   * already gone, find nothing due and be armed for the earliest left. It is
   * unref'd: a wait never holds a process open by itself.
   */
  delete(wait: _Expiring): void {
    const slot = wait.deadlineSlot;
    if (slot < 0 || this.waiting[slot] !== wait) return;
    const last = this.waiting.pop()!;
    if (last !== wait) {
      this.waiting[slot] = last;
      last.deadlineSlot = slot;
    }
    wait.deadlineSlot = -1;
  }

  private arm(deadline: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.armedFor = deadline;
    this.timer = setTimeout(this.fire, _timerDelay(deadline - Date.now()));
    this.timer.unref?.();
  }

  private readonly fire = (): void => {
    this.timer = null;
    this.armedFor = Infinity;
    const now = Date.now();
    let due: _Expiring[] | null = null;
    let next = Infinity;
    for (const wait of this.waiting) {
      if (wait.deadline <= now) (due ??= []).push(wait);
      else if (wait.deadline < next) next = wait.deadline;
    }
    if (next !== Infinity) this.arm(next);
    if (due === null) return;
    for (const wait of due) this.delete(wait);
    // Armed before the expiries run: one that adds a wait of its own arms the timer itself if that wait is due sooner.
    for (const wait of due) wait.expire();
  };
}
