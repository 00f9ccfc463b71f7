/**
 * Clusters of real node processes (test/fixtures/node-process.ts), for tests
 * that need a node to die for real. Every process started here is stopped by
 * `stop()`/`close()`; a process whose parent dies sees its stdin close and exits.
 */
import { fileURLToPath } from "node:url";
import type { Subprocess } from "bun";
import { HashRing } from "../../src/cluster/ring.ts";
import type { NodeProcessConfig } from "../fixtures/node-process.ts";

const FIXTURE = fileURLToPath(new URL("../fixtures/node-process.ts", import.meta.url));
const PROJECT_ROOT = fileURLToPath(new URL("../..", import.meta.url));

type Child = Subprocess<"pipe", "pipe", "pipe">;

interface Waiter {
  /** Settles the waiter if it can; true once settled. */
  test: () => boolean;
}

/** A child process whose stdout and stderr are read line by line, for tests that wait on what it says. */
export class LineProcess {
  readonly name: string;
  /** Every stdout line so far, in order. */
  readonly lines: string[] = [];
  /** Every stderr line so far, in order. */
  readonly errorLines: string[] = [];
  private readonly waiters = new Set<Waiter>();
  protected readonly child: Child;
  private exitCode: number | null = null;
  private exitedFlag = false;
  private readonly done: Promise<void>;

  constructor(name: string, command: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}) {
    this.name = name;
    this.child = Bun.spawn(command, {
      cwd: options.cwd ?? PROJECT_ROOT,
      env: options.env ?? process.env,
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    const out = this.pump(this.child.stdout, (line) => this.onLine(line));
    const err = this.pump(this.child.stderr, (line) => {
      this.errorLines.push(line);
      this.wake();
    });
    this.done = Promise.all([out, err, this.child.exited]).then(([, , code]) => {
      this.exitCode = code;
      this.exitedFlag = true;
      this.wake();
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  get exited(): boolean {
    return this.exitedFlag;
  }

  get code(): number | null {
    return this.exitCode;
  }

  get stderr(): string {
    return this.errorLines.map((line) => `${line}\n`).join("");
  }

  /** The first stdout line from index `from` on that satisfies `match`. */
  waitForLine(match: (line: string) => boolean, what: string, timeoutMs = 5_000, from = 0): Promise<string> {
    return this.waitIn(this.lines, match, what, timeoutMs, from);
  }

  /** The first stderr line from index `from` on that satisfies `match`. */
  waitForErrorLine(match: (line: string) => boolean, what: string, timeoutMs = 5_000, from = 0): Promise<string> {
    return this.waitIn(this.errorLines, match, what, timeoutMs, from);
  }

  private waitIn(lines: string[], match: (line: string) => boolean, what: string, timeoutMs: number, from: number): Promise<string> {
    const find = () => lines.slice(from).find(match);
    return new Promise<string>((resolve, reject) => {
      const waiter: Waiter = {
        test: () => {
          const line = find();
          if (line !== undefined) {
            finish();
            resolve(line);
            return true;
          }
          if (this.exitedFlag) {
            finish();
            reject(new Error(`${this.name} exited (code ${this.exitCode}) before ${what}; stderr:\n${this.stderr}`));
            return true;
          }
          return false;
        },
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms; stdout:\n${this.lines.join("\n")}\nstderr:\n${this.stderr}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      if (!waiter.test()) this.waiters.add(waiter);
    });
  }

  /** Sends a signal without waiting. */
  kill(signal: NodeJS.Signals): void {
    if (!this.exitedFlag) this.child.kill(signal);
  }

  /** Waits for the process to exit (and its output to be read); resolves with the exit code. */
  async waitExit(timeoutMs = 5_000): Promise<number | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    try {
      const outcome = await Promise.race([this.done.then(() => "exited" as const), timedOut]);
      if (outcome === "timeout") throw new Error(`${this.name} did not exit within ${timeoutMs} ms`);
      return this.exitCode;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL if it lingers. Safe to call on a dead process. Resolves with the exit code. */
  async stop(graceMs = 5_000): Promise<number | null> {
    if (this.exitedFlag) return this.exitCode;
    this.child.kill("SIGTERM");
    try {
      return await this.waitExit(graceMs);
    } catch {
      this.child.kill("SIGKILL");
      return this.waitExit(graceMs);
    }
  }

  protected onLine(line: string): void {
    this.lines.push(line);
    this.wake();
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter.test();
  }

  private async pump(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of stream) {
      pending += decoder.decode(chunk, { stream: true });
      let newline = pending.indexOf("\n");
      while (newline >= 0) {
        onLine(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        newline = pending.indexOf("\n");
      }
    }
    pending += decoder.decode();
    if (pending !== "") onLine(pending);
  }
}

/** A node started from test/fixtures/node-process.ts, told its peers over stdin. */
export class NodeProcess extends LineProcess {
  private addressValue: string | null = null;

  private constructor(config: NodeProcessConfig) {
    super(config.name, [process.execPath, "run", FIXTURE, JSON.stringify(config)]);
  }

  /** Spawns a node process and waits for it to serve. */
  static async start(config: NodeProcessConfig, timeoutMs = 15_000): Promise<NodeProcess> {
    const node = new NodeProcess(config);
    try {
      await node.waitForLine((line) => line.startsWith("READY "), "READY", timeoutMs);
    } catch (error) {
      await node.stop();
      throw error;
    }
    return node;
  }

  /** The node's advertised address (host:port). */
  get address(): string {
    if (this.addressValue === null) throw new Error(`${this.name} is not ready`);
    return this.addressValue;
  }

  /** Keys of every loader call this node logged so far. */
  loads(): string[] {
    return this.lines.filter((line) => line.startsWith("LOAD ")).map((line) => line.slice("LOAD ".length));
  }

  /** Sends the full membership and waits until the node applied it. */
  async setPeers(members: readonly { name: string; address: string }[], timeoutMs = 5_000): Promise<void> {
    const from = this.lines.length;
    this.child.stdin.write(`${JSON.stringify(members)}\n`);
    await this.child.stdin.flush();
    const reply = await this.waitForLine((line) => line.startsWith("PEERS ") || line.startsWith("ERROR "), "PEERS", timeoutMs, from);
    if (reply.startsWith("ERROR ")) throw new Error(`${this.name} refused the membership: ${reply}`);
  }

  protected override onLine(line: string): void {
    if (this.addressValue === null && line.startsWith("READY ")) this.addressValue = line.slice("READY ".length).trim();
    super.onLine(line);
  }
}

export interface ProcessCluster {
  nodes: NodeProcess[];
  byName(name: string): NodeProcess;
  /** Name of the member owning `key`, as every node's ring computes it. */
  ownerOf(key: string): string;
  /** `count` keys (with `prefix`) owned by `name`. */
  keysOwnedBy(name: string, count: number, prefix: string): string[];
  /** Loader calls logged by every node, by node name. */
  loads(): Map<string, string[]>;
  /**
   * Makes every earlier stdout line of every live node visible: a membership
   * round trip, whose reply each node writes after everything before it.
   */
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** Starts one node process per config and tells each about all of them. */
export async function startProcessCluster(configs: NodeProcessConfig[]): Promise<ProcessCluster> {
  const started = await Promise.allSettled(configs.map((config) => NodeProcess.start(config)));
  const nodes = started.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
  const close = async () => {
    await Promise.all(nodes.map((node) => node.stop()));
  };
  const failed = started.find((result) => result.status === "rejected");
  if (failed !== undefined) {
    await close();
    throw (failed as PromiseRejectedResult).reason;
  }
  const members = nodes.map((node) => ({ name: node.name, address: node.address }));
  try {
    await Promise.all(nodes.map((node) => node.setPeers(members)));
  } catch (error) {
    await close();
    throw error;
  }
  // The nodes run the default ring; the same names give the same owners here.
  const ring = new HashRing();
  ring.setMembers(members.map((member) => member.name));
  const ownerOf = (key: string) => {
    const owner = ring.owner(key);
    if (owner === undefined) throw new Error("empty ring");
    return owner;
  };
  return {
    nodes,
    byName(name) {
      const node = nodes.find((n) => n.name === name);
      if (node === undefined) throw new Error(`no node ${name}`);
      return node;
    },
    ownerOf,
    keysOwnedBy(name, count, prefix) {
      const keys: string[] = [];
      for (let i = 0; keys.length < count && i < 1_000_000; i++) {
        const key = `${prefix}-${i}`;
        if (ownerOf(key) === name) keys.push(key);
      }
      if (keys.length < count) throw new Error(`not enough keys owned by ${name}`);
      return keys;
    },
    loads() {
      return new Map(nodes.map((node) => [node.name, node.loads()]));
    },
    async sync() {
      await Promise.all(nodes.filter((node) => !node.exited).map((node) => node.setPeers(members)));
    },
    close,
  };
}
