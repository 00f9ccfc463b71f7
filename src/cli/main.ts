import { defineCommand, runMain } from "citty";
import packageJson from "../../package.json" with { type: "json" };

const main = defineCommand({
  meta: {
    name: "gcache-node",
    version: packageJson.version,
    description: "A gcache node: a distributed read-through cache served over gRPC.",
  },
  run() {
    console.log(`gcache-node ${packageJson.version}`);
    console.log(
      "The serving node is not built yet: this release ships the cache library (LRU and LRU-2 stores, " +
        "Cache, SingleFlight, consistent-hash ring). Groups, gRPC peers, etcd discovery and the " +
        "single-file executable come next.",
    );
  },
});

await runMain(main);
