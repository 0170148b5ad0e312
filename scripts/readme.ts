// Regenerates the README's generated blocks from their sources, so the README cannot drift from
// the code: the CLI option table from src/cli/options.ts (the table `--help` is made from), and the
// benchmark and start-up tables from bench/RESULTS.md (which `bun run bench` writes, and then runs this).
// test/readme.test.ts fails when a block is stale and names this script.
//
// Run:   bun run readme          (rewrites README.md in place; prints what changed)
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { markdownOptionTable } from "../src/cli/options.ts";

const ROOT = resolve(import.meta.dir, "..");
export const README = join(ROOT, "README.md");
const RESULTS = join(ROOT, "bench", "RESULTS.md");

/** Each generated block: its name in the `<!-- NAME:begin -->` / `<!-- NAME:end -->` markers, and its text. */
export function generatedBlocks(): Record<string, string> {
  const results = readFileSync(RESULTS, "utf8");
  return {
    options: markdownOptionTable(),
    bench: benchTables(results),
    startup: startupTable(results),
  };
}

/**
 * The Deployment section's start-up table: bench/startup.ts's rows of bench/RESULTS.md (each way of
 * starting examples/hello.ts, its median time to the first answered request, and that ÷ a bare
 * Bun.serve script), then when, on which Bun and where they were measured.
 */
export function startupTable(results: string): string {
  const row =
    /^\| startup \| start-up, (.+?) \(lower is better\)<br><sub>spawn → first answered request: ([\d.]+) ms vs ([\d.]+) ms for a bare Bun\.serve script<\/sub> \| ([\d.]+) \|/gm;
  const rows = [...results.matchAll(row)];
  if (rows.length === 0) throw new Error("bench/RESULTS.md has no start-up rows");
  const fact = (name: string) =>
    new RegExp(`^- \\*\\*${name}:\\*\\* (.+)$`, "m").exec(results)?.[1] ?? "?";
  const command = (way: string) =>
    `\`${way.replace(/^executable/, "dist/iodine")} examples/hello.ts\``;
  return [
    `| started as (\`dist/iodine\`: the executable) | first answered request | ÷ a bare \`Bun.serve\` script (${rows[0]![3]} ms) |`,
    "|---|--:|--:|",
    ...rows.map((m) => `| ${command(m[1]!)} | ${m[2]} ms | ${Number(m[4]).toFixed(1)} |`),
    "",
    `Measured ${/\d{4}-\d\d-\d\d \d\d:\d\d/.exec(fact("Date"))?.[0] ?? "?"} UTC (Bun ${fact("Bun")}; ${fact("Machine")}).`,
  ].join("\n");
}

/**
 * The README's view of bench/RESULTS.md: when, where and on which Bun it ran, the chart, the table
 * of ratios and the one of absolute numbers (the command and per-bench times stay in RESULTS.md).
 */
export function benchTables(results: string): string {
  const facts = results.split("\n").filter((line) => /^- \*\*(Date|Machine|Bun):\*\*/.test(line));
  const chart = results.indexOf("![ratios](ratios.svg)");
  if (facts.length !== 3 || chart === -1)
    throw new Error("bench/RESULTS.md lacks its date, machine, Bun lines or its chart");
  const rest = results
    .slice(chart)
    .replace("![ratios](ratios.svg)", "![ratios](bench/ratios.svg)")
    .replace(/^## (.+)$/gm, "**$1**")
    .trimEnd();
  return [...facts, "", rest].join("\n");
}

/** A block: its begin marker, its text and its end marker, as three groups. */
const blockPattern = (name: string) =>
  new RegExp(`(<!-- ${name}:begin[^>]*-->\\n)([\\s\\S]*?)(\\n<!-- ${name}:end -->)`);

/** The text between a block's markers, or undefined when the README lacks them. */
export function blockOf(readme: string, name: string): string | undefined {
  return blockPattern(name).exec(readme)?.[2];
}

/** The README with every block replaced by its generated text. */
export function regenerate(readme: string): string {
  let out = readme;
  for (const [name, text] of Object.entries(generatedBlocks())) {
    if (blockOf(out, name) === undefined)
      throw new Error(`README.md has no <!-- ${name}:begin --> … <!-- ${name}:end --> block`);
    out = out.replace(
      blockPattern(name),
      (_m, begin: string, _old: string, end: string) => begin + text + end,
    );
  }
  return out;
}

if (import.meta.main) {
  const before = readFileSync(README, "utf8");
  const after = regenerate(before);
  if (after === before) console.log("README.md is up to date");
  else {
    writeFileSync(README, after);
    console.log("README.md: generated blocks rewritten");
  }
}
