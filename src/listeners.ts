// One listener of `Iodine.listen` (SPEC §3, §4): its options checked when it is registered, and
// bound when the process starts: its address (its own, then the command line's, then the app's,
// then the defaults), HTTP on Bun.serve or raw on Bun.listen, TLS, the warm-up request.
import type { Server, TLSOptions as BunTLSOptions } from "bun";
import { normaliseApp } from "./app.ts";
import { bindOrExplain, probeFreePort, type Address } from "./bind.ts";
import { CliError } from "./errors.ts";
import { nodeFs } from "./lazy-node.ts";
import { DEFAULT_PORT } from "./limits.ts";
import { log, logException } from "./log.ts";
import type { Placement } from "./placement.ts";
import { handlerMaker } from "./connections/handler.ts";
import type { RawListener } from "./connections/raw-listener.ts";
import { serveHttp, type HttpServiceOptions } from "./http/server.ts";
import type {
  HttpListenOptions,
  ListenOptions,
  RawListenOptions,
  TLSOptions,
  TLSSettings,
} from "./types.ts";

/**
 * What listeners inherit: the command line's settings (the CLI passes its own object), or the
 * defaults in script mode. The limits are the HTTP service's own options, under the same names.
 */
export interface ListenDefaults extends Pick<
  HttpServiceOptions,
  "verbose" | "keepAlive" | "bodyTimeout" | "maxBody" | "ping" | "maxMsg" | "deflate"
> {
  /** undefined: the listener's own port, else the app's, else 3000 */
  port: number | undefined;
  hostname: string | undefined;
  unix: string | undefined;
  www: string | undefined;
  /** call the app once before accepting connections (`--warmup`) */
  warmup: boolean;
  /** the options given on the command line or in the config file: -k and --max-body win over the app's own */
  given: ReadonlySet<string>;
}

/** What binding reads: the defaults, the command line's TLS (it wins over a listener's) and where this process runs. */
export interface BindContext {
  readonly defaults: ListenDefaults;
  readonly tls: TLSOptions | undefined;
  readonly placement: Placement;
}

/** One bound listener, as the start-up line shows it. */
export interface Bound {
  where: string;
  port: number | undefined;
}

/** A bound listener: what the start-up line shows, and what the stop closes. */
export type Started = Bound & { extra: string; unix: string | undefined } & (
    { server: Server<unknown>; raw?: undefined } | { raw: RawListener; server?: undefined }
  );

/** Checks a listener's options as `Iodine.listen` receives them (STYLE §F: at the call site). */
export function checkListenOptions(o: ListenOptions): void {
  if (o === null || typeof o !== "object")
    throw new TypeError(
      `Iodine.listen: options must be an object, got ${o === null ? "null" : typeof o}`,
    );
  const service = (o as { service?: unknown }).service;
  if (service !== undefined && service !== "http" && service !== "raw" && service !== "tcp") {
    throw new TypeError(
      `Iodine.listen: "service" must be "http", "raw" or "tcp", got ${JSON.stringify(service)}`,
    );
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
      throw new RangeError(
        `Iodine.listen: "timeout" must be a number of seconds ≥ 0, got "${String(o.timeout)}"`,
      );
    }
  } else if (!normaliseApp(o.handler)) {
    throw new TypeError(
      `Iodine.listen: "handler" must be a fetch function or an object with fetch, got ${typeof o.handler}`,
    );
  }
  if (o.port !== undefined && (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535)) {
    throw new RangeError(
      `Iodine.listen: "port" must be an integer 0–65535, got "${String(o.port)}"`,
    );
  }
}

/**
 * As in iodine, a listener is raw unless it says otherwise (SPEC §4): `service: "http"`, a
 * `public` folder, or an app object with `fetch` make it HTTP; a function is a protocol factory.
 */
function isRaw(o: ListenOptions): o is RawListenOptions {
  if (o.service !== undefined) return o.service === "raw" || o.service === "tcp";
  if ((o as { public?: unknown }).public !== undefined) return false;
  const h = o.handler as unknown;
  return !(
    typeof h === "object" &&
    h !== null &&
    typeof (h as { fetch?: unknown }).fetch === "function"
  );
}

/** A plain function (not a class) that declares parameters: a fetch handler, not a factory. */
function takesArguments(h: unknown): h is (...args: never[]) => unknown {
  return (
    typeof h === "function" &&
    h.length > 0 &&
    !/^class[\s{]/.test(Function.prototype.toString.call(h))
  );
}

/** Binds listener number `i`: HTTP or raw, as its options say. */
export function bindListener(i: number, o: ListenOptions, at: BindContext): Promise<Started> {
  return isRaw(o) ? startRaw(i, o, at) : startHttp(i, o, at);
}

/** Where an HTTP listener with these options will listen, before it does (an app's Bun.serve stand-in asks). */
export function plannedAddress(
  options: object,
  at: BindContext,
): { port: number; hostname: string | undefined } {
  const app = normaliseApp(options);
  const { defaults, placement } = at;
  return {
    port: placement.ports[0] ?? defaults.port ?? app?.port ?? DEFAULT_PORT,
    hostname: defaults.hostname ?? app?.hostname,
  };
}

/** Where a listener binds: its own options first, then the command line's, then the defaults. */
function address(
  i: number,
  o: ListenOptions,
  at: BindContext,
  app?: { port?: number; hostname?: string; serve?: { unix?: string } },
) {
  const config = at.defaults;
  // A command-line address (or $PORT) wins over the app's Unix socket, as over its port.
  const appUnix =
    config.port === undefined && config.hostname === undefined ? app?.serve?.unix : undefined;
  const unix = o.unix ?? (o.port === undefined ? (config.unix ?? appUnix) : undefined);
  const port = at.placement.ports[i] ?? o.port ?? config.port ?? app?.port ?? DEFAULT_PORT;
  const hostname = o.hostname ?? config.hostname ?? app?.hostname;
  const host =
    hostname === undefined ? "0.0.0.0" : hostname.includes(":") ? `[${hostname}]` : hostname;
  if (unix !== undefined) removeStaleSocket(unix);
  return { unix, port, hostname, host };
}

/** The address for a bind error: `tcp` is the URL the start-up line shows for a TCP listener. */
function bindAddress(a: Omit<Address, "where">, tcp: string): Address {
  return { ...a, where: a.unix !== undefined ? `unix:${a.unix}` : tcp };
}

/** The first worker of a cluster makes sure no one else holds the port it is about to share (reusePort). */
async function probeIfFirst(i: number, a: Address, placement: Placement): Promise<void> {
  if (placement.inCluster && placement.ports[i] === undefined) await probeFreePort(a);
}

/**
 * A listener's TLS as given and as Bun's options; a TLS object without a certificate gets a
 * self-signed one (as `--tls` does). The TLS code loads only for a listener that has TLS.
 */
async function readyTls(
  tls: TLSSettings | TLSOptions | undefined,
): Promise<{ given: TLSSettings | TLSOptions; bun: BunTLSOptions } | undefined> {
  if (tls === undefined) return undefined;
  const { serverTls, TLS } = await import("./tls.ts");
  if (tls instanceof TLS) await tls.ensureCertificate();
  return { given: tls, bun: serverTls(tls) };
}

async function startHttp(i: number, o: HttpListenOptions, at: BindContext): Promise<Started> {
  const { defaults: config, placement } = at;
  const app = normaliseApp(o.handler)!;
  const bun = app.serve;
  const { unix, port, hostname, host } = address(i, o, at, app);
  if (unix !== undefined && unix === bun?.unix && placement.inCluster) {
    throw new CliError(
      `the app's unix socket ${unix} cannot be shared by several workers; run it with -w 1 -t 1, or give -p PORT`,
    );
  }
  // Once per process (a cluster's workers each say it: the first worker's line is the one seen).
  for (const note of app.notes ?? [])
    if (!placement.isThread && (!placement.inCluster || placement.ports[i] === undefined))
      log.warn(note);
  const www = o.public ?? config.www;
  // The command line's TLS wins; then the listener's; then the app's own Bun TLS options, as they are.
  const own = o.tls ?? at.tls;
  const tls = own !== undefined ? await readyTls(own) : undefined;
  const appTls = own === undefined ? bun?.tls : undefined;
  const secure = tls !== undefined || appTls !== undefined;
  const bindAt = bindAddress(
    { unix, port, hostname },
    `${secure ? "https" : "http"}://${host}:${port}`,
  );
  await probeIfFirst(i, bindAt, placement);
  if (config.warmup) await warmup(app.fetch);
  const server = await bindOrExplain(bindAt, () =>
    serveHttp({
      fetch: app.fetch,
      ...(app.websocket ? { websocket: app.websocket } : {}),
      port,
      ...(hostname !== undefined ? { hostname } : {}),
      ...(unix !== undefined ? { unix } : {}),
      ...(www !== undefined ? { www } : {}),
      ...(tls !== undefined
        ? { tls: tls.bun }
        : appTls !== undefined
          ? { tls: appTls as never }
          : {}),
      ...(bun?.routes !== undefined ? { routes: bun.routes } : {}),
      ...(bun?.error !== undefined ? { error: bun.error } : {}),
      ...(bun?.development !== undefined ? { development: bun.development } : {}),
      ...(bun !== undefined ? { extra: bun.extra } : {}),
      verbose: config.verbose,
      // -k and --max-body win; then the app's idleTimeout and maxRequestBodySize; then iodine's defaults.
      keepAlive: config.given.has("keep-alive")
        ? config.keepAlive
        : (bun?.idleTimeout ?? config.keepAlive),
      bodyTimeout: config.bodyTimeout,
      maxBody: config.given.has("max-body")
        ? config.maxBody
        : (bun?.maxRequestBodySize ?? config.maxBody),
      ping: config.ping,
      maxMsg: config.maxMsg,
      deflate: config.deflate,
      reusePort: placement.inCluster,
    }),
  );
  const where =
    unix !== undefined ? `unix:${unix}` : `${secure ? "https" : "http"}://${host}:${server.port}`;
  const extra = www !== undefined ? `, public folder ${www}` : "";
  return { where, port: unix === undefined ? server.port : undefined, extra, unix, server };
}

async function startRaw(i: number, o: RawListenOptions, at: BindContext): Promise<Started> {
  const { unix, port, hostname, host } = address(i, o, at);
  const tls = await readyTls(o.tls);
  const bindAt = bindAddress({ unix, port, hostname }, `${tls ? "tls" : "tcp"}://${host}:${port}`);
  await probeIfFirst(i, bindAt, at.placement);
  const { listenRaw } = await import("./connections/raw-listener.ts");
  const raw = await bindOrExplain(bindAt, () =>
    listenRaw({
      port,
      hostname,
      unix,
      handler: o.handler,
      tls: tls?.given,
      timeout: o.timeout ?? 0,
      reusePort: at.placement.inCluster,
    }),
  );
  const where =
    unix !== undefined ? `unix:${unix}` : `${tls ? "tls" : "tcp"}://${host}:${raw.port}`;
  return { where, port: raw.port, extra: ", raw", unix, raw };
}

async function warmup(
  fetch: (req: Request, server: Server<unknown>) => Response | Promise<Response>,
): Promise<void> {
  try {
    // The warm-up request has no connection behind it: a server stub that can do nothing.
    const res = await fetch(new Request("http://localhost/"), WARMUP_SERVER);
    await res.arrayBuffer();
  } catch (err) {
    logException("warm-up request failed", err);
  }
}

const WARMUP_SERVER = new Proxy({} as Server<unknown>, {
  get: (_t, key) =>
    key === "upgrade" ? () => false : key === "requestIP" ? () => null : undefined,
});

export function removeStaleSocket(path: string): void {
  try {
    const fs = nodeFs();
    if (fs.existsSync(path) && fs.lstatSync(path).isSocket()) fs.unlinkSync(path);
  } catch {
    // not ours to remove
  }
}
