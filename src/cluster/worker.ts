// A worker process of the cluster (SPEC §8): started by the master with the same command line and
// IODINE_ROLE=worker. It joins the bus, loads the app (so `enter_child` hooks the app registers run),
// binds its listeners with reusePort, reports ready over IPC, and leaves within a second when the
// master is gone.
import { log, setLogPrefix } from "../log.ts";
import { joinCluster } from "../pubsub/engine.ts";
import { bound, role, startAll, stopAll } from "../runtime.ts";
import { fireState } from "../state.ts";

/** What the master puts in a worker's environment. */
export const WORKER_ENV = {
  role: "IODINE_ROLE",
  bus: "IODINE_BUS",
  id: "IODINE_WORKER",
  ports: "IODINE_PORTS",
  master: "IODINE_MASTER_PID",
} as const;

/** The IPC messages a worker sends its master. */
export type WorkerReport = { type: "ready"; bound: { where: string; port: number | undefined }[] };

export function isWorkerProcess(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[WORKER_ENV.role] === "worker";
}

/**
 * Sets the role before the app module loads (so `Iodine.isMaster` is false in it) and joins the bus,
 * so subscriptions the module makes at load time reach the hub.
 */
export function enterWorker(env: NodeJS.ProcessEnv = process.env): void {
  role.isMaster = false;
  role.isWorker = true;
  role.inCluster = true;
  role.ports = (env[WORKER_ENV.ports] ?? "").split(",").map((p) => (/^\d+$/.test(p) ? Number(p) : undefined));
  setLogPrefix(`iodine: [${process.pid}] `);
  const master = Number(env[WORKER_ENV.master]);
  const masterGone = () => Number.isInteger(master) && process.ppid !== master;
  const check = () => {
    if (masterGone()) void leaveOrphaned();
  };
  setInterval(check, 200).unref();
  const bus = env[WORKER_ENV.bus];
  if (bus) joinCluster(bus, `worker ${env[WORKER_ENV.id] ?? "?"} (pid ${process.pid})`, check);
}

/** After the app loaded: `enter_child`, bind, tell the master. */
export async function startWorker(): Promise<void> {
  await fireState("enter_child");
  await startAll();
  const report: WorkerReport = { type: "ready", bound };
  process.send?.(report);
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
