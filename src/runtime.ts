// The process runtime: the listeners an app or the CLI registered, starting them, and the
// graceful stop on SIGINT/SIGTERM (in-flight requests finish, the access log is flushed).
import type { Server } from "bun";
import { unlinkSync, existsSync, lstatSync } from "node:fs";
import { bindOrExplain, probeFreePort, type Address } from "./bind.ts";
import { CliError, IodineError } from "./errors.ts";
import { flushAccessLog, log, logException } from "./log.ts";
import { normaliseApp } from "./app.ts";
import { attachStandIn } from "./bun-serve.ts";
import { closedCallbacksDone, openConnections } from "./connection.ts";
import { stopAllTimers } from "./timers.ts";
import { closeAfterEachResponse, serveHttp } from "./server.ts";
import { nativeSockets } from "./websocket.ts";
import { DEFAULT_PORT, DEFAULTS, PORT_VARIABLES } from "./settings.ts";
import { fireState, stopIdleWatch, watchIdle } from "./state.ts";
import { driveEngineHere } from "./pubsub/single.ts";
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
  /** -k / --max-body were given: they win over the app's idleTimeout / maxRequestBodySize */
  keepAliveGiven: boolean;
  maxBodyGiven: boolean;
  ping: number;
  maxMsg: number;
  /** WebSocket permessage-deflate for upgrades that do not say (`--deflate`) */
  deflate: boolean;
  warmup: boolean;
  /** how long a graceful stop waits for in-flight requests before closing what is left, ms */
  drainMs: number;
}

const listeners: ListenOptions[] = [];
const servers: Server<unknown>[] = [];
const rawListeners: RawListener[] = [];
const unixPaths: string[] = [];
// Script mode (`bun app.ts`) has no command line: it takes $PORT when it is a valid port.
const envPort = ((v) => (/^\d+$/.test(v) && Number(v) <= 65535 ? Number(v) : undefined))(
  PORT_VARIABLES.map((name) => process.env[name] ?? "").find((v) => v !== "") ?? "",
);
let config: RunConfig = {
  port: envPort, hostname: undefined, unix: undefined, www: undefined, tls: undefined,
  verbose: false, keepAlive: DEFAULTS.keepAlive, bodyTimeout: DEFAULTS.bodyTimeout, maxBody: DEFAULTS.maxBody, ping: DEFAULTS.ping,
  keepAliveGiven: false, maxBodyGiven: false,
  maxMsg: DEFAULTS.maxMsg, deflate: DEFAULTS.deflate, warmup: false, drainMs: DEFAULTS.drainMs,
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
/** How long a stop waits for closed connections' callbacks (an async onClose) to return, ms. */
const CALLBACKS_MS = 2000;

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
    if (service === undefined && takesArguments(o.handler)) {
      // `(req) => Response` without `service`: raw by SPEC §4, so it would be called with no
      // request once per connection. Say so here rather than on the first connection.
      throw new TypeError(
        `Iodine.listen: "handler" is a function of ${o.handler.length} argument(s), as a fetch handler is, but a listener ` +
          `without "service" is raw and calls its handler with none to make each connection's handler; ` +
          `for HTTP write Iodine.listen({ service: "http", handler, … })`,
      );
    }
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

/**
 * As in iodine, a listener is raw unless it says otherwise (SPEC §4): `service: "http"`, a
 * `public` folder, or an app object with `fetch` make it HTTP; a function is a protocol factory.
 */
function isRaw(o: ListenOptions): o is RawListenOptions {
  if (o.service !== undefined) return o.service === "raw" || o.service === "tcp";
  if ((o as { public?: unknown }).public !== undefined) return false;
  const h = o.handler as unknown;
  return !(typeof h === "object" && h !== null && typeof (h as { fetch?: unknown }).fetch === "function");
}

/** A plain function (not a class) that declares parameters: a fetch handler, not a factory. */
function takesArguments(h: unknown): h is (...args: never[]) => unknown {
  return typeof h === "function" && h.length > 0 && !/^class[\s{]/.test(Function.prototype.toString.call(h));
}

/** True once the listeners are bound (or being bound). */
export function isStarted(): boolean {
  return state !== "idle";
}

/** Where an HTTP listener with these options will listen, before it does (an app's Bun.serve stand-in asks). */
export function plannedAddress(options: object): { port: number; hostname: string | undefined } {
  const app = normaliseApp(options);
  return { port: role.ports[0] ?? config.port ?? app?.port ?? DEFAULT_PORT, hostname: config.hostname ?? app?.hostname };
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

/** Binds every registered listener and installs the signal handlers. */
export async function startAll(): Promise<void> {
  if (state !== "idle") return;
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
  if (listeners.length === 0) {
    // Timers, clients and pub/sub run until Iodine.stop() or a signal, as `Iodine.start` does in
    // iodine's client scripts, even when none of them holds the loop open by itself.
    keepAlive = setInterval(() => {}, 1 << 30);
    log.info("running with no listener (timers, clients, pub/sub) until Iodine.stop(), SIGINT or SIGTERM");
  }
  watchIdle();
  await fireState("on_start");
}

/** Where a listener binds: its own options first, then the command line's, then the defaults. */
function address(i: number, o: ListenOptions, app?: { port?: number; hostname?: string; serve?: { unix?: string } }) {
  // A command-line address (or $PORT) wins over the app's Unix socket, as over its port.
  const appUnix = config.port === undefined && config.hostname === undefined ? app?.serve?.unix : undefined;
  const unix = o.unix ?? (o.port === undefined ? (config.unix ?? appUnix) : undefined);
  const port = role.ports[i] ?? o.port ?? config.port ?? app?.port ?? DEFAULT_PORT;
  const hostname = o.hostname ?? config.hostname ?? app?.hostname;
  const host = hostname === undefined ? "0.0.0.0" : hostname.includes(":") ? `[${hostname}]` : hostname;
  if (unix !== undefined) removeStaleSocket(unix);
  return { unix, port, hostname, host };
}

/** The address for a bind error: `tcp` is the URL the start-up line shows for a TCP listener. */
function bindAddress(a: Omit<Address, "where">, tcp: string): Address {
  return { ...a, where: a.unix !== undefined ? `unix:${a.unix}` : tcp };
}

/** The first worker of a cluster makes sure no one else holds the port it is about to share (reusePort). */
async function probeIfFirst(i: number, a: Address): Promise<void> {
  if (role.inCluster && role.ports[i] === undefined) await probeFreePort(a);
}

/** A TLS object without a certificate gets a self-signed one (as `--tls` does). */
async function readyTls(tls: TLS | TLSOptions | undefined): Promise<TLS | TLSOptions | undefined> {
  if (tls instanceof TLS) await tls.ensureCertificate();
  return tls;
}

async function startHttp(i: number, o: HttpListenOptions): Promise<Bound & { extra: string }> {
  const app = normaliseApp(o.handler)!;
  const bun = app.serve;
  const { unix, port, hostname, host } = address(i, o, app);
  if (unix !== undefined && unix === bun?.unix && role.inCluster) {
    throw new CliError(`the app's unix socket ${unix} cannot be shared by several workers; run it with -w 1 -t 1, or give -p PORT`);
  }
  // Once per process (a cluster's workers each say it: the first worker's line is the one seen).
  for (const note of app.notes ?? []) if (!role.isThread && (!role.inCluster || role.ports[i] === undefined)) log.warn(note);
  const www = o.public ?? config.www;
  // The command line's TLS wins; then the listener's; then the app's own Bun TLS options, as they are.
  const own = o.tls ?? config.tls;
  const tls = own !== undefined ? await readyTls(own) : undefined;
  const appTls = own === undefined ? bun?.tls : undefined;
  const secure = tls !== undefined || appTls !== undefined;
  const at = bindAddress({ unix, port, hostname }, `${secure ? "https" : "http"}://${host}:${port}`);
  await probeIfFirst(i, at);
  if (config.warmup) await warmup(app.fetch);
  const server = await bindOrExplain(at, () =>
    serveHttp({
      fetch: app.fetch,
      ...(app.websocket ? { websocket: app.websocket } : {}),
      port,
      ...(hostname !== undefined ? { hostname } : {}),
      ...(unix !== undefined ? { unix } : {}),
      ...(www !== undefined ? { www } : {}),
      ...(tls !== undefined ? { tls: serverTls(tls) } : appTls !== undefined ? { tls: appTls as never } : {}),
      ...(bun?.routes !== undefined ? { routes: bun.routes } : {}),
      ...(bun?.error !== undefined ? { error: bun.error } : {}),
      ...(bun?.development !== undefined ? { development: bun.development } : {}),
      ...(bun !== undefined ? { extra: bun.extra } : {}),
      verbose: config.verbose,
      // -k and --max-body win; then the app's idleTimeout and maxRequestBodySize; then iodine's defaults.
      keepAlive: config.keepAliveGiven ? config.keepAlive : (bun?.idleTimeout ?? config.keepAlive),
      bodyTimeout: config.bodyTimeout,
      maxBody: config.maxBodyGiven ? config.maxBody : (bun?.maxRequestBodySize ?? config.maxBody),
      ping: config.ping,
      maxMsg: config.maxMsg,
      deflate: config.deflate,
      reusePort: role.inCluster,
    }),
  );
  servers.push(server);
  attachStandIn(o.handler, server);
  if (unix !== undefined) unixPaths.push(unix);
  const where = unix !== undefined ? `unix:${unix}` : `${secure ? "https" : "http"}://${host}:${server.port}`;
  return { where, port: unix === undefined ? server.port : undefined, extra: www !== undefined ? `, public folder ${www}` : "" };
}

async function startRaw(i: number, o: RawListenOptions): Promise<Bound & { extra: string }> {
  const { unix, port, hostname, host } = address(i, o);
  const tls = await readyTls(o.tls);
  const at = bindAddress({ unix, port, hostname }, `${tls ? "tls" : "tcp"}://${host}:${port}`);
  await probeIfFirst(i, at);
  const listener = await bindOrExplain(at, () =>
    listenRaw({ port, hostname, unix, handler: o.handler, tls, timeout: o.timeout ?? 0, reusePort: role.inCluster }),
  );
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
  clearInterval(keepAlive);
  keepAlive = undefined;
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
  // What the closed connections' callbacks still do (an async onClose publishing "ann left").
  const settled = await Promise.race([closedCallbacksDone().then(() => true), Bun.sleep(CALLBACKS_MS).then(() => false)]);
  if (!settled) log.warn(`stop: connection callbacks still running after ${CALLBACKS_MS} ms; leaving them`);
  for (const fn of lastOnStop) await fn();
  for (const p of unixPaths) removeStaleSocket(p);
  await stopEngine?.();
  stopEngine = undefined;
  await fireState("on_finish");
  flushAccessLog();
}

/**
 * A stop signal that repeats one already taken within this long is the same request. A terminal's
 * Ctrl-C reaches every process of its group at once, and `bun run` (or the CLI's header-size
 * re-launch) forwards it to its child again, so one keystroke arrives two or three times within
 * milliseconds; only a signal after this window means "stop now".
 */
export const SAME_STOP_MS = 1000;

/** Tells a first stop signal from a repeat of it and from a later one that means "now". */
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
  if (kind === "repeat") return log.debug(`${why}: already stopping (the same Ctrl-C, passed on again)`);
  if (kind === "now") {
    log.warn(`${why} again: stopping at once`);
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
    process.on("SIGTERM", () => (stops.taken ? undefined : onStop("SIGTERM")));
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
