// Server and load-client processes of a bench: started, drained (a chatty child must never block on
// a full pipe), checked and stopped.
import { join } from "node:path";
import type { Subprocess } from "bun";
import { ROOT } from "./tools.ts";

/** A port nobody uses right now, for servers (nginx) that cannot be told to pick port 0: the tests' own helper. */
export { freePort } from "../../test/harness.ts";

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
  const stderr = opts.stderrFile
    ? Drain.fromFile(opts.stderrFile, proc.exited)
    : new Drain(proc.stderr);
  const server = (port: number): Server => ({
    name,
    proc,
    port,
    url: `http://127.0.0.1:${port}`,
    stdout,
    stderr,
  });
  if (opts.port !== undefined) return server(opts.port);

  const timeoutMs = opts.timeoutMs ?? 15_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    stdout.match(LISTENING),
    stderr.match(LISTENING),
    proc.exited.then((code) => `exited with code ${code}`),
    new Promise<string>(
      (r) => (timer = setTimeout(() => r(`no listening line after ${timeoutMs} ms`), timeoutMs)),
    ),
  ]);
  clearTimeout(timer);
  if (typeof outcome === "string") {
    proc.kill("SIGKILL");
    await Promise.all([proc.exited, stdout.done, stderr.done]);
    throw new Error(
      `${name}: ${outcome}\n  $ ${cmd.join(" ")}\n${indent(stderr.tail + stdout.tail)}`,
    );
  }
  return server(Number(outcome[1]));
}

/** The iodine CLI on a port of its choosing on 127.0.0.1 (one process: Bun's own header limit). */
export function iodineCmd(...args: string[]): string[] {
  return [process.execPath, "cli.ts", "-p", "0", "-b", "127.0.0.1", ...args];
}

/** Throws, with the end of its stderr, if the server is gone. */
export function assertAlive(s: Server): void {
  const p = s.proc;
  if (p.exitCode !== null || p.signalCode !== null) {
    throw new Error(
      `${s.name} died (code ${p.exitCode ?? p.signalCode})\n${indent(s.stderr.tail.slice(-2000))}`,
    );
  }
}

/** Polls until the server answers on `path` (nginx forks and binds after it starts). */
export async function waitReachable(s: Server, path: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (s.proc.exitCode !== null)
      throw new Error(`${s.name} exited with code ${s.proc.exitCode}\n${indent(s.stderr.tail)}`);
    try {
      const res = await fetch(s.url + path);
      await res.arrayBuffer();
      return;
    } catch (err) {
      if (Date.now() > deadline)
        throw new Error(`${s.name}: not reachable on ${s.url}${path}: ${err}`);
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
    this.proc = Bun.spawn([process.execPath, join(ROOT, "bench", script)], {
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
    const answer = new Promise<Record<string, unknown>>((resolve) =>
      this.#waiting.set(seq, resolve),
    );
    this.proc.stdin.write(JSON.stringify({ seq, ...cmd }) + "\n");
    this.proc.stdin.flush();
    const out = await Promise.race([answer, this.proc.exited.then((code) => ({ exited: code }))]);
    if ("exited" in out)
      throw new Error(
        `${this.#prefix}load client exited with code ${out.exited}\n${indent(this.stderr.tail)}`,
      );
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
