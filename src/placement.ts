// Where this process runs (SPEC §8): one process, a cluster's master, a worker, or one of a
// worker's extra threads. The entry point decides it (the CLI from its environment, before the
// app loads; script mode is one process) and hands it to what binds listeners and takes signals.

export interface Placement {
  /** supervises the workers; a single process is both master and worker */
  readonly isMaster: boolean;
  /** serves connections; a single process is both master and worker */
  readonly isWorker: boolean;
  /** a worker of a cluster: shares its ports (reusePort) and leaves the start-up lines to the master */
  readonly inCluster: boolean;
  /** an extra event-loop thread of a worker (`--threads`): no signals, no process.exit */
  readonly isThread: boolean;
  /** ports the cluster already bound, by listener (so `-p 0` means the same port in every worker) */
  readonly ports: readonly (number | undefined)[];
}

/** One process, master and worker: script mode, `-w 1 -t 1`, or a master whose app opens no listener. */
export const SINGLE_PROCESS: Placement = Object.freeze({
  isMaster: true,
  isWorker: true,
  inCluster: false,
  isThread: false,
  ports: [],
});

/** A cluster's master: it loads the app and binds nothing. */
export const CLUSTER_MASTER: Placement = Object.freeze({
  isMaster: true,
  isWorker: false,
  inCluster: false,
  isThread: false,
  ports: [],
});

/** A worker of a cluster, or one of its extra threads, on the ports the cluster bound already. */
export function clusterWorker(
  ports: readonly (number | undefined)[],
  isThread: boolean,
): Placement {
  return Object.freeze({
    isMaster: false,
    isWorker: true,
    inCluster: true,
    isThread,
    ports: Object.freeze([...ports]),
  });
}
