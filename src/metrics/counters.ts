// What this thread counts for `--metrics` (SPEC §7a), in plain numbers: no allocation and no
// message per request. Once a second (report.ts) a worker ships what changed to the master, which
// sums every worker and thread (totals.ts); a single process reads its own counters.
import type { Server } from "bun";

/** Upper bounds of the request-duration histogram, in seconds (Prometheus' `le`). */
export const BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** Counters since the last report (a report takes them and starts again from zero). */
export const counts = {
  /** requests answered, by status code (index = status, 100–599) */
  byStatus: new Float64Array(600),
  /** requests per duration bucket (the last one: over the largest bound) */
  buckets: new Float64Array(BUCKETS.length + 1),
  seconds: 0,
  published: 0,
  delivered: 0,
  slowCloses: 0,
};

/** True once `--metrics` asked for it: the request path counts only then. */
export let counting = false;
export function startCounting(): void {
  counting = true;
}

/** One answered request: its status and how long the app took (ms). */
export function countRequest(status: number, ms: number): void {
  counts.byStatus[status >= 100 && status < 600 ? status : 0]!++;
  const s = ms / 1000;
  counts.seconds += s;
  let i = 0;
  while (i < BUCKETS.length && s > BUCKETS[i]!) i++;
  counts.buckets[i]!++;
}

/** HTTP servers listening in this thread: Bun counts their open WebSockets. */
export const httpServers = new Set<Server<unknown>>();
