// The HTTP service on Bun.serve: one listener's options as Bun takes them, its request path
// (request.ts) on `fetch` and on Bun's routes (routes.ts), `server.upgrade` as an app sees it, and
// what may change while it listens (`server.reload`, a hot restart's hand-over).
import { httpServers } from "../metrics/counters.ts";
import type { Server, TLSOptions, WebSocketHandler } from "bun";
import { OUTGOING_LIMIT } from "../connections/connection.ts";
import { setSsePing } from "../connections/sse.ts";
import { DEFLATE_MIN, websocketHandlers, WsConnection } from "../connections/websocket.ts";
import { logException, startClock } from "../log.ts";
import { attachServer } from "../pubsub/registry.ts";
import type { FetchHandler } from "../types.ts";
import { answerError, type AppErrorHandler } from "./app-errors.ts";
import { bodyDeadline, noteAppTimeouts, type BodyDeadline } from "./body-deadline.ts";
import { makeFetch, staticFiles, upgraded, type Fetch } from "./request.ts";
import { internalError } from "./responses.ts";
import { bunRoutes } from "./routes.ts";
import type { StaticFiles } from "./static.ts";

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

/**
 * Bun's own `Bun.serve`, taken before an app can replace it: under the CLI, an app's calls to
 * Bun.serve become iodine listeners (bun-serve.ts), which are made with this one.
 */
export const bunServe: typeof Bun.serve = Bun.serve.bind(Bun);

// Each listener's request function and routes (for closeAfterEachResponse), and what built them (for reloadHttp).
interface Built {
  fetch: Fetch;
  routes: Record<string, unknown> | undefined;
  statics: StaticFiles | undefined;
  verbose: boolean;
  deadline: BodyDeadline | undefined;
}
const fetchOf = new WeakMap<Server<unknown>, Built>();

/** Starts one HTTP listener. */
export function serveHttp(o: HttpServiceOptions): Server<unknown> {
  startClock();
  setSsePing(o.ping);
  const statics = o.www === undefined ? undefined : staticFiles(o.www);
  const built = build(o, statics, o.verbose, bodyDeadline(o.bodyTimeout, o.keepAlive));
  const common = {
    ...o.extra,
    development: o.development ?? false,
    idleTimeout: o.keepAlive,
    maxRequestBodySize: o.maxBody,
    fetch: built.fetch,
    ...(built.routes !== undefined ? { routes: built.routes } : {}),
    error(this: Server<unknown>, err: Error) {
      if (o.error !== undefined) return answerError(this, err, o.error);
      logException("unhandled error in fetch", err);
      return internalError();
    },
    ...(o.tls ? { tls: o.tls } : {}),
    websocket: websocketOptions(o, (): Server<unknown> => server),
  };
  // reusePort is always given: with `development: false` and no reusePort, Bun 1.4.5 sets
  // SO_REUSEPORT, and a server on a port already in use binds beside its holder instead of failing.
  const where =
    o.unix !== undefined
      ? { unix: o.unix }
      : {
          port: o.port,
          ...(o.hostname ? { hostname: o.hostname } : {}),
          reusePort: o.reusePort === true,
        };
  const server: Server<unknown> = bunServe({ ...common, ...where } as Parameters<
    typeof Bun.serve
  >[0]);
  fetchOf.set(server, built);
  attachServer(server, o.websocket !== undefined, DEFLATE_MIN);
  httpServers.add(server);
  noteAppTimeouts(server);
  interceptUpgrade(server, o);
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
  const rebuilt = build(next, built.statics, built.verbose, built.deadline);
  fetchOf.set(server, rebuilt);
  const { fetch, routes } = rebuilt;
  server.reload({ fetch, ...(routes !== undefined ? { routes } : {}) } as Parameters<
    Server<unknown>["reload"]
  >[0]);
}

/** The request function and routes of a listener from its handlers. */
function build(
  h: HttpHandlers,
  statics: StaticFiles | undefined,
  verbose: boolean,
  deadline: BodyDeadline | undefined,
): Built {
  const fetch = makeFetch(h.fetch, statics, verbose, deadline, h.error);
  // Route handlers go through the same request path as fetch; static answers stay Bun's own.
  const routes =
    h.routes === undefined
      ? undefined
      : bunRoutes(h.routes, (r) => makeFetch(r, undefined, verbose, deadline, h.error), verbose);
  return { fetch, routes, statics, verbose, deadline };
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

/** Bun's `websocket` option: the CLI's limits, a Bun-native app's own settings over them, and the handlers. */
function websocketOptions(
  o: HttpServiceOptions,
  server: () => Server<unknown>,
): WebSocketHandler<unknown> {
  return {
    maxPayloadLength: o.maxMsg,
    idleTimeout: o.ping,
    sendPings: true,
    // SPEC §5: a subscriber that cannot keep up is closed, never silently skipped while open.
    backpressureLimit: OUTGOING_LIMIT,
    closeOnBackpressureLimit: true,
    // Always on, so that any one upgrade can take it: an upgrade without it loses the client's
    // offer first (see interceptUpgrade). One compressor shared by every socket: no memory per socket.
    perMessageDeflate: true,
    ...nativeOptions(o.websocket),
    ...websocketHandlers(o.websocket, server),
  };
}

/** `server.upgrade` as an app sees it: iodine's connections and Bun-native sockets on one server. */
function interceptUpgrade(server: Server<unknown>, o: HttpServiceOptions): void {
  const own = server.upgrade.bind(server);
  const native = o.websocket !== undefined;
  // A Bun-native app that sets perMessageDeflate decides for its own sockets; else `--deflate` does.
  const nativeDeflate = o.websocket?.perMessageDeflate !== undefined || o.deflate;
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
function nativeOptions(
  ws: WebSocketHandler<unknown> | undefined,
): Partial<WebSocketHandler<unknown>> {
  if (!ws) return {};
  const { open: _o, message: _m, drain: _d, close: _c, ping: _p, pong: _q, ...settings } = ws;
  return settings;
}
