/**
 * The memcached reference of the cluster benchmark: memcached from Debian on a
 * free loopback port (UDP off, 1 GiB of item memory, its default worker
 * threads), filled over its text protocol and loaded by tcp-get.ts, the same
 * client as the gateway's and Redis's "one client" rows. memcached has no
 * load tool of its own in Debian that measures like the others (memaslap
 * counts its own warm-up sets in its rate), so only the one-client rows have
 * it.
 *
 * Keys carry the value size (`m<size>:<12 digits>`), since memcached has no
 * databases to keep one size's keys apart from another's.
 */
import { Service } from "./procs.ts";
import { freePorts } from "./util.ts";

export interface Memcached {
  service: Service;
  port: number;
}

/** Item memory, MiB: room for every size's keys with no eviction. */
const MEMORY_MIB = 1024;
/** Bytes of `set` commands written before waiting for the socket to take them. */
const FILL_WRITE_BYTES = 1 << 20;

export async function startMemcached(memcached: string): Promise<Memcached> {
  const [port] = freePorts(1) as [number];
  // memcached refuses to run as root unless told which user to be.
  const asRoot = process.getuid?.() === 0 ? ["-u", "root"] : [];
  const service = new Service("memcached", [memcached, ...asRoot, "-l", "127.0.0.1", "-p", String(port), "-U", "0", "-m", String(MEMORY_MIB), "-c", "4096"]);
  const deadline = performance.now() + 10_000;
  for (;;) {
    if (service.hasExited) throw new Error(`memcached exited at start:\n${service.tail()}`);
    try {
      const answer = await exchange(port, "version\r\n", (text) => text.includes("\r\n"), 2_000);
      if (answer.startsWith("VERSION")) break;
    } catch {
      // Not up yet.
    }
    if (performance.now() > deadline) throw new Error(`memcached did not answer "version" within 10 s:\n${service.tail()}`);
    await Bun.sleep(20);
  }
  return { service, port };
}

export function memcachedKey(size: number, i: number): string {
  return `m${size}:${String(i).padStart(12, "0")}`;
}

/** Stores memcachedKey(size, 0 … count-1), `size` bytes each, and checks every one was STORED. */
export async function fillMemcached(port: number, size: number, count: number): Promise<void> {
  const value = "x".repeat(size);
  let commands = "";
  for (let i = 0; i < count; i++) commands += `set ${memcachedKey(size, i)} 0 0 ${size}\r\n${value}\r\n`;
  const stored = (text: string) => countOf(text, "STORED\r\n");
  const answer = await exchange(port, commands, (text) => stored(text) + countOf(text, "ERROR") >= count, 120_000);
  if (stored(answer) !== count) throw new Error(`filling memcached: ${stored(answer)} of ${count} sets STORED; first answers: ${answer.slice(0, 200)}`);
}

/** get_hits and get_misses so far ("stats"), to check that the GETs found their keys. */
export async function memcachedHitCounters(port: number): Promise<{ hits: number; misses: number }> {
  const answer = await exchange(port, "stats\r\n", (text) => text.endsWith("END\r\n"), 5_000);
  const stat = (name: string) => {
    const match = new RegExp(`^STAT ${name} (\\d+)\\r$`, "m").exec(answer);
    return match === null ? NaN : Number(match[1]);
  };
  return { hits: stat("get_hits"), misses: stat("get_misses") };
}

function countOf(text: string, needle: string): number {
  let count = 0;
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + needle.length)) count++;
  return count;
}

/** Sends `request` on a connection of its own and collects the answer until `complete` says it is whole. */
function exchange(port: number, request: string, complete: (answer: string) => boolean, timeoutMs: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let answer = "";
    const bytes = Buffer.from(request, "latin1");
    let sent = 0;
    let socket: Bun.Socket<undefined> | null = null;
    const finish = (error: Error | null) => {
      clearTimeout(timer);
      socket?.end();
      if (error === null) resolve(answer);
      else reject(error);
    };
    const timer = setTimeout(() => finish(new Error(`memcached: no whole answer within ${timeoutMs} ms`)), timeoutMs);
    const pump = (s: Bun.Socket<undefined>) => {
      while (sent < bytes.length) {
        const written = s.write(bytes, sent, Math.min(FILL_WRITE_BYTES, bytes.length - sent));
        if (written <= 0) return;
        sent += written;
      }
    };
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (s) => {
          socket = s;
          pump(s);
        },
        drain: pump,
        data: (_s, chunk) => {
          answer += chunk.toString("latin1");
          if (complete(answer)) finish(null);
        },
        close: () => finish(complete(answer) ? null : new Error("memcached closed the connection")),
        error: (_s, error) => finish(error),
      },
    }).catch((error: unknown) => finish(error instanceof Error ? error : new Error(String(error))));
  });
}
