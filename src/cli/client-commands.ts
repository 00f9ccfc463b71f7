/**
 * `gcache-node get|set|del --target HOST:PORT [--group G] KEY [VALUE|--file F]`.
 * Exit status: 0 done, 1 not found, 2 error.
 */
import { readFileSync } from "node:fs";
import { defineCommand } from "citty";
import { credentials } from "@grpc/grpc-js";
import { GCacheClient, type ClientOptions } from "../client.ts";
import { isGCacheError } from "../errors.ts";
import { parseDuration } from "../units.ts";

export const EXIT_OK = 0;
export const EXIT_NOT_FOUND = 1;
export const EXIT_ERROR = 2;

const commonArgs = {
  target: { type: "string", description: "node to ask (default 127.0.0.1:8001, env GCACHE_TARGET)", valueHint: "HOST:PORT" },
  group: { type: "string", description: "group (default 'default')", valueHint: "NAME" },
  timeout: { type: "string", description: "time limit (default 5s)", valueHint: "DURATION" },
  token: { type: "string", description: "auth token (env GCACHE_AUTH_TOKEN)", valueHint: "SECRET" },
  "tls-ca": { type: "string", description: "CA bundle to trust: connect with TLS (env GCACHE_TLS_CA)", valueHint: "PATH" },
  "tls-cert": { type: "string", description: "client certificate for mutual TLS (env GCACHE_TLS_CERT)", valueHint: "PATH" },
  "tls-key": { type: "string", description: "client key for mutual TLS (env GCACHE_TLS_KEY)", valueHint: "PATH" },
  "tls-server-name": { type: "string", description: "name in the node's certificate when --target is an IP (env GCACHE_TLS_SERVER_NAME)", valueHint: "NAME" },
  key: { type: "positional", description: "key", required: true },
} as const;

interface Common {
  target?: string | undefined;
  group?: string | undefined;
  timeout?: string | undefined;
  token?: string | undefined;
  "tls-ca"?: string | undefined;
  "tls-cert"?: string | undefined;
  "tls-key"?: string | undefined;
  "tls-server-name"?: string | undefined;
  key: string;
}

function clientOptions(args: Common): ClientOptions {
  const token = args.token ?? process.env.GCACHE_AUTH_TOKEN;
  const caFile = args["tls-ca"] ?? process.env.GCACHE_TLS_CA;
  const certFile = args["tls-cert"] ?? process.env.GCACHE_TLS_CERT;
  const keyFile = args["tls-key"] ?? process.env.GCACHE_TLS_KEY;
  const read = (path: string | undefined) => (path === undefined ? null : readFileSync(path));
  const tls = caFile !== undefined || certFile !== undefined;
  const serverName = args["tls-server-name"] ?? process.env.GCACHE_TLS_SERVER_NAME;
  return {
    ...(serverName === undefined ? {} : { tlsServerName: serverName }),
    ...(token === undefined ? {} : { token }),
    ...(tls ? { credentials: credentials.createSsl(read(caFile), read(keyFile), read(certFile)) } : {}),
  };
}

async function withClient(args: Common, work: (client: GCacheClient, group: string, timeoutMs: number) => Promise<number>): Promise<never> {
  const timeoutMs = parseDuration(args.timeout ?? "5s", "s");
  if (timeoutMs === null) fail(`--timeout: expected a duration such as 500ms or 5s, got ${JSON.stringify(args.timeout)}`);
  let client: GCacheClient;
  try {
    client = new GCacheClient(args.target ?? process.env.GCACHE_TARGET ?? "127.0.0.1:8001", clientOptions(args));
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
  }
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
