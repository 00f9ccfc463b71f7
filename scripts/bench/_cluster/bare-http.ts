/**
 * The HTTP baseline of the cluster benchmark: a bare Bun.serve that answers
 * every request with the same fixed body (and the content type the gateway
 * uses), doing nothing else.
 *
 *   bun scripts/bench/_cluster/bare-http.ts --value-bytes=100
 *
 * Prints `READY 127.0.0.1:<port>`; stops on SIGTERM or when stdin closes.
 */
import { parseArgs } from "node:util";

const { values: args } = parseArgs({ options: { "value-bytes": { type: "string", default: "100" } } });
const valueBytes = Number(args["value-bytes"]);
if (!Number.isInteger(valueBytes) || valueBytes < 0) throw new Error(`--value-bytes must be a whole number, got ${args["value-bytes"]}`);

const BODY = new Uint8Array(valueBytes).fill(7);
const HEADERS = { "content-type": "application/octet-stream" };
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch: () => new Response(BODY, { headers: HEADERS }),
});

process.stdout.write(`READY 127.0.0.1:${server.port}\n`);
const stop = () => {
  void server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
