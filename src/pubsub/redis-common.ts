// What the two Redis engines (redis.ts: one Redis; redis-sharded.ts: a Redis Cluster) share: the
// options and URL checks, the host they deliver to, `cmd` relayed from a cluster worker, the bound on
// publishes waiting for Redis, and ioredis loaded on first use. (Their echo log is echoes.ts.)
import { isUtf8 } from "node:buffer";
import type * as IORedisModule from "ioredis";
import { log } from "../log.ts";
import type { Message, Position } from "../types.ts";
import {
  CLUSTER,
  USE_RELAY,
  type EngineHost,
  type PubSubEngine,
  type PubSubEngineHost,
  type Relay,
  type RelayingEngine,
} from "./engine-api.ts";
import { publish } from "./registry.ts";
import { redactUrl, redisUrlProblem } from "./redis-url.ts";

/** Options of `new Iodine.PubSub.Redis(url, options)` (and of the sharded engine). */
export interface RedisEngineOptions {
  /**
   * Seconds between keep-alive PINGs on each connection (`--redis-ping`, default 300); a PING not
   * answered within the same time means Redis is gone: the connection is dropped and re-established.
   */
  ping?: number;
}

/** Bytes of publishes waiting for Redis's answer past which publishes stay in the cluster until it catches up. */
export const MAX_WAITING_BYTES = 64 * 1024 * 1024;
/** How long `cmd` waits for a connection that is being (re-)established. */
const CMD_WAIT_MS = 5_000;

/** A connection `cmd` can run on: a Redis, or a Redis Cluster. */
interface CommandConnection {
  readonly status: string;
  once(event: "ready", f: () => void): unknown;
  off(event: "ready", f: () => void): unknown;
  call(command: string, ...args: (string | number | Buffer)[]): Promise<unknown>;
}

/** Names an engine goes by: in errors (`api`, `cmd`) and at the start of its log lines (`log`). */
export interface EngineNames {
  api: string;
  cmd: string;
  log: string;
}

/** Where a message goes when the engine was opened by hand, without a host. */
const byHand: PubSubEngineHost = {
  deliver: (channel, message) => void publish(channel, message, CLUSTER),
};

/**
 * What both Redis engines are: an engine with a URL, opened once with a host while iodine uses it,
 * whose state changes are logged once each, and which runs `cmd` through a worker's relay.
 */
export abstract class RedisEngineBase implements PubSubEngine, RelayingEngine {
  readonly url: string;
  /** seconds between keep-alive PINGs */
  protected readonly pingSeconds: number;
  /** the last connection error, for log lines */
  protected lastError = "";
  /** up or down, for one log line per change */
  protected readonly state = new Liveness();
  #opened = false;
  readonly #names: EngineNames;
  #host: PubSubEngineHost | undefined;
  #relay: Relay | undefined;
  /** connections whose keep-alive PING is not answered yet */
  #pinging = new Set<object>();

  /** `wrongForm`: what is wrong with the URL's form as the engine checks it (undefined: nothing). */
  protected constructor(
    names: EngineNames,
    url: string,
    options: RedisEngineOptions,
    wrongForm: string | undefined,
  ) {
    const { api } = names;
    if (wrongForm !== undefined)
      throw new TypeError(`${api}: the URL ${wrongForm}, got ${JSON.stringify(url)}`);
    const problem = redisUrlProblem(url);
    if (problem !== undefined) throw new TypeError(`${api}: the URL ${problem}`);
    this.url = url;
    this.#names = names;
    this.pingSeconds = options.ping ?? 300;
    if (!(this.pingSeconds > 0))
      throw new TypeError(`${api}: "ping" must be a positive number of seconds`);
  }

  /** resolves once Redis confirmed it (at once while Redis is away: it subscribes when it is back) */
  abstract subscribe(channel: string): Promise<void>;
  abstract psubscribe(pattern: string): Promise<void>;
  abstract unsubscribe(key: string, pattern: boolean): void;
  abstract publish(channel: string, message: Message): void;
  /** the connections iodine uses, made when it opens the engine, dropped when it closes it */
  protected abstract openConnections(): void;
  protected abstract closeConnections(): void;
  /** where `cmd` runs while iodine uses the engine here (undefined: it does not) */
  protected abstract commandConnection(): CommandConnection | undefined;
  /** else a connection of `cmd`'s own, made on first use */
  protected abstract ownConnection(): CommandConnection;

  /** True while connected: both connections (one Redis), or the cluster (a Redis Cluster: some master may still be away). */
  get connected(): boolean {
    return this.state.up;
  }

  /** iodine starts using the engine in this process; what it receives goes to `host` (none: opened by hand). */
  open(host?: PubSubEngineHost): void {
    if (this.#opened) return;
    this.#opened = true;
    this.#host = host;
    this.openConnections();
  }

  async close(): Promise<void> {
    if (!this.#opened) return;
    this.#opened = false;
    this.closeConnections();
  }

  protected get isOpen(): boolean {
    return this.#opened;
  }

  /** In a cluster worker, where this is the default engine: runs `cmd` in the master. */
  [USE_RELAY](relay: Relay | undefined): void {
    this.#relay = relay;
  }

  /**
   * Runs any Redis command and resolves to its reply, e.g. `await redis.cmd("CLIENT", "LIST")`: on
   * the publishing connection (a Redis Cluster routes it by its first key). In a cluster worker it
   * runs in the master (the cluster keeps its connections); an engine iodine does not use opens a
   * connection of its own.
   */
  async cmd(command: string, ...args: (string | number | Buffer)[]): Promise<unknown> {
    if (typeof command !== "string")
      throw new TypeError(
        `${this.#names.cmd}: the command must be a string, got ${typeof command}`,
      );
    let conn = this.commandConnection();
    if (conn === undefined) {
      const relayed = this.#relay?.([command, ...args.map(String)]);
      if (relayed !== undefined) return relayed;
      conn = this.ownConnection();
    }
    await this.#whenReady(conn);
    return conn.call(command, ...args);
  }

  /** A message from Redis, to this cluster. Redis keeps bytes: text when they are UTF-8 (what `redis-cli PUBLISH` sends). */
  protected deliver(channel: string, message: Buffer): void {
    const text = isUtf8(message);
    const host = this.#host;
    if (host !== undefined && "deliverBytes" in host)
      (host as EngineHost).deliverBytes(channel, message, text);
    else (host ?? byHand).deliver(channel, text ? message.toString() : new Uint8Array(message));
  }

  /** A history message from Redis with its position (redis-history.ts); `text` as it was published. */
  protected deliverAt(channel: string, bytes: Buffer, text: boolean, position: Position): void {
    const host = this.#host;
    if (host !== undefined && "deliverAt" in host)
      (host as EngineHost).deliverAt(channel, bytes, text, position);
    else (host ?? byHand).deliver(channel, text ? bytes.toString() : new Uint8Array(bytes));
  }

  /**
   * Keep-alive, once per interval: true when the PING sent to `conn` an interval ago is still
   * unanswered (Redis is gone: the caller reconnects), else a new PING goes out.
   */
  protected isHung(conn: { ping(): Promise<unknown> }): boolean {
    if (this.#pinging.delete(conn)) return true;
    this.#pinging.add(conn);
    const done = () => void this.#pinging.delete(conn);
    conn.ping().then(done, done);
    return false;
  }

  protected forgetPings(): void {
    this.#pinging.clear();
  }

  /** Resolves once `conn` is ready; rejects after a while, naming the last error. */
  #whenReady(conn: CommandConnection): Promise<void> {
    if (conn.status === "ready") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        conn.off("ready", onReady);
        reject(
          new Error(
            `${this.#names.log}: not connected to ${redactUrl(this.url)}${this.lastError ? ` (${this.lastError})` : ""}`,
          ),
        );
      }, CMD_WAIT_MS);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      conn.once("ready", onReady);
    });
  }
}

/** Whether Redis is reachable, for one log line per change of state, never one per retry. */
export class Liveness {
  up = false;
  #everUp = false;
  #downSince = 0;

  get everUp(): boolean {
    return this.#everUp;
  }

  /** It came up: returns " after 1.2 s" when it had been down or unreachable, else "". */
  cameUp(): string {
    const after = this.#downSince === 0 ? "" : ` after ${secondsSince(this.#downSince)}`;
    this.up = this.#everUp = true;
    this.#downSince = 0;
    return after;
  }

  /** It went away: true when it had been up (say so, once). */
  wentDown(): boolean {
    if (!this.up) return false;
    this.up = false;
    this.#downSince = Date.now();
    return true;
  }

  /** It cannot be reached at all: true the first time only (say so, once). */
  neverUp(): boolean {
    if (this.#everUp || this.#downSince !== 0) return false;
    this.#downSince = Date.now();
    return true;
  }

  reset(): void {
    this.up = this.#everUp = false;
    this.#downSince = 0;
  }
}

/** "4.2 s" since `t` (ms). */
export const secondsSince = (t: number): string => `${((Date.now() - t) / 1000).toFixed(1)} s`;

/** "1 channel", "2 channels". */
export const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? "" : "s"}`;

/**
 * Publishes handed to Redis and not answered yet. Past a bound (a count, or bytes) publishes stay in
 * the cluster until Redis has answered half of them: one log line each way.
 */
export class Backlog {
  count = 0;
  bytes = 0;
  #behind = false;
  readonly #logName: string;
  readonly #maxCount: number;

  constructor(logName: string, maxCount: number) {
    this.#logName = logName;
    this.#maxCount = maxCount;
  }

  /** True when another publish may go to Redis (the first false is logged). */
  hasRoom(): boolean {
    if (this.count < this.#maxCount && this.bytes < MAX_WAITING_BYTES) return true;
    if (!this.#behind) {
      this.#behind = true;
      log.error(
        `${this.#logName}: ${this.count} publishes (${this.bytes} bytes) wait for Redis to answer; ` +
          `publishing inside this cluster only until it catches up`,
      );
    }
    return false;
  }

  add(count: number, bytes: number): void {
    this.count += count;
    this.bytes += bytes;
  }

  /** Redis answered (or failed) `count` publishes of `bytes`. */
  answered(count: number, bytes: number): void {
    this.count -= count;
    this.bytes -= bytes;
    if (this.#behind && this.count < this.#maxCount / 2 && this.bytes < MAX_WAITING_BYTES / 2) {
      this.#behind = false;
      log.info(`${this.#logName}: caught up; publishing through Redis again`);
    }
  }

  /** The connections are gone: nothing waits any more. */
  clear(): void {
    this.count = this.bytes = 0;
  }

  /** Redis is (back) up: publish again. */
  resume(): void {
    this.#behind = false;
  }
}

// --- ioredis ---

// Loaded on first use: it is by far the largest module iodine pulls in (about 30 ms of a 60 ms
// start-up on a 2-core VM), and an app that never names Redis never needs it. A plain `require` of a
// literal name, so `bun build --compile` still bundles it.
let loaded: typeof IORedisModule | undefined;

/** The ioredis module (`.Redis`, `.Cluster`), required the first time it is asked for. */
export function ioredis(): typeof IORedisModule {
  if (loaded === undefined) {
    traceCheaply();
    loaded = require("ioredis") as typeof IORedisModule;
  }
  return loaded;
}

/**
 * ioredis traces a command unless its tracing channel's `hasSubscribers` is exactly false; Bun
 * 1.4's TracingChannel has no `hasSubscribers`, so every command paid for argument sanitising and a
 * wrapper promise (about 1 µs of CPU per publish). Node's definition, where it is missing.
 */
function traceCheaply(): void {
  const diagnostics =
    require("node:diagnostics_channel") as typeof import("node:diagnostics_channel");
  const proto = Object.getPrototypeOf(diagnostics.tracingChannel("iodine:probe")) as object;
  if ("hasSubscribers" in proto) return;
  Object.defineProperty(proto, "hasSubscribers", {
    configurable: true,
    get(
      this: Record<
        "start" | "end" | "asyncStart" | "asyncEnd" | "error",
        { hasSubscribers: boolean }
      >,
    ) {
      return (
        this.start.hasSubscribers ||
        this.end.hasSubscribers ||
        this.asyncStart.hasSubscribers ||
        this.asyncEnd.hasSubscribers ||
        this.error.hasSubscribers
      );
    },
  });
}
