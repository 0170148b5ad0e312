// How a process runs itself again: the cluster's workers (supervisor.ts) and the header-size
// re-launch (cli/relaunch.ts), kept apart from both so the re-launch loads no cluster code.

/**
 * This same command again: this runtime, this script and its arguments — or, in a `bun build
 * --compile` executable, the executable itself, which takes every argument as its own (its runtime
 * flags come from $BUN_OPTIONS). `runtimeFlags` keeps bun's own flags (e.g. --max-http-header-size).
 */
export function selfCommand(runtimeFlags: boolean): string[] {
  const compiled = process.argv[1]?.startsWith("/$bunfs/") ?? false;
  if (compiled) return [process.execPath, ...process.argv.slice(2)];
  return [
    process.execPath,
    ...(runtimeFlags ? process.execArgv : []),
    process.argv[1]!,
    ...process.argv.slice(2),
  ];
}
