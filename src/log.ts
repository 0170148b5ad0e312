// Logging: start-up and error lines (`iodine: …`), and the per-request access log of SPEC §7, as
// text or (`--log-format json`) one JSON object a line. The access log is on the hot path with
// `-v`: the time strings are rebuilt once a second by a timer, lines are appended to one string by
// concatenation, and that string is written in one syscall per batch.

// --- levels ---

/** 0 silent … 5 debug; errors at ≥ 1, warnings at ≥ 2, start-up lines at ≥ 4 (SPEC §2). */
let verbosity = 4;
let prefix = "iodine: ";
let json = false;

export type LogFormat = "text" | "json";
export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

/** `json`: every line, access log and the rest, becomes one JSON object (SPEC §7). */
export function setLogFormat(format: LogFormat): void {
  json = format === "json";
  if (json) startClock();
}

export function setVerbosity(level: number): void {
  verbosity = level;
}

/**
 * Replaces the `iodine: ` before every line: a cluster's worker shows its pid (`iodine: [1234] `),
 * a worker's extra thread its number too (`iodine: [1234/1] `).
 */
export function setLogPrefix(p: string): void {
  prefix = p;
}

const LEVEL_NAMES = ["", "error", "warn", "", "info", "debug"];

function emit(level: number, message: string): void {
  if (verbosity < level) return;
  flushAccessLog();
  writeStderr(json ? jsonLine(LEVEL_NAMES[level]!, message) : prefix + message + "\n");
}

/**
 * `{"time":…,"level":"error","pid":…,"msg":…}`: a stack stays inside msg; a worker's extra thread
 * adds `"thread"` (what the text prefix `[pid/n]` shows).
 */
function jsonLine(level: string, message: string): string {
  return (
    '{"time":"' +
    (clock.iso || isoSeconds(new Date())) +
    '","level":"' +
    level +
    '","pid":' +
    process.pid +
    (Bun.isMainThread ? "" : ',"thread":' + workerThreadId()) +
    ',"msg":' +
    JSON.stringify(message) +
    "}\n"
  );
}

/**
 * This worker thread's number (node's threadId). node:worker_threads costs ~2.5 ms to load: it loads
 * on a thread's first JSON line, never in a main thread.
 */
function workerThreadId(): number {
  return (require("node:worker_threads") as typeof import("node:worker_threads")).threadId;
}

export const log = {
  error: (message: string) => emit(1, message),
  warn: (message: string) => emit(2, message),
  info: (message: string) => emit(4, message),
  debug: (message: string) => emit(5, message),
};

/** Logs an exception with its stack, once, as one entry. */
export function logException(context: string, err: unknown): void {
  emit(1, `${context}: ${describeError(err)}`);
}

/** At -V 5 (debug) the stack of what caused an error follows its line, in the same log entry. */
export function withCauseStack(message: string, cause: unknown): string {
  if (verbosity < 5 || !(cause instanceof Error)) return message;
  const frames = (cause.stack ?? "").split("\n").filter((line) => /^\s+at /.test(line));
  return frames.length === 0 ? message : `${message}\n${frames.join("\n")}`;
}

/**
 * An error's stack, else its name and message: `||`, not `??`, because some errors carry an empty
 * stack (the AbortError Bun rejects a body read with when the client goes away).
 */
export function describeError(err: unknown): string {
  return err instanceof Error ? err.stack || `${err.name}: ${err.message}` : String(err);
}

/**
 * Bun's console.error writes to fd 2 at once (it survives a SIGKILL right after) and leaves a lone
 * string as it is (no `%` formatting); node:fs's writeSync would cost ~1.3 ms of start-up to load.
 * Taken once, so an app that replaces console.error does not get iodine's lines.
 */
const consoleError = console.error.bind(console);

function writeStderr(text: string): void {
  // console.error ends the line itself.
  consoleError(text.endsWith("\n") ? text.slice(0, -1) : text);
}

// --- clock ---

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad2 = (n: number) => (n < 10 ? "0" + n : String(n));

/**
 * `[21/Nov/2026:09:30:00 +0000]` for the text access log, `2026-11-21T09:30:00Z` for the JSON one,
 * and the IMF-fixdate for `Date` headers.
 */
export const clock = { common: "", iso: "", http: "" };
let clockStarted = false;

function isoSeconds(d: Date): string {
  return d.toISOString().slice(0, 19) + "Z";
}

function tick(): void {
  const d = new Date();
  clock.common =
    `[${pad2(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:` +
    `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000]`;
  clock.iso = isoSeconds(d);
  clock.http = d.toUTCString();
}

/** Starts the once-a-second clock (idempotent); it never keeps the process alive. */
export function startClock(): void {
  if (clockStarted) return;
  clockStarted = true;
  tick();
  // Align to the next second boundary so the string flips when the second does.
  setTimeout(
    () => {
      tick();
      setInterval(tick, 1000).unref();
    },
    1000 - (Date.now() % 1000),
  ).unref();
}

// --- access log ---

const FLUSH_BYTES = 64 * 1024;
const FLUSH_MS = 20;
let pending = "";
let flushTimer: ReturnType<typeof setTimeout> | undefined;

/**
 * Appends one access-log line:
 * `127.0.0.1 - - [21/Nov/2026:09:30:00 +0000] "GET /path?q=1 HTTP/1.1" 200 12 0.31ms`, or with
 * `--log-format json`
 * `{"time":"2026-11-21T09:30:00Z","ip":"127.0.0.1","method":"GET","path":"/path?q=1","status":200,"bytes":12,"ms":0.31}`.
 * `bytes` is the body's length, -1 when unknown (`-` in text, null in JSON).
 */
export function accessLog(
  ip: string | undefined,
  method: string,
  target: string,
  status: number,
  bytes: number,
  ms: number,
): void {
  const took = hundredths(ms);
  if (json) pending += jsonAccess(ip, method, target, status, bytes, took);
  else
    pending +=
      (ip ?? "-") +
      " - - " +
      clock.common +
      ' "' +
      method +
      " " +
      target +
      ' HTTP/1.1" ' +
      status +
      " " +
      (bytes < 0 ? "-" : bytes) +
      " " +
      took +
      "ms\n";
  if (pending.length >= FLUSH_BYTES) flushAccessLog();
  else if (flushTimer === undefined) flushTimer = setTimeout(flushAccessLog, FLUSH_MS);
}

/** `0.31` for 0.3127 ms: hundredths by integer maths (toFixed(2) showed up at ~5 % of the -v profile). */
function hundredths(ms: number): string {
  const cs = Math.round(ms * 100);
  const frac = cs % 100;
  return (cs - frac) / 100 + (frac < 10 ? ".0" : ".") + frac;
}

// A character JSON must escape: a quote, a backslash, a control character, a lone surrogate.
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;
/** A JSON string of `s`: concatenated as it is in the common case, JSON.stringify only when needed. */
const jsonString = (s: string) => (NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : '"' + s + '"');

function jsonAccess(
  ip: string | undefined,
  method: string,
  target: string,
  status: number,
  bytes: number,
  took: string,
): string {
  return (
    '{"time":"' +
    clock.iso +
    '","ip":' +
    (ip === undefined ? "null" : '"' + ip + '"') +
    ',"method":' +
    jsonString(method) +
    ',"path":' +
    jsonString(target) +
    ',"status":' +
    status +
    ',"bytes":' +
    (bytes < 0 ? "null" : bytes) +
    ',"ms":' +
    took +
    "}\n"
  );
}

/** Writes every buffered access-log line now (called on stop and before any other log line). */
export function flushAccessLog(): void {
  if (flushTimer !== undefined) {
    clearTimeout(flushTimer);
    flushTimer = undefined;
  }
  if (pending.length === 0) return;
  const text = pending;
  pending = "";
  writeStderr(text);
}

process.on("exit", flushAccessLog);
