// Every bench in turn, then the report: what `bun run bench` runs.
//
// Run:   bun run bench                          (every bench with its own defaults, ~9 minutes on 2 cores)
//        bun run bench --rounds 1               (a quick run, ~2½ minutes: every kind of round once)
//        bun run bench --only http,mustache --duration 2
// Out:   each bench's own output as it runs, its bench/results/NAME.json, bench/results/run.json (the
//        command, and how long each bench took or how it failed), then bench/RESULTS.md and
//        bench/ratios.svg from bench/report.ts. A partial run (--only, --rounds or --duration) writes
//        its report into bench/results/ instead: the committed report and the README keep the last
//        full run's numbers.
//
// Each bench is its own process on this terminal, one after the other: http, pubsub, cluster, redis,
// mustache, startup. A bench that fails is named and the next one
// runs; the report is still written, and the exit code is 1. Ctrl-C stops the running bench (it stops
// its own servers) and the suite after it, with no report: the results of a half run would pass for
// a whole one.
import { join } from "node:path";
import type { Subprocess } from "bun";
import { ROOT } from "./lib/tools.ts";
import { BENCHES, parseFlags, positive, writeResults, type SuiteRun } from "./lib/run.ts";

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

// --- options ---

const flags = parseFlags(
  "usage: bun run bench [--rounds N] [--duration WRK_SECONDS] [--only http,pubsub,cluster,redis,mustache,startup]\n" +
    "--rounds N: every bench's rounds (cluster's and redis's latency and HTTP rounds too); default: each bench's own\n" +
    "--duration S: seconds per wrk run (http and cluster); default: each bench's own",
  ["rounds", "duration", "only"],
);
if (flags.rounds !== undefined) positive(flags.rounds, "rounds", true);
if (flags.duration !== undefined) positive(flags.duration, "duration", true);
const only = flags.only?.split(",").map((s) => s.trim());
for (const name of only ?? []) {
  if (!BENCHES.some((b) => b.name === name)) {
    console.error(
      `bench: --only ${flags.only}: no bench ${JSON.stringify(name)} (${BENCHES.map((b) => b.name).join(", ")})`,
    );
    process.exit(2);
  }
}
const benches = BENCHES.filter((b) => !only || only.includes(b.name));

/** The bench's own flags for what was asked of the suite. */
function argsFor(b: (typeof BENCHES)[number]): string[] {
  const args: string[] = [];
  if (flags.rounds !== undefined) for (const f of b.rounds) args.push(f, flags.rounds);
  if (flags.duration !== undefined && b.duration) args.push(b.duration, flags.duration);
  return args;
}

// --- signals ---

let child: Subprocess | undefined;
let stoppedBy: (typeof SIGNALS)[number] | undefined;
for (const signal of SIGNALS) {
  process.on(signal, () => {
    stoppedBy ??= signal;
    // Ctrl-C has reached the bench already (one process group); once more does no harm, as each bench
    // cleans up once. A signal sent to this process alone reaches the bench only this way.
    child?.kill(signal);
  });
}

// --- run ---

async function runOne(
  b: (typeof BENCHES)[number],
  i: number,
): Promise<SuiteRun["benches"][number]> {
  const cmd = [process.execPath, join("bench", `${b.name}.ts`), ...argsFor(b)];
  console.log(
    `\n=== ${i + 1}/${benches.length} ${b.name}: ${["bun", ...cmd.slice(1)].join(" ")}\n`,
  );
  const t0 = performance.now();
  child = Bun.spawn(cmd, { cwd: ROOT, stdio: ["inherit", "inherit", "inherit"] });
  await child.exited;
  const { exitCode, signalCode } = child;
  child = undefined;
  return {
    name: b.name,
    exitCode,
    signal: signalCode === null ? null : String(signalCode),
    seconds: (performance.now() - t0) / 1000,
  };
}

async function main(): Promise<number> {
  const command =
    `${process.env.npm_lifecycle_event === "bench" ? "bun run bench" : "bun bench/all.ts"} ${process.argv.slice(2).join(" ")}`.trim();
  const started = new Date().toISOString();
  const done: SuiteRun["benches"] = [];
  for (const [i, b] of benches.entries()) {
    if (stoppedBy) break;
    const r = await runOne(b, i);
    done.push(r);
    if (!stoppedBy && r.exitCode !== 0)
      console.error(
        `\nbench: ${b.name} failed (${r.signal ?? `exit ${r.exitCode}`}); going on with the next`,
      );
  }
  if (stoppedBy) {
    console.error(
      `\nbench: ${stoppedBy}, suite stopped after ${done.map((d) => d.name).join(", ")}; no report written (bun bench/report.ts writes one from bench/results/)`,
    );
    return 130;
  }

  writeResults("run", {
    command,
    started,
    finished: new Date().toISOString(),
    benches: done,
  } satisfies SuiteRun);
  console.log("\n=== report\n");
  const partial = only !== undefined || flags.rounds !== undefined || flags.duration !== undefined;
  const reportCmd = [
    process.execPath,
    join("bench", "report.ts"),
    ...(partial ? ["--partial"] : []),
  ];
  const report = Bun.spawn(reportCmd, { cwd: ROOT, stdio: ["inherit", "inherit", "inherit"] });
  const reportCode = await report.exited;

  console.log("");
  for (const d of done)
    console.log(
      `  ${d.name.padEnd(10)} ${d.exitCode === 0 ? "ok    " : "FAILED"} ${d.seconds.toFixed(0).padStart(5)} s`,
    );
  const total = done.reduce((s, d) => s + d.seconds, 0);
  console.log(`  ${"all".padEnd(10)} ${"".padEnd(6)} ${total.toFixed(0).padStart(5)} s`);
  const failed = done.filter((d) => d.exitCode !== 0).map((d) => d.name);
  if (reportCode !== 0) failed.push("report");
  if (failed.length > 0) console.error(`\nbench: failed: ${failed.join(", ")}`);
  return failed.length > 0 ? 1 : 0;
}

process.exit(await main());
