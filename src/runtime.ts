// The process runtime: the listeners an app or the CLI registered, starting them, and the
// graceful stop on SIGINT/SIGTERM (in-flight requests finish, the access log is flushed).
import type { Server } from "bun";
import { unlinkSync, existsSync, lstatSync } from "node:fs";
import { IodineError } from "./errors.ts";
import { flushAccessLog, log, logException } from "./log.ts";
import { normaliseApp } from "./app.ts";
import { openConnections } from "./connection.ts";
import { stopAllTimers } from "./timers.ts";
import { closeAfterEachResponse, serveHttp } from "./server.ts";
import { nativeSockets } from "./websocket.ts";
import { DEFAULT_PORT, DEFAULTS } from "./settings.ts";
import { fireState, stopIdleWatch, watchIdle } from "./state.ts";
import { driveEngineHere } from "./pubsub/engine.ts";
import { handlerMaker, listenRaw, type RawListener } from "./raw.ts";
import { serverTls, TLS } from "./tls.ts";
import type { HttpListenOptions, ListenOptions, RawListenOptions, TLSOptions } from "./types.ts";

/** What listeners inherit from the command line (or the defaults, in script mode). */
export interface RunConfig {
  port: number | undefined;
  hostname: string | undefined;
  unix: string | undefined;
  www: string | undefined;
  tls: TLSOptions | undefined;
  verbose: boolean;
  keepAlive: number;
  /** request body deadline, seconds (SPEC §10) */
  bodyTimeout: number;
  maxBody: number;
  ping: number;
  maxMsg: number;
  warmup: boolean;
  /** how long a graceful stop waits for in-flight requests before closing what is left, ms */
  drainMs: number;
}

const listeners: ListenOptions[] = [];
const servers: Server<unknown>[] = [];
const rawListeners: RawListener[] = [];
const unixPaths: string[] = [];
// Script mode (`bun app.ts`) has no command line: it takes $PORT when it is a valid port.
const envPort = /^\d+$/.test(process.env.PORT ?? "") && Number(process.env.PORT) <= 65535 ? Number(process.env.PORT) : undefined;
let config: RunConfig = {
  port: envPort, hostname: undefined, unix: undefined, www: undefined, tls: undefined,
  verbose: false, keepAlive: DEFAULTS.keepAlive, bodyTimeout: DEFAULTS.bodyTimeout, maxBody: DEFAULTS.maxBody, ping: DEFAULTS.ping,
  maxMsg: DEFAULTS.maxMsg, warmup: false, drainMs: DEFAULTS.drainMs,
};
let cliDriven = false;
let state: "idle" | "running" | "stopping" = "idle";

/**
 * Where this process runs (SPEC §8). A single process is both master and worker; in a cluster the
 * CLI sets this before the app module loads, so `Iodine.isMaster` / `isWorker` are right there.
 */
export const role = {
  isMaster: true,
  isWorker: true,
  /** a worker of a cluster: shares its ports (reusePort) and leaves the start-up lines to the master */
  inCluster: false,
  /** an extra event-loop thread of a worker (`--threads`): no signals, no process.exit */
  isThread: false,
  /** ports the cluster already bound, by listener (so `-p 0` means the same port in every worker) */
  ports: [] as (number | undefined)[],
};

/** One bound listener, as the start-up line shows it. */
export interface Bound {
  where: string;
  port: number | undefined;
}
/** What `startAll` bound, in listener order. */
export const bound: Bound[] = [];

/**
 * How a graceful stop begins. "stop": stop accepting and close idle connections now (SIGINT/SIGTERM).
 * "handover": a hot restart's replacement already listens on the same ports, so first answer
 * requests for HANDOVER_MS more, each with `Connection: close`, letting busy keep-alive clients move
 * over without a failed request; then stop as above.
 */
export type StopMode = "stop" | "handover";
/** How long a handing-over worker keeps answering, ms: a busy keep-alive client sends its next request well within it. */
export const HANDOVER_MS = 500;

/** Work a graceful stop waits for besides the servers (a worker's extra threads). */
const alsoOnStop: ((mode: StopMode) => Promise<void>)[] = [];
/** closes the external pub/sub engine a single process drives */
let stopEngine: (() => Promise<void>) | undefined;
export function onStopping(fn: (mode: StopMode) => Promise<void>): void {
  alsoOnStop.push(fn);
}
/** Called by the CLI before it imports the app: `Iodine.start()` in the module then waits for the CLI. */
export function driveFromCli(c: RunConfig): void {
  cliDriven = true;
  config = c;
}

export function addListener(o: ListenOptions): void {
  if (state !== "idle") throw new IodineError("ELISTEN_LATE", "Iodine.listen: the server is already running; call listen before start");
  if (o === null || typeof o !== "object") throw new TypeError(`Iodine.listen: options must be an object, got ${o === null ? "null" : typeof o}`);
  const service = (o as { service?: unknown }).service;
  if (service !== undefined && service !== "http" && service !== "raw" && service !== "tcp") {
    throw new TypeError(`Iodine.listen: "service" must be "http", "raw" or "tcp", got ${JSON.stringify(service)}`);
  }
  if (isRaw(o)) {
    handlerMaker(o.handler, "Iodine.listen");
    if (o.timeout !== undefined && !(typeof o.timeout === "number" && o.timeout >= 0)) {
      throw new RangeError(`Iodine.listen: "timeout" must be a number of seconds ≥ 0, got "${String(o.timeout)}"`);
    }
  } else if (!normaliseApp(o.handler)) {
    throw new TypeError(`Iodine.listen: "handler" must be a fetch function or an object with fetch, got ${typeof o.handler}`);
  }
  if (o.port !== undefined && (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535)) {
    throw new RangeError(`Iodine.listen: "port" must be an integer 0–65535, got "${String(o.port)}"`);
  }
  listeners.push(o);
}

function isRaw(o: ListenOptions): o is RawListenOptions {
  return o.service === "raw" || o.service === "tcp";
}

export function listenerCount(): number {
  return listeners.length;
}

/** `Iodine.start()`: under the CLI the CLI starts after the module loaded; in script mode, start now. */
export function requestStart(): Promise<void> {
  if (cliDriven || state !== "idle") return Promise.resolve();
  return startAll();
}

/** Binds every registered listener and installs the signal handlers. */
export async function startAll(): Promise<void> {
  if (state !== "idle") return;
  if (listeners.length === 0) throw new IodineError("ENOLISTEN", "Iodine.start: nothing to serve; call Iodine.listen first");
  state = "running";
  installSignals();
  if (!role.inCluster) {
    // One process is master and worker: it holds the external engine (Redis) itself, and the app's
    // per-worker set-up (`enter_child`) runs here too.
    stopEngine = driveEngineHere();
    await fireState("pre_start");
    await fireState("enter_child");
  }
  for (const [i, o] of listeners.entries()) {
    const b = isRaw(o) ? await startRaw(i, o) : await startHttp(i, o);
    bound.push(b);
    if (role.inCluster) log.debug(`listening on ${b.where}`);
    else log.info(`listening on ${b.where} (1 worker, 1 thread${b.extra})`);
  }
  watchIdle();
  await fireState("on_start");
}

/** Where a listener binds: its own options first, then the command line's, then the defaults. */
function address(i: number, o: ListenOptions, app?: { port?: number; hostname?: string }) {
  const unix = o.unix ?? (o.port === undefined ? config.unix : undefined);
  const port = role.ports[i] ?? o.port ?? config.port ?? app?.port ?? DEFAULT_PORT;
  const hostname = o.hostname ?? config.hostname ?? app?.hostname;
  const host = hostname === undefined ? "0.0.0.0" : hostname.includes(":") ? `[${hostname}]` : hostname;
  if (unix !== undefined) removeStaleSocket(unix);
  return { unix, port, hostname, host };
}

/** A TLS object without a certificate gets a self-signed one (as `--tls` does). */
async function readyTls(tls: TLS | TLSOptions | undefined): Promise<TLS | TLSOptions | undefined> {
  if (tls instanceof TLS) await tls.ensureCertificate();
  return tls;
}

async function startHttp(i: number, o: HttpListenOptions): Promise<Bound & { extra: string }> {
  const app = normaliseApp(o.handler)!;
  const { unix, port, hostname, host } = address(i, o, app);
  const www = o.public ?? config.www;
  const tls = await readyTls(o.tls ?? config.tls);
  if (config.warmup) await warmup(app.fetch);
  const server = serveHttp({
    fetch: app.fetch,
    ...(app.websocket ? { websocket: app.websocket } : {}),
    port,
    ...(hostname !== undefined ? { hostname } : {}),
    ...(unix !== undefined ? { unix } : {}),
    ...(www !== undefined ? { www } : {}),
    ...(tls !== undefined ? { tls: serverTls(tls) } : {}),
    verbose: config.verbose,
    keepAlive: config.keepAlive,
    bodyTimeout: config.bodyTimeout,
    maxBody: config.maxBody,
    ping: config.ping,
    maxMsg: config.maxMsg,
    reusePort: role.inCluster,
  });
  servers.push(server);
  if (unix !== undefined) unixPaths.push(unix);
  const where = unix !== undefined ? `unix:${unix}` : `${tls ? "https" : "http"}://${host}:${server.port}`;
  return { where, port: unix === undefined ? server.port : undefined, extra: www !== undefined ? `, public folder ${www}` : "" };
}

async function startRaw(i: number, o: RawListenOptions): Promise<Bound & { extra: string }> {
  const { unix, port, hostname, host } = address(i, o);
  const tls = await readyTls(o.tls);
  const listener = listenRaw({ port, hostname, unix, handler: o.handler, tls, timeout: o.timeout ?? 0, reusePort: role.inCluster });
  rawListeners.push(listener);
  if (unix !== undefined) unixPaths.push(unix);
  const where = unix !== undefined ? `unix:${unix}` : `${tls ? "tls" : "tcp"}://${host}:${listener.port}`;
  return { where, port: listener.port, extra: ", raw" };
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
  // Bun's server.stop() does not resolve while WebSockets stay open: tell them, then close them.
  for (const c of [...openConnections]) c.shutdown();
  for (const ws of [...nativeSockets]) ws.close(1001, "server going away");
  const drained = Promise.all([...servers.map((s) => s.stop(false)), ...rawListeners.map((l) => l.stop()), ...others]);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), config.drainMs)));
  if ((await Promise.race([drained, late])) === "late") {
    log.warn(`stop: in-flight requests still running after ${config.drainMs} ms; closing them`);
    for (const l of rawListeners) l.terminate();
    await Promise.all(servers.map((s) => s.stop(true)));
  }
  clearTimeout(timer);
  for (const p of unixPaths) removeStaleSocket(p);
  await stopEngine?.();
  stopEngine = undefined;
  await fireState("on_finish");
  flushAccessLog();
}

let stops = 0;
/** Stops gracefully, then exits 0 (1 if the stop failed); asked a second time, exits at once. */
export function exitGracefully(why: string, mode: StopMode = "stop"): void {
  if (mode === "handover" && stops > 0) return; // a stop is under way already
  if (++stops > 1) {
    // A second Ctrl-C means "now".
    flushAccessLog();
    process.exit(130);
  }
  // In a cluster the master has said it already, once for all workers.
  (role.inCluster ? log.debug : log.info)(`${why}: stopping gracefully`);
  stopAll(mode).then(
    () => process.exit(0),
    (err) => {
      logException("stop failed", err);
      process.exit(1);
    },
  );
}

let signalsInstalled = false;
function installSignals(): void {
  if (signalsInstalled || role.isThread) return;
  signalsInstalled = true;
  const onStop = (signal: string) => exitGracefully(signal);
  if (role.inCluster) {
    // The master orchestrates: SIGTERM from it is the stop (once: a worker already handing over
    // carries on); a terminal's Ctrl-C reaches the whole process group, and the master's SIGTERM
    // follows it, so SIGINT here would stop twice.
    process.on("SIGTERM", () => (stops === 0 ? onStop("SIGTERM") : undefined));
    process.on("SIGINT", () => {});
    process.on("SIGUSR1", () => {});
    return;
  }
  process.on("SIGINT", () => onStop("SIGINT"));
  process.on("SIGTERM", () => onStop("SIGTERM"));
  // Without a listener SIGUSR1 would kill the process (Bun's default).
  process.on("SIGUSR1", () => log.warn("SIGUSR1: hot restart needs cluster mode (--workers > 1); ignored"));
}

async function warmup(fetch: (req: Request, server: Server<unknown>) => Response | Promise<Response>): Promise<void> {
  try {
    // The warm-up request has no connection behind it: a server stub that can do nothing.
    const res = await fetch(new Request("http://localhost/"), WARMUP_SERVER);
    await res.arrayBuffer();
  } catch (err) {
    logException("warm-up request failed", err);
  }
}

const WARMUP_SERVER = new Proxy({} as Server<unknown>, {
  get: (_t, key) => (key === "upgrade" ? () => false : key === "requestIP" ? () => null : undefined),
});

function removeStaleSocket(path: string): void {
  try {
    if (existsSync(path) && lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // not ours to remove
  }
}
