// `--metrics ADDR` (SPEC §7a): the master (or a single process) serves the cluster's metrics on a
// port of its own, so a scrape never lands on one worker through reusePort.
//   GET /metrics  Prometheus text format (version 0.0.4), summed over every worker and thread
//   GET /health   200 while this process runs
//   GET /ready    200 when every worker slot listens, 503 otherwise (starting, a slot down)
import type { Server } from "bun";
import { log } from "../log.ts";
import { bunServe } from "../http/server.ts";
import { defaultEngine } from "../pubsub/engine-api.ts";
import { busBytes } from "../pubsub/link.ts";
import { totals, type ClusterFacts } from "./totals.ts";

/** What the cluster (or the single process) says of itself; metrics.ts adds the engine and the bus. */
export type Facts = Omit<ClusterFacts, "redisConnected" | "busBytesIn" | "busBytesOut">;

const TEXT = { "content-type": "text/plain; charset=utf-8" };
const PROMETHEUS = { "content-type": "text/plain; version=0.0.4; charset=utf-8" };

/** Starts the metrics listener; throws (as Bun.serve does) when the address cannot be bound. */
export function serveMetrics(
  at: { hostname: string; port: number },
  facts: () => Facts,
): Server<undefined> {
  const all = (): ClusterFacts => {
    const engine = defaultEngine() as { connected?: unknown } | undefined;
    return {
      ...facts(),
      ...(typeof engine?.connected === "boolean" ? { redisConnected: engine.connected } : {}),
      busBytesIn: busBytes.in,
      busBytesOut: busBytes.out,
    };
  };
  const server = bunServe({
    hostname: at.hostname,
    port: at.port,
    development: false,
    fetch(req) {
      const path = new URL(req.url).pathname;
      if (req.method !== "GET" && req.method !== "HEAD")
        return new Response("GET only\n", {
          status: 405,
          headers: { ...TEXT, allow: "GET, HEAD" },
        });
      if (path === "/metrics") return new Response(totals.render(all()), { headers: PROMETHEUS });
      if (path === "/health") return new Response("ok\n", { headers: TEXT });
      if (path === "/ready") {
        const f = facts();
        return f.ready
          ? new Response("ready\n", { headers: TEXT })
          : new Response(`not ready: ${f.workers} of ${f.slots} workers listening\n`, {
              status: 503,
              headers: TEXT,
            });
      }
      return new Response("/metrics, /health or /ready\n", { status: 404, headers: TEXT });
    },
  });
  const host = at.hostname.includes(":") ? `[${at.hostname}]` : at.hostname;
  log.info(`metrics on http://${host}:${server.port}/metrics`);
  return server;
}
