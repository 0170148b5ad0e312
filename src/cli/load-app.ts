// The app loader of SPEC §3: import() the APP module and normalise its default export, or accept a
// module that called `Iodine.listen`, `Iodine.start` or `Iodine.connect` itself (script mode). The
// app imports iodine by a virtual module, and a load failure is one line naming the file and place.
import pkg from "../../package.json" with { type: "json" };
import { normaliseApp } from "../app.ts";
import { captureBunServe } from "../http/bun-serve.ts";
import { CliError } from "../errors.ts";
import { nodePath } from "../lazy-node.ts";
import { addListener, isStarted, plannedAddress, ranAsScript, stopAll } from "../lifecycle.ts";
import type { AppObject } from "../types.ts";

/** `app.ts`, else `app.js`, in the current directory (SPEC §2). */
export function defaultAppPath(): string {
  return isFile(absolute("app.ts")) || !isFile(absolute("app.js")) ? "app.ts" : "app.js";
}

/**
 * Whether `path` (absolute) is a file Bun can import as it is: Bun's resolver answers synchronously
 * (~40 µs), where a stat would be the first task of Bun's file thread pool (~0.5 ms of start-up).
 * False for what is not there, a folder, a name without its extension, a symlink (resolved).
 */
function isFile(path: string): boolean {
  try {
    return Bun.resolveSync(path, "/") === path;
  } catch {
    return false;
  }
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
      const self = () => ({
        exports: require("../index.ts") as Record<string, unknown>,
        loader: "object" as const,
      });
      for (const name of PACKAGE_NAMES) build.module(name, self);
    },
  });
}

/** `file` as an absolute, normalised path: node:path's resolve, without loading node:path on every start. */
function absolute(file: string): string {
  const parts: string[] = [];
  for (const part of (file.startsWith("/") ? file : process.cwd() + "/" + file).split("/")) {
    if (part === "..") parts.pop();
    else if (part !== "." && part !== "") parts.push(part);
  }
  return "/" + parts.join("/");
}

/**
 * Loads the app module: a `Bun.serve(options)` call in it registers those options as an HTTP
 * listener (SPEC §3), and so does its default export, whatever its shape. Throws `CliError` naming
 * the file for a missing file, a module that fails to load (syntax error, throwing top level) or a
 * default export iodine cannot serve, unless the module used iodine itself (script mode: it called
 * `Iodine.listen`, `Iodine.start` or `Iodine.connect`).
 */
export async function loadApp(file: string): Promise<void> {
  const path = absolute(file);
  if (!isFile(path)) {
    // The stat tells the rest apart (Bun's own: node:fs is not loaded on a plain start).
    const stat = await Bun.file(path)
      .stat()
      .catch(() => undefined);
    if (stat === undefined) throw new CliError(`app file not found: ${file}`);
    if (!stat.isFile()) throw new CliError(`app path is not a file: ${file}`);
  }
  installResolver();
  captureBunServe({
    register: (options) => addListener({ service: "http", handler: options as AppObject }),
    started: isStarted,
    planned: plannedAddress,
    stop: () => stopAll(),
  });
  let mod: Record<string, unknown>;
  try {
    mod = await importApp(path);
  } catch (err) {
    throw new CliError(`cannot load ${file}: ${loadFailure(err, path)}`, {
      cause: appFramesOnly(err),
    });
  }
  const app = normaliseApp(mod.default);
  if (app) return addListener({ service: "http", handler: app });
  if (mod.default === undefined && ranAsScript()) return;
  throw new CliError(
    `${file} has no usable export: expected \`export default\` a function (req, server) => Response, ` +
      `an object with fetch, or { fetch, websocket } (or a script calling Iodine.listen, Iodine.connect or Iodine.start); ` +
      `got ${describeExport(mod.default)}`,
  );
}

/**
 * The app module's namespace, as import() gives it. require() first: Bun loads an ES module
 * synchronously ~0.4 ms sooner than a process's first import() (bench/startup.ts). A CommonJS
 * module, one whose top-level await waits, or one that fails goes on to import(), which answers as
 * it always did: a module that already ran, or failed, does not run again.
 */
async function importApp(path: string): Promise<Record<string, unknown>> {
  try {
    const mod = require(path) as Record<string | symbol, unknown>;
    if (mod[Symbol.toStringTag] === "Module") return mod;
  } catch {
    // import() says what went wrong.
  }
  return (await import(path)) as Record<string, unknown>;
}

/**
 * `err` with its stack ending where the app's module began: one that failed under require() was
 * thrown below iodine's loader (`at unknown`, `at importApp`, …), which import() never showed.
 */
function appFramesOnly(err: unknown): unknown {
  if (!(err instanceof Error) || err.stack === undefined) return err;
  const lines = err.stack.split("\n");
  let end = lines.findIndex((line) => /^\s+at importApp \(/.test(line));
  if (end === -1) return err;
  if (/^\s+at unknown$/.test(lines[end - 1] ?? "")) end--;
  err.stack = lines.slice(0, end).join("\n");
  return err;
}

function describeExport(exp: unknown): string {
  if (exp === undefined) return "no default export";
  if (exp === null) return "null";
  if (typeof exp === "function") return "a class";
  if (typeof exp === "object")
    return `an object without a fetch function (keys: ${Object.keys(exp).join(", ") || "none"})`;
  return `a ${typeof exp}`;
}

// --- load errors ---

/** Bun's own error classes for a syntax error and an import that does not resolve: their names say nothing. */
const BUN_MESSAGES = new Set(["BuildMessage", "ResolveMessage"]);
/**
 * iodine's own code, where a frame is not where the app went wrong: its sources, the bytecode build
 * (dist/cli.js, whose import.meta.dir is dist/) and the compiled executable's.
 */
function ownSources(): string[] {
  const here = import.meta.dir;
  const root = here.endsWith("/dist")
    ? here.slice(0, -"/dist".length)
    : nodePath().resolve(here, "../..");
  return [`${root}/src/`, `${root}/dist/`, `${root}/cli.ts`, "/$bunfs/"];
}

/**
 * One line for what stopped `path` from loading: `Name: message (line L, column C)`, the place in the
 * app file, or `(at lib/db.ts:3:9)` when it was another file of the app. A syntax error's place comes
 * from Bun's BuildMessage; a thrown error's from its stack (the first frame outside iodine and node_modules).
 */
function loadFailure(err: unknown, path: string): string {
  // A syntax error arrives as an AggregateError of Bun BuildMessages, each with a position.
  const first = err instanceof AggregateError && err.errors.length > 0 ? err.errors[0] : err;
  if (!(
    first instanceof Error ||
    (typeof first === "object" && first !== null && "message" in first)
  )) {
    return firstLine(String(err));
  }
  const e = first as Error & {
    position?: { file?: string; line?: number; column?: number } | null;
  };
  const name = e.name && !BUN_MESSAGES.has(e.name) ? `${e.name}: ` : "";
  const place = e.position?.line
    ? { file: e.position.file ?? path, line: e.position.line, column: e.position.column }
    : throwSite(e.stack);
  return `${name}${firstLine(String(e.message))}${place ? ` (${describePlace(place, path)})` : ""}`;
}

interface Place {
  file: string;
  line: number;
  column?: number;
}

/** The first frame of a stack in the app's code: not iodine's, not a package's, not native. */
function throwSite(stack: string | undefined): Place | undefined {
  const own = ownSources();
  for (const line of (stack ?? "").split("\n")) {
    // `    at fn (/abs/file.ts:2:13)` or `    at /abs/file.ts:2:13`
    const m = /^\s+at (?:.*? \()?(\/.+?):(\d+):(\d+)\)?$/.exec(line);
    if (m === null) continue;
    const file = m[1]!;
    if (own.some((o) => file === o || file.startsWith(o)) || file.includes("/node_modules/"))
      continue;
    return { file, line: Number(m[2]), column: Number(m[3]) };
  }
  return undefined;
}

function describePlace(p: Place, appPath: string): string {
  if (p.file === appPath) return `line ${p.line}${p.column ? `, column ${p.column}` : ""}`;
  const rel = nodePath().relative(process.cwd(), p.file);
  const shown = rel.startsWith("..") ? p.file : rel;
  return `at ${shown}:${p.line}${p.column ? `:${p.column}` : ""}`;
}

function firstLine(text: string): string {
  return text.split("\n")[0] ?? "";
}
