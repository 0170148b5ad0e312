// Shared test helpers: the CLI as a subprocess, raw sockets, temp dirs. Everything here is
// disposable (`await using` / `using`), so a failing test still closes what it opened.
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { afterAll, beforeAll } from "bun:test";

export const ROOT = resolve(import.meta.dir, "..");
export const CLI = join(ROOT, "cli.ts");
export const fixture = (name: string) => join(ROOT, "test", "fixtures", name);

/** A running `iodine` process whose stderr is collected and can be waited on. */
export interface CliProcess extends AsyncDisposable {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** `http://127.0.0.1:PORT` (or https), read from the start-up line */
  url: string;
  port: number;
  /** everything written to stderr so far */
  stderr(): string;
  /** resolves once stderr (or stdout) matches; rejects when the process exits first or after `ms` */
  waitFor(
    pattern: RegExp,
    ms?: number,
    stream?: "stderr" | "stdout" | "any",
  ): Promise<RegExpMatchArray>;
  /** everything written to stdout so far */
  stdout(): string;
  /** sends a signal and resolves with the exit code */
  stop(signal?: NodeJS.Signals): Promise<number>;
  /**
   * Signals every process of its group, as a terminal's Ctrl-C does (SIGINT to the foreground
   * group: `bun run`, the CLI, its re-launch and the workers at once). Needs `group: true`.
   */
  signalGroup(signal: NodeJS.Signals): void;
}

export interface StartOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Bun's header flag for this many bytes up front (the CLI re-launches Bun when it differs from --max-header) */
  headerFlag?: number;
  /** how long to wait for the listening line, ms */
  timeout?: number;
  /** start it as the leader of a process group of its own, as a shell does for a foreground job */
  group?: boolean;
  /** called with the process as soon as it is spawned (before it listens) */
  onSpawn?: (proc: Subprocess) => void;
  /** a script with no listener: wait for its `running with no listener` line instead (url and port stay empty) */
  noListener?: boolean;
  /** the line that says it listens, its first group the URL (default: iodine's `listening on URL`) */
  listening?: RegExp;
}

function spawnCli(args: string[], o: StartOptions = {}) {
  const flag = o.headerFlag === undefined ? [] : [`--max-http-header-size=${o.headerFlag}`];
  return spawnCommand([process.execPath, ...flag, CLI, ...args], o);
}

function spawnCommand(cmd: string[], o: StartOptions) {
  return Bun.spawn(cmd, {
    cwd: o.cwd ?? ROOT,
    env: { ...process.env, NO_COLOR: "1", ...o.env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    detached: o.group === true,
  });
}

/** Starts the CLI and waits for `listening on …` (or, with `noListener`, `running with no listener`). */
export function startCli(args: string[], o: StartOptions = {}): Promise<CliProcess> {
  const proc = spawnCli(args, o);
  o.onSpawn?.(proc);
  return watch(proc, o);
}

/** Starts any command that prints iodine's `listening on …` line (`bun app.ts`, `bun run iodine`). */
export function startCommand(cmd: string[], o: StartOptions = {}): Promise<CliProcess> {
  return watch(spawnCommand(cmd, o), o);
}

/**
 * Every process `startCli`/`startCommand` started and that still runs. Disposal stops each; this is
 * the net under it: a test that times out never reaches its `await using` cleanup, and a cluster
 * master outlives the test runner, so whatever is left is killed when the runner exits.
 */
const running = new Map<Subprocess, boolean>();
process.once("exit", () => {
  for (const [proc, group] of running) {
    try {
      if (group) process.kill(-proc.pid, "SIGKILL");
      else proc.kill("SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
});

async function watch(
  proc: Subprocess<"ignore", "pipe", "pipe">,
  o: StartOptions,
): Promise<CliProcess> {
  running.set(proc, o.group === true);
  void proc.exited.then(() => running.delete(proc));
  const signalGroup = (signal: NodeJS.Signals) => {
    if (o.group !== true)
      throw new Error("signalGroup needs a process started with { group: true }");
    try {
      process.kill(-proc.pid, signal);
    } catch {
      // the whole group has gone already
    }
  };
  let text = "";
  const waiters = new Waiters();
  let ended = false;
  const decoder = new TextDecoder();
  (async () => {
    for await (const chunk of proc.stderr) {
      text += decoder.decode(chunk, { stream: true });
      waiters.wake();
    }
    ended = true;
    waiters.wake();
  })();
  // Keep stdout too (an app's own console.log), which also keeps the pipe from filling.
  let out = "";
  let outEnded = false;
  (async () => {
    const outDecoder = new TextDecoder();
    for await (const chunk of proc.stdout) {
      out += outDecoder.decode(chunk, { stream: true });
      waiters.wake();
    }
    outEnded = true;
    waiters.wake();
  })();

  const waitFor = (pattern: RegExp, ms = 10_000, stream: "stderr" | "stdout" | "any" = "stderr") =>
    waiters.until(
      () =>
        (stream === "any"
          ? (text.match(pattern) ?? out.match(pattern))
          : (stream === "stdout" ? out : text).match(pattern)) ?? undefined,
      {
        ended: () => ended && (stream === "stderr" || outEnded),
        ms,
        fail: (why) =>
          new Error(
            `${why === "ended" ? "process ended before" : "timed out waiting for"} ${pattern}; stderr:\n${text}`,
          ),
      },
    );

  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    return await proc.exited;
  };

  let url = "";
  let port = 0;
  try {
    if (o.noListener) {
      await waitFor(/running with no listener/, o.timeout ?? 10_000);
    } else {
      const m = await waitFor(
        o.listening ?? /listening on ((?:https?|tcp|tls):\/\/[^\s]+|unix:\S+)/,
        o.timeout ?? 10_000,
        "any",
      );
      url = m[1]!
        .replace("0.0.0.0", "127.0.0.1")
        .replace("//localhost:", "//127.0.0.1:")
        .replace(/\/$/, "");
      port = Number(/:(\d+)$/.exec(url)?.[1] ?? 0);
    }
  } catch (err) {
    proc.kill("SIGKILL");
    await proc.exited;
    throw err;
  }
  return {
    proc,
    url,
    port,
    stderr: () => text,
    stdout: () => out,
    waitFor,
    stop,
    signalGroup,
    async [Symbol.asyncDispose]() {
      // A group leader's descendants (a re-launched CLI, workers) may outlive it: the group goes too.
      if (o.group === true) {
        if (proc.exitCode === null && proc.signalCode === null) signalGroup("SIGTERM");
        const stopped = await Promise.race([
          proc.exited.then(() => true),
          Bun.sleep(3000).then(() => false),
        ]);
        signalGroup("SIGKILL");
        if (!stopped) await proc.exited;
        return;
      }
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      // SIGTERM first: `bun run iodine` passes it on to the server it started, where a SIGKILL
      // would leave that grandchild running. SIGKILL only for a process that does not stop.
      proc.kill("SIGTERM");
      const stopped = await Promise.race([
        proc.exited.then(() => true),
        Bun.sleep(3000).then(() => false),
      ]);
      if (!stopped) {
        proc.kill("SIGKILL");
        await proc.exited;
      }
    },
  };
}

/**
 * A Ctrl-C in the middle of a request to test/fixtures/slow-app.ts (started with `group: true`):
 * SIGINT to the whole process group twice, 30 ms apart, as a terminal and a forwarding parent
 * deliver it. Returns what the client got and the exit code.
 */
export async function ctrlCDuringRequest(
  srv: CliProcess,
): Promise<{ status: number; body: string; code: number }> {
  const answer = fetch(`${srv.url}/?ms=1200`).then(
    async (res) => ({ status: res.status, body: await res.text() }),
    (err: Error) => ({ status: 0, body: err.message }),
  );
  await srv.waitFor(/slow request started/);
  srv.signalGroup("SIGINT");
  await Bun.sleep(30); // the stimulus itself: a second SIGINT 30 ms later
  srv.signalGroup("SIGINT");
  const [res, code] = await Promise.all([answer, srv.proc.exited]);
  return { ...res, code };
}

/** The `ws://` (or `wss://`) form of a server's URL. */
export const ws = (srv: CliProcess) => srv.url.replace("http", "ws");

/** The lines of a process's stderr that match `pattern`. */
export const stderrLines = (srv: CliProcess, pattern: RegExp) =>
  srv
    .stderr()
    .split("\n")
    .filter((l) => pattern.test(l));

/** `prefix0` … `prefix(n-1)`: messages to send and to expect, in order. */
export const numbered = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${prefix}${i}`);

/** Runs the CLI to completion (for error paths, --help, --version). */
export function runCli(
  args: string[],
  o: StartOptions = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return finish(spawnCli(args, o), o);
}

/** Runs any command to completion: its exit code, stdout and stderr (killed after `o.timeout`). */
export function runCommand(
  cmd: string[],
  o: StartOptions = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return finish(spawnCommand(cmd, o), o);
}

/** The message of what `fn` throws, as `Class: message`, or "no error". */
export function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return `${(err as Error).constructor.name}: ${(err as Error).message}`;
  }
  return "no error";
}

async function finish(proc: Subprocess<"ignore", "pipe", "pipe">, o: StartOptions) {
  const timer = setTimeout(() => proc.kill("SIGKILL"), o.timeout ?? 10_000);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

// --- waiting ---

/** Rejects after `ms` with a message saying what was awaited. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>(
      (_, rej) =>
        (timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms)),
    ),
  ]);
}

/**
 * Polls `ok` (every `every` ms) until it is true, for a state no event announces (/proc, a Redis
 * counter, a process list); rejects after `ms` saying what was awaited. Prefer an event where there is one.
 */
export async function waitUntil(
  ok: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
  every = 20,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(every);
  }
}

/**
 * Conditions re-checked whenever `wake()` is called (data arrived, the source ended): `until` resolves
 * with the first value `check()` gives that is not undefined, and fails once `ended()` is true first,
 * or after `ms`. The one waiting loop of the CLI's output, RawClient and WsClient.
 */
export class Waiters {
  #all = new Set<() => void>();

  wake(): void {
    for (const w of [...this.#all]) w();
  }

  until<T>(
    check: () => T | undefined,
    o: { ended: () => boolean; ms: number; fail: (why: "ended" | "timeout") => Error },
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const done = (f: () => void) => {
        clearTimeout(timer);
        this.#all.delete(poll);
        f();
      };
      const poll = () => {
        const v = check();
        if (v !== undefined) done(() => resolve(v));
        else if (o.ended()) done(() => reject(o.fail("ended")));
      };
      const timer = setTimeout(() => done(() => reject(o.fail("timeout"))), o.ms);
      this.#all.add(poll);
      poll();
    });
  }
}

/** Resolves on `wake()` (new data arrived) or after `ms`, whichever comes first. */
export function nap(ms: number): { wake: () => void; done: Promise<void> } {
  const woke = Promise.withResolvers<void>();
  const timer = setTimeout(woke.resolve, ms);
  return { wake: woke.resolve, done: woke.promise.finally(() => clearTimeout(timer)) };
}

/**
 * Writes `data` on a fresh TCP connection and collects the bytes until the server closes,
 * `done(received)` returns true, or `ms` pass. Resolves with what was received.
 */
export function rawRequest(
  port: number,
  data: string | Uint8Array,
  done: (received: string) => boolean = () => false,
  ms = 5_000,
): Promise<string> {
  return new Promise((resolveOut) => {
    const socket = connect(port, "127.0.0.1");
    let received = "";
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolveOut(received);
    };
    const timer = setTimeout(finish, ms);
    socket.on("data", (chunk) => {
      received += chunk.toString("latin1");
      if (done(received)) finish();
    });
    socket.on("close", finish);
    socket.on("error", finish);
    socket.write(data);
  });
}

/** Counts complete HTTP/1.1 responses (status lines) in a raw byte string. */
export const statusLines = (raw: string) =>
  [...raw.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

/**
 * For `describe.skipIf` / `test.skipIf`: true, with a loud warning naming what is skipped, when a
 * tool the tests need is missing here; never under CI=true, where .ci/run installs it, so a missing
 * tool fails there.
 */
export function skipWithout(tool: string, present: boolean, file: string, what: string): boolean {
  if (present || process.env.CI === "true") return false;
  console.warn(
    `\n*** ${file}: ${tool} is not installed, so ${what} is SKIPPED (it runs, and must pass, when CI=true) ***\n`,
  );
  return true;
}

/**
 * What every test of a file shares (a Redis, a Redis Cluster): started before the file's first test
 * unless `skip`, disposed after its last. The getter throws when it is not there.
 */
export function sharedByFile<T extends AsyncDisposable>(
  start: () => Promise<T>,
  o: { skip?: boolean; timeout?: number } = {},
): () => T {
  let it: T | undefined;
  beforeAll(async () => {
    if (!o.skip) it = await start();
  }, o.timeout);
  afterAll(async () => {
    await it?.[Symbol.asyncDispose]();
  });
  return () => {
    if (it === undefined)
      throw new Error("sharedByFile: not started (skipped, or its start failed)");
    return it;
  };
}

/** A temp directory removed on dispose. */
export function tempDir(prefix = "iodine-test-"): Disposable & { path: string } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) };
}

// --- ports ---

/**
 * A TCP port free right now on 127.0.0.1, for a server that must know its port before it starts (a
 * Redis, nginx, two servers that name each other); anything that can listen on port 0 should.
 * bench/ uses this one too.
 */
export function freePort(): number {
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = listener.port;
  listener.stop(true);
  return port;
}

/** Whether `port` can be bound on 127.0.0.1 right now. */
export function portIsFree(port: number): boolean {
  try {
    Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } }).stop(true);
    return true;
  } catch {
    return false;
  }
}

/** The pids of the running (not zombie) children of `pid`, from /proc, oldest first (pids wrap around). */
export function childrenOf(pid: number): number[] {
  const out: { pid: number; started: number }[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // fields[19]: the start time in clock ticks since boot (stat's 22nd field)
      if (Number(fields[1]) === pid && fields[0] !== "Z")
        out.push({ pid: Number(d), started: Number(fields[19]) });
    } catch {
      // gone meanwhile
    }
  }
  return out.sort((a, b) => a.started - b.started || a.pid - b.pid).map((c) => c.pid);
}

/**
 * How many established TCP connections on local `port` each of `pids` holds, from /proc/net/tcp{,6}
 * and the processes' fd tables: which worker of a cluster accepted a client, without asking the app.
 */
export function connectionsHeld(pids: readonly number[], port: number): Map<number, number> {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // f[1] local address:port, f[3] state (01 = ESTABLISHED), f[9] inode
      if (f.length > 9 && f[1]!.endsWith(`:${hexPort}`) && f[3] === "01") inodes.add(f[9]!);
    }
  }
  const held = new Map<number, number>();
  for (const pid of pids) {
    let n = 0;
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      // gone meanwhile
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m && inodes.has(m[1]!)) n++;
      } catch {
        // closed meanwhile
      }
    }
    held.set(pid, n);
  }
  return held;
}

// --- event streams ---

/**
 * A streamed response read as text: `until(pattern)` resolves with all text so far once it matches
 * (a string: once it contains it), and throws when the stream ends first or after `ms`.
 */
export function streamReader(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const matches = (p: RegExp | string | ((text: string) => boolean)) =>
    typeof p === "string" ? text.includes(p) : typeof p === "function" ? p(text) : p.test(text);
  /** `pattern`: text to contain, a RegExp to match, or a check of all the text so far. */
  const until = async (pattern: RegExp | string | ((text: string) => boolean), ms = 5000) => {
    const deadline = Date.now() + ms;
    const what = typeof pattern === "string" ? JSON.stringify(pattern) : String(pattern);
    while (!matches(pattern)) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(
          `no ${what} in stream (${text.length} chars, ending ${JSON.stringify(text.slice(-120))})`,
        );
      const chunk = await Promise.race([reader.read(), Bun.sleep(left).then(() => null)]);
      if (chunk === null) continue;
      if (chunk.done)
        throw new Error(
          `stream ended before ${what} (${text.length} chars, ending ${JSON.stringify(text.slice(-120))})`,
        );
      text += decoder.decode(chunk.value, { stream: true });
    }
    return text;
  };
  return { res, reader, until, text: () => text };
}
export type StreamReader = ReturnType<typeof streamReader>;

/** Opens an event stream (`Accept: text/event-stream`) and reads it; `close()` aborts it. */
export async function openStream(
  url: string,
  headers: Record<string, string> = {},
): Promise<StreamReader & { close(): void }> {
  const ac = new AbortController();
  const res = await fetch(url, {
    headers: { accept: "text/event-stream", ...headers },
    signal: ac.signal,
  });
  return { ...streamReader(res), close: () => ac.abort() };
}
