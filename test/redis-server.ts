// A real redis-server for the tests, on a free port: started, killed and restarted on the same port.
// Without redis-server the tests that need it say so loudly and skip; under CI=true they run
// (.ci/run installs it), so a missing server fails there.
import type { Subprocess } from "bun";
import { tmpdir } from "node:os";
import { freePort, skipWithout } from "./harness.ts";

export const hasRedis = Bun.which("redis-server") !== null;
/** describe.skipIf(skipRedis(...)) */
export const skipRedis = (file: string, what: string): boolean =>
  skipWithout("redis-server", hasRedis, file, what);

export interface RedisServer extends AsyncDisposable {
  readonly port: number;
  readonly url: string;
  /** SIGKILL (no goodbye to clients) and wait for the exit */
  kill(): Promise<void>;
  /** a new redis-server on the same port */
  restart(): Promise<void>;
  /** SIGSTOP / SIGCONT: a Redis that stops answering without closing anything */
  pause(): void;
  resume(): void;
}

/** redis-server's flags for a server of a test's or a bench's own: loopback only, no persistence. */
export const redisServerFlags = (port: number): string[] => [
  "--port",
  String(port),
  "--bind",
  "127.0.0.1",
  "--save",
  "",
  "--appendonly",
  "no",
];

/** Starts `redis-server` on a free port (another port if something takes it first), or on `port`. */
export async function startRedis(extra: string[] = [], port?: number): Promise<RedisServer> {
  if (port !== undefined) {
    const proc = await spawnRedis(port, extra);
    if (proc === undefined) throw new Error(`redis-server did not start on port ${port}`);
    return wrap(port, proc, extra);
  }
  for (let attempt = 1; ; attempt++) {
    const port = freePort();
    const proc = await spawnRedis(port, extra);
    if (proc !== undefined) return wrap(port, proc, extra);
    if (attempt === 5) throw new Error(`redis-server did not start (last port ${port})`);
  }
}

function wrap(port: number, first: Subprocess, extra: string[]): RedisServer {
  let proc: Subprocess | undefined = first;
  const kill = async () => {
    const p = proc;
    proc = undefined;
    if (p === undefined) return;
    p.kill("SIGCONT");
    p.kill("SIGKILL");
    await p.exited;
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    async restart() {
      await kill();
      // The port was just ours: retry briefly if the kernel has not released it yet.
      for (let i = 0; i < 20 && proc === undefined; i++) {
        proc = await spawnRedis(port, extra);
        if (proc === undefined) await Bun.sleep(100);
      }
      if (proc === undefined) throw new Error(`redis-server did not restart on port ${port}`);
    },
    pause: () => void proc?.kill("SIGSTOP"),
    resume: () => void proc?.kill("SIGCONT"),
    [Symbol.asyncDispose]: kill,
  };
}

async function spawnRedis(
  port: number,
  extra: string[],
): Promise<Subprocess<"ignore", "pipe", "pipe"> | undefined> {
  const proc = Bun.spawn(["redis-server", ...redisServerFlags(port), ...extra], {
    cwd: tmpdir(),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const { ok } = await readUntil(proc.stdout, /Ready to accept connections/, 5000);
  if (ok) return proc;
  proc.kill("SIGKILL");
  await proc.exited;
  return undefined;
}

/** Reads `stream` until `pattern` appears (ok) or the stream ends / `ms` pass (not ok); the rest is drained. */
async function readUntil(stream: ReadableStream<Uint8Array>, pattern: RegExp, ms: number) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const timer = setTimeout(() => reader.cancel(), ms);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return { ok: false, text };
      text += decoder.decode(value, { stream: true });
      if (pattern.test(text)) {
        // Keep reading in the background so a chatty server never blocks on a full pipe.
        void (async () => {
          try {
            while (!(await reader.read()).done);
          } catch {
            // cancelled or closed
          }
        })();
        return { ok: true, text };
      }
    }
  } finally {
    clearTimeout(timer);
  }
}
