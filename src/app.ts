// An app's default export, normalised (SPEC §3): a function, `{ fetch }`, `{ fetch, websocket }`,
// Bun's `{ port, fetch }` or a Bun.serve options object (routes, error, tls, unix …), checked as
// Bun.serve checks them. Loading the module is the command line's (src/cli/load-app.ts).
import { CliError } from "./errors.ts";
import type { AppObject, FetchHandler } from "./types.ts";

/** A default export (or an `Iodine.listen` handler, or a `Bun.serve` call's options), normalised. */
export interface LoadedApp {
  fetch: FetchHandler;
  websocket?: AppObject["websocket"];
  port?: number;
  hostname?: string;
  /** the rest of a Bun.serve options object (a plain-object export), as Bun.serve reads it */
  serve?: ServeExtras;
  /** what of the export iodine does not do as asked, each with the fix: one start-up line each */
  notes?: string[];
}

/** Bun.serve options beyond fetch/websocket/port/hostname that iodine honours (SPEC §3). */
export interface ServeExtras {
  routes?: Record<string, unknown>;
  error?: (this: import("bun").Server<unknown>, error: Error) => unknown;
  unix?: string;
  tls?: unknown;
  /** bytes */
  maxRequestBodySize?: number;
  /** seconds */
  idleTimeout?: number;
  development?: unknown;
  /** options passed to Bun.serve as they are (ipv6Only, http2, id …) */
  extra: Record<string, unknown>;
  /** options iodine sets itself, each with why: one start-up line each */
  notes: string[];
}

/**
 * Elysia's `.ws()` routes upgrade through the server its `app.listen()` made (`app.server`); an
 * exported Elysia app has none. `app.listen()` in the app file works: it calls Bun.serve, which the
 * CLI takes as the listener (bun-serve.ts).
 */
function elysiaWithoutServer(obj: Record<string, unknown>): string | undefined {
  const routes = obj.routes;
  if (typeof obj.listen !== "function" || !Array.isArray(routes)) return undefined;
  if (!routes.some((r: unknown) => (r as { method?: unknown } | null)?.method === "WS"))
    return undefined;
  return (
    "this Elysia app has .ws() routes, which need the server its app.listen() makes: call app.listen(port) " +
    "in the app file instead of exporting the app (iodine then serves it on every worker, WebSockets included)"
  );
}

/** Bun.serve options passed on as they are: Bun does what it does with them in every worker. */
const PASSED_ON = ["ipv6Only", "http1", "http2", "http3", "id"];

const normalised = new WeakSet<LoadedApp>();

/** Normalises a default export (once: a LoadedApp comes back as it is); undefined when it is not a shape iodine serves. */
export function normaliseApp(exp: unknown): LoadedApp | undefined {
  if (normalised.has(exp as LoadedApp)) return exp as LoadedApp;
  const app = normalise(exp);
  if (app !== undefined) normalised.add(app);
  return app;
}

function normalise(exp: unknown): LoadedApp | undefined {
  if (typeof exp === "function") {
    // A class is not a handler: calling it without `new` throws on every request.
    if (/^class[\s{]/.test(Function.prototype.toString.call(exp))) return undefined;
    return { fetch: exp as FetchHandler };
  }
  if (exp === null || typeof exp !== "object") return undefined;
  const obj = exp as Partial<AppObject> & Record<string, unknown>;
  // A plain object is a Bun.serve options object; a framework's app (Hono, Elysia) is a class
  // instance whose other members (Hono's `routes` array, Elysia's `error()`) mean something else.
  const proto = Object.getPrototypeOf(obj) as unknown;
  const serve = proto === Object.prototype || proto === null ? serveExtras(obj) : undefined;
  if (typeof obj.fetch !== "function" && serve?.routes === undefined) return undefined;
  // Bun.serve with routes and no fetch answers what no route matches with 404.
  const fetch = typeof obj.fetch === "function" ? (obj.fetch.bind(obj) as FetchHandler) : notFound;
  const app: LoadedApp = { fetch, ...(serve !== undefined ? { serve } : {}) };
  const notes = [...(serve?.notes ?? []), elysiaWithoutServer(obj) ?? []].flat();
  if (notes.length > 0) app.notes = notes;
  if (obj.websocket !== undefined && obj.websocket !== null) {
    if (typeof obj.websocket !== "object") return undefined;
    app.websocket = obj.websocket;
  }
  if (obj.port !== undefined) {
    const port = Number(obj.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new CliError(
        `the app's exported port must be an integer 0–65535, got "${String(obj.port)}"`,
      );
    }
    app.port = port;
  }
  if (typeof obj.hostname === "string") app.hostname = obj.hostname;
  return app;
}

const notFound: FetchHandler = () => new Response("Not Found", { status: 404 });

/** The Bun.serve options of a plain-object export, checked as Bun.serve would (bad ones: exit 2). */
function serveExtras(obj: Record<string, unknown>): ServeExtras {
  const bad = (name: string, what: string) =>
    new CliError(
      `the app's exported ${name} must be ${what}, got ${JSON.stringify(obj[name]) ?? typeof obj[name]}`,
    );
  const out: ServeExtras = { extra: {}, notes: [] };
  if (obj.routes !== undefined) {
    if (obj.routes === null || typeof obj.routes !== "object" || Array.isArray(obj.routes))
      throw bad("routes", "an object of path → route");
    out.routes = obj.routes as Record<string, unknown>;
  }
  if (obj.error !== undefined) {
    if (typeof obj.error !== "function") throw bad("error", "a function (error) => Response");
    out.error = obj.error as ServeExtras["error"];
  }
  if (obj.unix !== undefined) {
    if (typeof obj.unix !== "string" || obj.unix === "") throw bad("unix", "a socket path");
    out.unix = obj.unix;
  }
  if (obj.tls !== undefined && obj.tls !== null && obj.tls !== false) out.tls = obj.tls;
  if (obj.maxRequestBodySize !== undefined) {
    const n = obj.maxRequestBodySize;
    if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 1)
      throw bad("maxRequestBodySize", "a number of bytes ≥ 1");
    out.maxRequestBodySize = n;
  }
  if (obj.idleTimeout !== undefined) {
    const n = obj.idleTimeout;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > 255)
      throw bad("idleTimeout", "seconds, an integer 0–255");
    out.idleTimeout = n;
  }
  if (obj.development !== undefined) out.development = obj.development;
  for (const name of PASSED_ON) if (obj[name] !== undefined) out.extra[name] = obj[name];
  if (obj.reusePort !== undefined) {
    out.notes.push(
      `the app's reusePort: ${String(obj.reusePort)} is iodine's to set (a cluster's workers share the port; one process does not)`,
    );
  }
  return out;
}
