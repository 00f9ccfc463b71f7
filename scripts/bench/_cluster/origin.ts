/**
 * The origin behind `gcache-node --origin 'http://127.0.0.1:PORT/{group}/{key}'`
 * in the cluster benchmark, in its own process.
 *
 *   bun scripts/bench/_cluster/origin.ts [--delay-ms=1] [--delay-groups=mixed]
 *
 * GET /{group}/{key} answers a value whose size is written in the key: a key
 * `<letters><bytes>-<anything>` (e.g. `m10240-17`) gets `<bytes>` bytes; any
 * other key is 404. Groups listed in --delay-groups answer after --delay-ms
 * (a database round trip); the others at once. GET /_stats returns the number
 * of value requests answered so far. Prints `READY 127.0.0.1:<port>`; stops on
 * SIGTERM or when stdin closes.
 */
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    "delay-ms": { type: "string", default: "1" },
    "delay-groups": { type: "string", default: "mixed" },
  },
});
const delayMs = Number(args["delay-ms"]);
if (!(delayMs >= 0)) throw new Error(`--delay-ms must be a number of ms, got ${args["delay-ms"]}`);
const delayed = new Set(args["delay-groups"].split(",").map((g) => g.trim()).filter((g) => g !== ""));

const HEADERS = { "content-type": "application/octet-stream" };
const bodies = new Map<number, Uint8Array>();
const bodyOf = (bytes: number): Uint8Array => {
  let body = bodies.get(bytes);
  if (body === undefined) {
    body = new Uint8Array(bytes).fill(0x61);
    bodies.set(bytes, body);
  }
  return body;
};
let answered = 0;

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  async fetch(request) {
    const url = request.url;
    const path = url.slice(url.indexOf("/", url.indexOf("//") + 2));
    if (path === "/_stats") return Response.json({ answered });
    const slash = path.indexOf("/", 1);
    if (slash < 0) return new Response("expected /{group}/{key}\n", { status: 404 });
    const group = path.slice(1, slash);
    const key = decodeURIComponent(path.slice(slash + 1));
    const size = /^[a-z]+(\d+)-/.exec(key);
    if (size === null) return new Response("no such key\n", { status: 404 });
    if (delayMs > 0 && delayed.has(group)) await Bun.sleep(delayMs);
    answered++;
    return new Response(bodyOf(Number(size[1])), { headers: HEADERS });
  },
});

process.stdout.write(`READY 127.0.0.1:${server.port}\n`);
const stop = () => {
  void server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
