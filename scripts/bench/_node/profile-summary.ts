/**
 * Summarises a `.cpuprofile` written by `bun --cpu-prof` (see bench:node --profile):
 * where the samples fall by code area and by function, self and inclusive.
 *
 *   bun scripts/bench/_node/profile-summary.ts FILE.cpuprofile [--top=25]
 *
 * "Native callees included" charges a sample whose leaf is native code (a
 * builtin, the runtime) to the nearest JS frame above it: the JS code that
 * asked for that work.
 *
 * Shares are of all samples taken (JSC samples the JS thread while it runs;
 * idle time is mostly absent). The whole life of the process is included:
 * start-up and prefill are a small part of a benchmark run.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
}

const { values: args, positionals } = parseArgs({
  options: { top: { type: "string", default: "25" } },
  allowPositionals: true,
});
const file = positionals[0];
if (file === undefined) throw new Error("usage: profile-summary.ts FILE.cpuprofile");
const top = Number(args.top);
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;

const byId = new Map<number, ProfileNode>();
const parent = new Map<number, number>();
for (const node of profile.nodes) byId.set(node.id, node);
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);

/** Code area of a frame: a project file, a package, the runtime's JS, or native code. */
function area(url: string, name: string): string {
  if (url === "") return name.startsWith("(") ? name : "native (runtime, no script)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg) return pkg[1]!;
  const project = /\/((?:src|scripts)\/.*)$/.exec(url);
  if (project) return project[1]!;
  if (url.startsWith("node:") || url.startsWith("internal:")) return `runtime ${url.split("/")[0]}`;
  return url;
}

function label(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url === "" ? "" : ` ${area(url, functionName)}:${lineNumber + 1}`;
  return `${functionName || "(anonymous)"}${where}`;
}

const total = profile.samples.length;
/** Per sample, the innermost frame that has a script (native frames are charged to their JS caller). */
const ownerByFunction = new Map<string, number>();
const ownerByArea = new Map<string, number>();
const selfByArea = new Map<string, number>();
const selfByFunction = new Map<string, number>();
const inclusiveByFunction = new Map<string, number>();
const inclusiveByArea = new Map<string, number>();
const add = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);

for (const id of profile.samples) {
  const leaf = byId.get(id)!;
  add(selfByArea, area(leaf.callFrame.url, leaf.callFrame.functionName));
  add(selfByFunction, label(leaf));
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const node = byId.get(at)!;
    if (node.callFrame.url === "") continue;
    add(ownerByFunction, label(node));
    add(ownerByArea, area(node.callFrame.url, node.callFrame.functionName));
    break;
  }
  const seenFunctions = new Set<string>();
  const seenAreas = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const node = byId.get(at)!;
    seenFunctions.add(label(node));
    if (node.callFrame.url !== "") seenAreas.add(area(node.callFrame.url, node.callFrame.functionName));
  }
  for (const key of seenFunctions) add(inclusiveByFunction, key);
  for (const key of seenAreas) add(inclusiveByArea, key);
}

const pct = (n: number) => `${((n / total) * 100).toFixed(1).padStart(5)}%`;
function print(title: string, map: Map<string, number>, limit: number, filter: (key: string) => boolean = () => true): void {
  console.log(`\n${title}`);
  const rows = [...map].filter(([key]) => filter(key)).sort((x, y) => y[1] - x[1]).slice(0, limit);
  for (const [key, count] of rows) console.log(`  ${pct(count)}  ${String(count).padStart(6)}  ${key}`);
}

console.log(`${file}: ${total} samples`);
print("self samples by code area", selfByArea, top);
print("inclusive samples by code area (any frame on the stack)", inclusiveByArea, top);
print("samples by code area, native frames charged to their nearest JS caller", ownerByArea, top);
print("self samples by function", selfByFunction, top);
print("inclusive samples of project functions (src/)", inclusiveByFunction, top, (key) => / src\//.test(key));
print("samples of project functions, native callees included (src/)", ownerByFunction, top, (key) => / src\//.test(key));
