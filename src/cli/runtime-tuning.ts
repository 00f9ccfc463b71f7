/**
 * Settings the runtime reads from the environment when the process starts,
 * before any of our code runs, and the values a serving node runs best with.
 *
 * A node that forwards large values allocates a fresh buffer for every read
 * of a peer's answers (Bun hands each read over as a buffer of its own), and
 * under load that is hundreds of MB a second. With the runtime's defaults the
 * collector runs a full collection every ~20 MB of them; a node lets its heap
 * grow to 128 MiB before collections come at the usual pace.
 *
 * Between those, JavaScriptCore also runs a young collection on a timer
 * that fires sooner the more was allocated since the last one, so that a
 * young collection's cost stays near 0.25 % of the time per MB allocated.
 * Under hits that is one every 100-300 ms, each stopping the node for about
 * 0.6 ms whatever little it finds alive, and holding the 64 requests in
 * flight and those queued behind them. A node lets that timer wait 25 times
 * as long: about a third as many young collections, each of the same length
 * (docs/benchmarks.md, "Fewer young collections").
 *
 * The allocator, by default, hands memory back to the kernel twice over: whole
 * free pages 10 ms after they are freed, and every 100 ms the free gaps
 * ("holes") inside pages still in use. Whatever the next requests allocate
 * there faults its pages in again, one fault per 4 KiB, and under load that is
 * a steady 0.2-0.8 faults per call even for small values. A fault costs about
 * 1 µs on some machines and 11 µs on others (paravirtualized guests). So freed
 * memory stays mapped for reuse for a minute, holes included: a node keeps
 * what its load needs and hands back what a burst left once load has stayed
 * lower that long (docs/benchmarks.md, "The runtime's own settings", "Memory
 * the allocator hands back").
 *
 * Since only a new process reads them, `gcache-node serve` started without
 * them restarts itself in place (execve: same process id, same arguments)
 * with them added. A value the environment already sets is left as it is;
 * `GCACHE_RUNTIME_TUNING=off` keeps the runtime's defaults.
 */

/** The settings and their values; each can be overridden by setting it in the environment. */
export const RUNTIME_TUNING: Readonly<Record<string, string>> = {
  /** JavaScriptCore: the heap grows to this many bytes before collections come at the usual pace (8 MiB in this runtime without it). */
  BUN_JSC_largeHeapSize: String(128 * 1024 * 1024),
  /** JavaScriptCore: the young-collection timer's share of time per MB allocated (default 0.0025). */
  BUN_JSC_percentCPUPerMBForEdenTimer: "0.0001",
  /** mimalloc: milliseconds freed memory stays mapped for reuse before it goes back to the kernel (default 10). */
  MIMALLOC_PURGE_DELAY: String(60 * 1000),
  /** mimalloc: 0 keeps the free gaps inside pages in use mapped, instead of handing them back every 100 ms (default 1). */
  MIMALLOC_PURGE_HOLES: "0",
};

/** Set by the restart, so that a process restarts at most once. */
const TUNED_MARK = "GCACHE_RUNTIME_TUNED";
const SWITCH = "GCACHE_RUNTIME_TUNING";

/** What a restart needs, injectable for tests. */
export interface _RestartTarget {
  platform: string;
  /** Whether this process is the compiled executable (not `bun src/cli/main.ts`). */
  compiled: boolean;
  execPath: string;
  /** The arguments after the executable's name. */
  args: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  execve: ((file: string, args: string[], env: Record<string, string>) => never) | undefined;
}

/**
 * The environment to restart with, or null when this process should run as
 * it is: not the executable's `serve` on Linux, already restarted, switched
 * off, or every setting already present.
 */
export function _tunedEnvironment(target: Omit<_RestartTarget, "execve" | "execPath">): Record<string, string> | null {
  if (target.platform !== "linux" || !target.compiled) return null;
  const env = target.env;
  if (env[TUNED_MARK] !== undefined || env[SWITCH] === "off") return null;
  if (!servesNode(target.args)) return null;
  const missing = Object.keys(RUNTIME_TUNING).filter((name) => env[name] === undefined);
  if (missing.length === 0) return null;
  const tuned: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) if (value !== undefined) tuned[name] = value;
  for (const name of missing) tuned[name] = RUNTIME_TUNING[name]!;
  tuned[TUNED_MARK] = "1";
  return tuned;
}

/** `serve`, named or as the default command; not get/set/del, help or version. */
function servesNode(args: readonly string[]): boolean {
  if (args.includes("--help") || args.includes("-h") || args.includes("--version")) return false;
  const first = args[0];
  return first === undefined || first === "serve" || first.startsWith("-");
}

/**
 * Restarts this process with the tuned environment when it needs one; returns
 * only when it does not (or when the restart could not happen, which leaves
 * the runtime's defaults: slower on large values, never wrong).
 */
export function _restartTunedIfNeeded(target: _RestartTarget): void {
  const env = _tunedEnvironment(target);
  if (env === null || target.execve === undefined) return;
  try {
    target.execve(target.execPath, [target.execPath, ...target.args], env);
  } catch {
    // execve failed (e.g. the executable was replaced while running): serve untuned.
  }
}
