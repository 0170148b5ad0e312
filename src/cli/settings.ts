// Settings: the command line over the config file over the environment, every value validated
// (SPEC §2). Each bad value becomes a one-line `CliError` naming the option and what it received.
import { CliError } from "../errors.ts";
import { nodeFs } from "../lazy-node.ts";
import { DEFAULTS, PORT_VARIABLES } from "../limits.ts";
import type { ListenDefaults } from "../listeners.ts";
import { LOG_FORMATS, type LogFormat } from "../log.ts";
import { redactUrl, redisUrlProblem } from "../pubsub/redis-url.ts";
import { readConfigText, type RawOptions } from "./options.ts";

const KiB = 1024;
const MiB = 1024 * 1024;

/**
 * Everything the CLI decided, in the units the server uses (bytes, seconds). The listeners read
 * their part (ListenDefaults: address, limits, what was given) from this same object.
 */
export interface Settings extends ListenDefaults {
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
  redis: string | undefined;
  redisPing: number;
  maxHeader: number;
  tls: boolean;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  tlsPass: string | undefined;
  pid: string | undefined;
  verbosity: number;
  /** `--metrics`: where the master serves its metrics */
  metrics: { hostname: string; port: number } | undefined;
  logFormat: LogFormat;
}

type Env = Record<string, string | undefined>;

/** `-2` → cores ÷ 2 (at least 1); positive counts are taken as they are. */
export function resolveCount(n: number, cores = navigator.hardwareConcurrency): number {
  return n < 0 ? Math.max(1, Math.floor(cores / -n)) : n;
}

/** Merges the command line over the config file over the environment, validating every value. */
export function resolveSettings(
  cli: RawOptions,
  config: RawOptions | undefined,
  env: Env,
  cores = navigator.hardwareConcurrency,
): Settings {
  const opt = new Sources(cli, config, env);
  // The variables Bun.serve reads, in its order.
  const portSrc = opt.fromEnv("port", PORT_VARIABLES);
  const port = portSrc ? int(portSrc.source, portSrc.value, 0, 65535) : undefined;
  const workers = count(opt.fromEnv("workers", ["WORKERS", "WEB_CONCURRENCY"]), cores);
  const threads = count(opt.fromEnv("threads", ["THREADS"]), cores);
  const { hostname, unix } = bindAddress(opt.str("bind"));
  const redis = redisUrl(opt.fromEnv("redis", ["REDIS_URL", "IODINE_REDIS_URL"]));
  const keepAlive = opt.int("keep-alive", 0, 255, DEFAULTS.keepAlive);
  const bodyTimeout = opt.int("body-timeout", 0, 255, DEFAULTS.bodyTimeout);
  const ping = opt.int("ping", 1, 960, DEFAULTS.ping);
  const redisPing = opt.int("redis-ping", 1, 86400, DEFAULTS.redisPing);
  const maxBody = opt.int("max-body", 1, 4096, DEFAULTS.maxBody / MiB) * MiB;
  const maxHeader = opt.int("max-header", 1, 1024, DEFAULTS.maxHeader / KiB) * KiB;
  const maxMsg = opt.int("max-msg", 1, 1024 * 1024, DEFAULTS.maxMsg / KiB) * KiB;
  const verbosity = opt.int("verbosity", 0, 5, DEFAULTS.verbosity);

  const tlsCert = opt.str("tls-cert");
  const tlsKey = opt.str("tls-key");
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new CliError(
      tlsCert === undefined
        ? `option "--tls-key" needs "--tls-cert" too`
        : `option "--tls-cert" needs "--tls-key" too`,
    );
  }

  let pid = opt.str("pid");
  if (pid === "") throw new CliError(`option "--pid" needs a file name`);
  if (pid?.endsWith("/")) pid += "iodine.pid";

  const www = opt.str("www");
  if (www === "") throw new CliError(`option "--www" needs a folder`);

  return {
    app: cli.app ?? "",
    port,
    hostname,
    unix,
    workers,
    threads,
    www,
    verbose: opt.flag("verbose"),
    redis,
    redisPing,
    keepAlive,
    bodyTimeout,
    ping,
    maxBody,
    maxHeader,
    maxMsg,
    deflate: opt.onOff("deflate", DEFAULTS.deflate),
    tls: opt.flag("tls"),
    tlsCert,
    tlsKey,
    tlsPass: opt.str("tls-pass"),
    pid,
    verbosity,
    metrics: metricsAddress(opt.str("metrics")),
    logFormat: logFormat(opt.str("log-format")),
    warmup: opt.flag("warmup"),
    given: new Set([...cli.values.keys(), ...(config?.values.keys() ?? [])]),
  };
}

/** `--config FILE`: its options, or undefined when none is named. */
export function readConfig(cli: RawOptions): RawOptions | undefined {
  const file = cli.values.get("config");
  if (typeof file !== "string") return undefined;
  let text: string;
  try {
    text = nodeFs().readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(
      `cannot read the config file "${file}": ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
  const config = readConfigText(text, file);
  if (config.values.has("config"))
    throw new CliError(`${file}: a config file cannot name another config file`);
  return config;
}

// --- internal ---

/** An option's value: the command line's, else the config file's, else (for some) an environment variable's. */
class Sources {
  readonly #cli: RawOptions;
  readonly #config: RawOptions | undefined;
  readonly #env: Env;

  constructor(cli: RawOptions, config: RawOptions | undefined, env: Env) {
    this.#cli = cli;
    this.#config = config;
    this.#env = env;
  }

  str(name: string): string | undefined {
    const v = this.#get(name);
    return typeof v === "string" ? v : undefined;
  }

  flag(name: string): boolean {
    return this.#get(name) === true;
  }

  onOff(name: string, dflt: boolean): boolean {
    const v = this.#get(name);
    return typeof v === "boolean" ? v : dflt;
  }

  /** An integer option within `min`–`max`, else `dflt`. */
  int(name: string, min: number, max: number, dflt: number): number {
    const v = this.str(name);
    return v === undefined ? dflt : int(`--${name}`, v, min, max);
  }

  /** An option given on the command line or config wins; then the environment variable(s). */
  fromEnv(name: string, vars: readonly string[]): { value: string; source: string } | undefined {
    const v = this.str(name);
    if (v !== undefined) return { value: v, source: `--${name}` };
    for (const key of vars) {
      const e = this.#env[key];
      if (e !== undefined && e !== "") return { value: e, source: `$${key}` };
    }
    return undefined;
  }

  #get(name: string): string | boolean | undefined {
    return this.#cli.values.get(name) ?? this.#config?.values.get(name);
  }
}

/** `--workers` / `--threads`: 1 when not given. */
function count(src: { value: string; source: string } | undefined, cores: number): number {
  return src ? resolveCount(nonZero(src.source, src.value), cores) : 1;
}

/** `--bind`: a host name or address, or a Unix socket path (`unix:PATH`, `/…`, `./…`, `../…`, `….sock`). */
function bindAddress(bind: string | undefined): {
  hostname: string | undefined;
  unix: string | undefined;
} {
  let hostname: string | undefined;
  let unix: string | undefined;
  if (bind !== undefined) {
    if (bind === "")
      throw new CliError(`option "--bind" needs an address or a socket path, got ""`);
    if (bind.startsWith("unix:")) unix = bind.slice(5);
    else if (
      bind.startsWith("/") ||
      bind.startsWith("./") ||
      bind.startsWith("../") ||
      bind.endsWith(".sock")
    )
      unix = bind;
    else hostname = bind;
    if (unix === "") throw new CliError(`option "--bind" needs a socket path after "unix:"`);
  }
  return { hostname, unix };
}

/** `--metrics 9100`, `--metrics 0.0.0.0:9100`, `--metrics [::1]:9100`. */
function metricsAddress(addr: string | undefined): Settings["metrics"] {
  if (addr === undefined) return undefined;
  const m = /^(?:(\[[^\]]+\]|[^:\[\]]+):)?(\d{1,5})$/.exec(addr);
  const port = Number(m?.[2]);
  if (m === null || port > 65535)
    throw new CliError(
      `option "--metrics" takes a port (0–65535) or host:port, got ${JSON.stringify(addr)}`,
    );
  return { hostname: (m[1] ?? "127.0.0.1").replace(/^\[|\]$/g, ""), port };
}

function redisUrl(src: { value: string; source: string } | undefined): string | undefined {
  if (src === undefined) return undefined;
  if (!/^rediss?:\/\//.test(src.value)) {
    throw new CliError(
      `${src.source} must be a redis:// or rediss:// URL, got "${redactUrl(src.value)}"`,
    );
  }
  const problem = redisUrlProblem(src.value);
  if (problem) throw new CliError(`${src.source} ${problem}`);
  return src.value;
}

/** `--log-format`: `text` (the default) or `json`. */
function logFormat(value: string | undefined): LogFormat {
  if (value === undefined) return "text";
  const format = LOG_FORMATS.find((f) => f === value);
  if (format === undefined)
    throw new CliError(`--log-format must be ${LOG_FORMATS.join(" or ")}, got "${value}"`);
  return format;
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
    throw new CliError(
      `${source} must be a non-zero integer (negative: cores ÷ |N|), got "${value}"`,
    );
  }
  return n;
}
