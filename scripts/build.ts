/**
 * Single-file executables of gcache-node.
 *
 *   bun run build        dist/gcache-node for this machine
 *   bun run build:all    dist/gcache-node-<os>-<arch>[.exe] for every release target, each with a .sha256
 *
 * The version comes from package.json, or GCACHE_BUILD_VERSION when set (e.g. a
 * git tag). Executables never autoload .env, bunfig.toml, package.json or
 * tsconfig.json from the directory they run in: a daemon's configuration is
 * its flags and environment, nothing else.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { BunPlugin } from "bun";
import { Service, waitForHttp } from "./bench/_cluster/procs.ts";
import { freePorts } from "./bench/_cluster/util.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const ENTRY = `${ROOT}src/cli/gcache-node.ts`;

const RELEASE_TARGETS = [
  ["bun-linux-x64", "gcache-node-linux-x64"],
  ["bun-linux-arm64", "gcache-node-linux-arm64"],
  ["bun-darwin-x64", "gcache-node-darwin-x64"],
  ["bun-darwin-arm64", "gcache-node-darwin-arm64"],
  ["bun-windows-x64", "gcache-node-windows-x64.exe"],
] as const;

/**
 * etcd3 loads its rpc.proto from disk at import time, by a path that only
 * exists on the build machine. Replace that load with the same definitions,
 * parsed here and inlined as JSON. If etcd3 changes the line, the build fails
 * instead of producing a binary that dies on the first machine it is copied to.
 */
function inlineEtcdProto(): BunPlugin {
  return {
    name: "inline-etcd3-proto",
    setup(build) {
      build.onLoad({ filter: /etcd3[\\/]lib[\\/]connection-pool\.js$/ }, async ({ path }) => {
        const source = readFileSync(path, "utf8");
        const load = "(0, proto_loader_1.loadSync)(`${__dirname}/../proto/rpc.proto`, {";
        if (!source.includes(load)) {
          throw new Error(`${path}: the rpc.proto load this build replaces was not found; update scripts/build.ts for this etcd3 version`);
        }
        const protobuf = (await import(`${ROOT}node_modules/etcd3/node_modules/protobufjs/index.js`)) as typeof import("protobufjs");
        const root = new protobuf.Root();
        root.loadSync(`${ROOT}node_modules/etcd3/proto/rpc.proto`, { keepCase: true });
        const json = JSON.stringify(root.toJSON());
        return { contents: source.replace(load, `(0, proto_loader_1.fromJSON)(${json}, {`), loader: "js" };
      });
    },
  };
}

/**
 * Edits to grpc-js that take work off every start of the executable, each an
 * exact line and what replaces it. If grpc-js changes one of these lines, the
 * build fails rather than quietly doing that work at start again.
 *
 * - grpc-js requires Node modules at the top of files whose code a node
 *   rarely or never runs: zlib for compressed messages, http and url for HTTP
 *   proxies, dns for host names (peers are addressed by IP). The runtime
 *   compiles each such module from source at every start, about 10 ms of
 *   start-up together where page faults are dear (docs/benchmarks.md,
 *   "Modules loaded when first used"). Each of those requires becomes an
 *   object that loads the module on first use.
 * - grpc-js formats every address it binds or resolves for trace lines,
 *   traced or not, and tells an IPv6 host by `net.isIPv6`, whose first call
 *   compiles a large regular expression: 1.4-5 ms at start. A subchannel
 *   address always holds an IP address, and of those exactly the IPv6 ones
 *   contain a colon (docs/benchmarks.md, "Deferred at start-up").
 */
const GRPC_EDITS: Readonly<Record<string, readonly (readonly [string, string])[]>> = {
  "compression-filter.js": [lazyRequire('const zlib = require("zlib");')],
  "server-interceptors.js": [lazyRequire('const zlib = require("zlib");')],
  "http_proxy.js": [lazyRequire('const http = require("http");'), lazyRequire('const url_1 = require("url");')],
  "resolver-dns.js": [lazyRequire('const dns_1 = require("dns");')],
  "subchannel-address.js": [["if ((0, net_1.isIPv6)(address.host)) {", 'if (address.host.includes(":")) {']],
};

function lazyRequire(line: string): readonly [string, string] {
  const [, binding, module] = /^const (\w+) = require\("(\w+)"\);$/.exec(line)!;
  return [line, `let ${binding}$module; const ${binding} = new Proxy({}, { get: (_, name) => (${binding}$module ??= require("${module}"))[name] });`];
}

function grpcStartupEdits(): BunPlugin {
  return {
    name: "grpc-startup-edits",
    setup(build) {
      build.onLoad({ filter: /@grpc[\\/]grpc-js[\\/]build[\\/]src[\\/][\w-]+\.js$/ }, ({ path }) => {
        const edits = GRPC_EDITS[path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1)];
        if (edits === undefined) return undefined;
        let source = readFileSync(path, "utf8");
        for (const [line, replacement] of edits) {
          if (!source.includes(line)) {
            throw new Error(`${path}: the line ${line} this build edits was not found; update scripts/build.ts for this grpc-js version`);
          }
          source = source.replace(line, replacement);
        }
        return { contents: source, loader: "js" };
      });
    },
  };
}

/**
 * protobufjs loads the long package when it can, to decode 64-bit integers as
 * Long objects. Loading it costs the executable 4-5 ms of start-up where page
 * faults are dear (it instantiates a WebAssembly module), and our 64-bit
 * fields (times and durations in ms) fit a double. So our copy of protobufjs
 * finds no long package in the executable and decodes them as numbers, as
 * `int64()` in src/wire/messages.ts expects either way. The copies that
 * grpc's proto-loader and etcd3 bring keep theirs: etcd's 64-bit ids need it.
 */
function protobufWithoutLong(): BunPlugin {
  const ownCopy = resolve(ROOT, "node_modules/protobufjs/src/util/minimal.js");
  return {
    name: "protobuf-without-long",
    setup(build) {
      build.onResolve({ filter: /^long$/ }, ({ importer }) => {
        if (resolve(importer) !== ownCopy) return undefined;
        return { path: "no-long", namespace: "protobuf-without-long" };
      });
      build.onLoad({ filter: /.*/, namespace: "protobuf-without-long" }, () => ({ contents: "module.exports = null;", loader: "js" }));
    },
  };
}

async function buildOne(target: string | undefined, outfile: string, version: string, bytecodeOrder: string | null): Promise<void> {
  const result = await Bun.build({
    entrypoints: [ENTRY],
    compile: {
      ...(target === undefined ? {} : { target: target as Bun.Build.CompileTarget }),
      outfile,
      autoloadDotenv: false,
      autoloadBunfig: false,
      autoloadPackageJson: false,
      autoloadTsconfig: false,
      // The JIT's tier-up thresholds ×32 until the node serves (serve.ts
      // sets them back): start-up code runs once, and compiling it cost more
      // than interpreting it (docs/benchmarks.md, "Where page faults are dear").
      jitPolicy: 32,
      // The bytecode a start runs, placed together (see recordBytecodeOrder).
      bytecodeOrder: bytecodeOrder ?? false,
    },
    // The entry (a few lines that may restart the process with the runtime's
    // settings, runtime-tuning.ts) in a chunk of its own: the process that
    // restarts loads only that, not the whole program (about 20 ms less).
    // The etcd client, loaded only with --etcd, gets a chunk of its own too.
    splitting: true,
    minify: true,
    // Precompiled bytecode: the executable skips parsing its ~10 MB of JavaScript at every start.
    bytecode: true,
    format: "esm",
    sourcemap: "none",
    define: { GCACHE_VERSION: JSON.stringify(version) },
    plugins: [inlineEtcdProto(), grpcStartupEdits(), protobufWithoutLong()],
  });
  if (!result.success) {
    for (const log of result.logs) console.error(log);
    throw new Error(`build for ${target ?? "this machine"} failed`);
  }
}

/**
 * Records which functions a start of `executable` runs, for the runtime's
 * profile-guided bytecode layout: built again with that list, the executable
 * keeps the bytecode a start needs together at its front, and a start touches
 * fewer of its pages (2-4 ms less start-up where page faults are dear;
 * docs/benchmarks.md, "Deferred at start-up"). The recording is one start of
 * a node on loopback up to serving, a write and a read through the gateway,
 * and a drain.
 */
async function recordBytecodeOrder(executable: string, orderFile: string): Promise<void> {
  rmSync(orderFile, { force: true });
  const [port, httpPort] = freePorts(2);
  const node = new Service("probe", [executable, "--node", "build", "--port", String(port), "--http-port", String(httpPort), "--drain-grace", "0s"], {
    env: { ...process.env, GCACHE_RUNTIME_TUNING: "off", BUN_BYTECODE_ORDER_OUT: orderFile },
  });
  const base = `http://127.0.0.1:${httpPort}`;
  try {
    await waitForHttp(`${base}/readyz`, 20_000, node, 10);
    const key = `${base}/v1/groups/default/keys/build`;
    const put = await fetch(key, { method: "PUT", body: "value", signal: AbortSignal.timeout(5_000) });
    const get = await fetch(key, { signal: AbortSignal.timeout(5_000) });
    if (put.status !== 200 || (await get.text()) !== "value") throw new Error(`recording the bytecode order: PUT ${put.status}, GET ${get.status}`);
  } finally {
    await node.stop();
  }
  if (!statSync(orderFile, { throwIfNoEntry: false })?.size) throw new Error("recording the bytecode order: the node wrote no order");
}

function writeChecksum(file: string): string {
  const digest = createHash("sha256").update(readFileSync(file)).digest("hex");
  const name = file.slice(file.lastIndexOf("/") + 1);
  writeFileSync(`${file}.sha256`, `${digest}  ${name}\n`);
  return digest;
}

const packageJson = JSON.parse(readFileSync(`${ROOT}package.json`, "utf8")) as { version: string };
const version = process.env.GCACHE_BUILD_VERSION || packageJson.version;
const dist = `${ROOT}dist`;
mkdirSync(dist, { recursive: true });

// Every build records the order on an executable for this machine first; the
// order applies to every target, whose JavaScript is the same.
const orderFile = `${dist}/.bytecode-order`;
const probe = `${dist}/.gcache-node-probe`;
try {
  await buildOne(undefined, probe, version, null);
  await recordBytecodeOrder(probe, orderFile);
  if (process.argv.includes("--all")) {
    for (const [target, name] of RELEASE_TARGETS) {
      const outfile = `${dist}/${name}`;
      await buildOne(target, outfile, version, orderFile);
      console.log(`${name}  sha256 ${writeChecksum(outfile)}`);
    }
  } else {
    const outfile = `${dist}/gcache-node`;
    await buildOne(undefined, outfile, version, orderFile);
    console.log(`dist/gcache-node ${version}  sha256 ${writeChecksum(outfile)}`);
  }
} finally {
  rmSync(probe, { force: true });
  rmSync(orderFile, { force: true });
}
