/**
 * Young-generation collections on a steady beat while the process is busy.
 *
 * Left to itself, JavaScriptCore lets the young generation grow with the heap,
 * so a node under load collects only every few hundred milliseconds, and then
 * sweeps and finalizes everything that piled up since (request, response and
 * buffer objects by the ten thousand) in one go: the event loop stops for 3 to
 * 14 ms, and every request in flight waits. Those stops are most of a busy
 * node's p99. Collecting every 25 ms leaves each collection little to do, so
 * no stop is long, and the total work is no larger (`bun run bench:gc-pacing`:
 * one node holding 50,000 more values, p99 2.72 -> 1.54 ms at the same CPU per
 * request; docs/benchmarks.md).
 *
 * A beat collects only when the process used CPU since the one before, so an
 * idle node is left alone (and looked at ten times less often). Pacing pays
 * only while a collection's cost shrinks with the garbage it finds; where it
 * does not (a heap with many live connections, calls and timers, as under a
 * write-heavy mixed load: 2-3 ms per young collection however often), beats
 * space out until collections take at most `maxCollectShare` of the time.
 * Bun only (`bun:jsc`); elsewhere the pacer is inactive. One per process: it
 * paces the whole heap, whatever nodes share it.
 *
 * `gcache-node` leaves it off unless asked (`--gc-interval`): its HTTP gateway
 * now leaves so little garbage per hit that a young collection costs about the
 * same (0.6-0.9 ms, most of it fixed) whether paced or not, and the runtime's
 * own come four times less often. Pacing pays where much garbage piles up
 * between collections, as it did when the gateway was built on Bun.serve.
 */

import { invalidOption } from "../errors.ts";
import { _HousekeepingLoop, _processCpuMicros, type _CollectorDeps } from "./_housekeeping.ts";

export interface GcPacerOptions {
  /** Milliseconds between collections while the process is busy; 0 disables the pacer. Default: 25. */
  intervalMs?: number;
  /**
   * Share of one core the process must have used since the last beat for this
   * beat to collect; below it the process counts as idle. Default: 0.05.
   */
  minBusyShare?: number;
  /**
   * Most of the time the paced collections may take: after collections of
   * about `c` ms (a running average), busy beats come at least `c /
   * maxCollectShare` ms apart (at most ten intervals). Default: 0.03.
   */
  maxCollectShare?: number;
}

export const DEFAULT_GC_PACER_OPTIONS = {
  intervalMs: 25,
  minBusyShare: 0.05,
  maxCollectShare: 0.03,
} as const satisfies Required<GcPacerOptions>;

export interface GcPacer {
  /** False when disabled or when the runtime offers no young-generation collection (not Bun). */
  readonly active: boolean;
  /** Collections the pacer ran. */
  readonly collections: number;
  /** Beats so far, idle ones included. */
  readonly beats: number;
  stop(): void;
}

/** What the pacer drives (`collect` runs a young-generation collection); tests bring their own. */
export interface _GcPacerDeps extends _CollectorDeps {
  /** A monotonic clock in milliseconds, to time collections. */
  nowMs(): number;
}

/**
 * An idle process is looked at this many times less often: a beat every 25 ms
 * costs an idle node about 0.4 % of a core in wake-ups alone, and load that
 * starts is still noticed within a quarter of a second.
 */
const IDLE_SLOWDOWN = 10;

/** Weight of the newest collection in the running average of their cost. */
const COST_WEIGHT = 0.25;

export class _GcPacer extends _HousekeepingLoop implements GcPacer {
  collections = 0;
  beats = 0;
  private lastCpu: number;
  /** Running average of a collection's duration, in ms. */
  private collectMs = 0;
  private readonly minBusyMicros: number;

  constructor(
    private readonly deps: _GcPacerDeps,
    private readonly intervalMs: number,
    minBusyShare: number,
    private readonly maxCollectShare: number = DEFAULT_GC_PACER_OPTIONS.maxCollectShare,
  ) {
    super();
    // Judged against the busy beat even after an idle one, so a slowed pacer speeds up on little work.
    this.minBusyMicros = intervalMs * 1000 * minBusyShare;
    this.lastCpu = deps.cpuMicros();
    this.schedule(intervalMs);
  }

  private schedule(delayMs: number): void {
    this.runIn(delayMs, () => this.beat());
  }

  private beat(): void {
    this.beats++;
    const busy = this.deps.cpuMicros() - this.lastCpu >= this.minBusyMicros;
    if (busy) {
      const startedAt = this.deps.nowMs();
      this.deps.collect();
      const tookMs = this.deps.nowMs() - startedAt;
      this.collectMs = this.collections === 0 ? tookMs : this.collectMs + COST_WEIGHT * (tookMs - this.collectMs);
      this.collections++;
    }
    // Read after the collection, so its own cost never makes the next beat look busy.
    this.lastCpu = this.deps.cpuMicros();
    this.schedule(busy ? this.busyDelayMs() : this.intervalMs * IDLE_SLOWDOWN);
  }

  private busyDelayMs(): number {
    const withinShare = this.collectMs / this.maxCollectShare;
    return Math.min(Math.max(this.intervalMs, withinShare), this.intervalMs * IDLE_SLOWDOWN);
  }
}

const INACTIVE: GcPacer = { active: false, collections: 0, beats: 0, stop() {} };

/** Starts pacing this process's collections; `stop()` ends it. Throws ERR_INVALID_OPTION for invalid options. */
export async function startGcPacer(options: GcPacerOptions = {}): Promise<GcPacer> {
  const intervalMs = options.intervalMs ?? DEFAULT_GC_PACER_OPTIONS.intervalMs;
  const minBusyShare = options.minBusyShare ?? DEFAULT_GC_PACER_OPTIONS.minBusyShare;
  if (!(intervalMs >= 0) || !Number.isFinite(intervalMs)) {
    throw invalidOption(`intervalMs must be a finite number >= 0, got ${intervalMs}`);
  }
  const maxCollectShare = options.maxCollectShare ?? DEFAULT_GC_PACER_OPTIONS.maxCollectShare;
  if (!(minBusyShare >= 0 && minBusyShare <= 1)) throw invalidOption(`minBusyShare must be within [0, 1], got ${minBusyShare}`);
  if (!(maxCollectShare > 0 && maxCollectShare <= 1)) {
    throw invalidOption(`maxCollectShare must be within (0, 1], got ${maxCollectShare}`);
  }
  if (intervalMs === 0 || process.versions.bun === undefined) return INACTIVE;
  const { edenGC } = await import("bun:jsc");
  return new _GcPacer({ collect: edenGC, cpuMicros: _processCpuMicros, nowMs: () => performance.now() }, intervalMs, minBusyShare, maxCollectShare);
}
