/**
 * Every process the cluster benchmark starts goes through here, so that all of
 * them are stopped at the end, on an error, and on SIGINT/SIGTERM/SIGHUP.
 *
 * `Service` wraps a process that does not speak the line protocol of
 * ../_node/commands.ts (the gcache-node binary, redis-server, wrk, …): its
 * output is read line by line, the last lines are kept for error messages, and
 * `stop()` sends a signal, then SIGKILL after a grace period. Line-protocol
 * children (../_node/child.ts) are registered with `track()`.
 */
import type { FileSink, Subprocess } from "bun";

interface Stoppable {
  stop(): Promise<void>;
  kill(): void;
}

const live = new Set<Stoppable>();

/** Registers something to stop at the end; returns a function that unregisters it. */
export function track(item: Stoppable): () => void {
  live.add(item);
  return () => live.delete(item);
}

/** Stops everything still registered, gracefully, in parallel. */
export async function stopAll(): Promise<void> {
  const items = [...live];
  live.clear();
  await Promise.all(
    items.map((item) =>
      item.stop().catch(() => {
        item.kill();
      }),
    ),
  );
}

/** SIGKILLs everything still registered, synchronously. */
export function killAll(): void {
  for (const item of live) {
    try {
      item.kill();
    } catch {
      // Already gone.
    }
  }
  live.clear();
}

let installed = false;

/** On SIGINT/SIGTERM/SIGHUP: kill every process and exit 130; on exit: kill whatever is left. */
export function installCleanup(onInterrupt?: () => void): void {
  if (installed) return;
  installed = true;
  let interrupted = false;
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      if (interrupted) return;
      interrupted = true;
      process.stderr.write(`\n${signal}: stopping every process the benchmark started\n`);
      try {
        onInterrupt?.();
      } finally {
        killAll();
        process.exit(130);
      }
    });
  }
  process.on("exit", killAll);
}

export interface ServiceOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Every line of stdout and stderr, as it arrives (after the last-lines buffer is updated). */
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
  /** Signal for a graceful stop. Default SIGTERM. */
  stopSignal?: NodeJS.Signals;
  /** Print the last output lines when the process exits on its own with a non-zero code. Default true. */
  reportCrash?: boolean;
  /** Data written to stdin, which is then closed. Default: no stdin. */
  input?: Uint8Array | string;
  /**
   * Give the process a stdin pipe that stays open while it runs, for children
   * that exit when their stdin closes (so they never outlive this process).
   */
  holdStdin?: boolean;
}

export class Service {
  readonly label: string;
  readonly argv: readonly string[];
  readonly proc: Subprocess<"pipe" | "ignore", "pipe", "pipe">;
  /** `performance.now()` right before the spawn. */
  readonly spawnedAt: number;
  readonly exited: Promise<number>;
  private readonly lastLines: string[] = [];
  private stopping = false;
  private readonly untrack: () => void;
  private readonly reading: Promise<void>;
  private readonly stopSignalName: NodeJS.Signals;

  constructor(label: string, argv: string[], options: ServiceOptions = {}) {
    this.label = label;
    this.argv = argv;
    this.spawnedAt = performance.now();
    this.proc = Bun.spawn(argv, {
      stdin: options.input === undefined && options.holdStdin !== true ? "ignore" : "pipe",
      stdout: "pipe",
      stderr: "pipe",
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      ...(options.env === undefined ? {} : { env: options.env }),
    }) as Subprocess<"pipe" | "ignore", "pipe", "pipe">;
    if (options.input !== undefined) {
      const sink = this.proc.stdin as FileSink;
      sink.write(options.input);
      void sink.end();
    }
    const stopSignal = options.stopSignal ?? "SIGTERM";
    const reportCrash = options.reportCrash ?? true;
    this.untrack = track({
      stop: () => this.stop(),
      kill: () => this.kill(),
    });
    this.reading = Promise.all([
      this.readLines(this.proc.stdout, "stdout", options.onLine),
      this.readLines(this.proc.stderr, "stderr", options.onLine),
    ]).then(() => {});
    this.exited = this.proc.exited.then(async (code) => {
      this.untrack();
      await this.reading.catch(() => {});
      if (!this.stopping && code !== 0 && reportCrash) {
        process.stderr.write(`[${label}] exited with code ${code}; last output:\n${this.tail()}\n`);
      }
      return code;
    });
    this.stopSignalName = stopSignal;
  }

  get pid(): number {
    return this.proc.pid;
  }

  get hasExited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  /** The last lines of output, for error messages. */
  tail(): string {
    return this.lastLines.map((line) => `  ${line}`).join("\n");
  }

  /** Sends the stop signal; SIGKILL if the process has not exited within `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    this.stopping = true;
    if (this.hasExited) {
      await this.exited;
      return;
    }
    this.proc.kill(this.stopSignalName);
    const timer = setTimeout(() => this.kill(), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    this.stopping = true;
    if (!this.hasExited) this.proc.kill("SIGKILL");
  }

  /** CPU time of the process in ms, once it has exited. */
  cpuMs(): number {
    const usage = this.proc.resourceUsage();
    return usage === undefined ? NaN : Number(usage.cpuTime.total) / 1000;
  }

  private async readLines(
    stream: ReadableStream<Uint8Array>,
    name: "stdout" | "stderr",
    onLine: ServiceOptions["onLine"],
  ): Promise<void> {
    const decoder = new TextDecoder();
    let buffered = "";
    const emit = (line: string) => {
      this.lastLines.push(line);
      if (this.lastLines.length > 30) this.lastLines.shift();
      onLine?.(line, name);
    };
    for await (const chunk of stream) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        emit(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    }
    if (buffered !== "") emit(buffered);
  }
}

/** Runs a command to completion; rejects with its output on a non-zero exit or after `timeoutMs`. */
export async function runToEnd(
  label: string,
  argv: string[],
  timeoutMs: number,
  options: ServiceOptions = {},
): Promise<{ lines: string[]; cpuMs: number; wallMs: number }> {
  const lines: string[] = [];
  const service = new Service(label, argv, {
    ...options,
    reportCrash: false,
    onLine: (line, stream) => {
      lines.push(line);
      options.onLine?.(line, stream);
    },
  });
  const timer = setTimeout(() => service.kill(), timeoutMs);
  const code = await service.exited;
  clearTimeout(timer);
  const wallMs = performance.now() - service.spawnedAt;
  if (code !== 0) {
    throw new Error(
      `${label} (${argv.join(" ")}) ${wallMs >= timeoutMs ? `ran over ${timeoutMs} ms and was killed` : `exited with code ${code}`}:\n${service.tail()}`,
    );
  }
  return { lines, cpuMs: service.cpuMs(), wallMs };
}

/** Polls `url` until it answers 200; rejects after `timeoutMs` or when `service` exits first. */
export async function waitForHttp(url: string, timeoutMs: number, service?: Service, intervalMs = 20): Promise<number> {
  const start = performance.now();
  for (;;) {
    if (service?.hasExited) throw new Error(`${service.label} exited before ${url} answered:\n${service.tail()}`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      await response.arrayBuffer();
      if (response.status === 200) return performance.now();
    } catch {
      // Not listening yet.
    }
    if (performance.now() - start > timeoutMs) {
      throw new Error(`${url} did not answer 200 within ${timeoutMs} ms${service ? `; last output of ${service.label}:\n${service.tail()}` : ""}`);
    }
    await Bun.sleep(intervalMs);
  }
}

/** Starts a process that prints `READY <address>` once it serves; resolves with the address. `env`: its whole environment. */
export async function startWithReadyLine(
  label: string,
  argv: string[],
  timeoutMs = 30_000,
  env?: Record<string, string | undefined>,
): Promise<{ service: Service; address: string }> {
  let resolveReady: (address: string) => void = () => {};
  const ready = new Promise<string>((resolve) => (resolveReady = resolve));
  const service = new Service(label, argv, {
    holdStdin: true,
    ...(env === undefined ? {} : { env }),
    onLine: (line, stream) => {
      if (stream === "stdout" && line.startsWith("READY ")) resolveReady(line.slice(6).trim());
      else if (line.trim() !== "") process.stderr.write(`[${label}] ${line}\n`);
    },
  });
  const failed = service.exited.then((code) => {
    throw new Error(`${label} exited with code ${code} before it was ready:\n${service.tail()}`);
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label} was not ready within ${timeoutMs} ms:\n${service.tail()}`)), timeoutMs);
  });
  try {
    const address = await Promise.race([ready, failed, late]);
    return { service, address };
  } finally {
    clearTimeout(timer);
    failed.catch(() => {});
  }
}
