// `--metrics ADDR` from the command line (SPEC §7a): every process counts; the master — or a single
// process — serves the sums, from before its workers start (so /ready says 503 while they do).
import type { Supervisor } from "../cluster/supervisor.ts";
import { StartError } from "../errors.ts";
import { startCounting } from "../metrics/counters.ts";
import type { Facts } from "../metrics/server.ts";
import type { Settings } from "./settings.ts";

/** In every process: count from now on (before the app's listeners are built). */
export function countIfAsked(s: Settings): void {
  if (s.metrics !== undefined) startCounting();
}

/** The master: the supervisor's view of its workers. */
export async function serveClusterMetrics(s: Settings, supervisor: Supervisor): Promise<void> {
  if (s.metrics === undefined) return;
  await serve(s.metrics, () => {
    const st = supervisor.stats;
    const workers = supervisor.listeningSlots();
    return {
      role: "master",
      workers,
      slots: supervisor.slots,
      restarts: st.restarts,
      hotRestarts: st.hotRestarts,
      hotRestartFailures: st.hotFailures,
      hotRestartFailed: st.hotFailed,
      ready: st.started && workers === supervisor.slots,
    };
  });
}

/** A single process: ready once `started()` says its listeners are up. */
export async function serveSingleMetrics(s: Settings, started: () => boolean): Promise<void> {
  if (s.metrics === undefined) return;
  await serve(s.metrics, () => ({
    role: "single",
    workers: started() ? 1 : 0,
    slots: 1,
    restarts: 0,
    hotRestarts: 0,
    hotRestartFailures: 0,
    hotRestartFailed: false,
    ready: started(),
  }));
}

async function serve(at: NonNullable<Settings["metrics"]>, facts: () => Facts): Promise<void> {
  // Loaded only with --metrics.
  const { serveMetrics } = await import("../metrics/server.ts");
  try {
    serveMetrics(at, facts);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new StartError(`--metrics ${at.hostname}:${at.port}: cannot listen (${code})`);
  }
}
