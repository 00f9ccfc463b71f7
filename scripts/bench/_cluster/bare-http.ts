/**
 * The HTTP baselines of the cluster benchmark. By default a bare Bun.serve
 * that answers every request with the same fixed body (and the content type
 * the gateway uses), doing nothing else. With `--keys-file`, one that serves
 * the gateway's own paths from a Map of those keys, each with a value of its
 * own: what any cache built on Bun.serve pays to find and send a value,
 * without the cache.
 *
 *   bun scripts/bench/_cluster/bare-http.ts --value-bytes=100 [--keys-file=PATH]
 *
 * Prints `READY 127.0.0.1:<port>`; stops on SIGTERM or when stdin closes.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: { "value-bytes": { type: "string", default: "100" }, "keys-file": { type: "string" } },
});
const valueBytes = Number(args["value-bytes"]);
if (!Number.isInteger(valueBytes) || valueBytes < 0) throw new Error(`--value-bytes must be a whole number, got ${args["value-bytes"]}`);

const HEADERS = { "content-type": "application/octet-stream" };
const keysFile = args["keys-file"];
const server = keysFile === undefined ? fixedBodyServer() : mapServer(keysFile);

function fixedBodyServer() {
  const body = new Uint8Array(valueBytes).fill(7);
  return Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(body, { headers: HEADERS }) });
}

/** The gateway's route through Bun's router, one value per key (keys: one per line, as sent). */
function mapServer(file: string) {
  const keys = readFileSync(file, "utf8").split("\n").filter((key) => key !== "");
  const values = new Map<string, Uint8Array>();
  keys.forEach((key, i) => values.set(key, new Uint8Array(valueBytes).fill(i & 255)));
  const notFound = () => new Response("not found\n", { status: 404 });
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    routes: {
      "/v1/groups/:group/keys/:key": (request) => {
        const value = values.get(request.params.key);
        return value === undefined ? notFound() : new Response(value, { headers: HEADERS });
      },
    },
    fetch: notFound,
  });
}

process.stdout.write(`READY 127.0.0.1:${server.port}\n`);
const stop = () => {
  void server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
