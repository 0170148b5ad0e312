// A thread's metrics as the master sums them (SPEC §7a): the counts since the last report, and the
// gauges as they are now. A worker's threads send one every REPORT_MS over the bus (a CTL frame:
// JSON once a second, never per request); the master and a single process take their own directly.
import { openConnections } from "../connections/connection.ts";
import { BUCKETS, counts, httpServers } from "./counters.ts";

export const REPORT_MS = 1000;

/** One thread's report. Counts are since the previous report; gauges are absolute. */
export interface Report {
  /** [status, n, status, n, …] for the statuses seen */
  status: number[];
  buckets: number[];
  seconds: number;
  published: number;
  delivered: number;
  slowCloses: number;
  websocket: number;
  sse: number;
  raw: number;
  /** the process's resident memory (a process's main thread only) */
  rss?: number;
  pid: number;
}

/** Takes this thread's counts (starting them again from zero) and reads its gauges. */
export function takeReport(withRss: boolean): Report {
  const status: number[] = [];
  const byStatus = counts.byStatus;
  for (let code = 0; code < byStatus.length; code++) {
    if (byStatus[code] === 0) continue;
    status.push(code, byStatus[code]!);
    byStatus[code] = 0;
  }
  const report: Report = {
    status,
    buckets: Array.from(counts.buckets),
    seconds: counts.seconds,
    published: counts.published,
    delivered: counts.delivered,
    slowCloses: counts.slowCloses,
    ...connectionsNow(),
    pid: process.pid,
  };
  if (withRss) report.rss = process.memoryUsage.rss();
  counts.buckets.fill(0);
  counts.seconds = counts.published = counts.delivered = counts.slowCloses = 0;
  return report;
}

/** Open connections by kind: WebSockets as Bun counts them (an app's own too), iodine's streams and raw ones. */
function connectionsNow(): { websocket: number; sse: number; raw: number } {
  let websocket = 0;
  for (const server of httpServers) websocket += server.pendingWebSockets;
  let sse = 0;
  let raw = 0;
  for (const c of openConnections) {
    if (c.protocol === "sse") sse++;
    else if (c.protocol === "raw") raw++;
  }
  return { websocket, sse, raw };
}

/** Checks a report that came over the bus (a worker's): undefined when it is not one. */
export function asReport(x: unknown): Report | undefined {
  if (typeof x !== "object" || x === null) return undefined;
  const r = x as Record<string, unknown>;
  const numbers = (a: unknown): a is number[] =>
    Array.isArray(a) && a.every((n) => typeof n === "number");
  const fields = [
    "seconds",
    "published",
    "delivered",
    "slowCloses",
    "websocket",
    "sse",
    "raw",
    "pid",
  ];
  if (!numbers(r.status) || !numbers(r.buckets) || r.buckets.length !== BUCKETS.length + 1)
    return undefined;
  if (!fields.every((f) => typeof r[f] === "number")) return undefined;
  if (r.rss !== undefined && typeof r.rss !== "number") return undefined;
  return x as Report;
}
