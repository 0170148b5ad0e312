// Settings: defaults, environment variables and validation of every option (SPEC §2).
// Each bad value becomes a one-line `CliError` naming the option and what it received.
import { availableParallelism } from "node:os";
import { CliError } from "./errors.ts";
import { redactUrl, redisUrlProblem } from "./pubsub/redis-url.ts";
import type { RawOptions } from "./options.ts";

const KiB = 1024;
const MiB = 1024 * 1024;

/** Everything the CLI decided, in the units the server uses (bytes, seconds). */
export interface Settings {
  /** the app module path as given (resolved against cwd when loaded) */
  app: string;
  /** undefined: not given on the command line nor in $PORT (the module's `port`, else 3000, applies) */
  port: number | undefined;
  /** host to bind; undefined binds all interfaces */
  hostname: string | undefined;
  /** Unix socket path when --bind names a path */
  unix: string | undefined;
  workers: number;
  threads: number;
  www: string | undefined;
  verbose: boolean;
  redis: string | undefined;
  redisPing: number;
  keepAlive: number;
  bodyTimeout: number;
  ping: number;
  maxBody: number;
  maxHeader: number;
  maxMsg: number;
  /** WebSocket permessage-deflate for upgrades that do not say (`Iodine.upgrade`'s `deflate`) */
  deflate: boolean;
  tls: boolean;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  tlsPass: string | undefined;
  pid: string | undefined;
  verbosity: number;
  warmup: boolean;
  /** the options given on the command line or in the config file (they win over the app's own) */
  given: ReadonlySet<string>;
}

export const DEFAULT_PORT = 3000;
/** The port variables Bun.serve reads, in its order; iodine reads them alike. */
export const PORT_VARIABLES = ["BUN_PORT", "PORT", "NODE_PORT"];

/** Default limits, the same for the CLI and for script mode. */
export const DEFAULTS = {
  keepAlive: 40,
  /** request body deadline, seconds (SPEC §10): Bun's own default idle timeout, well under the keep-alive */
  bodyTimeout: 10,
  ping: 40,
  maxBody: 50 * MiB,
  maxHeader: 32 * KiB,
  maxMsg: 250 * KiB,
  /**
   * WebSocket permessage-deflate, off: Bun compresses a published message once per subscriber, so
   * fan-out of 4 KiB messages to 1,000 WebSockets took 25.6 µs of server CPU per delivery with it on,
   * 1.1 µs without (`bun bench/all.ts --only pubsub --rounds 3`). Shorter than DEFLATE_MIN
   * (src/websocket.ts) messages go plain either way.
   */
  deflate: false,
  redisPing: 300,
  verbosity: 4,
  /** how long a graceful stop waits for in-flight requests, ms */
  drainMs: 10_000,
} as const;

type Env = Record<string, string | undefined>;

/** `-2` → cores ÷ 2 (at least 1); positive counts are taken as they are. */
export function resolveCount(n: number, cores = availableParallelism()): number {
  return n < 0 ? Math.max(1, Math.floor(cores / -n)) : n;
}

/** Merges the command line over the config file over the environment, validating every value. */
export function resolveSettings(cli: RawOptions, config: RawOptions | undefined, env: Env, cores = availableParallelism()): Settings {
  const get = (name: string): string | boolean | undefined => cli.values.get(name) ?? config?.values.get(name);
  const str = (name: string): string | undefined => {
    const v = get(name);
    return typeof v === "string" ? v : undefined;
  };
  const flag = (name: string): boolean => get(name) === true;
  const onOff = (name: string, dflt: boolean): boolean => {
    const v = get(name);
    return typeof v === "boolean" ? v : dflt;
  };

  // An option given on the command line or config wins; then the environment variable(s).
  const fromEnv = (name: string, vars: string[]): { value: string; source: string } | undefined => {
    const v = str(name);
    if (v !== undefined) return { value: v, source: `--${name}` };
    for (const key of vars) {
      const e = env[key];
      if (e !== undefined && e !== "") return { value: e, source: `$${key}` };
    }
    return undefined;
  };

  // The variables Bun.serve reads, in its order.
  const portSrc = fromEnv("port", PORT_VARIABLES);
  const port = portSrc ? int(portSrc.source, portSrc.value, 0, 65535) : undefined;

  const workersSrc = fromEnv("workers", ["WORKERS", "WEB_CONCURRENCY"]);
  const workers = workersSrc ? resolveCount(nonZero(workersSrc.source, workersSrc.value), cores) : 1;
  const threadsSrc = fromEnv("threads", ["THREADS"]);
  const threads = threadsSrc ? resolveCount(nonZero(threadsSrc.source, threadsSrc.value), cores) : 1;

  let hostname: string | undefined;
  let unix: string | undefined;
  const bind = str("bind");
  if (bind !== undefined) {
    if (bind === "") throw new CliError(`option "--bind" needs an address or a socket path, got ""`);
    if (bind.startsWith("unix:")) unix = bind.slice(5);
    else if (bind.startsWith("/") || bind.startsWith("./") || bind.startsWith("../") || bind.endsWith(".sock")) unix = bind;
    else hostname = bind;
    if (unix === "") throw new CliError(`option "--bind" needs a socket path after "unix:"`);
  }

  const redisSrc = fromEnv("redis", ["REDIS_URL", "IODINE_REDIS_URL"]);
  const redis = redisSrc?.value;
  if (redisSrc && !/^rediss?:\/\//.test(redisSrc.value)) {
    throw new CliError(`${redisSrc.source} must be a redis:// or rediss:// URL, got "${redactUrl(redisSrc.value)}"`);
  }
  const redisProblem = redisSrc && redisUrlProblem(redisSrc.value);
  if (redisSrc && redisProblem) throw new CliError(`${redisSrc.source} ${redisProblem}`);

  const keepAlive = optInt("keep-alive", 0, 255, DEFAULTS.keepAlive);
  const bodyTimeout = optInt("body-timeout", 0, 255, DEFAULTS.bodyTimeout);
  const ping = optInt("ping", 1, 960, DEFAULTS.ping);
  const redisPing = optInt("redis-ping", 1, 86400, DEFAULTS.redisPing);
  const maxBody = optInt("max-body", 1, 4096, DEFAULTS.maxBody / MiB) * MiB;
  const maxHeader = optInt("max-header", 1, 1024, DEFAULTS.maxHeader / KiB) * KiB;
  const maxMsg = optInt("max-msg", 1, 1024 * 1024, DEFAULTS.maxMsg / KiB) * KiB;
  const verbosity = optInt("verbosity", 0, 5, DEFAULTS.verbosity);

  const tlsCert = str("tls-cert");
  const tlsKey = str("tls-key");
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new CliError(tlsCert === undefined ? `option "--tls-key" needs "--tls-cert" too` : `option "--tls-cert" needs "--tls-key" too`);
  }

  let pid = str("pid");
  if (pid === "") throw new CliError(`option "--pid" needs a file name`);
  if (pid?.endsWith("/")) pid += "iodine.pid";

  const www = str("www");
  if (www === "") throw new CliError(`option "--www" needs a folder`);

  return {
    app: cli.app ?? "",
    port,
    hostname,
    unix,
    workers,
    threads,
    www,
    verbose: flag("verbose"),
    redis,
    redisPing,
    keepAlive,
    bodyTimeout,
    ping,
    maxBody,
    maxHeader,
    maxMsg,
    deflate: onOff("deflate", DEFAULTS.deflate),
    tls: flag("tls"),
    tlsCert,
    tlsKey,
    tlsPass: str("tls-pass"),
    pid,
    verbosity,
    warmup: flag("warmup"),
    given: new Set([...cli.values.keys(), ...(config?.values.keys() ?? [])]),
  };

  function optInt(name: string, min: number, max: number, dflt: number): number {
    const v = str(name);
    return v === undefined ? dflt : int(`--${name}`, v, min, max);
  }
}

function int(source: string, value: string, min: number, max: number): number {
  const n = /^[+-]?\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new CliError(`${source} must be an integer ${min}–${max}, got "${value}"`);
  }
  return n;
}

function nonZero(source: string, value: string): number {
  const n = /^[+-]?\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n === 0 || Math.abs(n) > 4096) {
    throw new CliError(`${source} must be a non-zero integer (negative: cores ÷ |N|), got "${value}"`);
  }
  return n;
}
