// The master's sums of every worker's and thread's reports (SPEC §7a), and their Prometheus text.
// Counts add up; gauges are each thread's latest, summed over the threads still linked (a worker
// that dies drops out at once). A single process folds in its own reports the same way.
import { BUCKETS } from "./counters.ts";
import { takeReport, type Report } from "./report.ts";

/** What the process that serves the metrics knows of the cluster besides the reports. */
export interface ClusterFacts {
  /** worker processes listening now, and how many there should be (a single process: 1 and 1) */
  workers: number;
  slots: number;
  restarts: number;
  hotRestarts: number;
  hotRestartFailures: number;
  /** 1 after a hot restart failed, until one succeeds */
  hotRestartFailed: boolean;
  /** whether every slot listens (and the start is over) */
  ready: boolean;
  /** the Redis engine's state, when one is attached */
  redisConnected?: boolean;
  busBytesIn: number;
  busBytesOut: number;
  role: "master" | "single";
}

const SELF = {};

export class Totals {
  readonly byStatus = new Float64Array(600);
  readonly buckets = new Float64Array(BUCKETS.length + 1);
  seconds = 0;
  published = 0;
  delivered = 0;
  slowCloses = 0;
  /** each linked thread's latest report (its gauges) */
  readonly #latest = new Map<object, Report>();

  add(from: object, r: Report): void {
    for (let i = 0; i + 1 < r.status.length; i += 2) {
      const code = r.status[i]!;
      if (code >= 0 && code < 600) this.byStatus[code]! += r.status[i + 1]!;
    }
    for (let i = 0; i < this.buckets.length; i++) this.buckets[i]! += r.buckets[i] ?? 0;
    this.seconds += r.seconds;
    this.published += r.published;
    this.delivered += r.delivered;
    this.slowCloses += r.slowCloses;
    this.#latest.set(from, r);
  }

  /** A thread's link is gone: its gauges no longer count (its counts stay). */
  drop(from: object): void {
    this.#latest.delete(from);
  }

  /** The Prometheus text of everything, this process's own counts taken first. */
  render(facts: ClusterFacts): string {
    this.add(SELF, takeReport(true));
    const out = new Exposition();
    this.#traffic(out);
    const counter = out.single("counter");
    const gauge = out.single("gauge");
    gauge("iodine_workers", "Worker processes listening.", facts.workers);
    gauge("iodine_worker_slots", "Worker processes the cluster runs when whole.", facts.slots);
    counter(
      "iodine_worker_restarts_total",
      "Workers that died and were started again.",
      facts.restarts,
    );
    counter(
      "iodine_hot_restarts_total",
      "Hot restarts (SIGUSR1) that replaced every worker.",
      facts.hotRestarts,
    );
    counter(
      "iodine_hot_restart_failures_total",
      "Hot restarts stopped by a replacement that failed to start.",
      facts.hotRestartFailures,
    );
    gauge(
      "iodine_hot_restart_failed",
      "1 after a hot restart failed, until one succeeds.",
      facts.hotRestartFailed ? 1 : 0,
    );
    gauge(
      "iodine_ready",
      "1 when every worker listens (what /ready answers 200 for).",
      facts.ready ? 1 : 0,
    );
    if (facts.redisConnected !== undefined)
      gauge(
        "iodine_redis_connected",
        "1 while the Redis engine is connected.",
        facts.redisConnected ? 1 : 0,
      );
    out.metric(
      "iodine_bus_bytes_total",
      "counter",
      "Bytes over the cluster bus, as the master sees them.",
      [
        `iodine_bus_bytes_total{direction="in"} ${facts.busBytesIn}`,
        `iodine_bus_bytes_total{direction="out"} ${facts.busBytesOut}`,
      ],
    );
    const rss: string[] = [];
    for (const [from, r] of this.#latest)
      if (r.rss !== undefined)
        rss.push(
          `iodine_process_resident_memory_bytes{role="${from === SELF ? facts.role : "worker"}",pid="${r.pid}"} ${r.rss}`,
        );
    out.metric(
      "iodine_process_resident_memory_bytes",
      "gauge",
      "Resident memory of each process.",
      rss,
    );
    return out.text();
  }

  /** Requests, connections and pub/sub: what the workers count. */
  #traffic(out: Exposition): void {
    const codes: string[] = [];
    for (let code = 0; code < 600; code++)
      if (this.byStatus[code]! > 0)
        codes.push(`iodine_http_requests_total{code="${code || "other"}"} ${this.byStatus[code]}`);
    out.metric(
      "iodine_http_requests_total",
      "counter",
      "HTTP requests answered, by status code.",
      codes,
    );
    out.metric(
      "iodine_http_request_duration_seconds",
      "histogram",
      "Time from a request to its response (the app's and iodine's part).",
      this.#histogram("iodine_http_request_duration_seconds"),
    );
    const sum = (f: (r: Report) => number) => {
      let n = 0;
      for (const r of this.#latest.values()) n += f(r);
      return n;
    };
    out.metric("iodine_connections", "gauge", "Open connections by kind.", [
      `iodine_connections{kind="websocket"} ${sum((r) => r.websocket)}`,
      `iodine_connections{kind="sse"} ${sum((r) => r.sse)}`,
      `iodine_connections{kind="raw"} ${sum((r) => r.raw)}`,
    ]);
    const counter = out.single("counter");
    counter(
      "iodine_pubsub_published_total",
      "Messages published (each counted once, where it was published).",
      this.published,
    );
    counter(
      "iodine_pubsub_delivered_total",
      "Messages delivered to subscribers (one per subscriber reached).",
      this.delivered,
    );
    counter(
      "iodine_slow_consumer_closes_total",
      "Connections closed for passing their outgoing limit.",
      this.slowCloses,
    );
  }

  #histogram(name: string): string[] {
    const lines: string[] = [];
    let cumulative = 0;
    for (let i = 0; i < BUCKETS.length; i++) {
      cumulative += this.buckets[i]!;
      lines.push(`${name}_bucket{le="${BUCKETS[i]}"} ${cumulative}`);
    }
    cumulative += this.buckets[BUCKETS.length]!;
    lines.push(
      `${name}_bucket{le="+Inf"} ${cumulative}`,
      `${name}_sum ${this.seconds}`,
      `${name}_count ${cumulative}`,
    );
    return lines;
  }
}

/** Prometheus text: HELP and TYPE before each metric's samples. */
class Exposition {
  readonly #lines: string[] = [];

  metric(name: string, type: string, help: string, samples: string[]): void {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples);
  }

  /** A writer of metrics of `type` that have one sample without labels. */
  single(type: "counter" | "gauge"): (name: string, help: string, value: number) => void {
    return (name, help, value) => this.metric(name, type, help, [`${name} ${value}`]);
  }

  text(): string {
    return this.#lines.join("\n") + "\n";
  }
}

/** The one sum of this process (the master's, or a single process's). */
export const totals = new Totals();
