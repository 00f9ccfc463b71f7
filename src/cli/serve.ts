/** `gcache-node` (serve): runs one node until SIGTERM/SIGINT, then drains. */
import { readFileSync } from "node:fs";
import type { TlsOptions } from "../auth.ts";
import { createConsoleLogger } from "../log.ts";
import { CacheNode, type NodeEtcdOptions } from "../node.ts";
import { startGcPacer } from "../server/gc-pacer.ts";
import { startIdleCollector } from "../server/idle-collector.ts";
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
  const tls = tlsOptions(config);
  const auth = config.authToken === undefined ? undefined : { token: config.authToken, reads: config.authReads };
  const node = new CacheNode({
    ...(config.node === undefined ? {} : { name: config.node }),
    host: config.host,
    port: config.port,
    ...(config.advertise === undefined ? {} : { advertise: config.advertise }),
    ...(config.peers === undefined ? {} : { peers: config.peers }),
    ...(config.etcd === undefined ? {} : { etcd: etcdOptions(config.etcd) }),
    weight: config.weight,
    ...(tls === undefined ? {} : { tls }),
    ...(auth === undefined ? {} : { auth }),
    drainGraceMs: config.drainGraceMs,
    peerLink: config.peerLink,
    version,
    logger,
    groups: config.groups.map((group) => ({
      name: group.name,
      maxBytes: group.maxBytes,
      store: group.store,
      ttlMs: config.ttlMs,
      hotCacheShare: group.hotCacheShare ?? config.hotCacheShare,
      hotCacheAdmission: config.hotCacheAdmission,
      maxValueBytes: config.maxValueBytes,
      ...(loader === undefined ? {} : { loader }),
    })),
  });
  const started = performance.now();
  // The gateway comes up first so its address can be published in etcd; /readyz says 503 until the node serves.
  const gateway =
    config.httpPort === null
      ? null
      : new _HttpGateway(node, {
          host: config.host,
          port: config.httpPort,
          ...(tls === undefined ? {} : { tls }),
          ...(auth === undefined ? {} : { auth }),
        });
  if (!isLoopback(config.host) && (tls === undefined || auth === undefined)) {
    logger.warn("listening beyond loopback without TLS and an auth token: anyone who can reach this port can read and write", {
      host: config.host,
      tls: tls !== undefined,
      authToken: auth !== undefined,
    });
  }
  try {
    await node.start(gateway === null ? {} : { httpAddress: gateway.address });
  } catch (error) {
    await gateway?.close();
    throw error;
  }
  const pacer = await startGcPacer({ intervalMs: config.gcIntervalMs });
  const idleCollector = await startIdleCollector({ quietMs: config.gcIdleMs });
  logger.info("serving", {
    version,
    node: node.name,
    address: node.address,
    httpAddress: gateway?.address ?? null,
    groups: config.groups.map((g) => g.name),
    members: node.members().map((m) => m.name),
    startupMs: Math.round(performance.now() - started),
    gcIntervalMs: pacer.active ? config.gcIntervalMs : 0,
    gcIdleMs: idleCollector.active ? config.gcIdleMs : 0,
  });
  // The executable starts with the JIT held back (scripts/build.ts); from here on the code that runs is the hot path.
  Bun.unsafe.setJITPolicy?.(1);
  let stopping: Promise<void> | null = null;
  return {
    node,
    gateway,
    stop(reason) {
      stopping ??= (async () => {
        logger.info("draining", { reason });
        pacer.stop();
        idleCollector.stop();
        await node.close();
        await gateway?.close();
        logger.info("stopped", { reason });
      })();
      return stopping;
    },
  };
}

/**
 * SIGTERM/SIGINT drain gracefully and exit 0; a second signal exits at once.
 * Installed before the node starts: a signal that arrives during start-up is
 * held and acted on as soon as the node runs, never lost to the default
 * handler (which would skip the drain and leave the node in etcd).
 */
export function trapSignals(): { attach(running: RunningNode): void } {
  let running: RunningNode | null = null;
  let pending: NodeJS.Signals | null = null;
  let signalled = false;
  const stop = (node: RunningNode, signal: NodeJS.Signals) =>
    node.stop(signal).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) process.exit(130);
    signalled = true;
    if (running === null) pending = signal;
    else void stop(running, signal);
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  return {
    attach(node) {
      running = node;
      if (pending !== null) void stop(node, pending);
    },
  };
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

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

function tlsOptions(config: ServeConfig): TlsOptions | undefined {
  const tls = config.tls;
  if (tls === undefined) return undefined;
  const read = (flag: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new UsageError(`--${flag}: cannot read ${path}: ${(error as Error).message}`);
    }
  };
  return {
    cert: read("tls-cert", tls.certFile),
    key: read("tls-key", tls.keyFile),
    ...(tls.caFile === undefined ? {} : { ca: read("tls-ca", tls.caFile) }),
    clientAuth: tls.clientAuth,
    ...(tls.serverName === undefined ? {} : { serverName: tls.serverName }),
  };
}
