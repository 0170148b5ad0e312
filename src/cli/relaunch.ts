// The header-size re-launch: Bun's largest header block is a runtime flag
// (`--max-http-header-size`, 16 KiB by default) that Bun.serve has no option for, so a
// `--max-header` Bun is not already running with means running the same command again with it.
import { CliError } from "../errors.ts";
import { selfCommand } from "../cluster/self-command.ts";

/**
 * When this process runs with another header limit than `bytes`, run the same command again with
 * the flag (through $BUN_OPTIONS, which the compiled executable honours too), pass signals through,
 * and exit with the child's code. Returns true when it did.
 */
export function relaunchForHeaderLimit(bytes: number): boolean {
  const maxHeaderSize = bunHeaderLimit();
  if (maxHeaderSize === bytes) return false;
  if (process.env.IODINE_RELAUNCHED === "1") {
    throw new CliError(
      `cannot set Bun's maximum header size to ${bytes} bytes (it is ${maxHeaderSize})`,
    );
  }
  // Without bun's own flags: the header size comes from $BUN_OPTIONS, not a flag given before.
  const cmd = selfCommand(false);
  const bunOptions = `${process.env.BUN_OPTIONS ?? ""} --max-http-header-size=${bytes}`.trim();
  const child = Bun.spawn(cmd, {
    env: { ...process.env, BUN_OPTIONS: bunOptions, IODINE_RELAUNCHED: "1" },
    stdio: ["inherit", "inherit", "inherit"],
  });
  for (const sig of ["SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP"] as const) {
    process.on(sig, () => child.kill(sig));
  }
  child.exited.then((code) => process.exit(code ?? 1));
  return true;
}

/** When this is the re-launched child and its parent is killed, it must not linger. */
export function leaveWhenOrphaned(): void {
  if (process.env.IODINE_RELAUNCHED !== "1") return;
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(1);
  }, 1000).unref();
}

/**
 * Bun's largest header block when no flag sets it (test/cli.test.ts checks it against node:http,
 * whose loading would cost about a third of iodine's start-up if asked here).
 */
export const BUN_DEFAULT_HEADER_LIMIT = 16 * 1024;

/**
 * The running Bun's largest header block. Given once in Bun's own flags (the command line,
 * $BUN_OPTIONS or an executable's embedded flags all show in `process.execArgv`), that is the value;
 * not given, Bun's default; given more than once, node:http says which one won.
 */
export function bunHeaderLimit(): number {
  const given: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith("--max-http-header-size=")) given.push(a.slice(a.indexOf("=") + 1));
    else if (a === "--max-http-header-size" && i + 1 < argv.length) given.push(argv[++i]!);
  }
  if (given.length === 1 && /^\d+$/.test(given[0]!)) return Number(given[0]);
  if (given.length === 0) return BUN_DEFAULT_HEADER_LIMIT;
  return (require("node:http") as typeof import("node:http")).maxHeaderSize;
}
