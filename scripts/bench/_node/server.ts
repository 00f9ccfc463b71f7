/**
 * One cache node for the node benchmark, in its own process.
 *
 *   bun scripts/bench/_node/server.ts --name=n0 [--value-bytes=100]
 *
 * Listens on a free loopback port and prints `READY <address>`; then takes
 * commands on stdin (see commands.ts):
 *   { op: "peers", members: [{ name, address }] }       -> null
 *   { op: "keys", owners: [names], prefix, count }     -> `count` keys `<prefix><i>` owned by those members
 *   { op: "prefill", group, keys, concurrency? }       -> gets every key through the group (fills caches)
 *   { op: "stats", group }                             -> the group's stats
 *   { op: "exit" }
 *
 * Groups (the same on every node):
 *   bench  default hot cache share, every fetched copy admitted; the loader returns `value-bytes` bytes per key
 *   cold   the same loader, hot cache disabled, so a non-owner forwards every get
 */
import { parseArgs } from "node:util";
import { CacheNode } from "../../../src/node.ts";
import type { Loader } from "../../../src/group.ts";
import type { MemberSpec } from "../../../src/cluster/picker.ts";
import { serveCommands, type Command } from "./commands.ts";

const { values: args } = parseArgs({
  options: {
    name: { type: "string" },
    "value-bytes": { type: "string", default: "100" },
  },
});
const name = args.name;
if (name === undefined || name === "") throw new Error("--name is required");
const valueBytes = Number(args["value-bytes"]);
if (!Number.isInteger(valueBytes) || valueBytes < 0) throw new Error(`--value-bytes must be a whole number, got ${args["value-bytes"]}`);

/** Deterministic bytes per key, so a wrong answer would show in a checksum. */
const loader: Loader = (key) => {
  const value = new Uint8Array(valueBytes);
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619);
  value.fill(h & 0xff);
  return value;
};

const node = new CacheNode({
  name,
  host: "127.0.0.1",
  port: 0,
  drainTimeoutMs: 1_000,
  groups: [
    // Every fetched copy is admitted (default: one in ten), so the prefill leaves
    // all of n0's peer-owned keys in its hot cache for workload (b).
    { name: "bench", loader, hotCacheAdmission: 1 },
    { name: "cold", loader, hotCacheShare: 0 },
  ],
});
await node.start();

function groupNamed(command: Command) {
  const group = node.group(String(command.group));
  if (group === undefined) throw new Error(`no group ${String(command.group)}`);
  return group;
}

serveCommands(
  node.address,
  async (command) => {
    switch (command.op) {
      case "peers":
        node.setPeers(command.members as MemberSpec[]);
        return null;
      case "keys": {
        const owners = new Set(command.owners as string[]);
        const prefix = String(command.prefix);
        const count = Number(command.count);
        const keys: string[] = [];
        for (let i = 0; keys.length < count; i++) {
          if (i > count * 1_000) throw new Error(`too few keys owned by ${[...owners].join(",")}`);
          const key = `${prefix}${i}`;
          if (owners.has(node.ownerOf(key))) keys.push(key);
        }
        return keys;
      }
      case "prefill": {
        const group = groupNamed(command);
        const keys = command.keys as string[];
        const concurrency = Number(command.concurrency ?? 64);
        let next = 0;
        let bytes = 0;
        const worker = async () => {
          while (next < keys.length) {
            const key = keys[next++]!;
            bytes += (await group.get(key)).byteLength;
          }
        };
        await Promise.all(Array.from({ length: concurrency }, worker));
        return { keys: keys.length, bytes };
      }
      case "stats":
        return groupNamed(command).stats();
      default:
        throw new Error(`unknown command ${command.op}`);
    }
  },
  () => node.close(),
);
