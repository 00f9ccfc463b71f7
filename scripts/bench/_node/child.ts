/** The parent side of the line protocol in commands.ts: a child process that prints READY and answers commands. */
import type { Subprocess } from "bun";

export class Child {
  readonly label: string;
  private readonly proc: Subprocess<"pipe", "pipe", "inherit">;
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private nextId = 1;
  private exited = false;
  private readyResolve: ((address: string) => void) | null = null;
  private readyReject: ((error: Error) => void) | null = null;
  /** The address from the READY line. */
  readonly ready: Promise<string>;

  constructor(label: string, argv: string[]) {
    this.label = label;
    this.ready = new Promise<string>((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    this.ready.catch(() => {});
    this.proc = Bun.spawn(argv, { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
    void this.proc.exited.then((code) => this.fail(new Error(`${label} exited with code ${code}`)));
    void this.readLines();
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** Sends one command and resolves with its result; rejects on an error reply, exit, or after `timeoutMs`. */
  call<T = unknown>(op: string, fields: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`${this.label} is not running`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${this.label}: ${op} took more than ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.proc.stdin.write(`${JSON.stringify({ ...fields, id, op })}\n`);
      this.proc.stdin.flush();
    });
  }

  /** Asks the child to exit; kills it if it has not within `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (this.exited) return;
    try {
      this.proc.stdin.write(`${JSON.stringify({ id: 0, op: "exit" })}\n`);
      this.proc.stdin.flush();
      await this.proc.stdin.end();
    } catch {
      // Its stdin is already closed: it is on its way out.
    }
    const timer = setTimeout(() => this.kill(), graceMs);
    await this.proc.exited;
    clearTimeout(timer);
  }

  /** Kills the child at once (SIGKILL). */
  kill(): void {
    if (!this.exited) this.proc.kill("SIGKILL");
  }

  private fail(error: Error): void {
    this.exited = true;
    this.readyReject?.(error);
    for (const waiter of this.waiting.values()) waiter.reject(error);
    this.waiting.clear();
  }

  private async readLines(): Promise<void> {
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of this.proc.stdout) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        this.onLine(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    }
  }

  private onLine(line: string): void {
    if (line.startsWith("READY ")) {
      this.readyResolve?.(line.slice(6).trim());
      this.readyResolve = null;
      return;
    }
    if (line.startsWith("REPLY ")) {
      const reply = JSON.parse(line.slice(6)) as { id: number; ok: boolean; result?: unknown; error?: string };
      const waiter = this.waiting.get(reply.id);
      if (waiter === undefined) return;
      this.waiting.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new Error(`${this.label}: ${reply.error}`));
      return;
    }
    if (line.trim() !== "") process.stderr.write(`[${this.label}] ${line}\n`);
  }
}

/** Rejects if `promise` has not settled within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
