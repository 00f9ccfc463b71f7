/**
 * The runtime's settings for a serving node: which processes restart to get
 * them, with what environment, and that a failed restart only leaves the
 * defaults. The restart itself (same process, settings in its environment) is
 * checked on the compiled binary in test/e2e/binary.test.ts.
 */
import { expect, test } from "bun:test";
import { _restartTunedIfNeeded, _tunedEnvironment, RUNTIME_TUNING } from "../../src/cli/runtime-tuning.ts";

const serving = { platform: "linux", compiled: true, args: ["--port", "8002", "--node", "B"], env: { HOME: "/home/op" } };

test("the executable's serve restarts with every setting it lacks, the environment otherwise kept, and marked", () => {
  expect(_tunedEnvironment(serving)).toEqual({ HOME: "/home/op", ...RUNTIME_TUNING, GCACHE_RUNTIME_TUNED: "1" });
  for (const args of [[], ["serve"], ["serve", "--port=1"], ["--port=1", "serve"]]) {
    expect({ args, restarts: _tunedEnvironment({ ...serving, args }) !== null }).toEqual({ args, restarts: true });
  }
  // An operator's own value stays; only what is missing is added.
  const own = _tunedEnvironment({ ...serving, env: { MIMALLOC_PURGE_DELAY: "0" } });
  expect(own).toEqual({ ...RUNTIME_TUNING, MIMALLOC_PURGE_DELAY: "0", GCACHE_RUNTIME_TUNED: "1" });
});

test("nothing restarts but the compiled executable serving on Linux, once, unless switched off or already set", () => {
  const cases: [string, Parameters<typeof _tunedEnvironment>[0]][] = [
    ["macOS", { ...serving, platform: "darwin" }],
    ["from source", { ...serving, compiled: false }],
    ["get", { ...serving, args: ["get", "k"] }],
    ["set", { ...serving, args: ["set", "k", "v"] }],
    ["del", { ...serving, args: ["del", "k"] }],
    ["help", { ...serving, args: ["--help"] }],
    ["serve help", { ...serving, args: ["serve", "-h"] }],
    ["version", { ...serving, args: ["--version"] }],
    ["restarted already", { ...serving, env: { GCACHE_RUNTIME_TUNED: "1" } }],
    ["switched off", { ...serving, env: { GCACHE_RUNTIME_TUNING: "off" } }],
    ["all set", { ...serving, env: { ...RUNTIME_TUNING } }],
  ];
  expect(cases.filter(([, target]) => _tunedEnvironment(target) !== null).map(([name]) => name)).toEqual([]);
});

test("the restart runs the same executable with the same arguments; a failed one leaves the process serving untuned", () => {
  const calls: [string, string[], Record<string, string>][] = [];
  const execve = (file: string, args: string[], env: Record<string, string>): never => {
    calls.push([file, args, env]);
    throw new Error("ENOENT");
  };
  _restartTunedIfNeeded({ ...serving, execPath: "/opt/gcache/gcache-node", execve });
  expect(calls).toEqual([["/opt/gcache/gcache-node", ["/opt/gcache/gcache-node", "--port", "8002", "--node", "B"], _tunedEnvironment(serving)!]]);
  _restartTunedIfNeeded({ ...serving, env: { GCACHE_RUNTIME_TUNING: "off" }, execPath: "/opt/gcache/gcache-node", execve });
  _restartTunedIfNeeded({ ...serving, execPath: "/opt/gcache/gcache-node", execve: undefined });
  expect(calls.length).toBe(1);
});
