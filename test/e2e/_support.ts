/**
 * End-to-end support: gcache-node run the way an operator runs it. With
 * GCACHE_NODE_BIN set, the binary is copied into a fresh empty directory and
 * every process runs there (no node_modules, no package.json, no .env); without
 * it, the same tests run against the sources.
 */
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nodeCommand } from "../_support/cli.ts";

/** The binary under test, or undefined when the tests run the sources. */
export function binaryUnderTest(): string | undefined {
  const binary = process.env.GCACHE_NODE_BIN;
  return binary === undefined || binary === "" ? undefined : binary;
}

export interface Workspace {
  /** True when the compiled binary runs (from an otherwise empty directory). */
  readonly binary: boolean;
  /** Working directory for every child: the empty directory, or undefined (the project) for sources. */
  readonly cwd: string | undefined;
  /** Removes the directory and restores GCACHE_NODE_BIN. Idempotent. */
  dispose(): void;
}

/**
 * Binary mode: copies the binary into a fresh empty directory and points
 * GCACHE_NODE_BIN at the copy (the node helpers start what it names) until
 * `dispose()`. Sources mode: nothing to prepare.
 */
export function prepareWorkspace(): Workspace {
  const original = binaryUnderTest();
  if (original === undefined) return { binary: false, cwd: undefined, dispose: () => {} };
  const dir = mkdtempSync(join(tmpdir(), "gcache-e2e-"));
  const copy = join(dir, "gcache-node");
  copyFileSync(original, copy);
  chmodSync(copy, 0o755);
  process.env.GCACHE_NODE_BIN = copy;
  let disposed = false;
  return {
    binary: true,
    cwd: dir,
    dispose() {
      if (disposed) return;
      disposed = true;
      process.env.GCACHE_NODE_BIN = original;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The test's environment without any GCACHE_* variable, so no flag leaks in from outside; plus `extra`. */
export function childEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith("GCACHE_")) env[name] = value;
  }
  return { ...env, ...extra };
}

export interface CliResult {
  code: number;
  stdout: Uint8Array;
  stdoutText: string;
  stderr: string;
  ms: number;
}

/** Runs `gcache-node ARGS` to completion (killed, and an error thrown, after `timeoutMs`). */
export async function runCli(
  args: string[],
  options: { cwd: string | undefined; env?: Record<string, string | undefined>; timeoutMs?: number },
): Promise<CliResult> {
  const started = performance.now();
  const child = Bun.spawn(nodeCommand(args), {
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    env: options.env ?? childEnv(),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timeoutMs = options.timeoutMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const output = Promise.all([new Response(child.stdout).bytes(), new Response(child.stderr).text(), child.exited]);
  const outcome = await Promise.race([output, timedOut]);
  clearTimeout(timer);
  if (outcome === "timeout") {
    child.kill("SIGKILL");
    await child.exited;
    throw new Error(`gcache-node ${args.join(" ")} did not finish within ${timeoutMs} ms`);
  }
  const [stdout, stderr, code] = outcome;
  return { code, stdout, stdoutText: new TextDecoder().decode(stdout), stderr, ms: performance.now() - started };
}

export function stripAnsi(text: string): string {
  return text.replace(/\u001b\[[0-9;]*m/g, "");
}

/** A test origin: an HTTP server in this process that records every request path. */
export class Origin {
  readonly paths: string[] = [];
  private readonly server: ReturnType<typeof Bun.serve>;

  constructor(respond: (path: string) => Response | Promise<Response>) {
    this.server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (request) => {
        const path = decodeURIComponent(new URL(request.url).pathname);
        this.paths.push(path);
        return respond(path);
      },
    });
  }

  /** The --origin template. */
  get template(): string {
    return `http://127.0.0.1:${this.server.port}/{group}/{key}`;
  }

  /** Requests for `path` so far. */
  count(path: string): number {
    return this.paths.filter((p) => p === path).length;
  }

  async stop(): Promise<void> {
    await this.server.stop(true);
  }
}

/** A promise with its resolver, for holding an origin's answers until the test lets them go. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/** Resident set size of a process in KiB (VmRSS from /proc). */
export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (match === null) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

// ---------------------------------------------------------------------------
// Prometheus text exposition format (version 0.0.4), strictly.

export interface MetricFamily {
  name: string;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  help: string | undefined;
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  families: Map<string, MetricFamily>;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/**
 * Parses Prometheus text and checks it: HELP/TYPE comments well formed and
 * given once, every sample after its family's TYPE, counters named `*_total`,
 * no series twice, values numbers. Throws naming the line on any violation.
 */
export function parsePrometheus(text: string): Exposition {
  const families = new Map<string, MetricFamily>();
  const samples: Sample[] = [];
  const seenSeries = new Set<string>();
  const helps = new Map<string, string>();
  if (!text.endsWith("\n")) throw new Error("exposition does not end with a newline");
  const lines = text.slice(0, -1).split("\n");
  lines.forEach((line, index) => {
    const fail = (why: string): never => {
      throw new Error(`line ${index + 1} ${JSON.stringify(line)}: ${why}`);
    };
    if (line.trim() === "") return;
    if (line.startsWith("#")) {
      const comment = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (comment === null) return; // other comments are allowed
      const [, kind, name = "", rest = ""] = comment;
      if (!METRIC_NAME.test(name)) fail(`bad metric name ${name}`);
      if (kind === "HELP") {
        if (helps.has(name)) fail(`second HELP for ${name}`);
        helps.set(name, rest);
        const family = families.get(name);
        if (family !== undefined) family.help = rest;
        return;
      }
      if (!TYPES.has(rest)) fail(`unknown type ${rest}`);
      if (families.has(name)) fail(`second TYPE for ${name}`);
      if (rest === "counter" && !name.endsWith("_total")) fail(`counter ${name} does not end in _total`);
      families.set(name, { name, type: rest as MetricFamily["type"], help: helps.get(name) });
      return;
    }
    const sample = parseSample(line, fail);
    const family = familyOf(sample.name, families);
    if (family === undefined) fail(`sample of ${sample.name} has no TYPE before it`);
    const series = `${sample.name}{${Object.entries(sample.labels)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
      .join(",")}}`;
    if (seenSeries.has(series)) fail(`series ${series} given twice`);
    seenSeries.add(series);
    samples.push(sample);
  });
  return { families, samples };
}

/** The family a sample belongs to: its own name, or for histograms and summaries the name without the suffix. */
function familyOf(sampleName: string, families: Map<string, MetricFamily>): string | undefined {
  if (families.has(sampleName)) return sampleName;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!sampleName.endsWith(suffix)) continue;
    const base = sampleName.slice(0, -suffix.length);
    const type = families.get(base)?.type;
    if (type === "histogram" || (type === "summary" && suffix !== "_bucket")) return base;
  }
  return undefined;
}

function parseSample(line: string, fail: (why: string) => never): Sample {
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  if (nameMatch === null) fail("expected a metric name");
  const name = nameMatch![0];
  let at = name.length;
  const labels: Record<string, string> = {};
  if (line[at] === "{") {
    at++;
    while (line[at] !== "}") {
      const labelMatch = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(at));
      if (labelMatch === null) fail(`bad label at column ${at + 1}`);
      const labelName = labelMatch![1]!;
      if (!LABEL_NAME.test(labelName)) fail(`bad label name ${labelName}`);
      if (labelName in labels) fail(`label ${labelName} given twice`);
      at += labelMatch![0].length;
      let value = "";
      for (;;) {
        const char = line[at];
        if (char === undefined) fail("unterminated label value");
        if (char === '"') break;
        if (char === "\\") {
          const next = line[at + 1];
          if (next === "\\") value += "\\";
          else if (next === '"') value += '"';
          else if (next === "n") value += "\n";
          else fail(`bad escape \\${next ?? ""}`);
          at += 2;
        } else {
          value += char;
          at++;
        }
      }
      labels[labelName] = value;
      at++; // closing quote
      if (line[at] === ",") at++;
      else if (line[at] !== "}") fail(`expected , or } at column ${at + 1}`);
    }
    at++; // closing brace
  }
  const rest = /^ +(\S+)(?: +(-?\d+))?$/.exec(line.slice(at));
  if (rest === null) fail("expected ' value [timestamp]' after the series");
  const valueText = rest![1]!;
  const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : valueText === "NaN" ? NaN : Number(valueText);
  if (Number.isNaN(value) && valueText !== "NaN") fail(`value ${valueText} is not a number`);
  if (!/^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$|^[-+]Inf$|^NaN$/.test(valueText)) fail(`value ${valueText} is not a number`);
  return { name, labels, value };
}

/** The value of the one sample of `name` whose labels include `labels`. */
export function sampleValue(exposition: Exposition, name: string, labels: Record<string, string> = {}): number {
  const matches = exposition.samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (matches.length !== 1) throw new Error(`expected one sample ${name}${JSON.stringify(labels)}, found ${matches.length}`);
  return matches[0]!.value;
}
