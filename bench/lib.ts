// Helpers for the benches (bench/http.ts, bench/pubsub.ts, bench/cluster.ts, …): tools on PATH, server
// and load-client processes, wrk runs, the run's frame (flags, signals, results), its numbers and the
// entries every bench adds for bench/report.ts.
// Kept apart so each bench reads as the plan of the benchmark, not its plumbing.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg, release, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { Subprocess } from "bun";

/** The checkout the benches run in: servers and load clients start here, so `cli.ts` and `examples/` resolve. */
export const ROOT = resolve(import.meta.dir, "..");

// --- tools ---

/** Finds `name` on PATH or in sbin (nginx lives in /usr/sbin, often off a non-root PATH). */
export function findTool(name: string): string | null {
  return Bun.which(name) ?? Bun.which(name, { PATH: "/usr/local/sbin:/usr/sbin:/sbin" });
}

/** `apt-get install -y pkg`, with one `apt-get update` retry for a cold package cache. */
export async function aptInstall(pkg: string): Promise<boolean> {
  if (!findTool("apt-get")) return false;
  const sudo = process.getuid?.() === 0 ? [] : findTool("sudo") ? ["sudo", "-n"] : null;
  if (sudo === null) return false;
  const run = async (args: string[]) => {
    const p = Bun.spawn([...sudo, "apt-get", ...args], {
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      stdout: "inherit",
      stderr: "inherit",
    });
    return (await p.exited) === 0;
  };
  if (await run(["install", "-y", pkg])) return true;
  return (await run(["update"])) && (await run(["install", "-y", pkg]));
}

/** First line a tool prints about its version, whichever stream it uses. */
export async function versionLine(cmd: string[]): Promise<string> {
  try {
    const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
    const text = p.stdout.toString() + p.stderr.toString();
    return text.split("\n")[0]?.trim() ?? "";
  } catch {
    return "";
  }
}

/** wrk on PATH (installed with apt-get when it is missing), and the line it gives for its version. */
export async function ensureWrk(): Promise<string> {
  if (!findTool("wrk")) {
    console.error("bench: wrk not found; installing it (apt-get install -y wrk)");
    if (!(await aptInstall("wrk")) || !findTool("wrk")) throw new Error("wrk is missing and could not be installed");
  }
  return versionLine(["wrk", "-v"]);
}

/** A port nobody uses right now, for servers (nginx) that cannot be told to pick port 0. */
export function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

// --- server processes ---

/** Keeps this much of a child's output for error messages; the rest is read and dropped. */
const TAIL_CHARS = 8192;

/**
 * Reads a child's stream to the end in the background. A server that logs every request
 * (`iodine -v`) blocks on a full pipe, so the pipe must be emptied for the whole run.
 */
export class Drain {
  #text = "";
  #waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  readonly done: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array> | null) {
    this.done = stream ? this.#pump(stream) : Promise.resolve();
  }

  /** Follows a file a child writes to (polling, until `ended` settles). */
  static fromFile(path: string, ended: Promise<unknown>): Drain {
    const d = new Drain(null);
    let over = false;
    ended.then(() => (over = true));
    let read = 0;
    const poll = async () => {
      while (!over) {
        const size = Bun.file(path).size;
        if (size > read) {
          // keep only the tail, as the pipe reader does
          const from = Math.max(read, size - TAIL_CHARS);
          d.#feed(await Bun.file(path).slice(from, size).text());
          read = size;
        }
        await Bun.sleep(100);
      }
    };
    (d as { done: Promise<void> }).done = poll();
    return d;
  }

  #feed(text: string): void {
    this.#text += text;
    if (this.#waiters.length > 0) {
      this.#waiters = this.#waiters.filter((w) => {
        const m = this.#text.match(w.re);
        if (m) w.resolve(m);
        return !m;
      });
    }
    if (this.#text.length > 2 * TAIL_CHARS && this.#waiters.length === 0) {
      this.#text = this.#text.slice(-TAIL_CHARS);
    }
  }

  get tail(): string {
    return this.#text;
  }

  /** Resolves with the first match in the output, now or later; stays pending at end of stream. */
  match(re: RegExp): Promise<RegExpMatchArray> {
    const m = this.#text.match(re);
    if (m) return Promise.resolve(m);
    return new Promise((resolve) => this.#waiters.push({ re, resolve }));
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) this.#feed(decoder.decode(chunk, { stream: true }));
    } catch {
      // the child was killed mid-read: nothing more to keep
    }
  }
}

export interface Server {
  name: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  port: number;
  url: string;
  stdout: Drain;
  stderr: Drain;
}

const LISTENING = /listening on https?:\/\/[^\s:]+:(\d+)/;

/**
 * Starts a server process and waits for a line `listening on http://HOST:PORT` on stdout or
 * stderr (iodine uses stderr, the baseline stdout). `port` skips the wait for servers that
 * print nothing (nginx); the caller then polls with `waitReachable`.
 */
export async function startServer(
  name: string,
  cmd: string[],
  opts: { cwd?: string; port?: number; timeoutMs?: number; stderrFile?: string } = {},
): Promise<Server> {
  // A server logging every request writes to a file, as a deployment would (`2>> access.log`):
  // reading a pipe in this process would take CPU from the server on a 2-core machine.
  const proc = Bun.spawn(cmd, {
    cwd: opts.cwd,
    env: { ...process.env, NO_COLOR: "1" },
    stdin: "ignore",
    stdout: "pipe",
    stderr: opts.stderrFile ? Bun.file(opts.stderrFile) : "pipe",
  }) as Subprocess<"ignore", "pipe", "pipe">;
  const stdout = new Drain(proc.stdout);
  const stderr = opts.stderrFile ? Drain.fromFile(opts.stderrFile, proc.exited) : new Drain(proc.stderr);
  const server = (port: number): Server => ({ name, proc, port, url: `http://127.0.0.1:${port}`, stdout, stderr });
  if (opts.port !== undefined) return server(opts.port);

  const timeoutMs = opts.timeoutMs ?? 15_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    stdout.match(LISTENING),
    stderr.match(LISTENING),
    proc.exited.then((code) => `exited with code ${code}`),
    new Promise<string>((r) => (timer = setTimeout(() => r(`no listening line after ${timeoutMs} ms`), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (typeof outcome === "string") {
    proc.kill("SIGKILL");
    await Promise.all([proc.exited, stdout.done, stderr.done]);
    throw new Error(`${name}: ${outcome}\n  $ ${cmd.join(" ")}\n${indent(stderr.tail + stdout.tail)}`);
  }
  return server(Number(outcome[1]));
}

/** The iodine CLI on a port of its choosing on 127.0.0.1, with the header limit it would otherwise relaunch itself for. */
export function iodineCmd(...args: string[]): string[] {
  return [process.execPath, "--max-http-header-size=32768", "cli.ts", "-p", "0", "-b", "127.0.0.1", ...args];
}

/** Throws, with the end of its stderr, if the server is gone. */
export function assertAlive(s: Server): void {
  const p = s.proc;
  if (p.exitCode !== null || p.signalCode !== null) {
    throw new Error(`${s.name} died (code ${p.exitCode ?? p.signalCode})\n${indent(s.stderr.tail.slice(-2000))}`);
  }
}

/** Polls until the server answers on `path` (nginx forks and binds after it starts). */
export async function waitReachable(s: Server, path: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (s.proc.exitCode !== null) throw new Error(`${s.name} exited with code ${s.proc.exitCode}\n${indent(s.stderr.tail)}`);
    try {
      const res = await fetch(s.url + path);
      await res.arrayBuffer();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${s.name}: not reachable on ${s.url}${path}: ${err}`);
      await Bun.sleep(100);
    }
  }
}

/** SIGTERM, then SIGKILL if the process is still there after `graceMs`. */
export async function stopServer(s: Server, graceMs = 3000): Promise<void> {
  if (s.proc.exitCode === null && s.proc.signalCode === null) {
    s.proc.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), graceMs)));
    if ((await Promise.race([s.proc.exited, late])) === "late") s.proc.kill("SIGKILL");
    clearTimeout(timer);
    await s.proc.exited;
  }
  await Promise.all([s.stdout.done, s.stderr.done]);
}

export function indent(text: string): string {
  return text
    .trimEnd()
    .split("\n")
    .map((l) => "    " + l)
    .join("\n");
}

// --- load-client processes ---

/**
 * A load client (bench/pubsub-client.ts, bench/cluster-client.ts) in its own process: one JSON line
 * per command on its stdin, one per answer on its stdout, matched by `seq`. `name`, if given, starts
 * its error messages.
 */
export class LoadClient {
  readonly proc: Subprocess<"pipe", "pipe", "pipe">;
  readonly stderr: Drain;
  readonly lines: Promise<void>;
  readonly #prefix: string;
  #seq = 0;
  #waiting = new Map<number, (answer: Record<string, unknown>) => void>();

  /** `script`: the client's file in bench/. */
  constructor(script: string, name?: string) {
    this.#prefix = name === undefined ? "" : `${name}: `;
    this.proc = Bun.spawn([process.execPath, join(import.meta.dir, script)], {
      cwd: ROOT,
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    this.stderr = new Drain(this.proc.stderr);
    this.lines = this.#read();
  }

  async #read(): Promise<void> {
    const decoder = new TextDecoder();
    let rest = "";
    try {
      for await (const chunk of this.proc.stdout) {
        rest += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = rest.indexOf("\n")) >= 0) {
          const answer = JSON.parse(rest.slice(0, nl)) as Record<string, unknown>;
          rest = rest.slice(nl + 1);
          this.#waiting.get(answer.seq as number)?.(answer);
          this.#waiting.delete(answer.seq as number);
        }
      }
    } catch {
      // killed mid-read
    }
  }

  /** Sends a command and waits for its answer (without its `seq`); an `error` answer or an exit throws. */
  async send<T>(cmd: Record<string, unknown>): Promise<T> {
    const seq = ++this.#seq;
    const answer = new Promise<Record<string, unknown>>((resolve) => this.#waiting.set(seq, resolve));
    this.proc.stdin.write(JSON.stringify({ seq, ...cmd }) + "\n");
    this.proc.stdin.flush();
    const out = await Promise.race([answer, this.proc.exited.then((code) => ({ exited: code }))]);
    if ("exited" in out) throw new Error(`${this.#prefix}load client exited with code ${out.exited}\n${indent(this.stderr.tail)}`);
    if ("error" in out) throw new Error(`${this.#prefix}load client: ${out.error}`);
    delete out.seq;
    return out as T;
  }

  /** Closes its stdin (the client then exits), SIGKILL if it is still there after 2 s. */
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      try {
        this.proc.stdin.end();
      } catch {
        // already closed
      }
      const late = Bun.sleep(2000).then(() => "late" as const);
      if ((await Promise.race([this.proc.exited, late])) === "late") this.proc.kill("SIGKILL");
      await this.proc.exited;
    }
    await Promise.all([this.lines, this.stderr.done]);
  }
}

// --- wrk ---

export interface WrkResult {
  rps: number;
  requests: number;
  seconds: number;
  latencyAvg: string;
  transferPerSec: string;
  socketErrors: { connect: number; read: number; write: number; timeout: number } | null;
  non2xx: number;
}

/** Runs wrk once; `onSpawn` gets the process so an interrupt can kill it. */
export async function runWrk(
  url: string,
  o: { threads: number; connections: number; seconds: number },
  onSpawn?: (p: Subprocess) => void,
): Promise<WrkResult> {
  const cmd = ["wrk", `-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, url];
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  onSpawn?.(p);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`wrk exited with code ${code}\n  $ ${cmd.join(" ")}\n${indent(out + err)}`);
  return parseWrk(out);
}

export function parseWrk(out: string): WrkResult {
  const rps = out.match(/^Requests\/sec:\s+([\d.]+)/m);
  const total = out.match(/^\s*(\d+) requests in ([\d.]+)(m?s|m|h)/m);
  if (!rps || !total) throw new Error(`cannot read wrk output:\n${indent(out)}`);
  const sock = out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  const unit = total[3] === "ms" ? 0.001 : total[3] === "m" ? 60 : total[3] === "h" ? 3600 : 1;
  return {
    rps: Number(rps[1]),
    requests: Number(total[1]),
    seconds: Number(total[2]) * unit,
    latencyAvg: out.match(/^\s*Latency\s+(\S+)/m)?.[1] ?? "",
    transferPerSec: out.match(/^Transfer\/sec:\s+(\S+)/m)?.[1] ?? "",
    socketErrors: sock
      ? { connect: Number(sock[1]), read: Number(sock[2]), write: Number(sock[3]), timeout: Number(sock[4]) }
      : null,
    non2xx: Number(out.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0),
  };
}

/** Socket errors and non-2xx answers of a wrk run, to end its line; "" when there were none. */
export function wrkNote(r: WrkResult): string {
  const notes: string[] = [];
  const e = r.socketErrors;
  if (e) notes.push(`socket errors: connect ${e.connect}, read ${e.read}, write ${e.write}, timeout ${e.timeout}`);
  if (r.non2xx) notes.push(`${r.non2xx} non-2xx`);
  return notesText(notes);
}

// --- CPU ---

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/**
 * CPU time (user + system, in clock ticks) of a process and all its descendants (nginx serves from
 * a forked worker). Steal time on a shared VM moves req/s a lot; the CPU a server spends per
 * request moves far less, so the report gives both.
 */
export function cpuTicks(pid: number): number {
  let total = 0;
  const stat = readProc(`/proc/${pid}/stat`);
  if (stat) {
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    total += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of proc(5))
  }
  for (const child of (readProc(`/proc/${pid}/task/${pid}/children`) ?? "").split(" ")) {
    if (child.trim() !== "") total += cpuTicks(Number(child));
  }
  return total;
}

/** Microseconds of CPU per request from a tick delta. */
export const cpuMicros = (ticks: number, requests: number) => (ticks * 1e6) / TICKS_PER_SECOND / requests;

/** Seconds of CPU from a tick delta. */
export const cpuSeconds = (ticks: number) => ticks / TICKS_PER_SECOND;

// --- memory and limits ---

/** Resident set size of a process (VmRSS in /proc/PID/status), bytes; NaN once it is gone. */
export function rssBytes(pid: number): number {
  const kb = readProc(`/proc/${pid}/status`)?.match(/^VmRSS:\s+(\d+) kB/m)?.[1];
  return kb === undefined ? NaN : Number(kb) * 1024;
}

/** "soft/hard" open-file limit of a process, from /proc/PID/limits. */
export function openFilesLimit(pid: number): string {
  const m = readProc(`/proc/${pid}/limits`)?.match(/^Max open files\s+(\S+)\s+(\S+)/m);
  return m ? `${m[1]}/${m[2]}` : "?";
}

/** Child pids of a process (an iodine that relaunched itself serves from its child). */
export function childPids(pid: number): number[] {
  return (readProc(`/proc/${pid}/task/${pid}/children`) ?? "")
    .split(" ")
    .filter((c) => c.trim() !== "")
    .map(Number);
}

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

// --- command line, interrupts and results ---

/** The string flags `names` (and -h/--help, which prints `usage` and exits); unknown flags throw. */
export function parseFlags<N extends string>(usage: string, names: readonly N[]): Partial<Record<N, string>> {
  const options = Object.fromEntries(names.map((n) => [n, { type: "string" as const }]));
  const { values } = parseArgs({ options: { ...options, help: { type: "boolean", short: "h" } } });
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  return values as Partial<Record<N, string>>;
}

/** A positive number from a flag (an integer when asked); anything else ends the run with exit 2. */
export function positive(text: string, what: string, integer: boolean): number {
  const n = Number(text);
  if (!(n > 0) || (integer && !Number.isInteger(n))) {
    console.error(`bench: --${what} must be a positive ${integer ? "integer" : "number"}, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}

/** On SIGINT/SIGTERM/SIGHUP: say so, run `cleanup`, exit 130. `onSignal` marks the run interrupted. */
export function stopOnSignals(what: string, cleanup: () => Promise<void>, onSignal: () => void): void {
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      onSignal();
      console.error(`\nbench: ${signal}, stopping ${what}`);
      cleanup().finally(() => process.exit(130));
    });
  }
}

/**
 * Runs a bench's `main` and then, once, its `cleanup`, which also runs on SIGINT/SIGTERM/SIGHUP (exit
 * 130; `onSignal` is told first) and past `deadlineMs` (exit 1). An error is said, exit code 1.
 */
export async function runBench(
  main: () => Promise<void>,
  o: { cleanup: () => Promise<void>; stopping: string; deadlineMs?: number; onSignal?: () => void },
): Promise<void> {
  let cleaning: Promise<void> | undefined;
  const cleanup = () => (cleaning ??= o.cleanup());
  let interrupted = false;
  stopOnSignals(o.stopping, cleanup, () => {
    interrupted = true;
    o.onSignal?.();
  });
  const deadlineMs = o.deadlineMs;
  const deadline =
    deadlineMs === undefined
      ? undefined
      : setTimeout(() => {
          interrupted = true;
          console.error(`\nbench: still running after ${deadlineMs / 1000} s, giving up`);
          cleanup().finally(() => process.exit(1));
        }, deadlineMs);
  try {
    await main();
  } catch (err) {
    // after an interrupt the error is only the killed wrk, server or client; the signal line said enough
    if (!interrupted) console.error(`bench: ${err instanceof Error ? err.message : err}`);
    process.exitCode = 1;
  } finally {
    clearTimeout(deadline);
    await cleanup();
  }
}

/** Where each bench writes NAME.json (gitignored), and bench/all.ts its run.json. */
/**
 * The benches in run order, and their own flags for the suite's: every bench takes --rounds, some
 * count more kinds of rounds (latency, HTTP) under flags of their own; --duration is wrk's seconds.
 */
export const BENCHES: { name: string; rounds: string[]; duration?: string }[] = [
  { name: "http", rounds: ["--rounds"], duration: "--duration" },
  { name: "pubsub", rounds: ["--rounds"] },
  { name: "cluster", rounds: ["--rounds", "--latency-rounds", "--http-rounds"], duration: "--duration" },
  { name: "redis", rounds: ["--rounds", "--latency-rounds"] },
  { name: "mustache", rounds: ["--rounds"] },
  { name: "startup", rounds: ["--rounds"] },
];

export const RESULTS_DIR = join(import.meta.dir, "results");

/** Writes `data` to bench/results/NAME.json; its path from ROOT, for the report's last line. */
export function writeResults(name: string, data: unknown): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}.json`);
  writeFileSync(file, JSON.stringify(data, null, 2) + "\n");
  return file.slice(ROOT.length + 1);
}

// --- the machine ---

/** What a result depends on besides the code, taken before the run starts. */
export function machineFacts() {
  return {
    cores: availableParallelism(),
    cpu: cpus()[0]?.model.trim() ?? "unknown",
    kernel: release(),
    ramBytes: totalmem(),
    bun: Bun.version,
    date: new Date().toISOString(),
    loadAvg1m: loadavg()[0] ?? 0,
  };
}

/** The `machine:` line, then `lines` (tools, date), then a warning if something else is busy. */
export function printMachine(f: ReturnType<typeof machineFacts>, ...lines: string[]): void {
  console.log(`machine: ${f.cores} cores (${f.cpu}), Linux ${f.kernel}`);
  for (const line of lines) console.log(line);
  // the bench already fills every core; anything else running skews the ratios
  if (f.loadAvg1m > 0.5) {
    console.log(`!! load average ${f.loadAvg1m.toFixed(2)} before start: something else is busy, expect noise`);
  }
}

// --- rounds and numbers ---

/**
 * `count` rounds, each running every one of `sides` in an order that rotates from round to round,
 * so warm-up and drift favour none; the runs in the order they ran.
 */
export async function inRounds<S, R>(count: number, sides: readonly S[], run: (side: S, round: number) => Promise<R>): Promise<R[]> {
  const runs: R[] = [];
  for (let round = 0; round < count; round++) {
    for (let i = 0; i < sides.length; i++) runs.push(await run(sides[(i + round) % sides.length]!, round));
  }
  return runs;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The median of a set of rounds and the range around it. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function spread(xs: number[]): Spread {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/** `   !! a; b` to end a result line, or "" when there is nothing to say. */
export const notesText = (notes: string[]) => (notes.length ? `   !! ${notes.join("; ")}` : "");

/** `1.23`, or `n/a` for a ratio that has no value. */
/** A figure's name as the report and the chart show it: with the direction when lower is better. */
export const nameWithDirection = (name: string, better: "higher" | "lower") => (better === "lower" ? `${name} (lower is better)` : name);
export const fmtRatio = (x: number | null) => (x === null ? "n/a" : x.toFixed(2));

/** `12,345` — req/s to the unit is plenty; decimals would pretend to a precision wrk lacks. */
export const fmtRps = (n: number) => Math.round(n).toLocaleString("en-US");

// --- entries for the suite's report (bench/report.ts) ---

/**
 * One headline ratio of a bench, as every results file lists it under `ratios`: ours ÷ the baseline,
 * from the median rounds of each side.
 */
export interface Ratio {
  bench: string;
  name: string;
  /** median of ours ÷ median of the baseline: the figure the bench prints */
  ratio: number;
  /** the least and the most of the per-round ratios (ours in round i ÷ the baseline in round i) */
  min: number;
  max: number;
  target?: number;
  better: "higher" | "lower";
  /** one line for a human: what ran, and both medians */
  detail: string;
}

/** A figure with a target of its own rather than a baseline (cross-worker msg/s, p99 µs), listed under `absolutes`. */
export interface Absolute {
  bench: string;
  name: string;
  /** the median round */
  value: number;
  min: number;
  max: number;
  unit: string;
  target?: number;
  better: "higher" | "lower";
  detail: string;
}

interface EntryOptions {
  target?: number;
  /** @default "higher" */
  better?: "higher" | "lower";
  detail: string;
}

/** A Ratio from both sides' figures by round: `ours[i]` and `base[i]` ran in the same round. */
export function ratioEntry(bench: string, name: string, ours: number[], base: number[], o: EntryOptions): Ratio {
  if (ours.length !== base.length || ours.length === 0) {
    throw new Error(`ratioEntry(${bench}, ${name}): ${ours.length} rounds against ${base.length}`);
  }
  // The ratio of medians always lies within the per-round ratios' range (medians are monotone).
  const perRound = spread(ours.map((x, i) => x / base[i]!));
  const ratio = median(ours) / median(base);
  return { bench, name, ratio, min: perRound.min, max: perRound.max, ...targetOf(o), better: o.better ?? "higher", detail: o.detail };
}

/** An Absolute from a figure's value in each round. */
export function absoluteEntry(bench: string, name: string, values: number[], unit: string, o: EntryOptions): Absolute {
  const s = spread(values);
  return { bench, name, value: s.median, min: s.min, max: s.max, unit, ...targetOf(o), better: o.better ?? "higher", detail: o.detail };
}

const targetOf = (o: EntryOptions) => (o.target === undefined ? {} : { target: o.target });

/** Whether a figure meets its target in the direction that is better; null without a target or a figure. */
export function meetsTarget(value: number, target: number | undefined, better: "higher" | "lower"): boolean | null {
  if (target === undefined || !Number.isFinite(value)) return null;
  return better === "higher" ? value >= target : value <= target;
}

/** What bench/all.ts writes to bench/results/run.json for bench/report.ts: the command and how each bench went. */
export interface SuiteRun {
  command: string;
  started: string;
  finished: string;
  benches: { name: string; exitCode: number | null; signal: string | null; seconds: number }[];
}
