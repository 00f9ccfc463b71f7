// Loads the compiled library (lib/, from `npm run build:lib`) in Node.js and runs a
// two-node cluster over loopback: the library must work for Node services, not only Bun.
import { CacheNode, GCacheClient } from "../lib/index.js";

const encode = (text) => new TextEncoder().encode(text);
const decode = (bytes) => new TextDecoder().decode(bytes);
const TOKEN = "smoke-test-token-0123456789";
const nodes = ["A", "B"].map(
  (name) => new CacheNode({ name, port: 0, auth: { token: TOKEN }, groups: [{ name: "g", loader: async (key) => encode(`loaded:${key}`) }] }),
);
const clients = [];
let failed = false;
const check = (what, actual, expected) => {
  const ok = actual === expected;
  failed ||= !ok;
  console.log(`${ok ? "ok" : "FAILED"} ${what}: ${actual}${ok ? "" : ` (expected ${expected})`}`);
};
try {
  await Promise.all(nodes.map((node) => node.start()));
  const members = nodes.map((node) => ({ name: node.name, address: node.address }));
  for (const node of nodes) node.setPeers(members);
  clients.push(...nodes.map((node) => new GCacheClient(node.address, { token: TOKEN })));
  const withoutToken = new GCacheClient(nodes[0].address);
  clients.push(withoutToken);
  const refused = await withoutToken.set("g", "x", encode("no token")).then(() => "stored", (error) => error.code);
  check("set without the token", refused, "ERR_UNAUTHENTICATED");
  for (const key of ["x", "y", "z"]) check(`get ${key} via A`, decode(await clients[0].get("g", key)), `loaded:${key}`);
  await clients[0].set("g", "x", encode("stored"));
  check("get x via B after set via A", decode(await clients[1].get("g", "x")), "stored");
  check("Node.js version", typeof process.versions.node, "string");
} catch (error) {
  failed = true;
  console.log(`FAILED ${error instanceof Error ? error.stack : error}`);
} finally {
  for (const client of clients) client.close();
  await Promise.all(nodes.map((node) => node.close()));
}
process.exit(failed ? 1 : 0);
