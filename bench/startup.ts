// Start-up time: from spawning the process to the first answered request, for the ways iodine is
// started (`bun run iodine`, `bun cli.ts`, the `bun run build` executable; one process and -w 2),
// against a bare `Bun.serve` script, the least a Bun server can do. `bun cli.ts` runs the bytecode
// build of the CLI (dist/cli.js, as `bun install` leaves it: the bench builds it first); the way
// `bun src/cli/main.ts` is the same CLI from its TypeScript sources, what cli.ts falls back to
// while a source is newer than the build.
//
// Run:   bun bench/startup.ts                   (15 rounds of every way, ~10 s)
//        bun bench/startup.ts --rounds 5
// Out:   a table on stdout, and every run in bench/results/startup.json.
//
// Each run picks a free port, spawns the command with `-p PORT examples/hello.ts` and polls the port
// with `fetch` every millisecond until a 200 comes back; that instant is the start-up time. Then it
// reads how long the `listening on` line took (with -w 2 the master prints it once every worker
// listens), stops the process with SIGTERM and waits for its exit. The ways take turns within a
// round, the first one rotating from round to round; the score is the median run.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildCli, buildExecutable } from "../scripts/build.ts";
import { ROOT } from "./lib/tools.ts";
import { freePort } from "./lib/processes.ts";
import { machineFacts, printMachine } from "./lib/machine.ts";
import { inRounds, ratioEntry, spread } from "./lib/stats.ts";
import { parseFlags, positive, runBench, writeResults } from "./lib/run.ts";

const flags = parseFlags("usage: bun bench/startup.ts [--rounds N (15)]", ["rounds"]);
const rounds = positive(flags.rounds ?? process.env.BENCH_ROUNDS ?? "15", "rounds", true);

/** A bare Bun.serve on $PORT: the floor every way is compared with. */
const BASELINE = `Bun.serve({ port: Number(process.env.PORT), fetch: () => new Response("Hello World!") });
console.error("listening on http://127.0.0.1:" + process.env.PORT);`;

interface Way {
  name: string;
  cmd: (port: number) => string[];
}

interface Run {
  way: string;
  firstMs: number;
  listeningMs: number | null;
}

let tmp: string | undefined;

async function main(): Promise<void> {
  const facts = machineFacts();
  printMachine(facts, `bun ${Bun.version}`);
  tmp = mkdtempSync(join(tmpdir(), "iodine-bench-startup-"));
  const exe = await buildExecutable(join(tmp, "iodine"));
  await buildCli();
  const app = join(ROOT, "examples", "hello.ts");
  const cli = [process.execPath, join(ROOT, "cli.ts")];
  const ways: Way[] = [
    { name: "Bun.serve script", cmd: () => [process.execPath, "-e", BASELINE] },
    { name: "bun run iodine", cmd: (p) => [process.execPath, "run", "iodine", "-p", `${p}`, app] },
    { name: "bun cli.ts", cmd: (p) => [...cli, "-p", `${p}`, app] },
    {
      name: "bun src/cli/main.ts",
      cmd: (p) => [process.execPath, join(ROOT, "src/cli/main.ts"), "-p", `${p}`, app],
    },
    { name: "executable", cmd: (p) => [exe, "-p", `${p}`, app] },
    { name: "bun cli.ts -w 2", cmd: (p) => [...cli, "-p", `${p}`, "-w", "2", app] },
    { name: "executable -w 2", cmd: (p) => [exe, "-p", `${p}`, "-w", "2", app] },
  ];
  console.log(`${rounds} rounds; each run: spawn → first 200 from GET / on a fresh port\n`);

  const runs = await inRounds(rounds, ways, async (way) => time(way));
  const rows = ways.map((w) => {
    const mine = runs.filter((r) => r.way === w.name);
    const listening = mine.map((r) => r.listeningMs).filter((x): x is number => x !== null);
    return {
      way: w.name,
      command: w
        .cmd(0)
        .map((a) =>
          a
            .replace(ROOT + "/", "")
            .replace(process.execPath, "bun")
            .replace(exe, "dist/iodine"),
        )
        .join(" "),
      first: spread(mine.map((r) => r.firstMs)),
      listening: listening.length ? spread(listening) : null,
      runs: mine.map((r) => r.firstMs),
    };
  });

  const base = rows[0]!.first.median;
  console.log(
    `${"way".padEnd(20)}${"first request ms".padStart(17)}   ${"min–max".padEnd(13)}${"listening line ms".padStart(18)}   × Bun.serve`,
  );
  console.log("-".repeat(84));
  for (const r of rows) {
    const listening = r.listening ? r.listening.median.toFixed(1) : "—";
    console.log(
      `${r.way.padEnd(20)}${r.first.median.toFixed(1).padStart(17)}   ${`${r.first.min.toFixed(0)}–${r.first.max.toFixed(0)}`.padEnd(13)}` +
        `${listening.padStart(18)}   ${(r.first.median / base).toFixed(2)}`,
    );
  }
  console.log("");

  // Each way against the bare script of the same round.
  const baseRuns = rows[0]!.runs;
  const ratios = rows.slice(1).map((r) =>
    ratioEntry("startup", `start-up, ${r.way}`, r.runs, baseRuns, {
      better: "lower",
      // The plain start users run (issue 21): within twice a bare Bun.serve script's.
      ...(r.way === "bun cli.ts" ? { target: 2 } : {}),
      detail: `spawn → first answered request: ${r.first.median.toFixed(1)} ms vs ${base.toFixed(1)} ms for a bare Bun.serve script`,
    }),
  );
  const settings = { rounds, app: "examples/hello.ts" };
  console.log(
    `results: ${writeResults("startup", { machine: facts, settings, ways: rows, ratios })}`,
  );
}

/** package.json's build script, writing to `out`. */

async function time(way: Way): Promise<Run> {
  const port = freePort();
  const t0 = performance.now();
  const proc = Bun.spawn(way.cmd(port), {
    cwd: ROOT,
    env: { ...process.env, PORT: `${port}`, NO_COLOR: "1" },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  let listeningMs: number | null = null;
  let stderr = "";
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) {
      stderr += decoder.decode(chunk, { stream: true });
      if (listeningMs === null && stderr.includes("listening on"))
        listeningMs = performance.now() - t0;
    }
  })();
  const url = `http://127.0.0.1:${port}/`;
  let firstMs = 0;
  try {
    for (;;) {
      if (proc.exitCode !== null)
        throw new Error(`${way.name} exited with ${proc.exitCode} before serving:\n${stderr}`);
      if (performance.now() - t0 > 10_000)
        throw new Error(`${way.name} did not serve within 10 s:\n${stderr}`);
      const ok = await fetch(url).then(
        async (res) => (await res.text()) === "Hello World!" && res.status === 200,
        () => false,
      );
      if (ok) {
        firstMs = performance.now() - t0;
        break;
      }
      await Bun.sleep(1);
    }
    // With -w 2 the line comes once the second worker listens too: give it a moment.
    for (let i = 0; i < 200 && listeningMs === null; i++) await Bun.sleep(5);
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
    await reading;
  }
  return { way: way.name, firstMs, listeningMs };
}

await runBench(main, {
  stopping: "the start-up bench",
  deadlineMs: 10 * 60_000,
  cleanup: async () => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  },
});
