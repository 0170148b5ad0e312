// `--metrics` (SPEC §7a): the master serves /metrics, /health and /ready on a port of its own,
// summing every worker; a single process serves its own. The text is parsed with an npm
// Prometheus parser we did not write (parse-prometheus-text-format).
import { describe, expect, test } from "bun:test";
import parse from "parse-prometheus-text-format";
import {
  CLI,
  fixture,
  freePort,
  openStream,
  runCli,
  startCli,
  startCommand,
  waitUntil,
  ws,
  type CliProcess,
} from "./harness.ts";
import { WsClient } from "./ws.ts";

const APP = fixture("metrics-app.ts");
const NO_REDIS = { REDIS_URL: "", IODINE_REDIS_URL: "" };
const METRICS_LINE = /metrics on (http:\/\/\S+)\/metrics/;
/** the app's HTTP listener (the raw service's line may come first) */
const HTTP = { env: NO_REDIS, listening: /listening on (http:\/\/\S+)/ };

/** The metrics base URL a server printed. */
async function metricsOf(srv: CliProcess): Promise<string> {
  return (await srv.waitFor(METRICS_LINE, 5000))[1]!;
}

/** One scrape, parsed: `value(name, labels?)` reads a counter or gauge (0 when absent). */
async function scrape(base: string) {
  const res = await fetch(`${base}/metrics`);
  expect(res.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
  const families = parse(await res.text());
  const value = (name: string, labels: Record<string, string> = {}) => {
    const family = families.find((f) => f.name === name);
    const sample = family?.metrics.find((m) =>
      Object.entries(labels).every(([k, v]) => m.labels?.[k] === v),
    );
    return Number(sample?.value ?? 0);
  };
  return { families, value };
}

/** Scrapes until `check` holds (workers report once a second). */
async function scrapeUntil(
  base: string,
  what: string,
  check: (s: Awaited<ReturnType<typeof scrape>>) => boolean,
  ms = 5000,
): Promise<void> {
  await waitUntil(async () => check(await scrape(base)), ms, what);
}

describe("--metrics with -w 2", () => {
  test("N requests spread over both workers sum to N on the master's port, by status, in the histogram; the text parses", async () => {
    await using srv = await startCli(["-p", "0", "-w", "2", "--metrics", "0", APP], {
      ...HTTP,
      timeout: 20_000,
    });
    const base = await metricsOf(srv);
    expect(new URL(base).port).not.toBe(String(srv.port));
    const pids = new Set<string>();
    // A new connection per request: reusePort spreads them over both workers.
    for (let i = 0; i < 60; i++) {
      const res = await fetch(`${srv.url}/pid`, { headers: { connection: "close" } });
      pids.add(await res.text());
    }
    for (let i = 0; i < 5; i++)
      await (await fetch(`${srv.url}/status/404`, { headers: { connection: "close" } })).text();
    expect(pids.size).toBe(2);
    await scrapeUntil(base, "60 × 200 and 5 × 404 summed", (s) => {
      return (
        s.value("iodine_http_requests_total", { code: "200" }) === 60 &&
        s.value("iodine_http_requests_total", { code: "404" }) === 5
      );
    });
    const { families, value } = await scrape(base);
    const histogram = families.find((f) => f.name === "iodine_http_request_duration_seconds")!;
    expect(histogram.type).toBe("HISTOGRAM");
    expect(Number(histogram.metrics[0]!.count)).toBe(65);
    expect(Number(histogram.metrics[0]!.buckets!["+Inf"])).toBe(65);
    expect(value("iodine_workers")).toBe(2);
    expect(value("iodine_ready")).toBe(1);
    // Every process's memory: the master and both workers.
    const memory = families.find((f) => f.name === "iodine_process_resident_memory_bytes")!;
    expect(memory.metrics.map((m) => m.labels!.role).sort()).toEqual([
      "master",
      "worker",
      "worker",
    ]);
    expect(value("iodine_bus_bytes_total", { direction: "in" })).toBeGreaterThan(0);
    // The app's port answers with the app, never with metrics.
    expect(await (await fetch(`${srv.url}/metrics`)).text()).toBe("hello");
    expect((await fetch(`${base}/health`)).status).toBe(200);
    expect((await fetch(`${base}/nope`)).status).toBe(404);
  }, 30_000);

  test("connection gauges follow WebSocket, SSE and raw clients; published and delivered follow a fan-out", async () => {
    await using srv = await startCli(["-p", "0", "-w", "2", "--metrics", "0", APP], {
      ...HTTP,
      timeout: 20_000,
    });
    const base = await metricsOf(srv);
    const rawPort = Number((await srv.waitFor(/listening on tcp:\/\/127\.0\.0\.1:(\d+)/, 5000))[1]);
    const sockets: WsClient[] = [];
    const streams: Awaited<ReturnType<typeof openStream>>[] = [];
    const raw: Awaited<ReturnType<typeof Bun.connect>>[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const c = await WsClient.open(`${ws(srv)}/ws`);
        expect(await c.next()).toBe("subscribed");
        sockets.push(c);
      }
      for (let i = 0; i < 2; i++) {
        const s = await openStream(`${srv.url}/sse`);
        await s.until("event: subscribed");
        streams.push(s);
      }
      raw.push(await Bun.connect({ hostname: "127.0.0.1", port: rawPort, socket: { data() {} } }));
      await scrapeUntil(base, "3 WebSockets, 2 streams, 1 raw", (s) => {
        return (
          s.value("iodine_connections", { kind: "websocket" }) === 3 &&
          s.value("iodine_connections", { kind: "sse" }) === 2 &&
          s.value("iodine_connections", { kind: "raw" }) === 1
        );
      });
      // 10 publishes from one worker reach 5 subscribers spread over both: 10 published, 50 delivered.
      await (await fetch(`${srv.url}/pub?n=10`)).text();
      for (const c of sockets) expect((await c.take(10)).length).toBe(10);
      for (const s of streams) await s.until("data: m9");
      await scrapeUntil(base, "10 published, 50 delivered", (s) => {
        return (
          s.value("iodine_pubsub_published_total") === 10 &&
          s.value("iodine_pubsub_delivered_total") === 50
        );
      });
    } finally {
      for (const c of sockets) c.close();
      for (const s of streams) s.close();
      for (const r of raw) r.end();
    }
    await scrapeUntil(base, "every gauge back to 0", (s) => {
      return ["websocket", "sse", "raw"].every(
        (kind) => s.value("iodine_connections", { kind }) === 0,
      );
    });
  }, 30_000);

  test("/ready: 503 while the workers start, 200 once they listen; a SIGKILLed worker moves the restart counter and /ready", async () => {
    const port = freePort();
    await using srv = await startCommand(
      [process.execPath, CLI, "-p", String(port), "-w", "2", "--metrics", "0", APP],
      { env: NO_REDIS, listening: METRICS_LINE, timeout: 20_000 },
    );
    const base = srv.url;
    const early = await fetch(`${base}/ready`);
    expect(early.status).toBe(503);
    expect(await early.text()).toMatch(/^not ready: [01] of 2 workers listening/);
    await srv.waitFor(/listening on http/, 20_000);
    expect((await fetch(`${base}/ready`)).status).toBe(200);

    const pid = Number(await (await fetch(`http://127.0.0.1:${port}/pid`)).text());
    process.kill(pid, "SIGKILL");
    // The slot is down until its new worker listens (a Bun start, at least tens of ms).
    await waitUntil(async () => (await fetch(`${base}/ready`)).status === 503, 5000, "/ready 503");
    await srv.waitFor(/worker \d is back/, 10_000);
    expect((await fetch(`${base}/ready`)).status).toBe(200);
    const s = await scrape(base);
    expect(s.value("iodine_worker_restarts_total")).toBe(1);
    expect(s.value("iodine_workers")).toBe(2);
  }, 30_000);

  test("SIGUSR1 moves the hot-restart counter, and /ready stays 200 throughout", async () => {
    await using srv = await startCli(["-p", "0", "-w", "2", "--metrics", "0", APP], {
      ...HTTP,
      timeout: 20_000,
    });
    const base = await metricsOf(srv);
    const statuses = new Set<number>();
    let done = false;
    const watching = (async () => {
      while (!done) statuses.add((await fetch(`${base}/ready`)).status);
    })();
    srv.proc.kill("SIGUSR1");
    await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
    done = true;
    await watching;
    expect([...statuses]).toEqual([200]);
    const s = await scrape(base);
    expect(s.value("iodine_hot_restarts_total")).toBe(1);
    expect(s.value("iodine_hot_restart_failed")).toBe(0);
    expect(s.value("iodine_worker_restarts_total")).toBe(0);
  }, 30_000);
});

describe("--metrics in one process, and bad addresses", () => {
  test("a single process serves its own counts at once", async () => {
    await using srv = await startCli(["-p", "0", "--metrics", "0", APP], HTTP);
    const base = await metricsOf(srv);
    for (let i = 0; i < 7; i++) await (await fetch(`${srv.url}/`)).text();
    const s = await scrape(base);
    expect(s.value("iodine_http_requests_total", { code: "200" })).toBe(7);
    expect(s.value("iodine_workers")).toBe(1);
    expect(s.value("iodine_ready")).toBe(1);
    const memory = s.families.find((f) => f.name === "iodine_process_resident_memory_bytes")!;
    expect(memory.metrics.map((m) => m.labels!.role)).toEqual(["single"]);
  });

  test("an address that is not one, or is taken: one line, exit code 2", async () => {
    const bad = await runCli(["-p", "0", "--metrics", "nine", APP]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe(
      'iodine: option "--metrics" takes a port (0–65535) or host:port, got "nine"',
    );
    await using holder = await startCli(["-p", "0", APP], { env: NO_REDIS });
    const taken = await runCli(["-p", "0", "--metrics", `127.0.0.1:${holder.port}`, APP], {
      env: NO_REDIS,
    });
    expect(taken.code).toBe(2);
    expect(taken.stderr.trim()).toBe(
      `iodine: --metrics 127.0.0.1:${holder.port}: cannot listen (EADDRINUSE)`,
    );
  });
});
