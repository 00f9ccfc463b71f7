/**
 * Start and memory check of the executable: one node with default settings
 * (no peers, no etcd), started `runs` times one after another. Per start:
 * spawn -> first 200 from GET /readyz (polled every 2 ms), spawn -> the
 * `serving` log line, the node's own `startupMs`, RSS once the process has
 * been up `idleMs`, and the time from SIGTERM to exit.
 */
import { sampleProcess } from "../_node/commands.ts";
import { Service, waitForHttp } from "./procs.ts";
import { freePorts } from "./util.ts";

export interface StartSample {
  readyMs: number;
  servingLineMs: number;
  /** `startupMs` as the node logs it (from its own clock). */
  loggedStartupMs: number;
  /** RSS after `idleMs`, NaN when not measured on this start. */
  idleRssBytes: number;
  /** RSS right after /readyz first answered 200. */
  readyRssBytes: number;
  stopMs: number;
  exitCode: number;
}

export async function measureStarts(binary: string, runs: number, idleMs: number, idleRuns: number): Promise<StartSample[]> {
  const samples: StartSample[] = [];
  for (let run = 0; run < runs; run++) {
    const [port, httpPort] = freePorts(2) as [number, number];
    let servingAt = NaN;
    let loggedStartupMs = NaN;
    const service = new Service(
      "start check",
      [binary, "--node", "S", "--port", String(port), "--http-port", String(httpPort), "--drain-grace", "0s"],
      {
        onLine: (line) => {
          if (!Number.isNaN(servingAt) || !line.includes('"serving"')) return;
          servingAt = performance.now();
          try {
            loggedStartupMs = Number((JSON.parse(line) as { startupMs?: number }).startupMs);
          } catch {
            // Not a JSON line after all.
          }
        },
      },
    );
    const readyAt = await waitForHttp(`http://127.0.0.1:${httpPort}/readyz`, 30_000, service, 2);
    const readyRssBytes = sampleProcess(service.pid).rssBytes;
    let idleRssBytes = NaN;
    if (run >= runs - idleRuns) {
      await Bun.sleep(Math.max(0, service.spawnedAt + idleMs - performance.now()));
      idleRssBytes = sampleProcess(service.pid).rssBytes;
    }
    // The serving line may trail the first 200 by a moment (it is written after start resolves).
    for (let i = 0; i < 100 && Number.isNaN(servingAt); i++) await Bun.sleep(5);
    const stopStart = performance.now();
    await service.stop();
    const exitCode = await service.exited;
    samples.push({
      readyMs: readyAt - service.spawnedAt,
      servingLineMs: servingAt - service.spawnedAt,
      loggedStartupMs,
      idleRssBytes,
      readyRssBytes,
      stopMs: performance.now() - stopStart,
      exitCode,
    });
  }
  return samples;
}
