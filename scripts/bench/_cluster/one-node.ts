/**
 * One node from source (`src/cli/main.ts`, its own Bun process on loopback)
 * holding `keys` values `k0`, `k1`, … of group `default`, PUT through its
 * gateway: for the benchmarks that measure a client against a node. With
 * `origin`, misses load from that URL template.
 * Stopped by `stopAll()` with the other tracked processes.
 */
import { fileURLToPath } from "node:url";
import { Service, waitForHttp } from "./procs.ts";
import { freePorts } from "./util.ts";

export interface OneNode {
  /** gRPC address, host:port. */
  address: string;
  /** Gateway base URL. */
  http: string;
}

export async function startFilledNode(keys: number, valueBytes: number, origin?: string): Promise<OneNode> {
  const [grpcPort, httpPort] = freePorts(2);
  const root = fileURLToPath(new URL("../../../", import.meta.url));
  const argv = [process.execPath, "src/cli/main.ts", "--node", "B", "--host", "127.0.0.1", "--port", String(grpcPort), "--http-port", String(httpPort), "--log-level", "warn"];
  if (origin !== undefined) argv.push("--origin", origin);
  const node = new Service("B", argv, { cwd: root, holdStdin: true });
  const http = `http://127.0.0.1:${httpPort}`;
  await waitForHttp(`${http}/readyz`, 30_000, node);
  const value = new Uint8Array(valueBytes).fill(7);
  for (let i = 0; i < keys; i++) {
    const response = await fetch(`${http}/v1/groups/default/keys/k${i}`, { method: "PUT", body: value });
    if (!response.ok) throw new Error(`PUT k${i}: ${response.status} ${await response.text()}`);
  }
  return { address: `127.0.0.1:${grpcPort}`, http };
}
