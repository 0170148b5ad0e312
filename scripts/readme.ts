// Regenerates the README's generated blocks from their sources, so the README cannot drift from
// the code: the CLI option table from src/options.ts (the table `--help` is made from), and the
// benchmark tables from bench/RESULTS.md (which `bun run bench` writes, and then runs this).
// test/readme.test.ts fails when a block is stale and names this script.
//
// Run:   bun run readme          (rewrites README.md in place; prints what changed)
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { markdownOptionTable } from "../src/options.ts";

const ROOT = resolve(import.meta.dir, "..");
export const README = join(ROOT, "README.md");
const RESULTS = join(ROOT, "bench", "RESULTS.md");

/** Each generated block: its name in the `<!-- NAME:begin -->` / `<!-- NAME:end -->` markers, and its text. */
export function generatedBlocks(): Record<string, string> {
  return { options: markdownOptionTable(), bench: benchTables(readFileSync(RESULTS, "utf8")) };
}

/**
 * The README's view of bench/RESULTS.md: when, where and on which Bun it ran, the chart, the table
 * of ratios and the one of absolute numbers (the command and per-bench times stay in RESULTS.md).
 */
export function benchTables(results: string): string {
  const facts = results.split("\n").filter((line) => /^- \*\*(Date|Machine|Bun):\*\*/.test(line));
  const chart = results.indexOf("![ratios](ratios.svg)");
  if (facts.length !== 3 || chart === -1) throw new Error("bench/RESULTS.md lacks its date, machine, Bun lines or its chart");
  const rest = results
    .slice(chart)
    .replace("![ratios](ratios.svg)", "![ratios](bench/ratios.svg)")
    .replace(/^## (.+)$/gm, "**$1**")
    .trimEnd();
  return [...facts, "", rest].join("\n");
}

/** The text between a block's markers, or undefined when the README lacks them. */
export function blockOf(readme: string, name: string): string | undefined {
  const m = new RegExp(`<!-- ${name}:begin[^>]*-->\\n([\\s\\S]*?)\\n<!-- ${name}:end -->`).exec(readme);
  return m?.[1];
}

/** The README with every block replaced by its generated text. */
export function regenerate(readme: string): string {
  let out = readme;
  for (const [name, text] of Object.entries(generatedBlocks())) {
    if (blockOf(out, name) === undefined) throw new Error(`README.md has no <!-- ${name}:begin --> … <!-- ${name}:end --> block`);
    out = out.replace(
      new RegExp(`(<!-- ${name}:begin[^>]*-->\\n)[\\s\\S]*?(\\n<!-- ${name}:end -->)`),
      (_m, begin: string, end: string) => begin + text + end,
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
