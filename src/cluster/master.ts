// The cluster supervisor (SPEC §8): the master loads the app (so `Iodine.isMaster` code runs), binds
// no listener, holds the pub/sub hub, and spawns the workers with Bun.spawn — the same command line
// again (the same executable when compiled) with IODINE_ROLE=worker. SIGUSR1 replaces every worker
// one at a time, the new one listening before the old one drains; a worker that dies is replaced
// (with back-off when it keeps dying); SIGINT/SIGTERM stop everything gracefully, exit code 0.
import type { Subprocess } from "bun";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readdirSync, readFileSync, unlinkSync } from "node:fs";
import { flushAccessLog, log, logException } from "../log.ts";
import { Hub } from "../pubsub/hub.ts";
import { defaultEngine, engineLabel } from "../pubsub/engine-api.ts";
import { HANDOVER_MS, role, StopRequests, type Bound, type StopMode } from "../runtime.ts";
import { fireState } from "../state.ts";
import { WORKER_ENV, type MasterOrder, type WorkerReport } from "./worker.ts";

export interface MasterOptions {
  workers: number;
  threads: number;
  /** how long a retiring worker may drain before it is killed, ms */
  drainMs: number;
  /** extra environment for the workers (e.g. a self-signed certificate made once, here) */
  env?: Record<string, string>;
}

interface Worker {
  slot: number;
  proc: Subprocess;
  startedAt: number;
  state: "starting" | "ready" | "retiring";
  /**
   * Who answers for it until it listens: "start" the cluster's start (a failure ends it, a kill
   * starts the slot again), "replacement" a hot restart (which reports a failure, no re-spawn),
   * "respawn" the supervisor (a failure is a crash: re-spawned with back-off).
   */
  origin: "start" | "replacement" | "respawn";
  /** killed by the master for not listening in time (not by someone else's signal) */
  timedOut: boolean;
  ready: Promise<Bound[]>;
  exited: Promise<void>;
  /** why it could not start, as it reported it before exiting */
  failure?: string;
}

/** How long a new worker may take to load the app and listen. */
const READY_TIMEOUT_MS = 30_000;
/** How often a slot is started again at launch when its worker is killed before it listens. */
const START_TRIES = 5;
/** A worker that dies within this long of its start counts as failing again (longer back-off). */
const HEALTHY_AFTER_MS = 5_000;
const MAX_BACKOFF_MS = 10_000;

/** Sets the role before the app module loads in the master. */
export function enterMaster(): void {
  role.isMaster = true;
  role.isWorker = false;
}

const BUS_SOCKET = /^iodine-(\d+)-[a-z0-9]+\.sock$/;

export async function runMaster(o: MasterOptions): Promise<void> {
  const busPath = join(tmpdir(), `iodine-${process.pid}-${Math.random().toString(36).slice(2, 8)}.sock`);
  const hub = new Hub(busPath);
  const workers = new Set<Worker>();
  const failures = new Map<number, number>();
  let ports: (number | undefined)[] | undefined;
  let stopping = false;
  let restarting = false;
  /** called whenever a worker reports it listens (the start waits for every slot) */
  const onListening: (() => void)[] = [];
  let restartAgain = false;

  const command = selfCommand(true);
  const spawn = (slot: number, origin: Worker["origin"]): Worker => {
    void fireState("before_fork");
    let markReady!: (b: Bound[]) => void;
    let fail!: (e: Error) => void;
    const ready = new Promise<Bound[]>((res, rej) => ((markReady = res), (fail = rej)));
    ready.catch(() => {});
    const proc = Bun.spawn(command, {
      env: {
        ...process.env,
        ...o.env,
        [WORKER_ENV.role]: "worker",
        [WORKER_ENV.bus]: busPath,
        [WORKER_ENV.id]: String(slot),
        [WORKER_ENV.master]: String(process.pid),
        [WORKER_ENV.ports]: ports?.map((p) => p ?? "").join(",") ?? "",
      },
      stdio: ["ignore", "inherit", "inherit"],
      ipc(message: WorkerReport) {
        if (message?.type === "failed") w.failure = message.message;
        if (message?.type !== "ready" || w.state !== "starting") return;
        w.state = "ready";
        markReady(message.bound);
        for (const f of onListening.splice(0)) f();
      },
    });
    const w: Worker = { slot, proc, startedAt: Date.now(), state: "starting", origin, timedOut: false, ready, exited: proc.exited.then(() => {}) };
    workers.add(w);
    void fireState("after_fork");
    const timer = setTimeout(() => {
      if (w.state !== "starting") return;
      w.timedOut = true;
      fail(new Error(`worker ${slot} (pid ${proc.pid}) was not listening after ${READY_TIMEOUT_MS / 1000} s`));
      proc.kill("SIGKILL");
    }, READY_TIMEOUT_MS);
    proc.exited.then((code) => {
      clearTimeout(timer);
      workers.delete(w);
      const how = proc.signalCode ? `signal ${proc.signalCode}` : `code ${code}`;
      if (w.state === "starting") fail(new Error(w.failure ?? `worker ${slot} (pid ${proc.pid}) exited with ${how} before it was listening`));
      if (stopping || w.state === "retiring") return;
      // Until it listens, the start or the hot restart that made it answers for it.
      if (w.state === "starting" && w.origin !== "respawn") return;
      void fireState("on_child_crush");
      const quick = Date.now() - w.startedAt < HEALTHY_AFTER_MS;
      const n = quick ? (failures.get(slot) ?? 0) + 1 : 0;
      failures.set(slot, n);
      const delay = n === 0 ? 0 : Math.min(100 * 2 ** (n - 1), MAX_BACKOFF_MS);
      const why = w.failure === undefined ? "" : ` (${w.failure})`;
      log.error(`worker ${slot} (pid ${proc.pid}) exited with ${how}${why}; starting a new one${delay ? ` in ${delay} ms` : ""}`);
      setTimeout(() => {
        if (stopping) return;
        const again = spawn(slot, "respawn");
        again.ready.then(
          () => log.info(`worker ${slot} is back (pid ${again.proc.pid})`),
          (err: Error) => log.debug(err.message),
        );
      }, delay);
    });
    return w;
  };

  /** Stops a worker: SIGTERM, or for a hot restart (its replacement listens) a hand-over order first. */
  const retire = async (w: Worker, mode: StopMode = "stop"): Promise<void> => {
    w.state = "retiring";
    if (mode === "handover" && w.proc.exitCode === null && w.proc.signalCode === null) {
      try {
        w.proc.send({ type: "handover" } satisfies MasterOrder);
      } catch {
        w.proc.kill("SIGTERM"); // its IPC channel is gone: the plain stop
      }
    } else w.proc.kill("SIGTERM");
    const limit = o.drainMs + 2000 + (mode === "handover" ? HANDOVER_MS : 0);
    const deadline = setTimeout(() => {
      log.warn(`worker ${w.slot} (pid ${w.proc.pid}) still draining after ${limit} ms; killing it`);
      w.proc.kill("SIGKILL");
    }, limit);
    await w.exited;
    clearTimeout(deadline);
  };

  const hotRestart = async (): Promise<void> => {
    if (stopping) return;
    if (restarting) {
      restartAgain = true;
      log.info("SIGUSR1: a hot restart is running; another one follows it");
      return;
    }
    restarting = true;
    const old = [...workers].filter((w) => w.state === "ready").sort((a, b) => a.slot - b.slot);
    log.info(`SIGUSR1: hot restart of ${old.length} worker${old.length === 1 ? "" : "s"}`);
    hintMigrateReq();
    let replaced = 0;
    for (const w of old) {
      if (stopping) break;
      const fresh = spawn(w.slot, "replacement");
      try {
        await fresh.ready;
      } catch (err) {
        log.error(`hot restart stopped: ${(err as Error).message}; the old workers keep serving`);
        break;
      }
      if (stopping) break; // the stop retires every worker, the new one included
      await retire(w, "handover");
      replaced++;
    }
    if (replaced === old.length) log.info(`hot restart done: ${replaced} new worker${replaced === 1 ? "" : "s"}`);
    restarting = false;
    if (restartAgain && !stopping) {
      restartAgain = false;
      void hotRestart();
    }
  };

  const stops = new StopRequests();
  const stop = async (signal: string): Promise<void> => {
    const kind = stops.take();
    if (kind === "repeat") return log.debug(`${signal}: already stopping (the same Ctrl-C, passed on again)`);
    if (kind === "now") {
      log.warn(`${signal} again: stopping at once`);
      for (const w of workers) w.proc.kill("SIGKILL");
      hub.stop();
      flushAccessLog();
      process.exit(130);
    }
    stopping = true;
    log.info(`${signal}: stopping ${workers.size} worker${workers.size === 1 ? "" : "s"} gracefully`);
    await fireState("start_shutdown");
    await Promise.all([...workers].map((w) => retire(w)));
    hub.stop();
    await fireState("on_finish");
    flushAccessLog();
    process.exit(0);
  };

  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGUSR1", () => void hotRestart().catch((err) => logException("hot restart failed", err)));

  await fireState("pre_start");
  removeStaleBusSockets();
  hub.start();
  /**
   * Starts one slot at launch. A worker killed by a signal before it listens (the OOM killer, an
   * impatient operator) is started again and logged; one that exits by itself (the app fails to
   * load, the address cannot be bound) ends the start, since the next one would fail alike.
   */
  const startSlot = async (slot: number): Promise<Bound[]> => {
    for (let tries = 1; ; tries++) {
      const w = spawn(slot, "start");
      try {
        return await w.ready;
      } catch (err) {
        const signal = w.proc.signalCode;
        if (stopping || signal === null || w.timedOut || tries === START_TRIES) throw err;
        const delay = Math.min(100 * 2 ** (tries - 1), MAX_BACKOFF_MS);
        log.error(`worker ${slot} (pid ${w.proc.pid}) was killed (${signal}) before it was listening; starting a new one in ${delay} ms`);
        await Bun.sleep(delay);
      }
    }
  };
  const everySlotListens = () =>
    Array.from({ length: o.workers }, (_, slot) => slot).every((slot) => [...workers].some((w) => w.slot === slot && w.state === "ready"));
  let listening: Bound[];
  try {
    // The first worker binds (with `-p 0`, picks the port); the others and every replacement reuse it.
    listening = await startSlot(0);
    ports = listening.map((b) => b.port);
    await Promise.all(Array.from({ length: o.workers - 1 }, (_, i) => startSlot(i + 1)));
    // A worker that listened and then died meanwhile is being re-spawned: the line below counts
    // only workers that are there.
    while (!everySlotListens()) await new Promise<void>((resolve) => onListening.push(resolve));
  } catch (err) {
    for (const w of workers) w.proc.kill("SIGKILL");
    hub.stop();
    throw new StartError((err as Error).message);
  }
  await fireState("enter_master");
  const shape = `${o.workers} worker${o.workers === 1 ? "" : "s"}${o.threads > 1 ? ` × ${o.threads} threads` : ""}`;
  const engine = defaultEngine();
  const pubsub = engine === undefined ? "cluster pub/sub" : `cluster + ${engineLabel(engine)} pub/sub`;
  for (const b of listening as Bound[]) log.info(`listening on ${b.where} (${shape}, ${pubsub})`);
  await fireState("on_start");
}

/** Bus sockets left in the temp folder by masters that were killed (SIGKILL cannot clean up). */
function removeStaleBusSockets(): void {
  try {
    for (const name of readdirSync(tmpdir())) {
      const pid = Number(BUS_SOCKET.exec(name)?.[1]);
      if (!pid || pid === process.pid || alive(pid)) continue;
      try {
        unlinkSync(join(tmpdir(), name));
      } catch {
        // someone else's, or gone already
      }
    }
  } catch {
    // an unreadable temp folder is not ours to fix
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A worker could not start when the cluster started (the message is its own report): the CLI exits with code 2. */
export class StartError extends Error {}

/**
 * This same command again: this runtime, this script and its arguments — or, in a `bun build
 * --compile` executable, the executable itself, which takes every argument as its own (its runtime
 * flags come from $BUN_OPTIONS). `runtimeFlags` keeps bun's own flags (e.g. --max-http-header-size).
 */
export function selfCommand(runtimeFlags: boolean): string[] {
  const compiled = process.argv[1]?.startsWith("/$bunfs/") ?? false;
  if (compiled) return [process.execPath, ...process.argv.slice(2)];
  return [process.execPath, ...(runtimeFlags ? process.execArgv : []), process.argv[1]!, ...process.argv.slice(2)];
}

let hinted = false;
/**
 * Linux drops connections still waiting in a closed listener's accept queue unless
 * net.ipv4.tcp_migrate_req is 1: clients that open a new connection at that instant see a reset.
 */
function hintMigrateReq(): void {
  if (hinted) return;
  hinted = true;
  try {
    if (readFileSync("/proc/sys/net/ipv4/tcp_migrate_req", "utf8").trim() === "0") {
      log.info("hint: set sysctl net.ipv4.tcp_migrate_req=1 so connections opened during a restart are never reset (see README)");
    }
  } catch {
    // not Linux, or no such setting
  }
}
