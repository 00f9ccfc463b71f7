/** What the collectors that watch this process share: a loop on timers that never keep it alive, and its CPU clock. */

/** What a collector drives; the real ones come from the runtime, tests bring their own. */
export interface _CollectorDeps {
  /** Runs the collection. */
  collect(): void;
  /** CPU time the process used so far, in microseconds. */
  cpuMicros(): number;
}

/** A check that schedules its own next run on a housekeeping timer; `stop()` ends it for good. */
export abstract class _HousekeepingLoop {
  /** The next run; null once stopped (a stopped loop never runs again: its timer was cleared). */
  private timer: ReturnType<typeof setTimeout> | null = null;

  get active(): boolean {
    return this.timer !== null;
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Runs `run` after `delayMs`, on a timer that never keeps the process alive: housekeeping must not. */
  protected runIn(delayMs: number, run: () => void): void {
    const timer = setTimeout(run, delayMs);
    (timer as { unref?: () => void }).unref?.();
    this.timer = timer;
  }
}

/** CPU time this process used so far (user and system, all threads), in microseconds. */
export function _processCpuMicros(): number {
  const used = process.cpuUsage();
  return used.user + used.system;
}
