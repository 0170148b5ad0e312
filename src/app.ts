// The app loader of SPEC §3: import() the APP module and normalise its default export —
// a function, `{ fetch }`, `{ fetch, websocket }` or Bun's `{ port, fetch }` — or accept a
// module that called `Iodine.listen`, `Iodine.start` or `Iodine.connect` itself (script mode).
import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { CliError } from "./errors.ts";
import type { AppObject, FetchHandler } from "./types.ts";

/** The default export, normalised; undefined in script mode (the module listened by itself). */
export interface LoadedApp {
  fetch: FetchHandler;
  websocket?: AppObject["websocket"];
  port?: number;
  hostname?: string;
}

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
    throw new CliError(`cannot load ${file}: ${oneLine(err)}`, { cause: err });
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

/** Normalises a default export; undefined when it is not a shape iodine serves. */
export function normaliseApp(exp: unknown): LoadedApp | undefined {
  if (typeof exp === "function") {
    // A class is not a handler: calling it without `new` throws on every request.
    if (/^class[\s{]/.test(Function.prototype.toString.call(exp))) return undefined;
    return { fetch: exp as FetchHandler };
  }
  if (exp === null || typeof exp !== "object") return undefined;
  const obj = exp as Partial<AppObject> & Record<string, unknown>;
  if (typeof obj.fetch !== "function") return undefined;
  const app: LoadedApp = { fetch: obj.fetch.bind(obj) as FetchHandler };
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

function describeExport(exp: unknown): string {
  if (exp === undefined) return "no default export";
  if (exp === null) return "null";
  if (typeof exp === "function") return "a class";
  if (typeof exp === "object") return `an object without a fetch function (keys: ${Object.keys(exp).join(", ") || "none"})`;
  return `a ${typeof exp}`;
}

function oneLine(err: unknown): string {
  // A syntax error arrives as an AggregateError of Bun BuildMessages, each with a position.
  const first = err instanceof AggregateError && err.errors.length > 0 ? err.errors[0] : err;
  if (first instanceof Error || (typeof first === "object" && first !== null && "message" in first)) {
    const e = first as Error & { position?: { line?: number; column?: number } | null };
    const at = e.position?.line ? ` (line ${e.position.line}${e.position.column ? `, column ${e.position.column}` : ""})` : "";
    const name = e.name && e.name !== "Error" && e.name !== "BuildMessage" ? `${e.name}: ` : "";
    return `${name}${String(e.message).split("\n")[0]}${at}`;
  }
  return String(err).split("\n")[0] ?? "";
}
