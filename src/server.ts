// The HTTP service on Bun.serve: request guards (SPEC §10), static files before the app (§6),
// the app, X-Sendfile and HEAD completion after it, the access log (§7), and limits.
import type { Server, TLSOptions, WebSocketHandler } from "bun";
import { accessLog, clock, describeError, log, logException, startClock } from "./log.ts";
import { attachServer } from "./pubsub/registry.ts";
import { activity } from "./state.ts";
import { setSsePing, SseConnection } from "./sse.ts";
import { StaticFiles } from "./static.ts";
import type { FetchHandler } from "./types.ts";
import { UpgradeResponse } from "./upgrade.ts";
import { DEFLATE_MIN, OUTGOING_LIMIT, websocketHandlers, WsConnection } from "./websocket.ts";

/** Everything one HTTP listener needs, resolved (bytes and seconds). */
export interface HttpServiceOptions {
  fetch: FetchHandler;
  websocket?: WebSocketHandler<unknown>;
  port: number;
  hostname?: string;
  unix?: string;
  www?: string;
  tls?: TLSOptions;
  verbose: boolean;
  /** keep-alive idle timeout, seconds (Bun's `idleTimeout`, 0–255) */
  keepAlive: number;
  /** how long a request body may stall, seconds (0: only the keep-alive timeout applies) */
  bodyTimeout: number;
  /** largest request body, bytes */
  maxBody: number;
  /** WebSocket ping interval, seconds */
  ping: number;
  /** largest WebSocket message, bytes */
  maxMsg: number;
  /** permessage-deflate for WebSockets whose upgrade does not say (`--deflate`) */
  deflate: boolean;
  /** share the port with the other workers of a cluster (SO_REUSEPORT) */
  reusePort?: boolean;
  /** Bun's `routes` (SPEC §3), matched by Bun's router before `fetch` */
  routes?: Record<string, unknown>;
  /** the app's `error(err)`: its Response answers an exception thrown by `fetch` or a route */
  error?: AppErrorHandler;
  /** Bun's `development` (its error page with source lines, HMR): off unless the app asks */
  development?: unknown;
  /** other Bun.serve options the app gave (ipv6Only, http2 …), passed on as they are */
  extra?: Record<string, unknown>;
}

/** Bun's `error` option: called with the server as `this`. */
export type AppErrorHandler = (this: Server<unknown>, error: Error) => unknown;

type Fetch = (req: Request, server: Server<unknown>) => Response | undefined | Promise<Response | undefined>;
type Handle = (req: Request, server: Server<unknown>, method: string) => ReturnType<Fetch>;

// Requests a Bun-native app upgraded with `server.upgrade` itself: its `fetch` then returns
// undefined, which is right for them and a bug for any other request.
const upgraded = new WeakSet<Request>();

const TEXT = { "content-type": "text/plain;charset=utf-8" };
const badRequest = () => new Response("Bad Request", { status: 400, headers: TEXT });
const internalError = () => new Response("Internal Server Error", { status: 500, headers: TEXT });

/**
 * Bun's own `Bun.serve`, taken before an app can replace it: under the CLI, an app's calls to
 * Bun.serve become iodine listeners (bun-serve.ts), which are made with this one.
 */
export const bunServe: typeof Bun.serve = Bun.serve.bind(Bun);

// Requests whose app set its own timeout with `server.timeout(req, s)`: the body deadline leaves them be.
const timedByApp = new WeakSet<Request>();

// Each listener's request function and routes (for closeAfterEachResponse), and what built them (for reloadHttp).
interface Built {
  fetch: Fetch;
  routes: Record<string, unknown> | undefined;
  statics: StaticFiles | undefined;
  verbose: boolean;
  deadline: BodyDeadline | undefined;
}
const fetchOf = new WeakMap<Server<unknown>, Built>();

// One X-Sendfile resolver shared by every listener: it serves absolute paths the app names,
// so it needs no public folder of its own.
let sendfiler: StaticFiles | undefined;

/** Starts one HTTP listener. */
export function serveHttp(o: HttpServiceOptions): Server<unknown> {
  startClock();
  setSsePing(o.ping);
  const statics = o.www === undefined ? undefined : new StaticFiles({ root: o.www });
  const deadline = bodyDeadline(o.bodyTimeout, o.keepAlive);
  const fetch = makeFetch(o.fetch, statics, o.verbose, deadline, o.error);
  // Route handlers go through the same request path as fetch; static answers stay Bun's own.
  const routes = o.routes === undefined ? undefined : bunRoutes(o.routes, (h) => makeFetch(h, undefined, o.verbose, deadline, o.error), o.verbose);
  const common = {
    ...o.extra,
    development: o.development ?? false,
    idleTimeout: o.keepAlive,
    maxRequestBodySize: o.maxBody,
    fetch,
    ...(routes !== undefined ? { routes } : {}),
    error(this: Server<unknown>, err: Error) {
      if (o.error !== undefined) return answerError(this, err, o.error);
      logException("unhandled error in fetch", err);
      return internalError();
    },
    ...(o.tls ? { tls: o.tls } : {}),
    websocket: {
      maxPayloadLength: o.maxMsg,
      idleTimeout: o.ping,
      sendPings: true,
      // SPEC §5: a subscriber that cannot keep up is closed, never silently skipped while open.
      backpressureLimit: OUTGOING_LIMIT,
      closeOnBackpressureLimit: true,
      // Always on, so that any one upgrade can take it: an upgrade without it loses the client's
      // offer first (see `upgrade` below). One compressor shared by every socket: no memory per socket.
      perMessageDeflate: true,
      ...nativeOptions(o.websocket),
      ...websocketHandlers(o.websocket, (): Server<unknown> => server),
    },
  };
  // reusePort is always given: with `development: false` and no reusePort, Bun 1.4.5 sets
  // SO_REUSEPORT, and a server on a port already in use binds beside its holder instead of failing.
  const where =
    o.unix !== undefined
      ? { unix: o.unix }
      : { port: o.port, ...(o.hostname ? { hostname: o.hostname } : {}), reusePort: o.reusePort === true };
  const server: Server<unknown> = bunServe({ ...common, ...where } as Parameters<typeof Bun.serve>[0]);
  fetchOf.set(server, { fetch, routes, statics, verbose: o.verbose, deadline });
  attachServer(server, o.websocket !== undefined, DEFLATE_MIN);
  const own = server.upgrade.bind(server);
  const native = o.websocket !== undefined;
  // A Bun-native app that sets perMessageDeflate decides for its own sockets; else `--deflate` does.
  const nativeDeflate = o.websocket?.perMessageDeflate !== undefined || o.deflate;
  // Learns which requests the app gave a timeout of its own, which the body deadline then leaves be.
  const ownTimeout = server.timeout.bind(server);
  Object.defineProperty(server, "timeout", {
    configurable: true,
    value: (req: Request, seconds: number) => {
      timedByApp.add(req);
      ownTimeout(req, seconds);
    },
  });
  Object.defineProperty(server, "upgrade", {
    configurable: true,
    value: (req: Request, options?: { data?: unknown; headers?: Bun.HeadersInit }) => {
      const data = options?.data;
      // Bun.serve throws here when it has no `websocket` handlers; iodine always has its own, so
      // without this an app's upgrade would open a socket nobody listens to.
      if (!native && !(data instanceof WsConnection)) {
        throw new TypeError(
          "server.upgrade: this app exports no `websocket` handlers; export `{ fetch, websocket }` " +
            "(Bun's shape) or hand the request to Iodine.upgrade(req, handler)",
        );
      }
      // Bun answers the client's permessage-deflate offer as it reads it from req.headers (Bun 1.4.5;
      // test/websocket.test.ts checks it): without the offer, this socket goes uncompressed.
      if (!(data instanceof WsConnection ? data.useDeflate(o.deflate) : nativeDeflate)) {
        req.headers.delete("sec-websocket-extensions");
      }
      const ok = own(req, options as never);
      if (ok) upgraded.add(req);
      return ok;
    },
  });
  return server;
}

/** What `server.reload(options)` may change: the request handlers. */
export interface HttpHandlers {
  fetch: FetchHandler;
  routes?: Record<string, unknown>;
  error?: AppErrorHandler;
}

/** `server.reload` of an app's Bun.serve stand-in: new handlers on iodine's request path, the rest as it was. */
export function reloadHttp(server: Server<unknown>, next: HttpHandlers): void {
  const built = fetchOf.get(server);
  if (built === undefined) return;
  const fetch = makeFetch(next.fetch, built.statics, built.verbose, built.deadline, next.error);
  const routes = next.routes === undefined ? undefined : bunRoutes(next.routes, (h) => makeFetch(h, undefined, built.verbose, built.deadline, next.error), built.verbose);
  fetchOf.set(server, { ...built, fetch, routes });
  server.reload({ fetch, ...(routes !== undefined ? { routes } : {}) } as Parameters<Server<unknown>["reload"]>[0]);
}

/**
 * A hot restart's hand-over (SPEC §8): a replacement worker already listens on this port. From now
 * on every response carries `Connection: close`, so a keep-alive client learns from an answer that
 * its next request goes on a new connection (to the replacement), instead of sending it into a socket
 * the stop closes under it: Bun's `server.stop()` closes idle keep-alive connections at once, and a
 * client that does not retry (wrk, many HTTP libraries) counts that as a failed request. Swapped in
 * with `server.reload`, so the request path costs nothing until then.
 */
export function closeAfterEachResponse(server: Server<unknown>): void {
  const own = fetchOf.get(server);
  if (own === undefined) return;
  const closing =
    (fetch: Fetch): Fetch =>
    (req, srv) => {
      const res = fetch(req, srv);
      return res instanceof Promise ? res.then(lastOnConnection) : lastOnConnection(res);
    };
  // reload replaces the routes too: each one answers through a function now, to carry the header.
  const routes = own.routes === undefined ? undefined : bunRoutes(own.routes, closing, true);
  server.reload({
    fetch: closing(own.fetch),
    ...(routes !== undefined ? { routes } : {}),
  } as Parameters<Server<unknown>["reload"]>[0]);
}

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"]);

/**
 * Bun's routes with every handler function wrapped by `wrap` (iodine's request path: guards,
 * Iodine.upgrade, error, X-Sendfile, HEAD, the access log). Static `Response`s and `Bun.file`s stay
 * Bun's own (served natively) unless `everyRequest` asks for a function per request too (the access
 * log, a hand-over); HTML imports always stay Bun's.
 */
function bunRoutes(routes: Record<string, unknown>, wrap: (h: Fetch) => Fetch, everyRequest: boolean): Record<string, unknown> {
  const one = (value: unknown): unknown => {
    if (typeof value === "function") return wrap(value as Fetch);
    if (!everyRequest) return value;
    if (value instanceof Response) return wrap(() => value.clone() as Response);
    if (value instanceof Blob) return wrap(() => new Response(value));
    return value;
  };
  const out: Record<string, unknown> = {};
  for (const [path, value] of Object.entries(routes)) {
    const perMethod = value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype;
    if (perMethod && Object.keys(value).every((k) => METHODS.has(k))) {
      out[path] = Object.fromEntries(Object.entries(value).map(([method, v]) => [method, one(v)]));
    } else out[path] = one(value);
  }
  return out;
}

/**
 * The app's `error(err)` answers (SPEC §3, as Bun.serve): its Response, or, when it returns none
 * or throws itself, the plain 500 with both logged.
 */
function answerError(server: Server<unknown>, err: unknown, onError: AppErrorHandler): Response | Promise<Response> {
  const fallback = (why: unknown) => {
    logException("app error", err);
    if (why !== err) logException("the app's error handler failed", why);
    return internalError();
  };
  const take = (r: unknown) => (r instanceof Response ? r : fallback(err));
  try {
    const r = onError.call(server, err instanceof Error ? err : new Error(String(err)));
    return r instanceof Promise ? r.then(take, fallback) : take(r);
  } catch (thrown) {
    return fallback(thrown);
  }
}

function lastOnConnection(res: Response | undefined): Response | undefined {
  if (res === undefined) return undefined; // upgraded: the connection is a WebSocket now
  try {
    res.headers.set("connection", "close");
  } catch {
    // Headers the Fetch standard makes immutable (Bun 1.4 has none): this response goes without.
  }
  return res;
}

/** A Bun-native app's own WebSocket settings (limits, compression) win over the CLI's. */
function nativeOptions(ws: WebSocketHandler<unknown> | undefined): Partial<WebSocketHandler<unknown>> {
  if (!ws) return {};
  const { open: _o, message: _m, drain: _d, close: _c, ping: _p, pong: _q, ...settings } = ws;
  return settings;
}

// --- request path ---

/**
 * Builds the per-request function. The common case (no log, no public folder) does the SPEC §10
 * guards, calls the app and looks at its response once: no closure, no URL object, no Date.
 */
function makeFetch(
  app: FetchHandler | Fetch,
  statics: StaticFiles | undefined,
  verbose: boolean,
  deadline: BodyDeadline | undefined,
  onError?: AppErrorHandler,
): Fetch {
  const finish = (req: Request, server: Server<unknown>, method: string, res: unknown): Response | undefined | Promise<Response> => {
    if (res instanceof UpgradeResponse) {
      const c = res.connection;
      if (c instanceof SseConnection) {
        server.timeout(req, 0); // an event stream is exempt from the keep-alive idle timeout
        return c.response(res.upgradeHeaders);
      }
      if (server.upgrade(req, { data: c, headers: res.upgradeHeaders } as never)) return undefined;
      return badRequest();
    }
    if (!(res instanceof Response)) {
      if (res === undefined && upgraded.has(req)) return undefined;
      log.error(`the app returned ${describe(res)} instead of a Response for ${method} ${req.url}`);
      return internalError();
    }
    const sendfile = res.headers.get("x-sendfile");
    if (sendfile !== null) return (sendfiler ??= new StaticFiles({ root: "/" })).sendfile(req, res, sendfile);
    if (method === "HEAD") return completeHead(res);
    return res;
  };
  const failed = (req: Request, server: Server<unknown>, err: unknown): Response | Promise<Response> => {
    // SPEC §10: a client that went away mid-request (the app's body read rejects with an AbortError)
    // is not an app error. The signal is only looked at here, on the failure path.
    if (req.signal.aborted) {
      log.debug(`the client went away during ${req.method} ${req.url}: ${describeError(err)}`);
      return internalError();
    }
    if (onError !== undefined) return answerError(server, err, onError);
    logException(`app error on ${req.method} ${req.url}`, err);
    return internalError();
  };

  const handle: Handle = (req, server, method) => {
    // Bun hands the app no body for GET and HEAD, so those never wait for one.
    if (deadline !== undefined && method !== "GET" && method !== "HEAD" && hasBody(req)) return deadline.run(req, server, method, call);
    return call(req, server, method);
  };

  const call: Handle = (req, server, method) => {
    let res: ReturnType<Fetch>;
    activity.count++;
    try {
      res = app(req, server);
    } catch (err) {
      return failed(req, server, err);
    }
    if (res instanceof Promise) return res.then((r) => finish(req, server, method, r), (err) => failed(req, server, err));
    return finish(req, server, method, res);
  };

  const respond = (req: Request, server: Server<unknown>, url: string, method: string) => {
    if (statics !== undefined) {
      const start = url.indexOf("/", 8);
      const q = url.indexOf("?", start);
      const file = statics.serve(req, method, q === -1 ? url.slice(start) : url.slice(start, q));
      if (file !== undefined) return file;
    }
    return handle(req, server, method);
  };

  if (!verbose) {
    if (statics === undefined) {
      return (req, server) => {
        if (!validHost(req.headers.get("host"))) return unusualHost(req, server, (r) => handle(r, server, r.method));
        return handle(req, server, req.method);
      };
    }
    return (req, server) => {
      if (!validHost(req.headers.get("host"))) return unusualHost(req, server, (r) => respond(r, server, r.url, r.method));
      return respond(req, server, req.url, req.method);
    };
  }

  const logged = (req: Request, server: Server<unknown>): Response | undefined | Promise<Response | undefined> => {
    const t0 = performance.now();
    const method = req.method;
    const url = req.url;
    const target = url.slice(url.indexOf("/", 8));
    const res = respond(req, server, url, method);
    if (res instanceof Promise) {
      return res.then((r) => {
        writeLog(server, req, method, target, r, t0);
        return r;
      });
    }
    writeLog(server, req, method, target, res, t0);
    return res;
  };
  return (req, server) => {
    if (!validHost(req.headers.get("host"))) {
      return unusualHost(req, server, (r) => logged(r, server), (bad) => writeLog(server, req, req.method, req.url, bad, performance.now()));
    }
    return logged(req, server);
  };
}

interface BodyDeadline {
  /** calls `next` under the deadline */
  run(req: Request, server: Server<unknown>, method: string, next: Handle): ReturnType<Fetch>;
}

/**
 * SPEC §10: a request body has a deadline of its own, shorter than the keep-alive idle time. While a
 * body comes in, Bun resets its idle timer only each time 16 KiB × the timeout has arrived, so a body
 * trickled slower than that held its connection (and the app awaiting it) for the whole `-k`. A
 * request with a body gets `server.timeout(req, bodyTimeout)` before the app runs; once the app has
 * read the body and answered, the connection is back on the keep-alive timeout. An app that answered
 * without reading the body leaves the connection on the deadline, so the unread rest cannot trickle
 * on for `-k`; an app that set its own `server.timeout(req, s)` keeps it. Undefined when the
 * deadline is off or not shorter than `-k`.
 */
function bodyDeadline(bodyTimeout: number, keepAlive: number): BodyDeadline | undefined {
  if (bodyTimeout <= 0 || (keepAlive > 0 && bodyTimeout >= keepAlive)) return undefined;
  const answered = (req: Request, server: Server<unknown>, res: Response | undefined): Response | undefined => {
    if (res !== undefined && req.bodyUsed && !timedByApp.has(req)) server.timeout(req, keepAlive);
    return res;
  };
  return {
    run(req, server, method, next) {
      server.timeout(req, bodyTimeout);
      timedByApp.delete(req); // that call went through serveHttp's wrapper, which took it for the app's
      const res = next(req, server, method);
      if (res instanceof Promise) return res.then((r) => answered(req, server, r));
      return answered(req, server, res);
    },
  };
}

/** RFC 9112 §6.3: a request has a body when it declares a length above 0 or a transfer coding. */
function hasBody(req: Request): boolean {
  const headers = req.headers;
  const length = headers.get("content-length");
  return length !== null ? length !== "0" : headers.get("transfer-encoding") !== null;
}

/**
 * RFC 9112 §3.2 wants 400 for a request with two Host fields (Bun joins them with ", ") or an
 * invalid one (Bun then gives a relative `req.url`, and `new URL(req.url)` throws in the app).
 * Host is uri-host [ ":" port ] (RFC 3986 §3.2.2): an IP literal or reg-name characters.
 */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=%]+)(?::\d*)?$/;
function validHost(host: string | null): boolean {
  return host !== null && HOST.test(host);
}

/**
 * The rare requests whose Host is not a plain valid one. No Host at all is an HTTP/1.0 request
 * (Bun answers 400 itself for HTTP/1.1): Bun gives it a relative URL, so the app gets a copy
 * with an absolute one (RFC 9112 §3.3: the server's own authority). A WebSocket handshake needs
 * HTTP/1.1 and a Host (RFC 6455 §4.1), so one without gets 400 here; Bun shows no HTTP version on
 * a Request, so an HTTP/1.0 handshake that does carry a Host cannot be told apart (README).
 */
function unusualHost(
  req: Request,
  server: Server<unknown>,
  next: (req: Request) => Response | undefined | Promise<Response | undefined>,
  onBad?: (res: Response) => void,
): Response | undefined | Promise<Response | undefined> {
  if (req.headers.get("host") === null && req.url.startsWith("/") && req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    const authority = `${server.hostname && server.hostname !== "0.0.0.0" ? server.hostname : "localhost"}:${server.port}`;
    const body = req.method === "GET" || req.method === "HEAD" ? null : req.body;
    const copy = new Request(`${server.url.protocol}//${authority}${req.url}`, { method: req.method, headers: req.headers, body, signal: req.signal });
    return next(copy);
  }
  const bad = badRequest();
  onBad?.(bad);
  return bad;
}

function writeLog(server: Server<unknown>, req: Request, method: string, target: string, res: Response | undefined, t0: number): void {
  let ip = server.requestIP(req)?.address ?? "-";
  if (ip.startsWith("::ffff:")) ip = ip.slice(7); // IPv4-mapped IPv6, as on a dual-stack socket
  // An upgraded request has no Response: 101 Switching Protocols is what went out.
  if (res === undefined) accessLog(ip, method, target, 101, "-", performance.now() - t0);
  else accessLog(ip, method, target, res.status, res.headers.get("content-length") ?? "-", performance.now() - t0);
}

/**
 * Bun sends a HEAD response without `Date` and `Content-Type`; RFC 9110 §9.3.2 wants the same
 * header fields as GET. A body without a declared type (a string, a buffer) is read once to learn
 * the type and length Bun would send; a body with a type is never read, so a streaming response
 * (SSE, NDJSON) is not drained by a HEAD.
 */
async function completeHead(res: Response): Promise<Response> {
  const headers = new Headers(res.headers);
  if (!headers.has("date")) headers.set("date", clock.http);
  if (!headers.has("content-type")) {
    const body = await res.blob();
    if (body.type !== "") headers.set("content-type", body.type);
    if (!headers.has("content-length")) headers.set("content-length", String(body.size));
    return new Response(null, { status: res.status, statusText: res.statusText, headers });
  }
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") {
    // A protocol factory given as an HTTP app (`export default () => new Protocol()`, or
    // `Iodine.listen({ service: "http", handler: () => new Protocol() })`) lands here.
    const o = v as Record<string, unknown>;
    const handler = ["onOpen", "onMessage", "on_open", "on_message"].some((k) => typeof o[k] === "function");
    const hint = handler ? `: a connection handler; a raw TCP service is Iodine.listen({ port, handler }) without service "http"` : "";
    return `an object (${v.constructor?.name ?? "Object"})${hint}`;
  }
  return typeof v === "undefined" ? "undefined" : `a ${typeof v}`;
}
