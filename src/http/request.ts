// The request path: the function each listener (and each of its routes) hands Bun as `fetch`. The
// Host guard (SPEC §10), static files before the app (§6), the app under the body deadline, what
// its answer asks for (an upgrade, X-Sendfile, HEAD completion), and with -v the access log (§7).
import type { Server } from "bun";
import { SseConnection } from "../connections/sse.ts";
import { UpgradeResponse } from "../connections/upgrade.ts";
import { accessLog, clock } from "../log.ts";
import { counting, countRequest } from "../metrics/counters.ts";
import { bodyBytes, NativeResponse } from "./body-size.ts";
import { activity } from "../hooks.ts";
import type { FetchHandler } from "../types.ts";
import { appFailed, notAResponse, type AppErrorHandler } from "./app-errors.ts";
import { hasBody, type BodyDeadline } from "./body-deadline.ts";
import { unusualHost, validHost } from "./guards.ts";
import { badRequest, type Answer } from "./responses.ts";
import type { StaticFiles } from "./static.ts";

export type Fetch = (req: Request, server: Server<unknown>) => Answer;
type Handle = (req: Request, server: Server<unknown>, method: string) => Answer;
type Respond = (req: Request, server: Server<unknown>, url: string, method: string) => Answer;

/**
 * Requests a Bun-native app upgraded with `server.upgrade` itself (server.ts marks them): its
 * `fetch` then returns undefined, which is right for them and a bug for any other request.
 */
export const upgraded = new WeakSet<Request>();

// One X-Sendfile resolver shared by every listener: it serves absolute paths the app names,
// so it needs no public folder of its own.
let sendfiler: StaticFiles | undefined;

/**
 * Builds the per-request function. The common case (no log, no public folder) does the SPEC §10
 * guards, calls the app and looks at its response once: no closure, no URL object, no Date.
 */
export function makeFetch(
  app: FetchHandler | Fetch,
  statics: StaticFiles | undefined,
  verbose: boolean,
  deadline: BodyDeadline | undefined,
  onError?: AppErrorHandler,
): Fetch {
  const handle: Handle = (req, server, method) => {
    // Bun hands the app no body for GET and HEAD, so those never wait for one.
    if (deadline !== undefined && method !== "GET" && method !== "HEAD" && hasBody(req))
      return deadline.run(req, server, method, call);
    return call(req, server, method);
  };

  const call: Handle = (req, server, method) => {
    let res: ReturnType<Fetch>;
    activity.count++;
    try {
      res = app(req, server);
    } catch (err) {
      return appFailed(req, server, err, onError);
    }
    if (res instanceof Promise)
      return res.then(
        (r) => finish(req, server, method, r),
        (err) => appFailed(req, server, err, onError),
      );
    return finish(req, server, method, res);
  };

  const respond: Respond = (req, server, url, method) => {
    if (statics !== undefined) {
      const start = url.indexOf("/", 8);
      const q = url.indexOf("?", start);
      const file = statics.serve(req, method, q === -1 ? url.slice(start) : url.slice(start, q));
      if (file !== undefined) return file;
    }
    return handle(req, server, method);
  };

  const fetch = plainOrLogged(handle, respond, statics, verbose);
  return counting ? counted(fetch) : fetch;
}

function plainOrLogged(
  handle: Handle,
  respond: Respond,
  statics: StaticFiles | undefined,
  verbose: boolean,
): Fetch {
  if (verbose) return withAccessLog(respond);
  if (statics === undefined) {
    return (req, server) => {
      if (!validHost(req.headers.get("host")))
        return unusualHost(req, server, (r) => handle(r, server, r.method));
      return handle(req, server, req.method);
    };
  }
  return (req, server) => {
    if (!validHost(req.headers.get("host")))
      return unusualHost(req, server, (r) => respond(r, server, r.url, r.method));
    return respond(req, server, req.url, req.method);
  };
}

/** `--metrics`: each answer's status and time go to this thread's counters (an upgrade counts as 101). */
function counted(fetch: Fetch): Fetch {
  const done = (res: Response | undefined, t0: number) =>
    countRequest(res === undefined ? 101 : res.status, performance.now() - t0);
  return (req, server) => {
    const t0 = performance.now();
    const res = fetch(req, server);
    if (res instanceof Promise)
      return res.then((r) => {
        done(r, t0);
        return r;
      });
    done(res, t0);
    return res;
  };
}

/** What the app's answer asks for: an upgrade (Iodine.upgrade), X-Sendfile, a complete HEAD. */
function finish(
  req: Request,
  server: Server<unknown>,
  method: string,
  res: unknown,
): Response | undefined | Promise<Response> {
  if (res instanceof UpgradeResponse) {
    const c = res.connection;
    if (c instanceof SseConnection) {
      server.timeout(req, 0); // an event stream is exempt from the keep-alive idle timeout
      return c.response(res.upgradeHeaders);
    }
    if (server.upgrade(req, { data: c, headers: res.upgradeHeaders } as never)) return undefined;
    return badRequest();
  }
  // The native class: with -v the global Response is a subclass whose `instanceof` is a call.
  if (!(res instanceof NativeResponse)) {
    if (res === undefined && upgraded.has(req)) return undefined;
    return notAResponse(req, method, res);
  }
  const sendfile = res.headers.get("x-sendfile");
  if (sendfile !== null) return (sendfiler ??= staticFiles("/")).sendfile(req, res, sendfile);
  if (method === "HEAD") return completeHead(res);
  return res;
}

/**
 * The static-file server for `root`: its code (and node:fs) loads only for a listener with a public
 * folder or the first response with X-Sendfile, not on every start.
 */
export function staticFiles(root: string): StaticFiles {
  const { StaticFiles } = require("./static.ts") as typeof import("./static.ts");
  return new StaticFiles({ root });
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

// --- the access log (-v) ---

/** The request path with one access-log line per request, a 400 from the Host guard included. */
function withAccessLog(respond: Respond): Fetch {
  const logged = (req: Request, server: Server<unknown>): Answer => {
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
      return unusualHost(
        req,
        server,
        (r) => logged(r, server),
        (bad) => writeLog(server, req, req.method, req.url, bad, performance.now()),
      );
    }
    return logged(req, server);
  };
}

function writeLog(
  server: Server<unknown>,
  req: Request,
  method: string,
  target: string,
  res: Response | undefined,
  t0: number,
): void {
  let ip = server.requestIP(req)?.address;
  if (ip?.startsWith("::ffff:")) ip = ip.slice(7); // IPv4-mapped IPv6, as on a dual-stack socket
  // An upgraded request has no Response: 101 Switching Protocols is what went out.
  if (res === undefined) accessLog(ip, method, target, 101, -1, performance.now() - t0);
  else accessLog(ip, method, target, res.status, sentBytes(method, res), performance.now() - t0);
}

/**
 * The body bytes that go out: none for HEAD, 204 and 304 (Bun sends no body with them); else the
 * body's length (body-size.ts); else, for a stream or an untracked response, its Content-Length.
 */
function sentBytes(method: string, res: Response): number {
  const status = res.status;
  if (method === "HEAD" || status === 304 || status === 204) return 0;
  const known = bodyBytes(res);
  if (known >= 0) return known;
  const declared = res.headers.get("content-length");
  if (declared === null || declared === "") return -1;
  const n = Number(declared);
  return Number.isSafeInteger(n) && n >= 0 ? n : -1;
}
