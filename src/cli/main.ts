/**
 * gcache-node: serve (the default command) or talk to a node (get/set/del).
 */
import { defineCommand, renderUsage, runCommand, runMain, type ArgsDef, type CommandDef } from "citty";
import packageJson from "../../package.json" with { type: "json" };
import { isGCacheError } from "../errors.ts";
import { delCommand, EXIT_ERROR, getCommand, setCommand } from "./client-commands.ts";
import { describeFlag, repeatedFlag, resolveServeConfig, SERVE_FLAGS, UsageError, type ServeFlag } from "./config.ts";
import { startServing, trapSignals } from "./serve.ts";

/** Replaced at build time by the version being built. */
declare const GCACHE_VERSION: string | undefined;
const version = typeof GCACHE_VERSION === "string" ? GCACHE_VERSION : packageJson.version;

const serveArgs = Object.fromEntries(
  (Object.keys(SERVE_FLAGS) as ServeFlag[]).map((flag) => [
    flag,
    { type: "string", description: describeFlag(flag), valueHint: SERVE_FLAGS[flag].valueHint },
  ]),
) as ArgsDef;

const serveCommand = defineCommand({
  meta: { name: "serve", description: "run a cache node (the default command)" },
  args: serveArgs,
  async run({ args, rawArgs }) {
    try {
      rejectUnknownFlags(rawArgs, Object.keys(SERVE_FLAGS));
      const groups = repeatedFlag(rawArgs, "group");
      const config = resolveServeConfig(
        { ...(args as Record<string, string | undefined>), ...(groups.length > 0 ? { group: groups } : {}) },
        process.env,
      );
      const signals = trapSignals();
      signals.attach(await startServing(config, version));
    } catch (error) {
      if (error instanceof UsageError || isGCacheError(error, "ERR_INVALID_OPTION")) {
        process.stderr.write(`error: ${error.message}\n\n${await usageFor(process.stderr, serveCommand)}\n`);
        process.exit(EXIT_ERROR);
      }
      process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    }
  },
});

function rejectUnknownFlags(rawArgs: string[], known: string[]): void {
  for (const arg of rawArgs) {
    if (!arg.startsWith("--") || arg === "--") continue;
    const name = arg.slice(2).split("=")[0]!;
    if (!known.includes(name)) throw new UsageError(`unknown flag --${name}`);
  }
}

// Commands with different argument shapes share one table, hence `any`.
const subCommands: Record<string, CommandDef<any>> = { serve: serveCommand, get: getCommand, set: setCommand, del: delCommand };

const main = defineCommand({
  meta: {
    name: "gcache-node",
    version,
    description: "A gcache node: a distributed read-through cache served over gRPC.",
  },
  // The serve flags are listed here too, so `gcache-node --help` shows what the default command takes.
  args: serveArgs,
  subCommands,
  default: "serve",
});


/** ANSI colour sequences as citty writes them. */
const ANSI_SEQUENCE = /\u001B\[[0-9;]*m/g;

/** The usage of `command` for `stream`: citty's colours only on a terminal, and never with NO_COLOR set. */
async function usageFor(stream: NodeJS.WriteStream, command: CommandDef<any>, parent?: CommandDef<any>): Promise<string> {
  const text = await renderUsage(command, parent);
  const colour = stream.isTTY === true && (process.env.NO_COLOR ?? "") === "";
  return colour ? text : text.replace(ANSI_SEQUENCE, "");
}

/**
 * citty's runMain renders --help; everything else runs here so
 * that usage errors exit with status 2 after a one-line message.
 */
async function run(rawArgs: string[]): Promise<void> {
  if (rawArgs.includes("--version")) {
    console.log(version);
    return;
  }
  if (rawArgs.includes("--help") || rawArgs.includes("-h")) {
    await runMain(main, {
      rawArgs,
      showUsage: async (command, parent) => {
        process.stdout.write(`${await usageFor(process.stdout, command, parent)}\n\n`);
      },
    });
    return;
  }
  const named = rawArgs[0] !== undefined && rawArgs[0] in subCommands ? subCommands[rawArgs[0]]! : null;
  try {
    if (named === null) {
      rejectUnknownFlags(rawArgs, Object.keys(SERVE_FLAGS));
      // The default command straight away: through `main`, citty would parse the serve flags twice.
      await runCommand(serveCommand, { rawArgs });
    } else {
      rejectUnknownFlags(rawArgs.slice(1), Object.keys((named.args ?? {}) as object));
      await runCommand(main, { rawArgs });
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`error: ${message}\n\n${await usageFor(process.stderr, named ?? main)}\n`);
    process.exit(EXIT_ERROR);
  }
}

await run(process.argv.slice(2));
