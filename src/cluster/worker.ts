// A worker process of the cluster (SPEC §8): started by the master with the same command line and
// IODINE_ROLE=worker. It joins the bus, loads the app (so `enter_child` hooks the app registers run),
// binds its listeners with reusePort, reports ready over IPC, and leaves within a second when the
// master is gone.
import { counting } from "../metrics/counters.ts";
import { REPORT_MS, takeReport } from "../metrics/report.ts";
import { fireState } from "../hooks.ts";
import {
  beforeExit,
  bound,
  exitGracefully,
  onStopping,
  startAll,
  stopAll,
  type Bound,
  type StopMode,
} from "../lifecycle.ts";
import { SYNC_MS } from "../limits.ts";
import { log, setLogPrefix } from "../log.ts";
import { clusterWorker, type Placement } from "../placement.ts";
import { joinCluster, type ClusterMember } from "../pubsub/member.ts";
import { isWorkerProcess, WORKER_ENV } from "./role.ts";

export { isWorkerProcess, WORKER_ENV };

/**
 * The IPC messages a worker sends its master (and a thread its worker, by postMessage). "failed": the
 * worker could not start (its app did not load, a listener could not bind); the one line saying why.
 */
export type WorkerReport =
  { type: "ready"; bound: Bound[] } | { type: "stopped" } | { type: "failed"; message: string };
/** What the master tells a worker over IPC: a hot restart's replacement listens; hand over and exit. */
export type MasterOrder = { type: "handover" };

/**
 * A worker that cannot start tells its master why and exits with `exitCode`: the master says it once
 * for the cluster, instead of a line from every worker and one more of its own. False where no master
 * listens (not a worker process, or one of a worker's extra threads).
 */
export function reportStartFailure(message: string, exitCode: number): boolean {
  if (
    !isWorkerProcess() ||
    process.env[WORKER_ENV.thread] !== undefined ||
    process.send === undefined
  )
    return false;
  const exit = () => process.exit(exitCode);
  // The exit waits for the message to be written: a process that exits at once may lose it.
  setTimeout(exit, 1000);
  process.send({ type: "failed", message } satisfies WorkerReport, undefined, undefined, exit);
  return true;
}

/**
 * Where this worker runs, from what its master put in its environment: the CLI hands it on before
 * the app module loads (so `Iodine.isMaster` is false in it). Joins the bus too, so subscriptions
 * the module makes at load time reach the hub.
 */
export function enterWorker(env: NodeJS.ProcessEnv = process.env): Placement {
  const ports = (env[WORKER_ENV.ports] ?? "")
    .split(",")
    .map((p) => (/^\d+$/.test(p) ? Number(p) : undefined));
  const thread = env[WORKER_ENV.thread];
  const name = `worker ${env[WORKER_ENV.id] ?? "?"} (pid ${process.pid}${thread ? `, thread ${thread}` : ""})`;
  const bus = env[WORKER_ENV.bus];
  if (thread !== undefined) {
    // The process's main thread watches the master and handles signals for every thread.
    setLogPrefix(`iodine: [${process.pid}/${thread}] `);
    if (bus) reportTo(flushOnStop((member = joinCluster(bus, name, () => {}))), false);
    return clusterWorker(ports, true);
  }
  setLogPrefix(`iodine: [${process.pid}] `);
  const master = Number(env[WORKER_ENV.master]);
  const masterGone = () => Number.isInteger(master) && process.ppid !== master;
  const check = () => {
    if (masterGone()) void leaveOrphaned();
  };
  setInterval(check, 200).unref();
  if (bus) reportTo(flushOnStop(joinCluster(bus, name, check)), true);
  return clusterWorker(ports, false);
}

/**
 * What this worker published while it stopped (an onClose saying "ann left") reaches the hub before
 * the process exits (SPEC §8): the last step of the stop waits for the hub's answer to a sync.
 */
function flushOnStop(link: ClusterMember): ClusterMember {
  beforeExit(async () => {
    if (orphaned) return; // no master left to confirm anything
    if (counting) link.tell(() => metricsFrame(false));
    if (!(await link.sync(SYNC_MS)))
      log.warn(
        `stop: the master did not confirm this worker's last publishes within ${SYNC_MS} ms`,
      );
  });
  return link;
}

/** This thread's counts since the last report, as the CTL frame the master sums (hub-history.ts). */
const metricsFrame = (withRss: boolean) => JSON.stringify(["metrics", takeReport(withRss)]);

/** `--metrics`: this thread's counts go to the master once a second (a main thread adds its memory). */
function reportTo(link: ClusterMember, withRss: boolean): void {
  const frame = () => metricsFrame(withRss);
  setInterval(() => {
    if (counting) link.tell(frame);
  }, REPORT_MS).unref();
}

/** This thread's bus link (a thread closes it itself when it stops). */
let member: ClusterMember | undefined;

/**
 * After the app loaded: `enter_child`, bind, start the extra threads (`--threads`), tell the master.
 * A thread reports to its process's main thread instead, and stops when told.
 */
export async function startWorker(placement: Placement, threads: number): Promise<void> {
  await fireState("enter_child");
  await startAll();
  if (placement.isThread) {
    (globalThis as unknown as { onmessage: (e: MessageEvent) => void }).onmessage = (
      e: MessageEvent<StopMode>,
    ) => {
      if (e.data !== "stop" && e.data !== "handover") return;
      void stopAll(e.data).then(() => {
        member?.leave();
        postMessage({ type: "stopped" } satisfies WorkerReport);
      });
    };
    postMessage({ type: "ready", bound } satisfies WorkerReport);
    return;
  }
  if (threads > 1) await startThreads(threads - 1);
  process.on("message", (order: MasterOrder) => {
    if (order?.type === "handover") exitGracefully("hot restart", "handover");
  });
  const report: WorkerReport = { type: "ready", bound };
  process.send?.(report);
}

/**
 * `--threads N`: N-1 Bun Workers run this same entry (with the same arguments) as extra event loops
 * sharing the ports; each has its own bus link. A thread that dies takes the process with it, and
 * the master starts a new worker.
 */
async function startThreads(n: number): Promise<void> {
  const entry = process.argv[1]!;
  const threads = Array.from({ length: n }, (_, i) => {
    const t = new Worker(entry, {
      argv: process.argv.slice(2),
      env: {
        ...process.env,
        [WORKER_ENV.thread]: String(i + 1),
        // With `-p 0` the first worker's main thread picked the ports: its threads share them.
        [WORKER_ENV.ports]: bound.map((b) => b.port ?? "").join(","),
      } as Record<string, string>,
    });
    let stopped = () => {};
    const ready = new Promise<void>((res, rej) => {
      t.onmessage = (e: MessageEvent<WorkerReport>) => {
        if (e.data?.type === "ready") res();
        else if (e.data?.type === "stopped") stopped();
      };
      t.addEventListener("close", () => {
        if (stopping) return stopped();
        rej(new Error(`thread ${i + 1} ended`));
        log.error(
          `thread ${i + 1} of this worker ended; the worker exits so the master can start a new one`,
        );
        process.exit(1);
      });
    });
    const done = new Promise<void>((res) => (stopped = res));
    return { t, ready, done };
  });
  let stopping = false;
  onStopping(async (mode) => {
    stopping = true;
    for (const { t } of threads) t.postMessage(mode);
    await Promise.all(threads.map((x) => x.done));
    for (const { t } of threads) t.terminate();
  });
  await Promise.all(threads.map((x) => x.ready));
}

let orphaned = false;
/** The master died (SIGKILL, crash): no orphans (SPEC §8); leave within a second. */
async function leaveOrphaned(): Promise<void> {
  if (orphaned) return;
  orphaned = true;
  log.error(`the master process is gone; this worker exits`);
  setTimeout(() => process.exit(1), 700).unref();
  await fireState("on_parent_crush");
  await Promise.race([stopAll(), Bun.sleep(600)]);
  process.exit(1);
}
