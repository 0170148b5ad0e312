// Mustache rendering: a cached Iodine.Mustache instance against `mustache.render`, in this process.
//
// Run:   bun bench/mustache.ts                     (5 rounds × 1 s per side, ~11 s in all)
//        bun bench/mustache.ts --rounds 3 --seconds 0.5
// Out:   a table on stdout, and every round in bench/results/mustache.json (its `ratios`: Iodine.Mustache ÷
//        mustache.render, for bench/report.ts).
//
// The page: a header partial, a list of 50 products (escaped names with `<`, `&` and quotes, a tags
// section, an in-stock conditional with its inverted section), a footer partial. Iodine reads the
// template and partials from files once; `mustache.render(template, data, partials)` gets the same
// strings on every call and finds its parsed tokens in the package's own cache, as an app using it
// directly would. Both must produce the same bytes before anything is measured.
//
// Within a round the sides take turns in slices of 20 renders, each timed on its own, so a burst
// of load from elsewhere on the machine lands on both; the side that goes first rotates from round
// to round. The score is the median round.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mustache from "mustache";
import { Mustache } from "../src/mustache.ts";
import { machineFacts, printMachine } from "./lib/machine.ts";
import { fmtRatio, fmtRps, ratioEntry, spread } from "./lib/stats.ts";
import { parseFlags, positive, runBench, writeResults } from "./lib/run.ts";

const TARGET = 1.0;

// --- options ---

const flags = parseFlags("usage: bun bench/mustache.ts [--rounds N (5)] [--seconds PER_RUN (1)]", [
  "rounds",
  "seconds",
]);
const rounds = positive(flags.rounds ?? process.env.BENCH_ROUNDS ?? "5", "rounds", true);
const seconds = positive(flags.seconds ?? "1", "seconds", false);
const warmupSeconds = Math.min(0.5, seconds);

// --- the page ---

const PAGE = `<!doctype html>
<html>
{{> header}}
<body>
  <h1>{{title}}</h1>
  {{#user}}<p class="hello">Signed in as {{name}} ({{email}})</p>{{/user}}
  {{^user}}<p><a href="/login">Sign in</a></p>{{/user}}
  <ul class="products">
  {{#products}}
    <li id="p{{id}}">
      <h2>{{name}}</h2>
      <p>{{description}}</p>
      <span class="price">{{price}}</span>
      {{#inStock}}<button data-id="{{id}}">Add to cart</button>{{/inStock}}
      {{^inStock}}<em>Sold out</em>{{/inStock}}
      <ul class="tags">{{#tags}}<li>{{.}}</li>{{/tags}}</ul>
    </li>
  {{/products}}
  </ul>
  {{> footer}}
</body>
</html>
`;
const HEADER = `<head>
  <meta charset="utf-8">
  <title>{{title}} · {{site}}</title>
  <link rel="stylesheet" href="/style.css">
</head>
`;
const FOOTER = `<footer>&copy; {{year}} {{site}} — {{products.length}} products</footer>
`;

const data = {
  title: `Tools & "Things" <new>`,
  site: "iodine shop",
  year: 2025,
  user: { name: "Ada <admin>", email: "ada@example.com" },
  products: Array.from({ length: 50 }, (_, i) => ({
    id: i + 1,
    name: `Widget #${i + 1} <${i % 3 ? "small" : "large"}> & "co"`,
    description: `A widget that does thing ${i} and it's rather good at it; 5 > 3 & 2 < 4.`,
    price: `$${(9.99 + i).toFixed(2)}`,
    inStock: i % 4 !== 0,
    tags: ["tools", i % 2 ? "odd" : "even", `batch-${i % 5}`],
  })),
};

// --- run ---

type Side = "iodine" | "mustache";
const LABEL: Record<Side, string> = { iodine: "Iodine.Mustache", mustache: "mustache.render" };
let tmp: string | undefined;

async function main(): Promise<void> {
  const facts = machineFacts();
  printMachine(
    facts,
    `bun ${facts.bun}, mustache ${mustache.version}`,
    `date: ${facts.date}, load average ${facts.loadAvg1m.toFixed(2)}`,
  );
  console.log(
    `${rounds} rounds × ${seconds} s per side, ${warmupSeconds} s warm-up per side, 50-item page\n`,
  );

  tmp = mkdtempSync(join(tmpdir(), "iodine-bench-mustache-"));
  writeFileSync(join(tmp, "page.mustache"), PAGE);
  writeFileSync(join(tmp, "header.mustache"), HEADER);
  writeFileSync(join(tmp, "footer.mustache"), FOOTER);
  const page = new Mustache({ file: join(tmp, "page.mustache") });
  const partials = { header: HEADER, footer: FOOTER };
  const render: Record<Side, () => string> = {
    iodine: () => page.render(data),
    mustache: () => mustache.render(PAGE, data, partials),
  };

  // Equal work: a side that rendered less (a missing partial, unescaped fields) would look faster.
  const expected = render.mustache();
  if (render.iodine() !== expected)
    throw new Error("Iodine.Mustache and mustache.render disagree on the page");
  if (!expected.includes("&lt;small&gt; &amp; &quot;co&quot;") || !expected.includes("<head>")) {
    throw new Error("the page is not escaped or lacks its header partial");
  }
  console.log(`page: ${expected.length.toLocaleString("en-US")} characters\n`);

  const sides: Side[] = ["iodine", "mustache"];
  measure(
    sides.map((s) => render[s]),
    warmupSeconds,
  );
  const runs = new Map<Side, number[]>(sides.map((s) => [s, []]));
  for (let round = 0; round < rounds; round++) {
    const order = sides.map((_, i) => sides[(i + round) % sides.length]!);
    const rates = measure(
      order.map((s) => render[s]),
      seconds,
    );
    order.forEach((side, i) => {
      const rate = rates[i]!;
      runs.get(side)!.push(rate);
      console.log(
        `  round ${round + 1}  ${LABEL[side].padEnd(16)} ${fmtRps(rate).padStart(9)} renders/s  ${(1e6 / rate).toFixed(1).padStart(6)} µs/render`,
      );
    });
  }

  const rows = sides.map((side) => ({
    side: LABEL[side],
    ...spread(runs.get(side)!),
    rounds: runs.get(side)!,
  }));
  const ratio = rows[0]!.median / rows[1]!.median;
  const verdict = ratio >= TARGET ? "PASS" : "MISS";

  console.log("");
  console.log(
    `${"renderer".padEnd(18)}${"median renders/s".padStart(17)}   ${"min–max".padEnd(19)}${"µs/render".padStart(10)}`,
  );
  console.log("-".repeat(64));
  for (const r of rows) {
    console.log(
      `${r.side.padEnd(18)}${fmtRps(r.median).padStart(17)}   ${`${fmtRps(r.min)}–${fmtRps(r.max)}`.padEnd(19)}${(1e6 / r.median).toFixed(1).padStart(10)}`,
    );
  }
  console.log(
    `${"".padEnd(18)}Iodine.Mustache ÷ mustache.render ${fmtRatio(ratio)}   target ≥ ${TARGET.toFixed(2)}: ${verdict}`,
  );
  console.log("");

  const settings = {
    rounds,
    secondsPerRun: seconds,
    warmupSeconds,
    products: data.products.length,
    pageChars: expected.length,
  };
  const detail = `${data.products.length}-item page with partials: ${fmtRps(rows[0]!.median)} vs ${fmtRps(rows[1]!.median)} renders/s`;
  const ratios = [
    ratioEntry(
      "mustache",
      `${LABEL.iodine} ÷ ${LABEL.mustache}`,
      runs.get("iodine")!,
      runs.get("mustache")!,
      { target: TARGET, detail },
    ),
  ];
  console.log(
    `results: ${writeResults("mustache", { machine: facts, settings, renderers: rows, ratio, target: TARGET, verdict, ratios })}`,
  );
}

/**
 * Renders with each of `renders` in turn, 20 at a time, until each has had `secs` seconds; renders
 * per second for each. Output lengths are summed so that no render can be optimised away.
 */
function measure(renders: (() => string)[], secs: number): number[] {
  const time = renders.map(() => 0);
  const count = renders.map(() => 0);
  let chars = 0;
  const end = performance.now() + renders.length * secs * 1000;
  while (performance.now() < end) {
    renders.forEach((render, i) => {
      const start = performance.now();
      for (let n = 0; n < 20; n++) chars += render().length;
      time[i]! += performance.now() - start;
      count[i]! += 20;
    });
  }
  if (chars === 0) throw new Error("rendered nothing");
  return count.map((n, i) => n / (time[i]! / 1000));
}

await runBench(main, {
  cleanup: async () => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  },
  stopping: "the renders",
});
