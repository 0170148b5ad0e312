// Every default and limit of the process, one name each: what the command line's options default
// to (script mode takes the same), and the fixed times of starting, stopping and supervising.

const KiB = 1024;
const MiB = 1024 * 1024;

/** The port when neither the command line, $PORT nor the app names one. */
export const DEFAULT_PORT = 3000;
/** The port variables Bun.serve reads, in its order; iodine reads them alike. */
export const PORT_VARIABLES = ["BUN_PORT", "PORT", "NODE_PORT"];

/** What the options default to, the same for the CLI and for script mode. */
export const DEFAULTS = {
  keepAlive: 40,
  /** request body deadline, seconds (SPEC §10): Bun's own default idle timeout, well under the keep-alive */
  bodyTimeout: 10,
  ping: 40,
  maxBody: 50 * MiB,
  maxHeader: 16 * KiB,
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

// --- stopping ---

/** How long a handing-over worker keeps answering, ms: a busy keep-alive client sends its next request well within it. */
export const HANDOVER_MS = 500;
/** How long a stop waits for closed connections' callbacks (an async onClose) to return, ms. */
export const CALLBACKS_MS = 2000;
/**
 * A stop signal that repeats one already taken within this long is the same request. A terminal's
 * Ctrl-C reaches every process of its group at once, and `bun run` (or the CLI's header-size
 * re-launch) forwards it to its child again, so one keystroke arrives two or three times within
 * milliseconds; only a signal after this window means "stop now".
 */
export const SAME_STOP_MS = 1000;
/** How long a stopping worker waits for the master to confirm its last publishes, ms. */
export const SYNC_MS = 2000;
/**
 * How long a subscription waits to be in effect everywhere (every worker told, Redis subscribed)
 * before its promise resolves anyway: a worker that does not answer is stuck or going.
 */
export const SETTLE_MS = 2000;

// --- supervising ---

/** How long a new worker may take to load the app and listen, ms. */
export const READY_TIMEOUT_MS = 30_000;
/** How often a slot is started again at launch when its worker is killed before it listens. */
export const START_TRIES = 5;
/** A worker that dies within this long of its start counts as failing again (longer back-off), ms. */
export const HEALTHY_AFTER_MS = 5_000;
/** The longest back-off before a failing worker is started again, ms. */
export const MAX_BACKOFF_MS = 10_000;
/** How long a retiring worker may take beyond the drain before it is killed, ms. */
export const RETIRE_GRACE_MS = 2000;
