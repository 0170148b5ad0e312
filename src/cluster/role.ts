// Whether this process is a cluster's worker, from what its master put in its environment: asked
// before anything else at start, so it loads nothing.

/** What the master puts in a worker's environment. */
export const WORKER_ENV = {
  role: "IODINE_ROLE",
  bus: "IODINE_BUS",
  id: "IODINE_WORKER",
  ports: "IODINE_PORTS",
  master: "IODINE_MASTER_PID",
  /** set in a worker's extra threads (Bun Workers running this same entry), 1…threads-1 */
  thread: "IODINE_THREAD",
} as const;

export function isWorkerProcess(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[WORKER_ENV.role] === "worker";
}
