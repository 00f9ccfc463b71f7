/**
 * What the cluster benchmark needs outside the project: wrk, redis-server,
 * redis-benchmark and redis-cli (Debian packages `wrk`, `redis-server`, which
 * pulls in `redis-tools`), memcached and nginx, and the compiled gcache-node
 * executable.
 * Missing commands (and, for bench:groupcache, Go and groupcache's sources) are
 * installed with apt-get when that is possible (root on Debian or Ubuntu);
 * otherwise the error says what to install.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { runToEnd } from "./procs.ts";

export interface NeededCommand {
  command: string;
  /** Debian package that provides it. */
  pkg: string;
}

export const NEEDED_COMMANDS: NeededCommand[] = [
  { command: "wrk", pkg: "wrk" },
  { command: "redis-server", pkg: "redis-server" },
  { command: "redis-benchmark", pkg: "redis-tools" },
  { command: "redis-cli", pkg: "redis-tools" },
  { command: "memcached", pkg: "memcached" },
  { command: "nginx", pkg: "nginx" },
];

/** Resolves every needed command to its path, installing the missing ones with apt-get if it can. */
export async function ensureCommands(needed: NeededCommand[]): Promise<Map<string, string>> {
  let missing = needed.filter((n) => Bun.which(n.command) === null);
  if (missing.length > 0) {
    await aptInstall([...new Set(missing.map((m) => m.pkg))], `missing ${missing.map((m) => m.command).join(", ")}`);
    missing = needed.filter((n) => Bun.which(n.command) === null);
    if (missing.length > 0) throw new Error(`apt-get finished but ${missing.map((m) => m.command).join(", ")} is still not on the PATH`);
  }
  return new Map(needed.map((n) => [n.command, Bun.which(n.command)!]));
}

/** Installs Debian packages with apt-get when that is possible (root on Debian or Ubuntu); else throws, saying what to install. */
export async function aptInstall(packages: string[], why: string): Promise<void> {
  const canInstall = process.platform === "linux" && process.getuid?.() === 0 && Bun.which("apt-get") !== null;
  if (!canInstall) {
    throw new Error(`${why}: install ${packages.join(" ")} (Debian/Ubuntu: sudo apt-get install -y ${packages.join(" ")}) and run again`);
  }
  console.error(`${why}: installing Debian package(s) ${packages.join(" ")} with apt-get (once; this takes a minute) …`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const echo = (line: string) => process.stderr.write(`  apt: ${line}\n`);
  await runToEnd("apt-get update", ["apt-get", "update", "-qq"], 300_000, { env, onLine: echo });
  await runToEnd("apt-get install", ["apt-get", "install", "-y", "-qq", ...packages], 600_000, { env, onLine: echo });
  console.error(`installed ${packages.join(" ")}`);
}

/** Newest modification time of any file under `dir`, in ms. */
function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/**
 * The path of dist/gcache-node, built first with `bun run build` when it is
 * missing (or when `rebuild`). Warns when the sources are newer than the binary.
 */
export async function ensureBinary(root: string, rebuild: boolean): Promise<string> {
  const binary = join(root, "dist", process.platform === "win32" ? "gcache-node.exe" : "gcache-node");
  if (rebuild || !existsSync(binary)) {
    console.error(`${rebuild ? "rebuilding" : "dist/gcache-node is missing: building"} it with \`bun run build\` …`);
    await runToEnd("bun run build", [process.execPath, "run", "build"], 300_000, {
      cwd: root,
      onLine: (line) => process.stderr.write(`  build: ${line}\n`),
    });
    if (!existsSync(binary)) throw new Error(`bun run build finished but ${binary} does not exist`);
  } else {
    const sources = newestMtime(join(root, "src"));
    if (sources > statSync(binary).mtimeMs) {
      console.error("note: files under src/ are newer than dist/gcache-node; pass --build to measure the current sources");
    }
  }
  return binary;
}
