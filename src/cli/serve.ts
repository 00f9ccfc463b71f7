/** `gcache-node` (serve): runs one node until SIGTERM/SIGINT, then drains. */
import { readFileSync } from "node:fs";
import { createConsoleLogger } from "../log.ts";
import { CacheNode, type NodeEtcdOptions } from "../node.ts";
import { _HttpGateway } from "../server/http-gateway.ts";
import { UsageError, type EtcdConfig, type ServeConfig } from "./config.ts";
import { originLoader } from "./origin.ts";

export interface RunningNode {
  node: CacheNode;
  gateway: _HttpGateway | null;
  /** Drains and stops; resolves when stopped. */
  stop(reason: string): Promise<void>;
}

export async function startServing(config: ServeConfig, version: string): Promise<RunningNode> {
  const logger = createConsoleLogger({ level: config.logLevel, format: config.logFormat });
  const loader = config.origin === undefined ? undefined : originLoader(config.origin, config.originTimeoutMs);
  const node = new CacheNode({
    ...(config.node === undefined ? {} : { name: config.node }),
    host: config.host,
    port: config.port,
    ...(config.advertise === undefined ? {} : { advertise: config.advertise }),
    ...(config.peers === undefined ? {} : { peers: config.peers }),
    ...(config.etcd === undefined ? {} : { etcd: etcdOptions(config.etcd) }),
    weight: config.weight,
    drainGraceMs: config.drainGraceMs,
    version,
    logger,
    groups: config.groups.map((group) => ({
      name: group.name,
      maxBytes: group.maxBytes,
      store: group.store,
      ttlMs: config.ttlMs,
      maxValueBytes: config.maxValueBytes,
      ...(loader === undefined ? {} : { loader }),
    })),
  });
  const started = performance.now();
  // The gateway comes up first so its address can be published in etcd; /readyz says 503 until the node serves.
  const gateway = config.httpPort === null ? null : new _HttpGateway(node, { host: config.host, port: config.httpPort });
  try {
    await node.start(gateway === null ? {} : { httpAddress: gateway.address });
  } catch (error) {
    await gateway?.close();
    throw error;
  }
  logger.info("serving", {
    version,
    node: node.name,
    address: node.address,
    httpAddress: gateway?.address ?? null,
    groups: config.groups.map((g) => g.name),
    members: node.members().map((m) => m.name),
    startupMs: Math.round(performance.now() - started),
  });
  let stopping: Promise<void> | null = null;
  return {
    node,
    gateway,
    stop(reason) {
      stopping ??= (async () => {
        logger.info("draining", { reason });
        await node.close();
        await gateway?.close();
        logger.info("stopped", { reason });
      })();
      return stopping;
    },
  };
}

/** SIGTERM/SIGINT drain gracefully and exit 0; a second signal exits at once. */
export function exitOnSignals(running: RunningNode): void {
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) process.exit(130);
    signalled = true;
    running.stop(signal).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}

function etcdOptions(config: EtcdConfig): NodeEtcdOptions {
  const read = (flag: string, path: string | undefined) => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (error) {
      throw new UsageError(`--${flag}: cannot read ${path}: ${(error as Error).message}`);
    }
  };
  const cert = read("etcd-cert", config.certFile);
  const key = read("etcd-key", config.keyFile);
  return {
    endpoints: config.endpoints,
    service: config.service,
    leaseTtlSeconds: config.leaseTtlSeconds,
    dialTimeoutMs: config.dialTimeoutMs,
    ...(config.caFile === undefined ? {} : { caFile: config.caFile }),
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
    ...(config.username === undefined ? {} : { username: config.username }),
    ...(config.password === undefined ? {} : { password: config.password }),
  };
}
