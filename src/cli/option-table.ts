// The command-line options of SPEC §2 as data: one entry per option, read by options.ts (argv,
// config files, --help) and scripts/readme.ts (the README's table).

export interface OptionDef {
  /** canonical long name, used as `--name` */
  name: string;
  kind: "string" | "boolean";
  /** one-letter short flag (`-p`) */
  short?: string;
  /** iodine's single-dash spellings, without the dash (`port`, `maxbd` …) */
  iodine: string[];
  /** other double-dash spellings (`--preload`) */
  aliases?: string[];
  valueHint?: string;
  /** what it does, for the README's table; code in backticks, which `--help` leaves out */
  description: string;
  /** the value without the option, in words (`` `$PORT`, else … 3000 ``), backticks as above */
  default?: string;
}

export const OPTIONS: readonly OptionDef[] = [
  {
    name: "port",
    kind: "string",
    short: "p",
    iodine: ["port"],
    valueHint: "N",
    description: "TCP port; 0 picks a free port",
    default: "`$PORT`, else the module's port, else 3000",
  },
  {
    name: "bind",
    kind: "string",
    short: "b",
    iodine: ["bind"],
    valueHint: "ADDR",
    description: "address to bind; a path (`/x.sock` or `unix:/x.sock`) means a Unix socket",
    default: "all interfaces",
  },
  {
    name: "workers",
    kind: "string",
    short: "w",
    iodine: ["workers"],
    valueHint: "N",
    description: "worker processes; negative N means cores ÷ |N| (at least 1)",
    default: "`$WORKERS` or `$WEB_CONCURRENCY`, else 1",
  },
  {
    name: "threads",
    kind: "string",
    short: "t",
    iodine: ["threads"],
    valueHint: "N",
    description:
      "event-loop threads per worker (Bun Workers sharing the port); negative as for `--workers`",
    default: "`$THREADS`, else 1",
  },
  {
    name: "www",
    kind: "string",
    iodine: ["www", "public"],
    valueHint: "DIR",
    description: "public folder for the static file service",
    default: "none",
  },
  {
    name: "verbose",
    kind: "boolean",
    short: "v",
    iodine: ["log"],
    description:
      "log every HTTP request to stderr: address, request line, status, body bytes (`-` for a stream), time",
    default: "off",
  },
  {
    name: "log-format",
    kind: "string",
    iodine: ["log-format"],
    valueHint: "F",
    description:
      "`text`, or `json`: one JSON object a line for access lines (`-v`) and for errors, warnings and start-up lines",
    default: "text",
  },
  {
    name: "redis",
    kind: "string",
    short: "r",
    iodine: ["redis"],
    valueHint: "URL",
    description:
      "Redis pub/sub engine (`redis://`, `rediss://`; user and password in the URL; `?sharded`: Redis Cluster sharded pub/sub)",
    default: "`$REDIS_URL` or `$IODINE_REDIS_URL`",
  },
  {
    name: "redis-ping",
    kind: "string",
    iodine: ["rp", "redis-ping"],
    valueHint: "S",
    description: "Redis keep-alive ping interval in seconds; a ping unanswered as long reconnects",
    default: "300",
  },
  {
    name: "metrics",
    kind: "string",
    iodine: ["metrics"],
    valueHint: "ADDR",
    description:
      "serve `/metrics` (Prometheus), `/health` and `/ready` from the master on ADDR (a port, or host:port; 0 picks a port)",
    default: "off; a port alone binds 127.0.0.1",
  },
  {
    name: "keep-alive",
    kind: "string",
    short: "k",
    iodine: ["keep-alive"],
    valueHint: "S",
    description: "HTTP keep-alive idle timeout in seconds, 0–255 (Bun's limit)",
    default: "40",
  },
  {
    name: "body-timeout",
    kind: "string",
    iodine: ["bt", "body-timeout"],
    valueHint: "S",
    description:
      "request body deadline in seconds, 0–255: a body that stalls or trickles in (under 16 KiB/s) is cut after it; 0 leaves bodies to `-k`",
    default: "10",
  },
  {
    name: "ping",
    kind: "string",
    iodine: ["ping"],
    valueHint: "S",
    description: "WebSocket idle/ping interval in seconds, 1–960",
    default: "40",
  },
  {
    name: "deflate",
    kind: "boolean",
    iodine: ["deflate"],
    description:
      "WebSocket compression (permessage-deflate) for clients that offer it, on messages of 1 KiB and more; " +
      "`Iodine.upgrade`'s `deflate` option overrides it per connection",
    default: "off",
  },
  {
    name: "max-body",
    kind: "string",
    iodine: ["maxbd", "max-body"],
    valueHint: "MB",
    description: "largest request body in MiB; 413 above it",
    default: "50",
  },
  {
    name: "max-header",
    kind: "string",
    iodine: ["maxhd", "max-header"],
    valueHint: "KB",
    description:
      "largest header block in KiB, request line included; 431 above it (another value than Bun's 16 re-launches Bun with its flag)",
    default: "16 (Bun's own)",
  },
  {
    name: "max-msg",
    kind: "string",
    iodine: ["maxms", "max-msg"],
    valueHint: "KB",
    description: "largest WebSocket message in KiB; close 1009 above it",
    default: "250",
  },
  {
    name: "tls",
    kind: "boolean",
    iodine: ["tls"],
    description: "TLS with a self-signed certificate made at start-up",
    default: "off",
  },
  {
    name: "tls-cert",
    kind: "string",
    iodine: ["tls-cert", "cert"],
    valueHint: "FILE",
    description: "TLS certificate (PEM); with `--tls-key`",
    default: "none",
  },
  {
    name: "tls-key",
    kind: "string",
    iodine: ["tls-key", "key"],
    valueHint: "FILE",
    description: "TLS private key (PEM); with `--tls-cert`",
    default: "none",
  },
  {
    name: "tls-pass",
    kind: "string",
    iodine: ["tls-pass", "tls-password"],
    valueHint: "P",
    description: "passphrase of the TLS private key",
    default: "none",
  },
  {
    name: "pid",
    kind: "string",
    iodine: ["pid", "pidfile"],
    valueHint: "FILE",
    description:
      "write the (master's) pid to FILE, removed on exit; a path ending in `/` gets `iodine.pid`",
    default: "none",
  },
  {
    name: "verbosity",
    kind: "string",
    short: "V",
    iodine: ["verbosity"],
    valueHint: "N",
    description: "0 silent … 5 debug; errors at ≥ 1, start-up lines at ≥ 4",
    default: "4",
  },
  {
    name: "warmup",
    kind: "boolean",
    iodine: ["warmup"],
    aliases: ["preload"],
    description: "call the app once (a synthetic `GET /`) before accepting connections",
    default: "off",
  },
  {
    name: "config",
    kind: "string",
    short: "C",
    iodine: ["config"],
    valueHint: "FILE",
    description:
      "more options from FILE, one per line (`-p 3000`, `port 3000`, `verbose`); `#` comments; command-line flags win",
    default: "none",
  },
  {
    name: "help",
    kind: "boolean",
    short: "h",
    iodine: ["?", "help"],
    description: "show this help",
  },
  { name: "version", kind: "boolean", iodine: ["version"], description: "show the version" },
];
