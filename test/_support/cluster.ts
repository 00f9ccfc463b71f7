/** In-process clusters over real gRPC on loopback, for tests. Every test stops what it starts. */
import { GCacheClient } from "../../src/client.ts";
import type { GroupOptions } from "../../src/group.ts";
import { CacheNode, type NodeOptions } from "../../src/node.ts";

export interface TestCluster {
  nodes: CacheNode[];
  clients: GCacheClient[];
  /** Node by ring name. */
  byName(name: string): CacheNode;
  /** The node that owns `key`, and one that does not. */
  ownerAndOther(key: string): { owner: CacheNode; other: CacheNode };
  close(): Promise<void>;
}

export const text = (value: Uint8Array) => new TextDecoder().decode(value);
export const bytes = (value: string) => new TextEncoder().encode(value);

/**
 * Starts `names.length` nodes on free loopback ports, each with the groups
 * `groups(name)` returns, all knowing each other, plus one client per node.
 */
export async function startCluster(
  names: string[],
  groups: (name: string) => GroupOptions[],
  nodeOptions: Partial<NodeOptions> = {},
): Promise<TestCluster> {
  const nodes = names.map((name) => new CacheNode({ name, port: 0, groups: groups(name), ...nodeOptions }));
  const clients: GCacheClient[] = [];
  const close = async () => {
    for (const client of clients) client.close();
    await Promise.all(nodes.map((node) => node.close()));
  };
  try {
    await Promise.all(nodes.map((node) => node.start()));
    const members = nodes.map((node) => ({ name: node.name, address: node.address }));
    for (const node of nodes) node.setPeers(members);
    for (const node of nodes) clients.push(new GCacheClient(node.address));
  } catch (error) {
    await close();
    throw error;
  }
  const byName = (name: string) => {
    const node = nodes.find((n) => n.name === name);
    if (node === undefined) throw new Error(`no node ${name}`);
    return node;
  };
  return {
    nodes,
    clients,
    byName,
    ownerAndOther(key) {
      const owner = byName(nodes[0]!.ownerOf(key));
      const other = nodes.find((n) => n !== owner)!;
      return { owner, other };
    },
    close,
  };
}

/** A key owned by the given node name. */
export function keyOwnedBy(node: CacheNode, name: string, prefix = "key"): string {
  for (let i = 0; i < 100_000; i++) {
    const key = `${prefix}-${i}`;
    if (node.ownerOf(key) === name) return key;
  }
  throw new Error(`no key owned by ${name}`);
}
