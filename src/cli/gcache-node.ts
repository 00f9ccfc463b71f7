/**
 * The executable's entry. The runtime's settings come first, since only a new
 * process reads them (see runtime-tuning.ts); the CLI is loaded after, so a
 * restart costs no more than the runtime's own start.
 */
import { _restartTunedIfNeeded } from "./runtime-tuning.ts";

_restartTunedIfNeeded({
  platform: process.platform,
  compiled: Bun.main.startsWith("/$bunfs/"),
  execPath: process.execPath,
  args: process.argv.slice(2),
  env: process.env,
  execve: process.execve,
});
await import("./main.ts");
