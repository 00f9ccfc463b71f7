/**
 * `gcache-node get|set|del --target HOST:PORT [--group G] KEY [VALUE|--file F]`.
 * Exit status: 0 done, 1 not found, 2 error.
 */
import { readFileSync } from "node:fs";
import { defineCommand } from "citty";
import { GCacheClient } from "../client.ts";
import { isGCacheError } from "../errors.ts";
import { parseDuration } from "../units.ts";

export const EXIT_OK = 0;
export const EXIT_NOT_FOUND = 1;
export const EXIT_ERROR = 2;

const commonArgs = {
  target: { type: "string", description: "node to ask (default 127.0.0.1:8001, env GCACHE_TARGET)", valueHint: "HOST:PORT" },
  group: { type: "string", description: "group (default 'default')", valueHint: "NAME" },
  timeout: { type: "string", description: "time limit (default 5s)", valueHint: "DURATION" },
  key: { type: "positional", description: "key", required: true },
} as const;

interface Common {
  target?: string | undefined;
  group?: string | undefined;
  timeout?: string | undefined;
  key: string;
}

async function withClient(args: Common, work: (client: GCacheClient, group: string, timeoutMs: number) => Promise<number>): Promise<never> {
  const timeoutMs = parseDuration(args.timeout ?? "5s", "s");
  if (timeoutMs === null) fail(`--timeout: expected a duration such as 500ms or 5s, got ${JSON.stringify(args.timeout)}`);
  const client = new GCacheClient(args.target ?? process.env.GCACHE_TARGET ?? "127.0.0.1:8001");
  let code: number;
  try {
    code = await work(client, args.group ?? "default", timeoutMs);
  } catch (error) {
    if (isGCacheError(error, "ERR_NOT_FOUND")) {
      process.stderr.write(`not found: ${error.message}\n`);
      code = EXIT_NOT_FOUND;
    } else {
      process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
      code = EXIT_ERROR;
    }
  } finally {
    client.close();
  }
  process.exit(code);
}

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n`);
  process.exit(EXIT_ERROR);
}

function reportUnreachable(peers: string[]): void {
  if (peers.length > 0) process.stderr.write(`warning: peers not told to drop their copies: ${peers.join(", ")}\n`);
}

export const getCommand = defineCommand({
  meta: { name: "get", description: "print a value to stdout" },
  args: commonArgs,
  run: ({ args }) =>
    withClient(args, async (client, group, timeoutMs) => {
      const value = await client.get(group, args.key, { timeoutMs });
      process.stdout.write(value);
      return EXIT_OK;
    }),
});

export const setCommand = defineCommand({
  meta: { name: "set", description: "store a value (from the argument, --file or stdin with --file -)" },
  args: {
    ...commonArgs,
    value: { type: "positional", description: "value", required: false },
    file: { type: "string", description: "read the value from a file ('-' for stdin)", valueHint: "PATH" },
    ttl: { type: "string", description: "time to live (e.g. 30s; default: the group's)", valueHint: "DURATION" },
  },
  run: ({ args }) =>
    withClient(args, async (client, group, timeoutMs) => {
      if ((args.value === undefined) === (args.file === undefined)) fail("set: give either VALUE or --file");
      const value =
        args.file === undefined ? new TextEncoder().encode(args.value) : new Uint8Array(readFileSync(args.file === "-" ? 0 : args.file));
      const ttlMs = args.ttl === undefined ? 0 : parseDuration(args.ttl, "s");
      if (ttlMs === null) fail(`--ttl: expected a duration such as 30s or 5m, got ${JSON.stringify(args.ttl)}`);
      reportUnreachable((await client.set(group, args.key, value, { ttlMs, timeoutMs })).unreachablePeers);
      return EXIT_OK;
    }),
});

export const delCommand = defineCommand({
  meta: { name: "del", description: "delete a key on every node" },
  args: commonArgs,
  run: ({ args }) =>
    withClient(args, async (client, group, timeoutMs) => {
      const result = await client.delete(group, args.key, { timeoutMs });
      reportUnreachable(result.unreachablePeers);
      return result.deleted ? EXIT_OK : EXIT_NOT_FOUND;
    }),
});
