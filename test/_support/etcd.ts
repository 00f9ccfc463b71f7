/**
 * Real etcd servers for integration tests. Each server runs on free loopback
 * ports with its own temporary data directory, and can be killed, shut down
 * and restarted on the same ports and data. Every server started here is
 * killed when the test process ends, even if a test forgot to stop it.
 *
 * Skip policy: suites go through `describeEtcd`. Without an etcd binary the
 * suite is skipped with one line saying how to install it, except in CI
 * (`CI=true`), where a missing etcd is a failing test.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants as fsConstants, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "bun:test";
import { Etcd3 } from "etcd3";
import { waitFor } from "./wait.ts";

export const ETCD_INSTALL_HINT =
  "etcd is not installed: install it with `apt-get install etcd-server` (Debian/Ubuntu), or point GCACHE_ETCD_BIN at an etcd binary";

/** Path of the etcd binary to use, or null when there is none. */
export function etcdBinary(): string | null {
  const fromEnv = process.env.GCACHE_ETCD_BIN;
  if (fromEnv !== undefined && fromEnv !== "") {
    try {
      accessSync(fromEnv, fsConstants.X_OK);
      return fromEnv;
    } catch {
      return null;
    }
  }
  return Bun.which("etcd");
}

export function etcdAvailable(): boolean {
  return etcdBinary() !== null;
}

let hintPrinted = false;

/**
 * `describe` for suites that need etcd. Missing etcd: skipped with a hint, or,
 * in CI, replaced by a failing test that says how to install it.
 */
export function describeEtcd(name: string, body: () => void): void {
  const available = etcdAvailable();
  if (!available && process.env.CI === "true") {
    describe(name, () => {
      test("etcd is available (required in CI)", () => {
        throw new Error(ETCD_INSTALL_HINT);
      });
    });
    return;
  }
  if (!available && !hintPrinted) {
    hintPrinted = true;
    console.warn(`skipping etcd suites: ${ETCD_INSTALL_HINT}`);
  }
  describe.skipIf(!available)(name, body);
}

/**
 * A guard per server process: a shell reading a pipe from this process. When
 * this process ends, however it ends (the test runner does not emit "exit"),
 * the pipe closes and the guard kills the server and removes its data.
 * A server that exits while this process lives takes its guard with it.
 */
const GUARD_SCRIPT = 'cat >/dev/null; kill -9 "$1" 2>/dev/null; rm -rf "$2"';

function startGuard(pid: number, dataDir: string): ChildProcess {
  const guard = spawn("sh", ["-c", GUARD_SCRIPT, "etcd-guard", String(pid), dataDir], { stdio: ["pipe", "ignore", "ignore"] });
  guard.on("error", () => undefined);
  guard.stdin?.on("error", () => undefined);
  // The guard must not keep this process alive.
  guard.unref();
  (guard.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  return guard;
}

/** A free loopback port: bind port 0, read the port, release it. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        server.close();
        reject(new Error("could not read the bound port"));
        return;
      }
      const port = address.port;
      server.close(() => resolve(port));
    });
  });
}

async function healthy(clientPort: number): Promise<boolean> {
  try {
    const response = await fetch(`http://127.0.0.1:${clientPort}/health`, { signal: AbortSignal.timeout(1_000) });
    if (!response.ok) return false;
    const body = (await response.json()) as { health?: unknown };
    return body.health === "true" || body.health === true;
  } catch {
    return false;
  }
}

export interface StartEtcdOptions {
  /** How long to wait for the server to answer. Default 15 s. */
  readyTimeoutMs?: number;
}

export class EtcdServer {
  /** `http://127.0.0.1:<client port>`. */
  readonly endpoint: string;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private output = "";
  private stopped = false;
  private adminClient: Etcd3 | null = null;
  /** The client port of the running process: `clientPort` unless restarted elsewhere. */
  private servingPort: number;

  private constructor(
    private readonly binary: string,
    readonly clientPort: number,
    readonly peerPort: number,
    readonly dataDir: string,
    private readonly readyTimeoutMs: number,
  ) {
    this.endpoint = `http://127.0.0.1:${clientPort}`;
    this.servingPort = clientPort;
  }

  /** Starts a fresh single-member etcd on free loopback ports. */
  static async start(options: StartEtcdOptions = {}): Promise<EtcdServer> {
    const binary = etcdBinary();
    if (binary === null) throw new Error(ETCD_INSTALL_HINT);
    const readyTimeoutMs = options.readyTimeoutMs ?? 15_000;
    let lastError: unknown;
    // Another process may take a port between probing and etcd binding it: retry with new ports.
    for (let attempt = 0; attempt < 5; attempt++) {
      const clientPort = await freePort();
      let peerPort = await freePort();
      while (peerPort === clientPort) peerPort = await freePort();
      const dataDir = mkdtempSync(join(tmpdir(), "gcache-etcd-"));
      const server = new EtcdServer(binary, clientPort, peerPort, dataDir, readyTimeoutMs);
      try {
        await server.launch();
        return server;
      } catch (error) {
        lastError = error;
        await server.stop();
        if (!/address already in use/i.test(String(error))) break;
      }
    }
    throw lastError;
  }

  /** Whether the server process is running. */
  get running(): boolean {
    return this.child !== null;
  }

  /** The server's log output so far (errors only), for failure messages. */
  get log(): string {
    return this.output;
  }

  private args(): string[] {
    const client = `http://127.0.0.1:${this.servingPort}`;
    const peer = `http://127.0.0.1:${this.peerPort}`;
    return [
      "--name", "gcache-test",
      "--data-dir", this.dataDir,
      "--listen-client-urls", client,
      "--advertise-client-urls", client,
      "--listen-peer-urls", peer,
      "--initial-advertise-peer-urls", peer,
      "--initial-cluster", `gcache-test=${peer}`,
      "--initial-cluster-state", "new",
      "--initial-cluster-token", `gcache-test-${this.clientPort}`,
      "--heartbeat-interval", "50",
      "--election-timeout", "500",
      "--logger", "zap",
      "--log-outputs", "stderr",
      "--log-level", "error",
    ];
  }

  private async launch(): Promise<void> {
    if (this.child !== null) throw new Error("etcd is already running");
    const child = spawn(this.binary, this.args(), { stdio: ["ignore", "ignore", "pipe"] });
    this.child = child;
    const guard = child.pid === undefined ? null : startGuard(child.pid, this.dataDir);
    let exitedEarly = false;
    this.exited = new Promise<void>((resolve) => {
      const done = () => {
        exitedEarly = true;
        guard?.kill("SIGKILL");
        if (this.child === child) this.child = null;
        resolve();
      };
      child.once("exit", done);
      child.once("error", (error) => {
        this.output += `spawn failed: ${String(error)}\n`;
        done();
      });
    });
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      this.output = (this.output + chunk).slice(-20_000);
    });
    try {
      await waitFor(async () => exitedEarly || (await healthy(this.servingPort)), this.readyTimeoutMs, `etcd on ${this.currentEndpoint} to answer`);
    } catch (error) {
      throw new Error(`${String(error)}\n${this.output}`);
    }
    if (exitedEarly) throw new Error(`etcd exited while starting:\n${this.output}`);
  }

  /** SIGKILL: a crash. Data is kept; `restart()` brings it back. */
  async kill(): Promise<void> {
    this.closeAdminClient();
    await this.signal("SIGKILL");
  }

  /** Graceful stop (SIGTERM, then SIGKILL after 5 s). Data is kept; `restart()` brings it back. */
  async shutdown(): Promise<void> {
    this.closeAdminClient();
    await this.signal("SIGTERM", 5_000);
  }

  /**
   * Starts the server again with the same data (shutting it down first if
   * running), on the same ports, or with `clientPort` on another client port
   * (clients of `endpoint` then cannot reach it until the next plain restart).
   */
  async restart(options: { clientPort?: number } = {}): Promise<void> {
    if (this.stopped) throw new Error("etcd was stopped for good");
    this.closeAdminClient();
    if (this.child !== null) await this.shutdown();
    this.servingPort = options.clientPort ?? this.clientPort;
    await this.launch();
  }

  /** Where the running process serves clients (`endpoint` unless restarted on another port). */
  get currentEndpoint(): string {
    return `http://127.0.0.1:${this.servingPort}`;
  }

  /** Stops the server for good and removes its data. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.closeAdminClient();
    await this.signal("SIGTERM", 5_000);
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  private async signal(signal: NodeJS.Signals, escalateAfterMs?: number): Promise<void> {
    const child = this.child;
    if (child === null) return;
    child.kill(signal);
    if (escalateAfterMs === undefined) {
      await this.exited;
      return;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const escalated = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        child.kill("SIGKILL");
        resolve();
      }, escalateAfterMs);
    });
    await Promise.race([this.exited, escalated]);
    clearTimeout(timer);
    await this.exited;
  }

  /** A client for test set-up and inspection; closed by `stop()`/`restart()`. */
  client(): Etcd3 {
    this.adminClient ??= new Etcd3({ hosts: [this.currentEndpoint] });
    return this.adminClient;
  }

  private closeAdminClient(): void {
    this.adminClient?.close();
    this.adminClient = null;
  }

  /** The store's current revision. */
  async revision(): Promise<number> {
    const response = await this.client().kv.range({ key: Buffer.from("\0"), limit: "1" });
    return Number(response.header.revision);
  }

  /** Compacts the history up to `revision` (physically, so it is gone on return). */
  async compact(revision: number): Promise<void> {
    await this.client().kv.compact({ revision: String(revision), physical: true });
  }
}

/** Starts an etcd server; see `EtcdServer`. */
export function startEtcd(options?: StartEtcdOptions): Promise<EtcdServer> {
  return EtcdServer.start(options);
}
