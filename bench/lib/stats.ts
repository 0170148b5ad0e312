// Rounds and their numbers: the rotation of sides, medians and spreads, formatting, and the ratio
// and absolute entries each bench hands to bench/report.ts.

/**
 * `count` rounds, each running every one of `sides` in an order that rotates from round to round,
 * so warm-up and drift favour none; the runs in the order they ran.
 */
export async function inRounds<S, R>(
  count: number,
  sides: readonly S[],
  run: (side: S, round: number) => Promise<R>,
): Promise<R[]> {
  const runs: R[] = [];
  for (let round = 0; round < count; round++) {
    for (let i = 0; i < sides.length; i++)
      runs.push(await run(sides[(i + round) % sides.length]!, round));
  }
  return runs;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The median of a set of rounds and the range around it. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function spread(xs: number[]): Spread {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/** `   !! a; b` to end a result line, or "" when there is nothing to say. */
export const notesText = (notes: string[]) => (notes.length ? `   !! ${notes.join("; ")}` : "");

/** A figure's name as the report and the chart show it: with the direction when lower is better. */
export const nameWithDirection = (name: string, better: "higher" | "lower") =>
  better === "lower" ? `${name} (lower is better)` : name;
/** `1.23`, or `n/a` for a ratio that has no value. */
export const fmtRatio = (x: number | null) => (x === null ? "n/a" : x.toFixed(2));

/** `12,345` — req/s to the unit is plenty; decimals would pretend to a precision wrk lacks. */
export const fmtRps = (n: number) => Math.round(n).toLocaleString("en-US");

// --- entries for the suite's report (bench/report.ts) ---

/**
 * One headline ratio of a bench, as every results file lists it under `ratios`: ours ÷ the baseline,
 * from the median rounds of each side.
 */
export interface Ratio {
  bench: string;
  name: string;
  /** median of ours ÷ median of the baseline: the figure the bench prints */
  ratio: number;
  /** the least and the most of the per-round ratios (ours in round i ÷ the baseline in round i) */
  min: number;
  max: number;
  target?: number;
  better: "higher" | "lower";
  /** one line for a human: what ran, and both medians */
  detail: string;
}

/** A figure that stands alone rather than against a baseline (cross-worker msg/s, p99 µs, bytes per retained message), listed under `absolutes`; its target, if any, is a number. */
export interface Absolute {
  bench: string;
  name: string;
  /** the median round */
  value: number;
  min: number;
  max: number;
  unit: string;
  target?: number;
  better: "higher" | "lower";
  detail: string;
}

interface EntryOptions {
  target?: number;
  /** @default "higher" */
  better?: "higher" | "lower";
  detail: string;
}

/** A Ratio from both sides' figures by round: `ours[i]` and `base[i]` ran in the same round. */
export function ratioEntry(
  bench: string,
  name: string,
  ours: number[],
  base: number[],
  o: EntryOptions,
): Ratio {
  if (ours.length !== base.length || ours.length === 0) {
    throw new Error(`ratioEntry(${bench}, ${name}): ${ours.length} rounds against ${base.length}`);
  }
  // The ratio of medians always lies within the per-round ratios' range (medians are monotone).
  const perRound = spread(ours.map((x, i) => x / base[i]!));
  const ratio = median(ours) / median(base);
  return {
    bench,
    name,
    ratio,
    min: perRound.min,
    max: perRound.max,
    ...targetOf(o),
    better: o.better ?? "higher",
    detail: o.detail,
  };
}

/** An Absolute from a figure's value in each round. */
export function absoluteEntry(
  bench: string,
  name: string,
  values: number[],
  unit: string,
  o: EntryOptions,
): Absolute {
  const s = spread(values);
  return {
    bench,
    name,
    value: s.median,
    min: s.min,
    max: s.max,
    unit,
    ...targetOf(o),
    better: o.better ?? "higher",
    detail: o.detail,
  };
}

const targetOf = (o: EntryOptions) => (o.target === undefined ? {} : { target: o.target });

/** Whether a figure meets its target in the direction that is better; null without a target or a figure. */
export function meetsTarget(
  value: number,
  target: number | undefined,
  better: "higher" | "lower",
): boolean | null {
  if (target === undefined || !Number.isFinite(value)) return null;
  return better === "higher" ? value >= target : value <= target;
}
