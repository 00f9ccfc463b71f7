/**
 * gcache-node processes, started the way an operator starts them: from the
 * compiled binary when GCACHE_NODE_BIN names one, else from source with Bun.
 * They log JSON lines to stderr, which is how tests learn their address and
 * membership.
 */
import { fileURLToPath } from "node:url";
import { LineProcess } from "./processes.ts";

const MAIN = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

export function nodeCommand(args: string[]): string[] {
  const binary = process.env.GCACHE_NODE_BIN;
  return binary === undefined || binary === "" ? [process.execPath, MAIN, ...args] : [binary, ...args];
}

export interface LogLine {
  msg: string;
  level: string;
  [field: string]: unknown;
}

export interface CliNodeOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** A command that runs the node (e.g. `unshare … --net`): the node's command line is appended to it. */
  wrap?: string[];
}

export class CliNode extends LineProcess {
  private addressValue: string | null = null;

  private constructor(name: string, args: string[], options: CliNodeOptions) {
    super(name, [...(options.wrap ?? []), ...nodeCommand(args)], options);
  }

  /** Starts `gcache-node serve …` and waits for its "serving" line. */
  static async start(name: string, args: string[], options: CliNodeOptions & { timeoutMs?: number } = {}): Promise<CliNode> {
    const node = new CliNode(name, args, options);
    try {
      const line = await node.waitForLog((log) => log.msg === "serving", "serving", options.timeoutMs ?? 15_000);
      node.addressValue = String(line.address);
    } catch (error) {
      await node.stop();
      throw error;
    }
    return node;
  }

  get address(): string {
    if (this.addressValue === null) throw new Error(`${this.name} is not serving`);
    return this.addressValue;
  }

  /** Structured log lines so far (stderr lines that are JSON objects). */
  logs(): LogLine[] {
    return this.errorLines.flatMap((line) => {
      const log = parseLog(line);
      return log === null ? [] : [log];
    });
  }

  /** The member names of the latest "membership changed" line, or null. */
  members(): string[] | null {
    const changes = this.logs().filter((log) => log.msg === "membership changed");
    const last = changes.at(-1);
    return last === undefined ? null : (last.members as string[]);
  }

  async waitForLog(match: (log: LogLine) => boolean, what: string, timeoutMs = 5_000): Promise<LogLine> {
    const line = await this.waitForErrorLine(
      (text) => {
        const log = parseLog(text);
        return log !== null && match(log);
      },
      what,
      timeoutMs,
    );
    return parseLog(line)!;
  }
}

function parseLog(line: string): LogLine | null {
  if (!line.startsWith("{")) return null;
  try {
    const value = JSON.parse(line) as unknown;
    return value !== null && typeof value === "object" && "msg" in value ? (value as LogLine) : null;
  } catch {
    return null;
  }
}
