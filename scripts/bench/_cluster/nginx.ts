/**
 * A C HTTP server under the same wrk as the gateway: nginx from Debian, one
 * process (no master, no worker pool: one event loop, as the gateway and the
 * bare Bun servers have), answering every request with the same body of the
 * measured size from its configuration, without reading a file.
 *
 * It separates what the load tool does to a server's tail from what the
 * runtime does: next to Redis under redis-benchmark it shows what a server
 * written in C gets under wrk on the same cores, and next to the bare socket
 * server what Bun's sockets add to the least an HTTP answer costs.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Service, waitForHttp } from "./procs.ts";
import { freePorts } from "./util.ts";

/** nginx reads its configuration in 4 KiB pieces; a longer quoted string is refused. */
const PIECE_CHARS = 2048;

export async function startNginx(nginx: string, dir: string, valueBytes: number): Promise<{ service: Service; url: string }> {
  const [port] = freePorts(1) as [number];
  mkdirSync(dir, { recursive: true });
  const value = "x".repeat(valueBytes);
  const pieces: string[] = [];
  for (let at = 0; at < value.length; at += PIECE_CHARS) pieces.push(value.slice(at, at + PIECE_CHARS));
  const config = join(dir, "nginx.conf");
  writeFileSync(
    config,
    [
      "daemon off;",
      "master_process off;",
      `pid ${join(dir, "nginx.pid")};`,
      `error_log ${join(dir, "error.log")} warn;`,
      "events { worker_connections 4096; use epoll; }",
      "http {",
      "  access_log off;",
      "  keepalive_requests 1000000000;",
      "  keepalive_timeout 60s;",
      `  client_body_temp_path ${join(dir, "body")};`,
      `  proxy_temp_path ${join(dir, "proxy")};`,
      `  fastcgi_temp_path ${join(dir, "fastcgi")};`,
      `  uwsgi_temp_path ${join(dir, "uwsgi")};`,
      `  scgi_temp_path ${join(dir, "scgi")};`,
      "  default_type application/octet-stream;",
      "  server {",
      `    listen 127.0.0.1:${port};`,
      "    location / {",
      ...pieces.map((piece, i) => `      set $p${i} '${piece}';`),
      `      return 200 "${pieces.map((_, i) => `$p${i}`).join("")}";`,
      "    }",
      "  }",
      "}",
      "",
    ].join("\n"),
  );
  // -e: errors before the configuration is read go to the run's directory, not /var/log.
  const service = new Service(`nginx ${valueBytes}`, [nginx, "-p", dir, "-c", config, "-e", join(dir, "error.log")]);
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/`, 10_000, service);
  const body = await (await fetch(`${url}/`, { signal: AbortSignal.timeout(5_000) })).arrayBuffer();
  if (body.byteLength !== valueBytes) throw new Error(`nginx answered ${body.byteLength} bytes, expected ${valueBytes}`);
  return { service, url };
}
