/**
 * Per-call cost of the pieces of a node's Get path, in one process, without
 * the network: what the cache node does on top of what a bare grpc-js
 * handler does, to set against the whole per-call CPU that bench:node
 * measures.
 *
 *   bun scripts/bench/_node/pieces.ts [--calls=200000] [--reps=7]
 *
 * Each piece runs `reps` times over `calls` calls; the best rep is reported
 * (the least disturbed by the rest of the machine), in ns per call. The
 * handler pieces take turns within each rep.
 *   - request decode / response encode: the protobufjs codecs (both servers run them)
 *   - cachedEntry: Group.cachedEntry on a prefilled key (main-cache lookup + expiry lookup + counters)
 *   - getEntry: Group.getEntry on the same keys (key check + cachedEntry + a resolved promise), awaited
 *   - handler (ours): the real Get handler from cacheServiceHandlers, called as grpc-js calls it,
 *     until its callback runs (64 in flight, like the benchmark)
 *   - handler (bare): `callback(null, RESPONSE)` in the same harness
 *   - decode + handler + encode: the same with each request decoded from bytes (fresh strings,
 *     whose hashes Map lookups must compute, as on a real server) and each response encoded:
 *     the whole JS side of a call except grpc-js and http2
 *   - what-if sync hit: not the project's code; a handler that answers a hit from
 *     Group.cachedEntry at once, to size what the promise and per-call options cost
 */
import { parseArgs } from "node:util";
import type { sendUnaryData, ServerUnaryCall } from "@grpc/grpc-js";
import { Group } from "../../../src/group.ts";
import { cacheServiceHandlers } from "../../../src/server/service.ts";
import { codecs, type Request, type ResponseForGet } from "../../../src/wire/messages.ts";

const { values: args } = parseArgs({
  options: { calls: { type: "string", default: "200000" }, reps: { type: "string", default: "7" } },
});
const CALLS = Number(args.calls);
const REPS = Number(args.reps);
const KEYS = 10_000;
const IN_FLIGHT = 64;
const EMPTY = new Uint8Array(0);

const keys = Array.from({ length: KEYS }, (_, i) => `owned:${i}`);
const group = new Group({ name: "bench", loader: () => new Uint8Array(100).fill(1) });
for (const key of keys) await group.get(key);
const encodedRequests = keys.map((key) =>
  codecs.Request.encode({ group: "bench", key, value: EMPTY, ttlMs: 0, expiresAtMs: 0, fromPeer: false }),
);
const RESPONSE: ResponseForGet = { value: new Uint8Array(100).fill(7), expiresAtMs: 0, unreachablePeers: [] };
let sink = 0;

function best(name: string, run: () => number | Promise<number>): Promise<void> {
  return (async () => {
    let min = Infinity;
    for (let rep = 0; rep < REPS; rep++) {
      const start = Bun.nanoseconds();
      sink += await run();
      min = Math.min(min, (Bun.nanoseconds() - start) / CALLS);
    }
    console.log(`${name.padEnd(44)} ${min.toFixed(0).padStart(6)} ns/call`);
  })();
}

/** Like `best` for several pieces, taking turns within each rep so they share the machine's drifts. */
async function bestInterleaved(pieces: [string, () => Promise<number>][]): Promise<void> {
  const mins = pieces.map(() => Infinity);
  for (let rep = 0; rep < REPS; rep++) {
    for (let i = 0; i < pieces.length; i++) {
      const start = Bun.nanoseconds();
      sink += await pieces[i]![1]();
      mins[i] = Math.min(mins[i]!, (Bun.nanoseconds() - start) / CALLS);
    }
  }
  pieces.forEach(([name], i) => console.log(`${name.padEnd(44)} ${mins[i]!.toFixed(0).padStart(6)} ns/call`));
}

/**
 * Drives a unary handler the way grpc-js does: decodes the request bytes
 * (so key and group are fresh strings, as on a server), builds a call object,
 * and encodes the response the callback gets; `IN_FLIGHT` calls at a time.
 * With `decode` false the same request objects are reused (strings already hashed).
 */
function drive(
  handler: (call: ServerUnaryCall<Request, ResponseForGet>, callback: sendUnaryData<ResponseForGet>) => void,
  decode = true,
): Promise<number> {
  const requests = keys.map(
    (key): Request => ({ group: "bench", key, value: EMPTY, ttlMs: 0, expiresAtMs: 0, fromPeer: false }),
  );
  return new Promise((resolve) => {
    let issued = 0;
    let done = 0;
    let bytes = 0;
    const issue = () => {
      const i = issued++ % KEYS;
      const request = decode ? codecs.Request.decode(encodedRequests[i]!) : requests[i]!;
      const call = {
        request,
        cancelled: false,
        getDeadline: () => Infinity,
        once: () => call,
      } as unknown as ServerUnaryCall<Request, ResponseForGet>;
      handler(call, (error, response) => {
        if (error) throw new Error(String(error.details));
        bytes += decode ? codecs.ResponseForGet.encode(response!).length : response!.value.byteLength;
        if (++done === CALLS) resolve(bytes);
        else if (issued < CALLS) queueMicrotask(issue); // the next call arrives on its own tick, as from the socket
      });
    };
    for (let i = 0; i < IN_FLIGHT; i++) issue();
  });
}

const handlers = cacheServiceHandlers((name) => (name === "bench" ? group : undefined), {
  accepting: () => true,
  maxResponseBytes: () => 4 * 1024 * 1024,
  auth: null,
  begin: () => {},
  end: () => {},
  streamOpened: () => () => {},
});
/** What-if, not the project's code: a hit answered synchronously (cachedEntry, no promise, no per-call options). */
const syncHitHandler = (call: ServerUnaryCall<Request, ResponseForGet>, callback: sendUnaryData<ResponseForGet>) => {
  const entry = group.cachedEntry(call.request.key);
  if (entry !== undefined) callback(null, { value: entry.value, expiresAtMs: entry.expiresAt, unreachablePeers: [] });
  else void handlers.Get(call, callback);
};
const bareHandler = (_call: ServerUnaryCall<Request, ResponseForGet>, callback: sendUnaryData<ResponseForGet>) =>
  callback(null, RESPONSE);

console.log(`pieces of the Get path, ${CALLS} calls per rep, best of ${REPS} reps, Bun ${Bun.version}`);
await best("request decode (both)", () => {
  let n = 0;
  for (let i = 0; i < CALLS; i++) n += codecs.Request.decode(encodedRequests[i % KEYS]!).key.length;
  return n;
});
await best("response encode (both)", () => {
  let n = 0;
  for (let i = 0; i < CALLS; i++) n += codecs.ResponseForGet.encode(RESPONSE).length;
  return n;
});
await best("Group.cachedEntry (ours)", () => {
  let n = 0;
  for (let i = 0; i < CALLS; i++) n += group.cachedEntry(keys[i % KEYS]!)!.value.length;
  return n;
});
await best("Group.getEntry, 64 awaited at a time (ours)", async () => {
  let n = 0;
  for (let i = 0; i < CALLS; i += IN_FLIGHT) {
    const batch: Promise<{ value: Uint8Array }>[] = [];
    for (let j = 0; j < IN_FLIGHT && i + j < CALLS; j++) batch.push(group.getEntry(keys[(i + j) % KEYS]!));
    for (const entry of await Promise.all(batch)) n += entry.value.length;
  }
  return n;
});
await best("Group.cachedEntry, fresh key strings (ours)", () => {
  let n = 0;
  for (let i = 0; i < CALLS; i++) n += group.cachedEntry(codecs.Request.decode(encodedRequests[i % KEYS]!).key)!.value.length;
  return n;
});
await best("  request decode alone, for the line above", () => {
  let n = 0;
  for (let i = 0; i < CALLS; i++) n += codecs.Request.decode(encodedRequests[i % KEYS]!).key.length;
  return n;
});
await bestInterleaved([
  ["Get handler, reused requests (ours)", () => drive(handlers.Get, false)],
  ["Get handler, reused requests (bare)", () => drive(bareHandler, false)],
  ["decode + Get handler + encode (ours)", () => drive(handlers.Get)],
  ["decode + Get handler + encode (bare)", () => drive(bareHandler)],
  ["decode + what-if sync hit handler + encode", () => drive(syncHitHandler)],
]);
if (sink === 0) console.log("(no work done?)");
