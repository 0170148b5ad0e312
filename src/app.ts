// The app loader of SPEC §3: import() the APP module and normalise its default export —
// a function, `{ fetch }`, `{ fetch, websocket }` or Bun's `{ port, fetch }` — or accept a
// module that called `Iodine.listen`, `Iodine.start` or `Iodine.connect` itself (script mode).
import { existsSync, statSync } from "node:fs";
import { relative, resolve } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { CliError } from "./errors.ts";
import type { AppObject, FetchHandler } from "./types.ts";

/** The default export, normalised; undefined in script mode (the module listened by itself). */
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
  if (!routes.some((r: unknown) => (r as { method?: unknown } | null)?.method === "WS")) return undefined;
  return (
    "this Elysia app has .ws() routes, which need the server its app.listen() makes: call app.listen(port) " +
    "in the app file instead of exporting the app (iodine then serves it on every worker, WebSockets included)"
  );
}

/** Bun.serve options passed on as they are: Bun does what it does with them in every worker. */
const PASSED_ON = ["ipv6Only", "http1", "http2", "http3", "id"];

/** `app.ts`, else `app.js`, in the current directory (SPEC §2). */
export function defaultAppPath(): string {
  return existsSync("app.ts") || !existsSync("app.js") ? "app.ts" : "app.js";
}

/** The names an app imports iodine by: the package's, and iodine's own. */
const PACKAGE_NAMES = [pkg.name, "iodine"] as const;

let resolverInstalled = false;

/**
 * An app imports the package by its name ("iodine-bun"), or as "iodine" (iodine-style scripts):
 * make both names virtual modules whose exports are this very module graph's, so the app and the
 * server share one `Iodine` (one registry, one pub/sub). A virtual module, not a path: inside a
 * `bun build --compile` executable the sources are bundled and no `index.ts` exists to resolve to,
 * and it wins over an app's own tsconfig `paths` or a copy of the package in its node_modules (a
 * global or bunx `iodine` beside a project's own install): either would load a second, idle runtime.
 */
function installResolver(): void {
  if (resolverInstalled) return;
  resolverInstalled = true;
  Bun.plugin({
    name: "iodine-self",
    setup(build) {
      // Loaded when an app first imports iodine, not before: an app that never does (a plain
      // fetch handler) does not pay for the public surface (Mustache, the clients) at start-up.
      // `require`, not `import()`: an app may `require("iodine")`, which cannot wait.
      const self = () => ({ exports: require("./index.ts") as Record<string, unknown>, loader: "object" as const });
      for (const name of PACKAGE_NAMES) build.module(name, self);
    },
  });
}

/**
 * Imports the module. Throws `CliError` naming the file for a missing file, a module that fails
 * to load (syntax error, throwing top level) or a default export iodine cannot serve.
 * `ranAsScript()` tells whether the module used iodine itself (script mode: it called
 * `Iodine.listen`, `Iodine.start` or `Iodine.connect`).
 */
export async function loadApp(file: string, ranAsScript: () => boolean): Promise<LoadedApp | undefined> {
  const path = resolve(file);
  if (!existsSync(path)) throw new CliError(`app file not found: ${file}`);
  if (!statSync(path).isFile()) throw new CliError(`app path is not a file: ${file}`);
  installResolver();
  let mod: Record<string, unknown>;
  try {
    mod = await import(path);
  } catch (err) {
    throw new CliError(`cannot load ${file}: ${loadFailure(err, path)}`, { cause: err });
  }
  const app = normaliseApp(mod.default);
  if (app) return app;
  if (mod.default === undefined && ranAsScript()) return undefined;
  throw new CliError(
    `${file} has no usable export: expected \`export default\` a function (req, server) => Response, ` +
      `an object with fetch, or { fetch, websocket } (or a script calling Iodine.listen, Iodine.connect or Iodine.start); ` +
      `got ${describeExport(mod.default)}`,
  );
}

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
      throw new CliError(`the app's exported port must be an integer 0–65535, got "${String(obj.port)}"`);
    }
    app.port = port;
  }
  if (typeof obj.hostname === "string") app.hostname = obj.hostname;
  return app;
}

const notFound: FetchHandler = () => new Response("Not Found", { status: 404 });

/** The Bun.serve options of a plain-object export, checked as Bun.serve would (bad ones: exit 2). */
function serveExtras(obj: Record<string, unknown>): ServeExtras {
  const bad = (name: string, what: string) => new CliError(`the app's exported ${name} must be ${what}, got ${JSON.stringify(obj[name]) ?? typeof obj[name]}`);
  const out: ServeExtras = { extra: {}, notes: [] };
  if (obj.routes !== undefined) {
    if (obj.routes === null || typeof obj.routes !== "object" || Array.isArray(obj.routes)) throw bad("routes", "an object of path → route");
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
    if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 1) throw bad("maxRequestBodySize", "a number of bytes ≥ 1");
    out.maxRequestBodySize = n;
  }
  if (obj.idleTimeout !== undefined) {
    const n = obj.idleTimeout;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > 255) throw bad("idleTimeout", "seconds, an integer 0–255");
    out.idleTimeout = n;
  }
  if (obj.development !== undefined) out.development = obj.development;
  for (const name of PASSED_ON) if (obj[name] !== undefined) out.extra[name] = obj[name];
  if (obj.reusePort !== undefined) {
    out.notes.push(`the app's reusePort: ${String(obj.reusePort)} is iodine's to set (a cluster's workers share the port; one process does not)`);
  }
  return out;
}

function describeExport(exp: unknown): string {
  if (exp === undefined) return "no default export";
  if (exp === null) return "null";
  if (typeof exp === "function") return "a class";
  if (typeof exp === "object") return `an object without a fetch function (keys: ${Object.keys(exp).join(", ") || "none"})`;
  return `a ${typeof exp}`;
}

// --- load errors ---

/** Bun's own error classes for a syntax error and an import that does not resolve: their names say nothing. */
const BUN_MESSAGES = new Set(["BuildMessage", "ResolveMessage"]);
/** iodine's own sources (a frame there is not where the app went wrong) and the compiled executable's. */
const OWN_SOURCES = [resolve(import.meta.dir) + "/", resolve(import.meta.dir, "..", "cli.ts"), "/$bunfs/"];

/**
 * One line for what stopped `path` from loading: `Name: message (line L, column C)`, the place in the
 * app file, or `(at lib/db.ts:3:9)` when it was another file of the app. A syntax error's place comes
 * from Bun's BuildMessage; a thrown error's from its stack (the first frame outside iodine and node_modules).
 */
function loadFailure(err: unknown, path: string): string {
  // A syntax error arrives as an AggregateError of Bun BuildMessages, each with a position.
  const first = err instanceof AggregateError && err.errors.length > 0 ? err.errors[0] : err;
  if (!(first instanceof Error || (typeof first === "object" && first !== null && "message" in first))) {
    return firstLine(String(err));
  }
  const e = first as Error & { position?: { file?: string; line?: number; column?: number } | null };
  const name = e.name && !BUN_MESSAGES.has(e.name) ? `${e.name}: ` : "";
  const place = e.position?.line ? { file: e.position.file ?? path, line: e.position.line, column: e.position.column } : throwSite(e.stack);
  return `${name}${firstLine(String(e.message))}${place ? ` (${describePlace(place, path)})` : ""}`;
}

interface Place {
  file: string;
  line: number;
  column?: number;
}

/** The first frame of a stack in the app's code: not iodine's, not a package's, not native. */
function throwSite(stack: string | undefined): Place | undefined {
  for (const line of (stack ?? "").split("\n")) {
    // `    at fn (/abs/file.ts:2:13)` or `    at /abs/file.ts:2:13`
    const m = /^\s+at (?:.*? \()?(\/.+?):(\d+):(\d+)\)?$/.exec(line);
    if (m === null) continue;
    const file = m[1]!;
    if (OWN_SOURCES.some((own) => file === own || file.startsWith(own)) || file.includes("/node_modules/")) continue;
    return { file, line: Number(m[2]), column: Number(m[3]) };
  }
  return undefined;
}

function describePlace(p: Place, appPath: string): string {
  if (p.file === appPath) return `line ${p.line}${p.column ? `, column ${p.column}` : ""}`;
  const rel = relative(process.cwd(), p.file);
  const shown = rel.startsWith("..") ? p.file : rel;
  return `at ${shown}:${p.line}${p.column ? `:${p.column}` : ""}`;
}

function firstLine(text: string): string {
  return text.split("\n")[0] ?? "";
}
