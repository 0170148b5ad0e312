// The suite's report: bench/RESULTS.md and its chart bench/ratios.svg, from the results the benches wrote.
//
// Run:   bun bench/report.ts             (bun run bench runs it after the benches)
//        bun bench/report.ts --partial   (after a partial run: the report goes to bench/results/)
// Out:   bench/RESULTS.md — date, machine, Bun, the command, a table of every ratio (median, min–max,
//        target, ✓/✗) and one of the absolute figures (cross-worker msg/s, p99 µs, bytes per retained
//        history message), with their targets where they have one — and bench/ratios.svg;
//        then README.md's bench block is regenerated from RESULTS.md (scripts/readme.ts). With
//        --partial, RESULTS.md and ratios.svg are written in bench/results/ and the README is left
//        alone, so a quick look never replaces the numbers of a full run.
//
// It reads every bench/results/*.json with a `ratios` list (see Ratio in bench/lib/stats.ts), so a bench
// added later needs no change here. bench/results/run.json, written by bench/all.ts, gives the command,
// the run order and which benches failed; a results file older than that run is left out and named,
// so a failed bench never shows the numbers of an earlier run. Nothing depends on the clock: the
// same results give the same two files.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { README, regenerate } from "../scripts/readme.ts";
import { ratioChart } from "./chart.ts";
import { ROOT } from "./lib/tools.ts";
import { machineFacts } from "./lib/machine.ts";
import {
  fmtRatio,
  fmtRps,
  meetsTarget,
  nameWithDirection,
  type Absolute,
  type Ratio,
} from "./lib/stats.ts";
import { BENCHES, RESULTS_DIR, type SuiteRun } from "./lib/run.ts";

const partial = process.argv.includes("--partial");
const OUT_DIR = partial ? RESULTS_DIR : import.meta.dir;
const MD_FILE = join(OUT_DIR, "RESULTS.md");
const SVG_FILE = join(OUT_DIR, "ratios.svg");

type Machine = Partial<ReturnType<typeof machineFacts>>;

interface BenchResults {
  name: string;
  machine: Machine;
  ratios: Ratio[];
  absolutes: Absolute[];
}

// --- reading ---

function readRun(): SuiteRun | null {
  const file = join(RESULTS_DIR, "run.json");
  return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as SuiteRun) : null;
}

/** Every results file with a `ratios` list, in run order; JSON turns NaN into null, so back it goes. */
function readResults(order: string[]): BenchResults[] {
  const files = existsSync(RESULTS_DIR)
    ? readdirSync(RESULTS_DIR).filter((f) => f.endsWith(".json") && f !== "run.json")
    : [];
  const all = files.flatMap((file): BenchResults[] => {
    const data = JSON.parse(readFileSync(join(RESULTS_DIR, file), "utf8")) as Record<
      string,
      unknown
    >;
    if (!Array.isArray(data.ratios)) return [];
    const absolutes = Array.isArray(data.absolutes) ? (data.absolutes as Absolute[]) : [];
    return [
      {
        name: file.slice(0, -".json".length),
        machine: (data.machine ?? {}) as Machine,
        ratios: (data.ratios as Ratio[]).map(numbers),
        absolutes: absolutes.map(numbers),
      },
    ];
  });
  const rank = (name: string) => (order.includes(name) ? order.indexOf(name) : order.length);
  return all.sort((a, b) => rank(a.name) - rank(b.name) || a.name.localeCompare(b.name));
}

function numbers<T extends Ratio | Absolute>(e: T): T {
  const n = (x: unknown) => (typeof x === "number" ? x : NaN);
  return "ratio" in e
    ? { ...e, ratio: n(e.ratio), min: n(e.min), max: n(e.max) }
    : { ...e, value: n(e.value), min: n(e.min), max: n(e.max) };
}

// --- writing ---

function markdown(results: BenchResults[], run: SuiteRun | null, stale: BenchResults[]): string {
  const ratios = results.flatMap((r) => r.ratios);
  const absolutes = results.flatMap((r) => r.absolutes);
  const out = [
    "# Benchmark results",
    "",
    "<!-- written by bench/report.ts from bench/results/*.json; `bun run bench` runs every bench, then the report -->",
    "",
    `- **Date:** ${dateLine(results, run)}`,
    `- **Machine:** ${machineLine(results[0]?.machine ?? {})}`,
    `- **Bun:** ${results[0]?.machine.bun ?? "?"}`,
    `- **Command:** ${run ? "`" + run.command + "`" : "none recorded (no bench/results/run.json): the benches were run one by one"}`,
    ...(run ? [`- **Benches:** ${run.benches.map(benchLine).join(", ")}`] : []),
    ...otherMachines(results).map((line) => `- !! ${line}`),
    ...(stale.length
      ? [
          `- !! left out, from before this run: ${stale.map((s) => `${s.name}.json (${fmtDate(s.machine.date)})`).join(", ")}`,
        ]
      : []),
    "",
    "Each ratio is ours ÷ the baseline, from the median round of each side; min–max is the range of the",
    "ratios of single rounds (ours and the baseline ran in the same round). ✓/✗ is against the target, where",
    "there is one, in the direction that is better (≥ unless it says ≤).",
    "",
    "![ratios](ratios.svg)",
    "",
    "| bench | what | ratio | min–max | target | ✓/✗ |",
    "|---|---|--:|--:|--:|:-:|",
    ...ratios.map((r) =>
      tableRow(
        r.bench,
        r.name,
        r.detail,
        fmtRatio(r.ratio),
        `${fmtRatio(r.min)}–${fmtRatio(r.max)}`,
        r.target,
        fmtRatio,
        r.better,
        r.ratio,
      ),
    ),
  ];
  if (absolutes.length > 0) {
    out.push(
      "",
      "## Absolute numbers",
      "",
      "Figures that stand alone rather than against a baseline, with a target where there is one: the median round, and the range over the rounds.",
      "",
      "| bench | what | value | min–max | target | ✓/✗ |",
      "|---|---|--:|--:|--:|:-:|",
      ...absolutes.map((a) => {
        const f = (x: number) => `${fmtValue(x)} ${a.unit}`;
        return tableRow(
          a.bench,
          a.name,
          a.detail,
          f(a.value),
          `${fmtValue(a.min)}–${f(a.max)}`,
          a.target,
          f,
          a.better,
          a.value,
        );
      }),
    );
  }
  return out.join("\n") + "\n";
}

function tableRow(
  bench: string,
  name: string,
  detail: string,
  value: string,
  range: string,
  target: number | undefined,
  fmt: (x: number) => string,
  better: "higher" | "lower",
  figure: number,
): string {
  const verdict = meetsTarget(figure, target, better);
  const goal = target === undefined ? "—" : `${better === "higher" ? "≥" : "≤"} ${fmt(target)}`;
  const what = nameWithDirection(name, better);
  const cells = [
    bench,
    `${cell(what)}<br><sub>${cell(detail)}</sub>`,
    value,
    range,
    goal,
    verdict === null ? "—" : verdict ? "✓" : "✗",
  ];
  return `| ${cells.join(" | ")} |`;
}

// --- lines ---

/** From the run's start (run.json's, else the first bench's) to the start of the last bench. */
function dateLine(results: BenchResults[], run: SuiteRun | null): string {
  const dates = results
    .map((r) => r.machine.date)
    .filter((d): d is string => typeof d === "string")
    .sort();
  const start = run?.started ?? dates[0];
  const last = dates[dates.length - 1];
  if (start === undefined) return "?";
  if (last === undefined || fmtDate(last) === fmtDate(start)) return fmtDate(start);
  // the same day is said once
  const end =
    last.slice(0, 10) === start.slice(0, 10) ? `${last.slice(11, 16)} UTC` : fmtDate(last);
  return `${fmtDate(start).replace(" UTC", "")} – ${end} (the last bench's start)`;
}

function machineLine(m: Machine): string {
  const parts = [`${m.cores ?? "?"} cores`, m.cpu ?? "unknown CPU", `Linux ${m.kernel ?? "?"}`];
  if (typeof m.ramBytes === "number") parts.push(`${(m.ramBytes / 2 ** 30).toFixed(1)} GiB RAM`);
  return parts.join(", ");
}

/** Results that came from another machine or Bun than the first one's. */
function otherMachines(results: BenchResults[]): string[] {
  const first = results[0]?.machine;
  if (!first) return [];
  const key = (m: Machine) => `${m.cores} cores, ${m.cpu}, Linux ${m.kernel}, Bun ${m.bun}`;
  return results
    .filter((r) => key(r.machine) !== key(first))
    .map((r) => `${r.name} ran on ${key(r.machine)}`);
}

function benchLine(b: SuiteRun["benches"][number]): string {
  const took = fmtSeconds(b.seconds);
  if (b.exitCode === 0) return `${b.name} ${took}`;
  return `**${b.name} failed** (${b.signal ?? `exit ${b.exitCode}`} after ${took})`;
}

const fmtDate = (iso: string | undefined) =>
  iso === undefined ? "?" : `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
const fmtSeconds = (s: number) =>
  s < 60 ? `${Math.round(s)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
/** Large figures to the unit with separators, small ones to 3 significant digits. */
const fmtValue = (x: number) =>
  !Number.isFinite(x) ? "n/a" : Math.abs(x) >= 100 ? fmtRps(x) : x.toPrecision(3);
/** A table cell's text: a `|` would end the cell. */
const cell = (s: string) => s.replace(/\|/g, "\\|");

// --- main ---

const run = readRun();
const found = readResults([
  ...new Set([...(run?.benches.map((b) => b.name) ?? []), ...BENCHES.map((b) => b.name)]),
]);
const isStale = (r: BenchResults) => run !== null && (r.machine.date ?? "") < run.started;
const results = found.filter((r) => !isStale(r));
writeFileSync(MD_FILE, markdown(results, run, found.filter(isStale)));
writeFileSync(SVG_FILE, ratioChart(results.flatMap((r) => r.ratios)));
const count = results.reduce((n, r) => n + r.ratios.length, 0);
const rel = (f: string) => f.slice(ROOT.length + 1);
console.log(
  `report: ${count} ratios from ${results.map((r) => r.name).join(", ") || "no results"} → ${rel(MD_FILE)}, ${rel(SVG_FILE)}`,
);
// The README shows the same tables (its bench block, from RESULTS.md): those of full runs only.
if (partial) {
  console.log(
    "report: a partial run; bench/RESULTS.md and README.md keep the last full run's numbers",
  );
  process.exit(0);
}
const readme = readFileSync(README, "utf8");
const updated = regenerate(readme);
if (updated !== readme) writeFileSync(README, updated);
console.log(
  `report: ${updated === readme ? "README.md already showed these results" : "README.md's bench tables rewritten"}`,
);
