// Logging: start-up and error lines (`iodine: …`), and the per-request access log of SPEC §7.
// The access log is on the hot path with `-v`: the time strings are rebuilt once a second by a
// timer, lines are appended to one string, and that string is written in one syscall per batch.
import { writeSync } from "node:fs";

// --- levels ---

/** 0 silent … 5 debug; errors at ≥ 1, warnings at ≥ 2, start-up lines at ≥ 4 (SPEC §2). */
let verbosity = 4;
let prefix = "iodine: ";

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

function emit(level: number, message: string): void {
  if (verbosity < level) return;
  flushAccessLog();
  writeStderr(prefix + message + "\n");
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

function writeStderr(text: string): void {
  try {
    writeSync(2, text);
  } catch {
    // stderr closed: nowhere left to report to.
  }
}

// --- clock ---

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const pad2 = (n: number) => (n < 10 ? "0" + n : String(n));

/** `[21/Nov/2026:09:30:00 +0000]` for the access log, and the IMF-fixdate for `Date` headers. */
export const clock = { common: "", http: "" };
let clockStarted = false;

function tick(): void {
  const d = new Date();
  clock.common =
    `[${pad2(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:` +
    `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000]`;
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
 * `127.0.0.1 - - [21/Nov/2026:09:30:00 +0000] "GET /path?q=1 HTTP/1.1" 200 12 0.31ms`.
 * `bytes` is the Content-Length when the response carries one, else `-` (as in the Common Log Format).
 */
export function accessLog(
  ip: string,
  method: string,
  target: string,
  status: number,
  bytes: string,
  ms: number,
): void {
  // Hundredths of a millisecond by integer maths: toFixed(2) showed up at ~5 % of the -v profile.
  const cs = Math.round(ms * 100);
  const frac = cs % 100;
  pending +=
    ip +
    " - - " +
    clock.common +
    ' "' +
    method +
    " " +
    target +
    ' HTTP/1.1" ' +
    status +
    " " +
    bytes +
    " " +
    (cs - frac) / 100 +
    (frac < 10 ? ".0" : ".") +
    frac +
    "ms\n";
  if (pending.length >= FLUSH_BYTES) flushAccessLog();
  else if (flushTimer === undefined) flushTimer = setTimeout(flushAccessLog, FLUSH_MS);
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
