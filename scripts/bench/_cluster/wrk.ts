/**
 * HTTP load with wrk: a Lua script per key set cycles GET requests over the
 * keys (each wrk thread over its own slice, so the threads never ask for the
 * same key close together), and reports its numbers as one JSON line from
 * wrk's `done` hook: requests, duration, bytes, latency percentiles and the
 * error counters.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runToEnd } from "./procs.ts";

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Response bytes read (headers included). */
  bytes: number;
  /** Socket errors (connect, read, write, timeout) and non-2xx/3xx answers. */
  socketErrors: number;
  statusErrors: number;
  /** CPU time wrk used (all threads), ms. */
  cpuMs: number;
  /** Wall time of the wrk process, ms. */
  wallMs: number;
  /** Where the next run should start to continue the cycle (see writeWrkScript). */
  cursor: number;
}

const MARK = "WRKJSON ";

/** What the script sends for each key. */
export type WrkRequest = { method: "GET" } | { method: "PUT"; bytes: number } | { method: "DELETE" };

/**
 * Writes `<name>.keys` and `<name>.lua` into `dir`: the script sends
 * `GET <pathPrefix><key>` (or a `PUT` of `bytes` bytes, or a `DELETE`)
 * cycling over `keys`, thread t taking the keys t, t + threads, t + 2 threads, …
 * A DELETE of a key nobody holds is answered 404, which counts as an answer,
 * not an error, there (the script then looks at every status itself).
 *
 * Its first argument (after `--` on wrk's command line) is a cursor into the
 * key list, counted without wrapping: each thread starts at the first key of
 * its slice at or after it. The result line reports the cursor after the
 * run: past the furthest key any thread sent. Passing it to the next run
 * continues the cycle there, so no key comes back sooner than a full cycle.
 * Returns the script's path.
 */
export function writeWrkScript(
  dir: string,
  name: string,
  keys: readonly string[],
  pathPrefix: string,
  threads: number,
  request: WrkRequest = { method: "GET" },
): string {
  const method = request.method;
  const deletes = method === "DELETE";
  const keysFile = join(dir, `${name}.keys`);
  writeFileSync(keysFile, `${keys.map((k) => encodeURIComponent(k)).join("\n")}\n`);
  const script = join(dir, `${name}.lua`);
  writeFileSync(
    script,
    `-- ${method} ${pathPrefix}<key>, cycling over ${keys.length} keys; thread t takes every ${threads}th key from t.
local threads = ${threads}
local body = ${request.method === "PUT" ? `string.rep("v", ${request.bytes})` : "nil"}
local next_id = 0
local all_threads = {}
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(all_threads, thread)
end

local requests = {}
local count = 0
-- Globals, read from done() through thread:get: id (set by setup), start, sent, bad.
start = 0
sent = 0
bad = 0
${
  deletes
    ? `-- Answers other than 200 (deleted) and 404 (nothing held) are the errors.
function response(status, headers, body)
  if status ~= 200 and status ~= 404 then bad = bad + 1 end
end
`
    : ""
}function init(args)
  local i = 0
  for key in io.lines(${JSON.stringify(keysFile)}) do
    if key ~= "" then
      if i % threads == id then
        count = count + 1
        requests[count] = wrk.format("${method}", ${JSON.stringify(pathPrefix)} .. key, nil, body)
      end
      i = i + 1
    end
  end
  if count == 0 then error("no keys for thread " .. id) end
  local cursor = tonumber(args[1] or "0") or 0
  start = math.max(0, math.ceil((cursor - id) / threads))
end

function request()
  local r = requests[(start + sent) % count + 1]
  sent = sent + 1
  return r
end

function done(summary, latency, requests)
  local cursor = 0
  local bad = 0
  for _, thread in ipairs(all_threads) do
    cursor = math.max(cursor, (thread:get("start") + thread:get("sent")) * threads + thread:get("id"))
    bad = bad + thread:get("bad")
  end
  local e = summary.errors
  local status_errors = ${deletes ? "bad" : "e.status"}
  io.write(string.format(
    '${MARK}{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"mean_us":%.1f,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"max_us":%.1f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"cursor":%.0f}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, status_errors, e.timeout, cursor))
end
`,
  );
  return script;
}

export interface WrkSpec {
  wrk: string;
  /** Base URL, e.g. http://127.0.0.1:9001 (the script supplies the paths). */
  url: string;
  script: string;
  threads: number;
  connections: number;
  /** Whole seconds (wrk takes no fractions). */
  seconds: number;
  /** Where in the key list the cycle starts (see writeWrkScript). */
  cursor?: number;
}

export async function runWrk(spec: WrkSpec): Promise<WrkResult> {
  const argv = [
    spec.wrk,
    "-t",
    String(spec.threads),
    "-c",
    String(spec.connections),
    "-d",
    `${spec.seconds}s`,
    "--timeout",
    "5s",
    "--latency",
    "-s",
    spec.script,
    spec.url,
    "--",
    String(spec.cursor ?? 0),
  ];
  const { lines, cpuMs, wallMs } = await runToEnd("wrk", argv, spec.seconds * 1000 + 20_000);
  const line = lines.find((l) => l.startsWith(MARK));
  if (line === undefined) throw new Error(`wrk printed no result line:\n${lines.join("\n")}`);
  const r = JSON.parse(line.slice(MARK.length)) as Record<string, number>;
  const seconds = r.duration_us! / 1e6;
  return {
    requests: r.requests!,
    seconds,
    rps: r.requests! / seconds,
    meanMs: r.mean_us! / 1000,
    p50Ms: r.p50_us! / 1000,
    p90Ms: r.p90_us! / 1000,
    p99Ms: r.p99_us! / 1000,
    maxMs: r.max_us! / 1000,
    bytes: r.bytes!,
    socketErrors: r.connect! + r.read! + r.write! + r.timeout!,
    statusErrors: r.status!,
    cpuMs,
    wallMs,
    cursor: r.cursor!,
  };
}
