// This process's listeners and their lifecycle: registering them (`Iodine.listen`), starting them,
// and the graceful stop on SIGINT/SIGTERM (in-flight requests finish, the access log is flushed).
// Where the process runs (one process, a cluster's worker, a thread) is handed in by the entry point.
import type { Server } from "bun";
import { attachStandIn } from "./http/bun-serve.ts";
import { closedCallbacksDone, openConnections } from "./connections/connection.ts";
import { IodineError } from "./errors.ts";
import { fireState, stopIdleWatch, watchIdle } from "./hooks.ts";
import { CALLBACKS_MS, DEFAULTS, HANDOVER_MS, PORT_VARIABLES, SAME_STOP_MS } from "./limits.ts";
import {
  bindListener,
  checkListenOptions,
  plannedAddress as planned,
  removeStaleSocket,
  type BindContext,
  type Bound,
  type ListenDefaults,
} from "./listeners.ts";
import { flushAccessLog, log, logException } from "./log.ts";
import { SINGLE_PROCESS, type Placement } from "./placement.ts";
import { driveEngineHere } from "./pubsub/single.ts";
import type { RawListener } from "./connections/raw-listener.ts";
import { closeAfterEachResponse } from "./http/server.ts";
import { stopAllTimers } from "./timers.ts";
import type { ListenOptions, TLSOptions } from "./types.ts";
import { nativeSockets } from "./connections/websocket.ts";

export type { Bound } from "./listeners.ts";

const listeners: ListenOptions[] = [];
const servers: Server<unknown>[] = [];
const rawListeners: RawListener[] = [];
const unixPaths: string[] = [];
// Script mode (`bun app.ts`) has no command line: it takes $PORT when it is a valid port.
const envPort = ((v) => (/^\d+$/.test(v) && Number(v) <= 65535 ? Number(v) : undefined))(
  PORT_VARIABLES.map((name) => process.env[name] ?? "").find((v) => v !== "") ?? "",
);
const SCRIPT_DEFAULTS: ListenDefaults = {
  ...DEFAULTS,
  port: envPort,
  hostname: undefined,
  unix: undefined,
  www: undefined,
  verbose: false,
  warmup: false,
  given: new Set(),
};
/** the defaults, the command line's TLS and where this process runs: script mode's until the CLI hands in its own */
let context: BindContext = { defaults: SCRIPT_DEFAULTS, tls: undefined, placement: SINGLE_PROCESS };
let cliDriven = false;
let state: "idle" | "running" | "stopping" = "idle";

/** What `startAll` bound, in listener order. */
export const bound: Bound[] = [];

/**
 * How a graceful stop begins. "stop": stop accepting and close idle connections now (SIGINT/SIGTERM).
 * "handover": a hot restart's replacement already listens on the same ports, so first answer
 * requests for HANDOVER_MS more, each with `Connection: close`, letting busy keep-alive clients move
 * over without a failed request; then stop as above.
 */
export type StopMode = "stop" | "handover";

/** Work a graceful stop waits for besides the servers (a worker's extra threads). */
const alsoOnStop: ((mode: StopMode) => Promise<void>)[] = [];
/** closes the external pub/sub engine a single process drives */
let stopEngine: (() => Promise<void>) | undefined;
export function onStopping(fn: (mode: StopMode) => Promise<void>): void {
  alsoOnStop.push(fn);
}
/** Work a graceful stop does last, after every connection closed and its callbacks returned. */
const lastOnStop: (() => Promise<void>)[] = [];
export function beforeExit(fn: () => Promise<void>): void {
  lastOnStop.push(fn);
}

/**
 * Called by the CLI before it imports the app, with its settings (by reference), its TLS and where
 * this process runs: `Iodine.start()` in the module then waits for the CLI.
 */
export function driveFromCli(
  defaults: ListenDefaults,
  tls: TLSOptions | undefined,
  placement: Placement,
): void {
  cliDriven = true;
  context = { defaults, tls, placement };
}

/** Where this process runs, as the entry point said (`Iodine.isMaster`, `Iodine.isWorker`). */
export function placement(): Placement {
  return context.placement;
}

export function addListener(o: ListenOptions): void {
  if (state !== "idle")
    throw new IodineError(
      "ELISTEN_LATE",
      "Iodine.listen: the server is already running; call listen before start",
    );
  checkListenOptions(o);
  listeners.push(o);
}

/** True once the listeners are bound (or being bound). */
export function isStarted(): boolean {
  return state !== "idle";
}

/** Where an HTTP listener with these options will listen, before it does (an app's Bun.serve stand-in asks). */
export function plannedAddress(options: object): { port: number; hostname: string | undefined } {
  return planned(options, context);
}

export function listenerCount(): number {
  return listeners.length;
}

/** the module called `Iodine.start` or `Iodine.connect` */
let usedAsScript = false;

/** Noted by `Iodine.connect`: a module that only opens clients is a script too. */
export function noteScriptUse(): void {
  usedAsScript = true;
}

/**
 * True once the module used iodine as a script does (registered a listener, called `Iodine.start`
 * or `Iodine.connect`): the CLI then runs it without wanting a default export.
 */
export function ranAsScript(): boolean {
  return listeners.length > 0 || usedAsScript;
}

/** `Iodine.start()`: under the CLI the CLI starts after the module loaded; in script mode, start now. */
export function requestStart(): Promise<void> {
  usedAsScript = true;
  if (cliDriven || state !== "idle") return Promise.resolve();
  return startAll();
}

/** Holds the event loop open while a process without listeners runs (iodine's client scripts). */
let keepAlive: ReturnType<typeof setInterval> | undefined;

/**
 * Binds every registered listener and installs the signal handlers. `runAs` changes where this
 * process runs first: a cluster's master whose app opens no listener runs as one process.
 */
export async function startAll(runAs?: Placement): Promise<void> {
  if (state !== "idle") return;
  state = "running";
  if (runAs !== undefined) context = { ...context, placement: runAs };
  const { placement } = context;
  installSignals(placement);
  if (!placement.inCluster) {
    // One process is master and worker: it holds the external engine (Redis) itself, and the app's
    // per-worker set-up (`enter_child`) runs here too.
    stopEngine = driveEngineHere();
    await fireState("pre_start");
    await fireState("enter_child");
  }
  for (const [i, o] of listeners.entries()) {
    const b = await bindListener(i, o, context);
    if (b.server !== undefined) {
      servers.push(b.server);
      attachStandIn(o.handler, b.server);
    } else rawListeners.push(b.raw);
    if (b.unix !== undefined) unixPaths.push(b.unix);
    bound.push({ where: b.where, port: b.port });
    if (placement.inCluster) log.debug(`listening on ${b.where}`);
    else log.info(`listening on ${b.where} (1 worker, 1 thread${b.extra})`);
  }
  if (listeners.length === 0) {
    // Timers, clients and pub/sub run until Iodine.stop() or a signal, as `Iodine.start` does in
    // iodine's client scripts, even when none of them holds the loop open by itself.
    keepAlive = setInterval(() => {}, 1 << 30);
    log.info(
      "running with no listener (timers, clients, pub/sub) until Iodine.stop(), SIGINT or SIGTERM",
    );
  }
  watchIdle();
  await fireState("on_start");
}

/** Graceful stop: stop accepting, let in-flight requests finish (up to `drainMs`), flush the log. */
export async function stopAll(mode: StopMode = "stop"): Promise<void> {
  if (state === "stopping") return;
  state = "stopping";
  // A worker's extra threads stop (or hand over) beside this one.
  const others = alsoOnStop.map((f) => f(mode));
  if (mode === "handover") {
    // Still serving in full (the app's timers run, its shutdown hooks have not): only the answers change.
    for (const s of servers) closeAfterEachResponse(s);
    await Bun.sleep(HANDOVER_MS);
  }
  await fireState("start_shutdown");
  stopIdleWatch();
  stopAllTimers();
  clearInterval(keepAlive);
  keepAlive = undefined;
  await drain(others);
  // What the closed connections' callbacks still do (an async onClose publishing "ann left").
  const settled = await Promise.race([
    closedCallbacksDone().then(() => true),
    Bun.sleep(CALLBACKS_MS).then(() => false),
  ]);
  if (!settled)
    log.warn(`stop: connection callbacks still running after ${CALLBACKS_MS} ms; leaving them`);
  for (const fn of lastOnStop) await fn();
  for (const p of unixPaths) removeStaleSocket(p);
  await stopEngine?.();
  stopEngine = undefined;
  await fireState("on_finish");
  flushAccessLog();
}

/** Closes every connection and listener; what is still running after `drainMs` is cut. */
async function drain(others: Promise<void>[]): Promise<void> {
  // Bun's server.stop() does not resolve while WebSockets stay open: tell them, then close them.
  for (const c of [...openConnections]) c.shutdown();
  for (const ws of [...nativeSockets]) ws.close(1001, "server going away");
  const drained = Promise.all([
    ...servers.map((s) => s.stop(false)),
    ...rawListeners.map((l) => l.stop()),
    ...others,
  ]);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), DEFAULTS.drainMs)));
  if ((await Promise.race([drained, late])) === "late") {
    log.warn(`stop: in-flight requests still running after ${DEFAULTS.drainMs} ms; closing them`);
    for (const l of rawListeners) l.terminate();
    await Promise.all(servers.map((s) => s.stop(true)));
  }
  clearTimeout(timer);
}

/** Tells a first stop signal from a repeat of it (within SAME_STOP_MS) and from a later one that means "now". */
export class StopRequests {
  #first = 0;
  /** "first": stop gracefully; "repeat": the same keystroke again, ignore it; "now": stop at once */
  take(): "first" | "repeat" | "now" {
    const now = performance.now();
    if (this.#first === 0) {
      this.#first = now;
      return "first";
    }
    return now - this.#first < SAME_STOP_MS ? "repeat" : "now";
  }
  get taken(): boolean {
    return this.#first !== 0;
  }
}

const stops = new StopRequests();
/** Stops gracefully, then exits 0 (1 if the stop failed); asked again after SAME_STOP_MS, exits at once. */
export function exitGracefully(why: string, mode: StopMode = "stop"): void {
  if (mode === "handover" && stops.taken) return; // a stop is under way already
  const kind = stops.take();
  if (kind === "repeat")
    return log.debug(`${why}: already stopping (the same Ctrl-C, passed on again)`);
  if (kind === "now") {
    log.warn(`${why} again: stopping at once`);
    flushAccessLog();
    process.exit(130);
  }
  // In a cluster the master has said it already, once for all workers.
  (context.placement.inCluster ? log.debug : log.info)(`${why}: stopping gracefully`);
  stopAll(mode).then(
    () => process.exit(0),
    (err) => {
      logException("stop failed", err);
      process.exit(1);
    },
  );
}

let signalsInstalled = false;
function installSignals(placement: Placement): void {
  if (signalsInstalled || placement.isThread) return;
  signalsInstalled = true;
  const onStop = (signal: string) => exitGracefully(signal);
  if (placement.inCluster) {
    // The master orchestrates: SIGTERM from it is the stop (once: a worker already handing over
    // carries on); a terminal's Ctrl-C reaches the whole process group, and the master's SIGTERM
    // follows it, so SIGINT here would stop twice.
    process.on("SIGTERM", () => (stops.taken ? undefined : onStop("SIGTERM")));
    process.on("SIGINT", () => {});
    process.on("SIGUSR1", () => {});
    return;
  }
  process.on("SIGINT", () => onStop("SIGINT"));
  process.on("SIGTERM", () => onStop("SIGTERM"));
  // Without a listener SIGUSR1 would kill the process (Bun's default).
  process.on("SIGUSR1", () =>
    log.warn("SIGUSR1: hot restart needs cluster mode (--workers > 1); ignored"),
  );
}
