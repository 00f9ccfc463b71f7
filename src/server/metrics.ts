/**
 * Prometheus text exposition of a node's counters: names prefixed `gcache_`,
 * counters ending in `_total`, sizes in `_bytes`, labelled by group and cache,
 * never by key (keys are unbounded).
 */
import type { CacheStats } from "../cache.ts";
import type { GroupStats } from "../group.ts";
import type { CacheNode } from "../node.ts";

type GroupCounter = Exclude<keyof GroupStats, "caches">;

const GROUP_COUNTERS: [GroupCounter, string, string][] = [
  ["gets", "gcache_gets_total", "Gets received, from clients and peers."],
  ["cacheHits", "gcache_hits_total", "Gets answered from the main or hot cache."],
  ["hotHits", "gcache_hot_hits_total", "Gets answered from the hot cache."],
  ["loads", "gcache_loads_total", "Gets that missed both caches."],
  ["loadsDeduped", "gcache_loads_deduped_total", "Loads that ran after concurrent ones for the same key were merged."],
  ["peerLoads", "gcache_peer_loads_total", "Values fetched from the owning peer."],
  ["peerErrors", "gcache_peer_errors_total", "Failed fetches from peers."],
  ["localLoads", "gcache_local_loads_total", "Successful loader calls on this node."],
  ["localLoadErrors", "gcache_local_load_errors_total", "Failed loader calls on this node."],
  ["fallbackLoads", "gcache_fallback_loads_total", "Local loads made because the owning peer could not answer."],
  ["serverRequests", "gcache_server_requests_total", "Gets that arrived from peers."],
  ["writesRerouted", "gcache_writes_rerouted_total", "Writes sent on to a new owner after the unreachable one left the ring."],
];

const CACHE_SERIES: [keyof CacheStats, string, "counter" | "gauge", string][] = [
  ["bytes", "gcache_cache_bytes", "gauge", "Key and value bytes held."],
  ["items", "gcache_cache_items", "gauge", "Entries held."],
  ["gets", "gcache_cache_gets_total", "counter", "Lookups in the cache."],
  ["hits", "gcache_cache_hits_total", "counter", "Lookups that found a live entry."],
  ["evictions", "gcache_cache_evictions_total", "counter", "Entries pushed out by the size bounds."],
  ["expirations", "gcache_cache_expirations_total", "counter", "Entries dropped because their TTL ran out."],
];

function label(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

export function renderMetrics(node: CacheNode): string {
  const stats = Object.entries(node.stats());
  const lines: string[] = [];
  const header = (name: string, type: string, help: string) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  for (const [field, name, help] of GROUP_COUNTERS) {
    header(name, "counter", help);
    for (const [group, s] of stats) lines.push(`${name}{group="${label(group)}"} ${s[field]}`);
  }
  for (const [field, name, type, help] of CACHE_SERIES) {
    header(name, type, help);
    for (const [group, s] of stats) {
      for (const cache of ["main", "hot"] as const) {
        lines.push(`${name}{group="${label(group)}",cache="${cache}"} ${s.caches[cache][field]}`);
      }
    }
  }
  const members = node.members();
  header("gcache_ring_members", "gauge", "Members on this node's ring.");
  lines.push(`gcache_ring_members ${members.length}`);
  header("gcache_ring_member", "gauge", "1 for each member on this node's ring.");
  for (const member of members) lines.push(`gcache_ring_member{member="${label(member.name)}"} 1`);
  header("gcache_peer_streams_open", "gauge", "BatchGetStreams and WriteStreams other nodes hold open to this one, on gRPC or the peer link (peers batch their gets and writes on them).");
  lines.push(`gcache_peer_streams_open ${node._openBatchStreams}`);
  header("gcache_peer_link_streams_open", "gauge", "Of those, the ones on the peer link; fewer than all while peers cannot reach the link port (see the warning they log).");
  lines.push(`gcache_peer_link_streams_open ${node._openLinkStreams}`);
  header("gcache_serving", "gauge", "1 while the node serves, 0 while it drains.");
  lines.push(`gcache_serving ${node.serving ? 1 : 0}`);
  return `${lines.join("\n")}\n`;
}
