// The bar chart in bench/RESULTS.md: one bar per ratio, hand-written SVG (no dependency).
//
// Run:   not on its own; bench/report.ts calls ratioChart() and writes bench/ratios.svg.
// Out:   an SVG document on a white background, so its labels read on GitHub's light and dark themes.
//
// A bar runs from 1.0 (level with the baseline, the dashed line) to the median ratio, on a log scale:
// ½× and 2× sit equally far from 1.0, and start-up's several × do not flatten the ratios near 1.
// The whisker spans the per-round min–max; a black tick marks the target. Green: meets its target,
// red: misses it, blue: no target.
import { fmtRatio, meetsTarget, nameWithDirection, type Ratio } from "./lib/stats.ts";

const FONT = `font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"`;
const COLOR = {
  pass: "#1a7f37",
  miss: "#cf222e",
  none: "#0969da",
  ink: "#1f2328",
  muted: "#57606a",
  grid: "#d8dee4",
};
/** a rough width of one 12 px character, to size the label column (SVG cannot measure text for us) */
const CHAR_PX = 6.8;
const PAD = 16;
const PLOT_PX = 420;
const VALUE_PX = 56;
const TITLE_PX = 58;
const HEAD_PX = 26;
const ROW_PX = 22;
const AXIS_PX = 36;
/** where the scale may end, snapped outwards */
const ENDS = [
  0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 6, 8, 10, 15, 20, 30, 50, 100,
];
/** axis labels, the roundest first: 1 and the powers of two, then the others where there is room */
const TICKS = [
  1, 2, 0.5, 4, 0.25, 8, 16, 0.125, 32, 64, 1.5, 0.75, 1.25, 3, 6, 10, 0.1, 20, 50, 100, 0.2, 0.05,
];
const MIN_TICK_GAP_PX = 30;

/** The SVG for `ratios`, in their order, with a heading row for each bench. */
export function ratioChart(ratios: Ratio[]): string {
  const labels = ratios.map(label);
  const labelPx = Math.ceil(Math.max(180, ...labels.map((l) => l.length * CHAR_PX)) + PAD);
  const plotX = PAD + labelPx;
  const scale = logScale(ratios, plotX);
  const out: string[] = [];
  let y = TITLE_PX;
  let bench: string | undefined;
  ratios.forEach((r, i) => {
    if (r.bench !== bench) {
      bench = r.bench;
      out.push(text(PAD, y + 17, r.bench, `font-weight="600" fill="${COLOR.ink}"`));
      y += HEAD_PX;
    }
    out.push(row(r, labels[i]!, plotX, y, scale));
    y += ROW_PX;
  });
  const plotTop = TITLE_PX - 6;
  const plotBottom = y + 4;
  const width = plotX + PLOT_PX + VALUE_PX + PAD;
  const height = plotBottom + AXIS_PX;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<rect width="${width}" height="${height}" rx="6" fill="#ffffff" stroke="${COLOR.grid}"/>`,
    text(
      PAD,
      22,
      "ours ÷ baseline: median round (bar), per-round min–max (whisker), target (black tick)",
      `font-size="13" font-weight="600" fill="${COLOR.ink}"`,
    ),
    text(
      PAD,
      40,
      "log scale; right of the dashed 1.0 line: ours is higher. Green: meets its target, red: misses, blue: no target",
      `fill="${COLOR.muted}"`,
    ),
    ...axis(scale, plotTop, plotBottom),
    ...out,
    ratios.length === 0
      ? text(
          PAD,
          TITLE_PX + 16,
          "no results with ratios in bench/results/",
          `fill="${COLOR.muted}"`,
        )
      : "",
    "</svg>",
    "",
  ]
    .filter((line) => line !== "")
    .join("\n");
}

// --- parts ---

interface Scale {
  x: (v: number) => number;
  lo: number;
  hi: number;
}

/** From the smallest to the largest figure any row shows, snapped out to axis labels, 1.0 always inside. */
function logScale(ratios: Ratio[], plotX: number): Scale {
  const figures = ratios
    .flatMap((r) => [r.ratio, r.min, r.max, ...(r.target === undefined ? [] : [r.target])])
    .filter((v) => Number.isFinite(v) && v > 0);
  const lo = [...ENDS].reverse().find((t) => t <= Math.min(0.8, ...figures) / 1.05) ?? ENDS[0]!;
  const hi = ENDS.find((t) => t >= Math.max(1.25, ...figures) * 1.05) ?? ENDS[ENDS.length - 1]!;
  const span = Math.log(hi) - Math.log(lo);
  const clamp = (v: number) => Math.min(hi, Math.max(lo, v));
  return { lo, hi, x: (v) => plotX + ((Math.log(clamp(v)) - Math.log(lo)) / span) * PLOT_PX };
}

/** Grid lines and labels at the ticks that fit (the roundest first), and the dashed line at 1.0. */
function axis(s: Scale, top: number, bottom: number): string[] {
  const kept: number[] = [];
  for (const t of TICKS) {
    if (t >= s.lo && t <= s.hi && kept.every((k) => Math.abs(s.x(k) - s.x(t)) >= MIN_TICK_GAP_PX))
      kept.push(t);
  }
  const out: string[] = [];
  for (const t of kept.sort((a, b) => a - b)) {
    const x = s.x(t);
    out.push(line(x, top, x, bottom, `stroke="${COLOR.grid}"`));
    out.push(text(x, bottom + 16, `${t}`, `text-anchor="middle" fill="${COLOR.muted}"`));
  }
  const one = s.x(1);
  out.push(line(one, top, one, bottom, `stroke="${COLOR.ink}" stroke-dasharray="4 3"`));
  return out;
}

function row(r: Ratio, name: string, plotX: number, y: number, s: Scale): string {
  const mid = y + ROW_PX / 2;
  const parts = [text(plotX - 10, mid + 4, name, `text-anchor="end" fill="${COLOR.ink}"`)];
  const valueX = plotX + PLOT_PX + VALUE_PX;
  if (!Number.isFinite(r.ratio))
    return [...parts, text(valueX, mid + 4, "n/a", `text-anchor="end" fill="${COLOR.muted}"`)].join(
      "\n",
    );
  const verdict = meetsTarget(r.ratio, r.target, r.better);
  const fill = verdict === null ? COLOR.none : verdict ? COLOR.pass : COLOR.miss;
  const [a, b] = [s.x(1), s.x(r.ratio)].sort((p, q) => p - q) as [number, number];
  // a ratio of exactly 1.0 still shows a sliver
  parts.push(
    `<rect x="${px(a)}" y="${px(mid - 6)}" width="${px(Math.max(2, b - a))}" height="12" fill="${fill}" fill-opacity="0.85"/>`,
  );
  if (Number.isFinite(r.min) && Number.isFinite(r.max)) {
    const [x0, x1] = [s.x(r.min), s.x(r.max)];
    const ink = `stroke="${COLOR.ink}" stroke-width="1.2"`;
    parts.push(
      line(x0, mid, x1, mid, ink),
      line(x0, mid - 4, x0, mid + 4, ink),
      line(x1, mid - 4, x1, mid + 4, ink),
    );
  }
  if (r.target !== undefined)
    parts.push(
      line(
        s.x(r.target),
        mid - 9,
        s.x(r.target),
        mid + 9,
        `stroke="${COLOR.ink}" stroke-width="2.5"`,
      ),
    );
  parts.push(
    text(valueX, mid + 4, fmtRatio(r.ratio), `text-anchor="end" font-weight="600" fill="${fill}"`),
  );
  return parts.join("\n");
}

const label = (r: Ratio) => nameWithDirection(r.name, r.better);

// --- SVG text ---

const px = (n: number) => n.toFixed(1);
const line = (x1: number, y1: number, x2: number, y2: number, attrs: string) =>
  `<line x1="${px(x1)}" y1="${px(y1)}" x2="${px(x2)}" y2="${px(y2)}" ${attrs}/>`;
const text = (x: number, y: number, body: string, attrs: string) =>
  `<text x="${px(x)}" y="${px(y)}" ${attrs}>${escapeXml(body)}</text>`;
const escapeXml = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
