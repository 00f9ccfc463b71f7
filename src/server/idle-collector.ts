/**
 * One full collection when the process goes quiet after work.
 *
 * JavaScriptCore's young collections treat every object that survived one
 * collection as live until the next full collection. Most of those are plain
 * objects and cost a young collection nothing; an AbortSignal is not: every
 * young collection revisits each one still marked, dead or alive (as it does
 * the runtime's other DOM-style objects, by all appearances). The node's own
 * loads make none now, but a loader that reads its signal (to hand it to
 * fetch, say) holds one for its whole time in flight, so a burst of such
 * loads leaves thousands marked, and every young collection after it stops
 * the process longer: 0.15 ms idle before 20,000 origin loads, 0.6-2.1 ms
 * after them, and 1.9-5.5 ms instead of 0.6-0.9 ms under the hits that
 * follow, when the origin loader still made signals (docs/benchmarks.md,
 * "Young collections after a burst of loads"). Only a full collection clears them.
 * The runtime runs its own, concurrently, once the process has been idle for
 * about a second; under hits that follow a burst sooner, it runs none, since
 * the heap no longer grows.
 *
 * "Quiet" is CPU: below `maxQuietShare` of a core for `quietMs` after at least
 * one check that saw more. The collection is synchronous: 8-25 ms for a heap
 * of 20-60 MB here, longer for larger ones, at a moment little is running; so
 * `gcache-node` runs it only when asked (`--gc-idle`). An idle process is
 * never collected (it did no work since the last one), and a process that
 * never rests is never stopped. Bun only (`bun:jsc`); elsewhere inactive. One
 * per process, like the heap it collects.
 */

import { invalidOption } from "../errors.ts";
import { _HousekeepingLoop, _processCpuMicros, type _CollectorDeps } from "./_housekeeping.ts";

export interface IdleCollectorOptions {
  /** How long the process must stay quiet after work before the full collection, in ms; 0 disables. Default: 250 (`gcache-node`: off unless `--gc-idle`). */
  quietMs?: number;
  /** Share of one core under which the process counts as quiet. Default: 0.05. */
  maxQuietShare?: number;
}

export const DEFAULT_IDLE_COLLECTOR_OPTIONS = {
  quietMs: 250,
  maxQuietShare: 0.05,
} as const satisfies Required<IdleCollectorOptions>;

export interface IdleCollector {
  /** False when disabled or when the runtime offers no full collection (not Bun). */
  readonly active: boolean;
  /** Full collections run so far. */
  readonly collections: number;
  stop(): void;
}

/** Checks while work may be going on: a quiet spell is measured to within this. */
const CHECK_MS = 50;
/** Checks once collected: only the CPU used since is read, so a slow check still sees any work. */
const RESTING_CHECK_MS = 500;

export class _IdleCollector extends _HousekeepingLoop implements IdleCollector {
  collections = 0;
  private lastCpu: number;
  /** Work was seen since the last collection. */
  private worked = false;
  private quietForMs = 0;
  private readonly checkMs: number;

  constructor(
    /** `collect` runs a full collection. */
    private readonly deps: _CollectorDeps,
    private readonly quietMs: number,
    private readonly maxQuietShare: number,
  ) {
    super();
    this.checkMs = Math.min(CHECK_MS, quietMs);
    this.lastCpu = deps.cpuMicros();
    this.schedule(this.checkMs);
  }

  private schedule(delayMs: number): void {
    this.runIn(delayMs, () => this.check(delayMs));
  }

  private check(sinceMs: number): void {
    const cpu = this.deps.cpuMicros();
    const usedMicros = cpu - this.lastCpu;
    this.lastCpu = cpu;
    if (usedMicros >= sinceMs * 1000 * this.maxQuietShare) {
      this.worked = true;
      this.quietForMs = 0;
    } else if (this.worked) {
      this.quietForMs += sinceMs;
      if (this.quietForMs >= this.quietMs) {
        this.deps.collect();
        this.collections++;
        this.worked = false;
        this.quietForMs = 0;
        // Read after the collection, so its own cost never counts as work.
        this.lastCpu = this.deps.cpuMicros();
      }
    }
    this.schedule(this.worked ? this.checkMs : Math.max(this.checkMs, RESTING_CHECK_MS));
  }
}

const INACTIVE: IdleCollector = { active: false, collections: 0, stop() {} };

/** Starts collecting this process's heap whenever it goes quiet after work; `stop()` ends it. Throws ERR_INVALID_OPTION for invalid options. */
export async function startIdleCollector(options: IdleCollectorOptions = {}): Promise<IdleCollector> {
  const quietMs = options.quietMs ?? DEFAULT_IDLE_COLLECTOR_OPTIONS.quietMs;
  const maxQuietShare = options.maxQuietShare ?? DEFAULT_IDLE_COLLECTOR_OPTIONS.maxQuietShare;
  if (!(quietMs >= 0) || !Number.isFinite(quietMs)) throw invalidOption(`quietMs must be a finite number >= 0, got ${quietMs}`);
  if (!(maxQuietShare > 0 && maxQuietShare <= 1)) throw invalidOption(`maxQuietShare must be within (0, 1], got ${maxQuietShare}`);
  if (quietMs === 0 || process.versions.bun === undefined) return INACTIVE;
  const { fullGC } = await import("bun:jsc");
  return new _IdleCollector({ collect: fullGC, cpuMicros: _processCpuMicros }, quietMs, maxQuietShare);
}
