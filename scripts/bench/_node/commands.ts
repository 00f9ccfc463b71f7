/**
 * The line protocol between the node benchmark and its child processes.
 *
 * A child prints `READY <address>` (or `READY -` when it serves nothing) once
 * it is up, then reads one JSON command per line on stdin, `{ id, op, ... }`,
 * and answers each with one line `REPLY <json>`: `{ id, ok: true, result }` or
 * `{ id, ok: false, error }`. Commands run one after another, in order. The
 * child exits on `{ op: "exit" }` or when stdin closes (its parent is gone).
 */
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

export interface Command {
  id: number;
  op: string;
  [field: string]: unknown;
}

export type CommandHandler = (command: Command) => unknown | Promise<unknown>;

/** Prints the READY line and serves commands until `exit` or end of stdin; `shutdown` runs before exiting. */
export function serveCommands(address: string, handle: CommandHandler, shutdown: () => Promise<void>): void {
  process.stdout.write(`READY ${address}\n`);
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  let chain: Promise<void> = Promise.resolve();
  let exiting = false;
  const exit = () => {
    if (exiting) return;
    exiting = true;
    const hardStop = setTimeout(() => process.exit(0), 3_000);
    hardStop.unref?.();
    void chain
      .then(shutdown)
      .catch((error: unknown) => process.stderr.write(`shutdown failed: ${String(error)}\n`))
      .finally(() => process.exit(0));
  };
  lines.on("line", (line) => {
    if (line.trim() === "" || exiting) return;
    let command: Command;
    try {
      command = JSON.parse(line) as Command;
    } catch {
      process.stderr.write(`ignoring a line that is not JSON: ${line.slice(0, 80)}\n`);
      return;
    }
    if (command.op === "exit") {
      exit();
      return;
    }
    chain = chain.then(async () => {
      let reply: unknown;
      try {
        reply = { id: command.id, ok: true, result: await handle(command) };
      } catch (error) {
        reply = { id: command.id, ok: false, error: error instanceof Error ? error.message : String(error) };
      }
      process.stdout.write(`REPLY ${JSON.stringify(reply)}\n`);
    });
  });
  lines.on("close", exit);
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ): 100 on every mainstream Linux build. */
const TICKS_PER_SECOND = 100;

export interface ProcSample {
  /** User + system CPU time, in ms. */
  cpuMs: number;
  /** Resident set size, in bytes. */
  rssBytes: number;
  /**
   * Time the main thread spent runnable but waiting for a CPU, in ms
   * (/proc/<pid>/schedstat; 0 where the kernel keeps no scheduler statistics).
   * On a machine whose cores the servers and generators share, a server that
   * waits here is held back by the others, not by its own work.
   */
  waitMs: number;
  /**
   * Minor page faults so far (/proc/<pid>/stat): memory the process touches
   * afresh, a page at a time. Where a fault is dear (11 µs on paravirtualized
   * guests), a few tenths of one per request are a large share of its cost.
   */
  minorFaults: number;
}

/** CPU time so far and current RSS of a process, from /proc. Zeros when the process is gone or /proc is absent. */
export function sampleProcess(pid: number): ProcSample {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state(3) ... minflt(10) ... utime(14) stime(15); index 0 below is field 3.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    const rss = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return {
      cpuMs: (ticks * 1000) / TICKS_PER_SECOND,
      rssBytes: rss ? Number(rss[1]) * 1024 : 0,
      waitMs: runQueueWaitMs(pid),
      minorFaults: Number(fields[7]),
    };
  } catch {
    return { cpuMs: 0, rssBytes: 0, waitMs: 0, minorFaults: 0 };
  }
}

/** What a process used over a window: CPU ms, run-queue wait ms, and RSS at its end. */
export interface ProcessDelta {
  pid: number;
  cpuMs: number;
  waitMs: number;
  rssBytes: number;
  minorFaults: number;
}

/** Per pid, the difference between two rounds of `sampleProcess`. */
export function processDeltas(pids: readonly number[], before: readonly ProcSample[], after: readonly ProcSample[]): ProcessDelta[] {
  return pids.map((pid, i) => ({
    pid,
    cpuMs: after[i]!.cpuMs - before[i]!.cpuMs,
    waitMs: after[i]!.waitMs - before[i]!.waitMs,
    rssBytes: after[i]!.rssBytes,
    minorFaults: after[i]!.minorFaults - before[i]!.minorFaults,
  }));
}

/** The main thread's run-queue wait so far, in ms: the second of /proc/<pid>/schedstat's three fields, in ns. */
function runQueueWaitMs(pid: number): number {
  try {
    const waitNs = Number(readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[1]);
    return Number.isFinite(waitNs) ? waitNs / 1e6 : 0;
  } catch {
    return 0;
  }
}

/** Busy and total CPU time of the whole machine so far, in ticks, from /proc/stat (zeros without /proc). */
export function sampleMachine(): { busy: number; total: number } {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
    // cpu user nice system idle iowait irq softirq steal (guest time is already in user)
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1, 9).map(Number) as number[];
    const busy = user! + nice! + system! + irq! + softirq! + steal!;
    return { busy, total: busy + idle! + iowait! };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/** CPUs the whole machine kept busy, on average, between two `sampleMachine`s (NaN when no time passed or there is no /proc). */
export function busyCpusBetween(before: { busy: number; total: number }, after: { busy: number; total: number }): number {
  const total = after.total - before.total;
  return total > 0 ? ((after.busy - before.busy) / total) * navigator.hardwareConcurrency : NaN;
}
