/**
 * Logging is an injectable interface: the library logs nothing unless given a
 * logger; the CLI passes one that writes JSON or human-readable lines.
 */
import { writeSync } from "node:fs";

export type LogLevel = "debug" | "info" | "warn" | "error";

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

const noop = () => {};

/** The default: silent. */
export const SILENT_LOGGER: Logger = { debug: noop, info: noop, warn: noop, error: noop };

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A logger writing one line per event to stderr, as JSON or as readable text. */
export function createConsoleLogger(options: { level?: LogLevel; format?: "json" | "pretty"; write?: (line: string) => void } = {}): Logger {
  const threshold = RANK[options.level ?? "info"];
  const format = options.format ?? "json";
  const write = options.write ?? writeToStderr;
  const emit = (level: LogLevel) => (message: string, fields?: LogFields) => {
    if (RANK[level] < threshold) return;
    const time = new Date().toISOString();
    if (format === "json") {
      write(JSON.stringify({ time, level, msg: message, ...fields }));
    } else {
      const extra = fields === undefined ? "" : ` ${Object.entries(fields).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ")}`;
      write(`${time} ${level.toUpperCase().padEnd(5)} ${message}${extra}`);
    }
  };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}

/**
 * Writes straight to file descriptor 2 while it takes whole lines, as Node
 * itself does for stderr on files and pipes. Creating the process.stderr
 * stream costs the executable's start-up several milliseconds before its
 * first line (docs/benchmarks.md, "Deferred at start-up"); the stream
 * takes over for good once a write would block or was cut short, so no line is
 * lost or reordered.
 */
let stderrIsStream = false;
function writeToStderr(line: string): void {
  const text = `${line}\n`;
  if (!stderrIsStream) {
    try {
      const bytes = Buffer.from(text);
      const written = writeSync(2, bytes);
      if (written === bytes.byteLength) return;
      stderrIsStream = true;
      process.stderr.write(bytes.subarray(written));
      return;
    } catch {
      stderrIsStream = true;
    }
  }
  process.stderr.write(text);
}
