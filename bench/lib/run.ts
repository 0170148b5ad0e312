// The frame of a bench run: its flags, interrupts and deadline, the list of benches, and where
// results are written.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ROOT } from "./tools.ts";

/** The string flags `names` (and -h/--help, which prints `usage` and exits); unknown flags throw. */
export function parseFlags<N extends string>(
  usage: string,
  names: readonly N[],
): Partial<Record<N, string>> {
  const options = Object.fromEntries(names.map((n) => [n, { type: "string" as const }]));
  const { values } = parseArgs({ options: { ...options, help: { type: "boolean", short: "h" } } });
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  return values as Partial<Record<N, string>>;
}

/** A positive number from a flag (an integer when asked); anything else ends the run with exit 2. */
export function positive(text: string, what: string, integer: boolean): number {
  const n = Number(text);
  if (!(n > 0) || (integer && !Number.isInteger(n))) {
    console.error(
      `bench: --${what} must be a positive ${integer ? "integer" : "number"}, got ${JSON.stringify(text)}`,
    );
    process.exit(2);
  }
  return n;
}

/** On SIGINT/SIGTERM/SIGHUP: say so, run `cleanup`, exit 130. `onSignal` marks the run interrupted. */
export function stopOnSignals(
  what: string,
  cleanup: () => Promise<void>,
  onSignal: () => void,
): void {
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      onSignal();
      console.error(`\nbench: ${signal}, stopping ${what}`);
      cleanup().finally(() => process.exit(130));
    });
  }
}

/**
 * Runs a bench's `main` and then, once, its `cleanup`, which also runs on SIGINT/SIGTERM/SIGHUP (exit
 * 130; `onSignal` is told first) and past `deadlineMs` (exit 1). An error is said, exit code 1.
 */
export async function runBench(
  main: () => Promise<void>,
  o: { cleanup: () => Promise<void>; stopping: string; deadlineMs?: number; onSignal?: () => void },
): Promise<void> {
  let cleaning: Promise<void> | undefined;
  const cleanup = () => (cleaning ??= o.cleanup());
  let interrupted = false;
  stopOnSignals(o.stopping, cleanup, () => {
    interrupted = true;
    o.onSignal?.();
  });
  const deadlineMs = o.deadlineMs;
  const deadline =
    deadlineMs === undefined
      ? undefined
      : setTimeout(() => {
          interrupted = true;
          console.error(`\nbench: still running after ${deadlineMs / 1000} s, giving up`);
          cleanup().finally(() => process.exit(1));
        }, deadlineMs);
  try {
    await main();
  } catch (err) {
    // after an interrupt the error is only the killed wrk, server or client; the signal line said enough
    if (!interrupted) console.error(`bench: ${err instanceof Error ? err.message : err}`);
    process.exitCode = 1;
  } finally {
    clearTimeout(deadline);
    await cleanup();
  }
}

/**
 * The benches in run order, and their own flags for the suite's: every bench takes --rounds, some
 * count more kinds of rounds (latency, HTTP) under flags of their own; --duration is wrk's seconds.
 */
export const BENCHES: { name: string; rounds: string[]; duration?: string }[] = [
  { name: "http", rounds: ["--rounds"], duration: "--duration" },
  { name: "pubsub", rounds: ["--rounds"] },
  {
    name: "cluster",
    rounds: ["--rounds", "--latency-rounds", "--http-rounds"],
    duration: "--duration",
  },
  { name: "redis", rounds: ["--rounds", "--latency-rounds"] },
  { name: "mustache", rounds: ["--rounds"] },
  { name: "startup", rounds: ["--rounds"] },
];

/** Where each bench writes NAME.json (gitignored), and bench/all.ts its run.json. */
export const RESULTS_DIR = join(import.meta.dir, "..", "results");

/** Writes `data` to bench/results/NAME.json; its path from ROOT, for the report's last line. */
export function writeResults(name: string, data: unknown): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}.json`);
  writeFileSync(file, JSON.stringify(data, null, 2) + "\n");
  return file.slice(ROOT.length + 1);
}

/** What bench/all.ts writes to bench/results/run.json for bench/report.ts: the command and how each bench went. */
export interface SuiteRun {
  command: string;
  started: string;
  finished: string;
  benches: { name: string; exitCode: number | null; signal: string | null; seconds: number }[];
}
