// The cluster supervisor (SPEC §8): the master loads the app (so `Iodine.isMaster` code runs), binds
// no listener, holds the pub/sub hub, and spawns the workers with Bun.spawn — the same command line
// again (the same executable when compiled) with IODINE_ROLE=worker. SIGUSR1 replaces every worker
// one at a time, the new one listening before the old one drains; a worker that dies is replaced
// (with back-off when it keeps dying); SIGINT/SIGTERM stop everything gracefully, exit code 0.
import type { Subprocess } from "bun";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { StartError } from "../errors.ts";
import { fireState } from "../hooks.ts";
import { StopRequests, type Bound, type StopMode } from "../lifecycle.ts";
import {
  DEFAULTS,
  HANDOVER_MS,
  HEALTHY_AFTER_MS,
  MAX_BACKOFF_MS,
  READY_TIMEOUT_MS,
  RETIRE_GRACE_MS,
  START_TRIES,
} from "../limits.ts";
import { flushAccessLog, log, logException } from "../log.ts";
import { Hub } from "../pubsub/hub.ts";
import { defaultEngine, engineLabel } from "../pubsub/engine-api.ts";
import { removeStaleBusSockets } from "./bus-sockets.ts";
import { selfCommand } from "./self-command.ts";
import { WORKER_ENV, type MasterOrder, type WorkerReport } from "./worker.ts";

/** The cluster's shape: the CLI passes its settings. */
export interface ClusterOptions {
  /** worker processes */
  workers: number;
  /** event-loop threads per worker */
  threads: number;
}

/** One worker process, as the supervisor sees it. */
interface WorkerProcess {
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

/** The master of a cluster: its workers, the hub they publish through, and its signals. */
export class Supervisor {
  readonly #cluster: ClusterOptions;
  /** extra environment for the workers (e.g. a self-signed certificate made once, here) */
  readonly #env: Record<string, string>;
  readonly #busPath = join(
    tmpdir(),
    `iodine-${process.pid}-${Math.random().toString(36).slice(2, 8)}.sock`,
  );
  readonly #hub = new Hub(this.#busPath);
  readonly #command = selfCommand(true);
  readonly #workers = new Set<WorkerProcess>();
  /** quick deaths in a row, by slot (the back-off) */
  readonly #failures = new Map<number, number>();
  readonly #stops = new StopRequests();
  /** called whenever a worker reports it listens (the start waits for every slot) */
  readonly #onListening: (() => void)[] = [];
  /** the ports the first worker bound: every later worker reuses them */
  #ports: (number | undefined)[] | undefined;
  #stopping = false;
  #restarting = false;
  #restartAgain = false;
  /** what `--metrics` shows of the cluster (SPEC §7a) */
  readonly stats = {
    started: false,
    restarts: 0,
    hotRestarts: 0,
    hotFailures: 0,
    hotFailed: false,
  };

  constructor(cluster: ClusterOptions, env: Record<string, string> = {}) {
    this.#cluster = cluster;
    this.#env = env;
  }

  /**
   * Takes the signals, opens the hub and starts every worker; resolves once each slot listens.
   * A worker that cannot start ends the start: the others are killed and it throws StartError.
   */
  async start(): Promise<void> {
    process.on("SIGINT", () => void this.stop("SIGINT"));
    process.on("SIGTERM", () => void this.stop("SIGTERM"));
    process.on(
      "SIGUSR1",
      () => void this.hotRestart().catch((err) => logException("hot restart failed", err)),
    );
    await fireState("pre_start");
    removeStaleBusSockets();
    this.#hub.start();
    let listening: Bound[];
    try {
      // The first worker binds (with `-p 0`, picks the port); the others and every replacement reuse it.
      listening = await this.#startSlot(0);
      this.#ports = listening.map((b) => b.port);
      await Promise.all(
        Array.from({ length: this.#cluster.workers - 1 }, (_, i) => this.#startSlot(i + 1)),
      );
      // A worker that listened and then died meanwhile is being re-spawned: the line below counts
      // only workers that are there.
      while (!this.#everySlotListens())
        await new Promise<void>((resolve) => this.#onListening.push(resolve));
    } catch (err) {
      for (const w of this.#workers) w.proc.kill("SIGKILL");
      this.#hub.stop();
      throw new StartError((err as Error).message);
    }
    await fireState("enter_master");
    this.stats.started = true;
    this.#announce(listening);
    await fireState("on_start");
  }

  /** Starts a worker in `slot`; `origin` says who answers for it until it listens. */
  spawn(slot: number, origin: WorkerProcess["origin"]): WorkerProcess {
    void fireState("before_fork");
    let markReady!: (b: Bound[]) => void;
    let fail!: (e: Error) => void;
    const ready = new Promise<Bound[]>((res, rej) => ((markReady = res), (fail = rej)));
    ready.catch(() => {});
    const proc = Bun.spawn(this.#command, {
      env: {
        ...process.env,
        ...this.#env,
        [WORKER_ENV.role]: "worker",
        [WORKER_ENV.bus]: this.#busPath,
        [WORKER_ENV.id]: String(slot),
        [WORKER_ENV.master]: String(process.pid),
        [WORKER_ENV.ports]: this.#ports?.map((p) => p ?? "").join(",") ?? "",
      },
      stdio: ["ignore", "inherit", "inherit"],
      ipc: (message: WorkerReport) => {
        if (message?.type === "failed") w.failure = message.message;
        if (message?.type !== "ready" || w.state !== "starting") return;
        w.state = "ready";
        markReady(message.bound);
        for (const f of this.#onListening.splice(0)) f();
      },
    });
    const w: WorkerProcess = {
      slot,
      proc,
      startedAt: Date.now(),
      state: "starting",
      origin,
      timedOut: false,
      ready,
      exited: proc.exited.then(() => {}),
    };
    this.#workers.add(w);
    void fireState("after_fork");
    const timer = setTimeout(() => {
      if (w.state !== "starting") return;
      w.timedOut = true;
      fail(
        new Error(
          `worker ${slot} (pid ${proc.pid}) was not listening after ${READY_TIMEOUT_MS / 1000} s`,
        ),
      );
      proc.kill("SIGKILL");
    }, READY_TIMEOUT_MS);
    proc.exited.then((code) => {
      clearTimeout(timer);
      this.#workers.delete(w);
      const how = proc.signalCode ? `signal ${proc.signalCode}` : `code ${code}`;
      if (w.state === "starting")
        fail(
          new Error(
            w.failure ??
              `worker ${slot} (pid ${proc.pid}) exited with ${how} before it was listening`,
          ),
        );
      this.#exited(w, how);
    });
    return w;
  }

  /** Stops a worker: SIGTERM, or for a hot restart (its replacement listens) a hand-over order first. */
  async retire(w: WorkerProcess, mode: StopMode = "stop"): Promise<void> {
    w.state = "retiring";
    if (mode === "handover" && w.proc.exitCode === null && w.proc.signalCode === null) {
      try {
        w.proc.send({ type: "handover" } satisfies MasterOrder);
      } catch {
        w.proc.kill("SIGTERM"); // its IPC channel is gone: the plain stop
      }
    } else w.proc.kill("SIGTERM");
    const limit = DEFAULTS.drainMs + RETIRE_GRACE_MS + (mode === "handover" ? HANDOVER_MS : 0);
    const deadline = setTimeout(() => {
      log.warn(`worker ${w.slot} (pid ${w.proc.pid}) still draining after ${limit} ms; killing it`);
      w.proc.kill("SIGKILL");
    }, limit);
    await w.exited;
    clearTimeout(deadline);
  }

  /** SIGUSR1: replaces the workers one at a time, each new one listening before the old one hands over. */
  async hotRestart(): Promise<void> {
    if (this.#stopping) return;
    if (this.#restarting) {
      this.#restartAgain = true;
      log.info("SIGUSR1: a hot restart is running; another one follows it");
      return;
    }
    this.#restarting = true;
    const old = [...this.#workers]
      .filter((w) => w.state === "ready")
      .sort((a, b) => a.slot - b.slot);
    log.info(`SIGUSR1: hot restart of ${old.length} worker${old.length === 1 ? "" : "s"}`);
    hintMigrateReq();
    let replaced = 0;
    for (const w of old) {
      if (this.#stopping) break;
      const fresh = this.spawn(w.slot, "replacement");
      try {
        await fresh.ready;
      } catch (err) {
        log.error(`hot restart stopped: ${(err as Error).message}; the old workers keep serving`);
        this.stats.hotFailures++;
        this.stats.hotFailed = true;
        break;
      }
      if (this.#stopping) break; // the stop retires every worker, the new one included
      await this.retire(w, "handover");
      replaced++;
    }
    if (replaced === old.length) {
      this.stats.hotRestarts++;
      this.stats.hotFailed = false;
      log.info(`hot restart done: ${replaced} new worker${replaced === 1 ? "" : "s"}`);
    }
    this.#restarting = false;
    if (this.#restartAgain && !this.#stopping) {
      this.#restartAgain = false;
      void this.hotRestart();
    }
  }

  /** SIGINT/SIGTERM: retires every worker gracefully and exits 0; the same signal again after SAME_STOP_MS exits at once. */
  async stop(signal: string): Promise<void> {
    const kind = this.#stops.take();
    if (kind === "repeat")
      return log.debug(`${signal}: already stopping (the same Ctrl-C, passed on again)`);
    if (kind === "now") {
      log.warn(`${signal} again: stopping at once`);
      for (const w of this.#workers) w.proc.kill("SIGKILL");
      this.#hub.stop();
      flushAccessLog();
      process.exit(130);
    }
    this.#stopping = true;
    const n = this.#workers.size;
    log.info(`${signal}: stopping ${n} worker${n === 1 ? "" : "s"} gracefully`);
    await fireState("start_shutdown");
    await Promise.all([...this.#workers].map((w) => this.retire(w)));
    this.#hub.stop();
    await fireState("on_finish");
    flushAccessLog();
    process.exit(0);
  }

  // --- internal ---

  /** A worker exited (`how`: its code or signal): one that was serving is replaced, with back-off when it keeps dying. */
  #exited(w: WorkerProcess, how: string): void {
    if (this.#stopping || w.state === "retiring") return;
    // Until it listens, the start or the hot restart that made it answers for it.
    if (w.state === "starting" && w.origin !== "respawn") return;
    const { slot, proc } = w;
    void fireState("on_child_crush");
    this.stats.restarts++;
    const quick = Date.now() - w.startedAt < HEALTHY_AFTER_MS;
    const n = quick ? (this.#failures.get(slot) ?? 0) + 1 : 0;
    this.#failures.set(slot, n);
    const delay = n === 0 ? 0 : Math.min(100 * 2 ** (n - 1), MAX_BACKOFF_MS);
    const why = w.failure === undefined ? "" : ` (${w.failure})`;
    log.error(
      `worker ${slot} (pid ${proc.pid}) exited with ${how}${why}; starting a new one${delay ? ` in ${delay} ms` : ""}`,
    );
    setTimeout(() => {
      if (this.#stopping) return;
      const again = this.spawn(slot, "respawn");
      again.ready.then(
        () => log.info(`worker ${slot} is back (pid ${again.proc.pid})`),
        (err: Error) => log.debug(err.message),
      );
    }, delay);
  }

  /**
   * Starts one slot at launch. A worker killed by a signal before it listens (the OOM killer, an
   * impatient operator) is started again and logged; one that exits by itself (the app fails to
   * load, the address cannot be bound) ends the start, since the next one would fail alike.
   */
  async #startSlot(slot: number): Promise<Bound[]> {
    for (let tries = 1; ; tries++) {
      const w = this.spawn(slot, "start");
      try {
        return await w.ready;
      } catch (err) {
        const signal = w.proc.signalCode;
        if (this.#stopping || signal === null || w.timedOut || tries === START_TRIES) throw err;
        const delay = Math.min(100 * 2 ** (tries - 1), MAX_BACKOFF_MS);
        log.error(
          `worker ${slot} (pid ${w.proc.pid}) was killed (${signal}) before it was listening; starting a new one in ${delay} ms`,
        );
        await Bun.sleep(delay);
      }
    }
  }

  #everySlotListens(): boolean {
    return this.listeningSlots() === this.#cluster.workers;
  }

  /** Slots with a worker listening now (a hot restart's new one and its old one count once). */
  listeningSlots(): number {
    const slots = new Set<number>();
    for (const w of this.#workers) if (w.state === "ready") slots.add(w.slot);
    return slots.size;
  }

  get slots(): number {
    return this.#cluster.workers;
  }

  /** The start-up lines: one per listener, with the cluster's shape and its pub/sub. */
  #announce(listening: Bound[]): void {
    const o = this.#cluster;
    const shape = `${o.workers} worker${o.workers === 1 ? "" : "s"}${o.threads > 1 ? ` × ${o.threads} threads` : ""}`;
    const engine = defaultEngine();
    const pubsub =
      engine === undefined ? "cluster pub/sub" : `cluster + ${engineLabel(engine)} pub/sub`;
    for (const b of listening as Bound[]) log.info(`listening on ${b.where} (${shape}, ${pubsub})`);
  }
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
      log.info(
        "hint: set sysctl net.ipv4.tcp_migrate_req=1 so connections opened during a restart are never reset (see README)",
      );
    }
  } catch {
    // not Linux, or no such setting
  }
}
