// The Redis engine (SPEC §5): pub/sub across machines through one Redis, on ioredis 5 (RESP2).
//
// The process that holds the cluster's interest (the master, or a single process) opens exactly two
// connections: one publishing (and running `cmd`), one subscribed to exactly the channels and
// patterns some process of the cluster wants. Messages stay raw bytes on Redis, so any Redis client
// can publish to iodine subscribers and follow iodine's channels.
//
// Two things need care:
// - Copies. A connection subscribed to a channel and to patterns matching it receives one copy of a
//   message per subscription (`message`, then a `pmessage` per pattern), back to back: Redis writes
//   them during one PUBLISH. A run of copies with the same channel and bytes, each from a different
//   subscription, is one publish; it is delivered once.
// - Echoes. The cluster delivers its own publishes itself, so Redis's echo of them must be dropped,
//   without wrapping the payload. Every publish that could echo (the cluster wants its channel, or a
//   subscription change is in flight) is remembered; an incoming publish equal to a remembered one on
//   the same channel is its echo (echoes arrive in publish order; a foreign message with the same
//   bytes is indistinguishable, and delivering either one is the same). A remembered publish that
//   never echoes is forgotten at a fence: a PING on the publishing connection (so Redis has run every
//   publish before it), then a PING on the subscribing one (so every echo of them has arrived).
//
// While Redis is away, publishes reach the local cluster only (Redis pub/sub is at-most-once across
// machines); the engine logs one line per state change, reconnects, and subscribes again.
import { isUtf8 } from "node:buffer";
import type { Redis as IORedis, RedisOptions } from "ioredis";
import { log } from "../log.ts";
import type { Message } from "../types.ts";
import { EchoLog } from "./echoes.ts";
import { deliverFromEngine, relayCommand } from "./engine.ts";
import { CLUSTER, defaultEngine, PUBLISH_BYTES, type BytesEngine } from "./engine-api.ts";
import { publish } from "./registry.ts";
import { ioredis } from "./ioredis.ts";
import { compileGlob } from "./match.ts";
import { redactUrl, redisUrlProblem } from "./redis-url.ts";

/** Options of `new Iodine.PubSub.Redis(url, options)`. */
export interface RedisEngineOptions {
  /**
   * Seconds between keep-alive PINGs on each connection (`--redis-ping`, default 300); a PING not
   * answered within the same time means Redis is gone: the connection is dropped and re-established.
   */
  ping?: number;
}

/** Publishes waiting for Redis's answer (count, bytes) past which publishes stay in the cluster until it catches up. */
export const MAX_WAITING = 1_000_000;
export const MAX_WAITING_BYTES = 64 * 1024 * 1024;
/** How long `cmd` waits for a connection that is being (re-)established. */
const CMD_WAIT_MS = 5_000;
/** Messages per EVALSHA of the publishing script (bounded so Redis serves others in between). */
const SCRIPT_BATCH = 512;
/** Publishes channel/message pairs in order: `PUBLISH` for each, in one command. */
const PUBLISH_SCRIPT = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end return #ARGV / 2";
interface ScriptCommands {
  iodinePublish(...args: (string | Buffer)[]): Promise<unknown>;
}

type Conn = IORedis & { iodine?: { pingSince: number } };

/**
 * The Redis pub/sub engine: `Iodine.PubSub.default = new Iodine.PubSub.Redis("redis://host:6379")`,
 * or `iodine -r redis://host:6379`. `rediss://` is TLS; a username and password go in the URL.
 */
export class RedisEngine implements BytesEngine {
  readonly url: string;
  #ping: number;
  #opened = false;
  #pub: Conn | undefined;
  #sub: Conn | undefined;
  /** only `cmd` (an engine iodine does not use here): a publishing connection of its own */
  #cmdOnly: Conn | undefined;
  // What the cluster wants (what the subscribing connection should be subscribed to).
  #channels = new Set<string>();
  #patterns = new Map<string, (channel: string) => boolean>();
  #subsInFlight = 0;
  // State, for one log line per change.
  #up = false;
  #everUp = false;
  #downSince = 0;
  #lastError = "";
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  // Publishing: batched once per turn of the event loop.
  #queue: (string | Buffer)[] = [];
  #queueBytes = 0;
  #flushQueued = false;
  /** publish through PUBLISH_SCRIPT (see `#probeScripts`) */
  #script = false;
  #scriptRefused = false;
  #waiting = 0;
  #waitingBytes = 0;
  #behind = false;
  // Echoes (see the top of this file).
  #seq = 0;
  /** the last remembered publish handed to ioredis (a fence covers only those) */
  #flushedSeq = 0;
  #echoes = new EchoLog();
  #fencing = false;
  // The publish whose copies are arriving now.
  #groupChannel: Buffer | undefined;
  #groupMessage: Buffer | undefined;
  #groupSeen: string[] = [];
  #lastChannelBytes: Buffer | undefined;
  #lastChannel = "";

  constructor(url: string, options: RedisEngineOptions = {}) {
    if (typeof url !== "string" || !/^rediss?:\/\//.test(url)) {
      throw new TypeError(`Iodine.PubSub.Redis: the URL must start with redis:// or rediss://, got ${JSON.stringify(url)}`);
    }
    const problem = redisUrlProblem(url);
    if (problem !== undefined) throw new TypeError(`Iodine.PubSub.Redis: the URL ${problem}`);
    this.url = url;
    this.#ping = options.ping ?? 300;
    if (!(this.#ping > 0)) throw new TypeError(`Iodine.PubSub.Redis: "ping" must be a positive number of seconds`);
  }

  /** True while both connections are up. */
  get connected(): boolean {
    return this.#up;
  }

  // --- PubSubEngine ---

  open(): void {
    if (this.#opened) return;
    this.#opened = true;
    this.#pub = this.#connect("pub");
    this.#sub = this.#connect("sub");
    this.#sub.on("messageBuffer", (channel: Buffer, message: Buffer) => this.#receive("", channel, message));
    this.#sub.on("pmessageBuffer", (pattern: string, channel: Buffer, message: Buffer) => this.#receive(pattern, channel, message));
    this.#sub.on("ready", () => this.#resubscribe());
    this.#pingTimer = setInterval(() => this.#keepAlive(), this.#ping * 1000);
    this.#pingTimer.unref?.();
    for (const c of [this.#pub, this.#sub]) c.connect().catch(() => {});
  }

  async close(): Promise<void> {
    if (!this.#opened) return;
    this.#opened = false;
    clearInterval(this.#pingTimer);
    const conns = [this.#pub, this.#sub];
    this.#pub = this.#sub = undefined;
    this.#up = false;
    this.#everUp = false;
    this.#downSince = 0;
    this.#queue.length = 0;
    this.#queueBytes = 0;
    this.#waiting = this.#waitingBytes = 0;
    this.#echoes.clear();
    this.#fencing = false;
    for (const c of conns) c?.disconnect();
  }

  subscribe(channel: string): void {
    if (this.#channels.has(channel)) return;
    this.#channels.add(channel);
    this.#subCommand("subscribe", [channel]);
  }

  psubscribe(pattern: string): void {
    if (this.#patterns.has(pattern)) return;
    this.#patterns.set(pattern, compileGlob(pattern));
    this.#subCommand("psubscribe", [pattern]);
  }

  unsubscribe(key: string, pattern: boolean): void {
    if (pattern ? !this.#patterns.delete(key) : !this.#channels.delete(key)) return;
    this.#subCommand(pattern ? "punsubscribe" : "unsubscribe", [key]);
  }

  /**
   * Sends a message published in the cluster to Redis (batched per turn of the event loop). An engine
   * iodine does not use here (`Iodine.publish(ch, m, otherRedis)`) publishes on its `cmd` connection.
   */
  publish(channel: string, message: Message): void {
    if (!this.#opened) {
      this.cmd("PUBLISH", channel, typeof message === "string" ? message : Buffer.from(message)).catch((err: Error) =>
        log.error(`redis: cannot publish to ${JSON.stringify(channel)} on ${redactUrl(this.url)} (${err.message})`),
      );
      return;
    }
    if (!this.#canPublish()) return;
    let data: string | Buffer;
    if (this.#mayEcho(channel)) {
      data = typeof message === "string" ? Buffer.from(message) : Buffer.from(message);
      this.#echoes.remember(channel, data, ++this.#seq);
    } else {
      // Bytes are copied: ioredis encodes them on the next turn, and the caller may reuse its buffer.
      data = typeof message === "string" ? message : Buffer.from(message);
    }
    this.#enqueue(channel, data);
  }

  /** The same, from the hub: the message's bytes (copied here), no decoding in between. */
  [PUBLISH_BYTES](channel: string, bytes: Uint8Array): void {
    if (!this.#canPublish()) return;
    const data = Buffer.from(bytes);
    if (this.#mayEcho(channel)) this.#echoes.remember(channel, data, ++this.#seq);
    this.#enqueue(channel, data);
  }

  #canPublish(): boolean {
    const pub = this.#pub;
    if (pub === undefined || pub.status !== "ready") return false;
    if (this.#waiting < MAX_WAITING && this.#waitingBytes < MAX_WAITING_BYTES) return true;
    if (!this.#behind) {
      this.#behind = true;
      log.error(
        `redis: ${this.#waiting} publishes (${this.#waitingBytes} bytes) wait for Redis to answer; ` +
          `publishing inside this cluster only until it catches up`,
      );
    }
    return false;
  }

  #enqueue(channel: string, data: string | Buffer): void {
    this.#queue.push(channel, data);
    this.#queueBytes += data.length;
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      setImmediate(this.#flush);
    }
  }

  /**
   * Runs any Redis command on the publishing connection and resolves to its reply, e.g.
   * `await redis.cmd("CLIENT", "LIST")`. In a cluster worker it runs in the master (the cluster
   * keeps its two connections); an engine iodine does not use opens a connection of its own.
   */
  async cmd(command: string, ...args: (string | number | Buffer)[]): Promise<unknown> {
    if (typeof command !== "string") throw new TypeError(`redis.cmd: the command must be a string, got ${typeof command}`);
    let conn = this.#pub;
    if (conn === undefined) {
      const relay = relayCommand();
      if (relay !== undefined && defaultEngine() === this) return relay([command, ...args.map(String)]);
      if (this.#cmdOnly === undefined) {
        this.#cmdOnly = this.#connect("cmd");
        this.#cmdOnly.connect().catch(() => {});
      }
      conn = this.#cmdOnly;
    }
    await this.#ready(conn);
    return conn.call(command, ...args);
  }

  // --- connections ---

  #connect(role: "pub" | "sub" | "cmd"): Conn {
    const options: RedisOptions = {
      lazyConnect: true,
      // Nothing waits for a connection that is away: publishes stay in the cluster (at most once
      // across machines), subscriptions are sent again on "ready".
      enableOfflineQueue: false,
      autoResubscribe: false,
      maxRetriesPerRequest: null,
      retryStrategy: (times) => Math.min(times * 100, 1000),
      connectTimeout: 5_000,
      connectionName: `iodine-${role}-${process.pid}`,
    };
    const conn = new (ioredis().Redis)(this.url, options) as Conn;
    conn.iodine = { pingSince: 0 };
    if (role === "pub") {
      conn.defineCommand("iodinePublish", { numberOfKeys: 0, lua: PUBLISH_SCRIPT });
      conn.on("ready", () => this.#probeScripts(conn));
    }
    conn.on("error", (err: Error) => {
      this.#lastError = err.message;
      log.debug(`redis: ${role} connection: ${err.message}`);
    });
    if (role !== "cmd") {
      conn.on("ready", () => this.#changed());
      conn.on("close", () => this.#changed());
    }
    return conn;
  }

  /** One log line when both connections come up, or either goes away. */
  #changed(): void {
    if (!this.#opened) return;
    const up = this.#pub?.status === "ready" && this.#sub?.status === "ready";
    if (up === this.#up) {
      if (!up && !this.#everUp && this.#downSince === 0 && this.#lastError !== "") {
        this.#downSince = Date.now();
        log.error(`redis: cannot connect to ${redactUrl(this.url)} (${this.#lastError}); publishing inside this cluster only, retrying`);
      }
      return;
    }
    this.#up = up;
    if (up) {
      const was = this.#everUp;
      this.#everUp = true;
      this.#behind = false;
      const subs = `${this.#channels.size} channel${this.#channels.size === 1 ? "" : "s"} and ${this.#patterns.size} pattern${this.#patterns.size === 1 ? "" : "s"}`;
      const after = this.#downSince === 0 ? "" : ` after ${((Date.now() - this.#downSince) / 1000).toFixed(1)} s`;
      if (!was) log.info(`redis: connected to ${redactUrl(this.url)}${after} (publish and subscribe connections)`);
      else log.info(`redis: connected to ${redactUrl(this.url)} again after ${((Date.now() - this.#downSince) / 1000).toFixed(1)} s; ${subs} subscribed again`);
      this.#downSince = 0;
      this.#startFence();
      return;
    }
    this.#downSince = Date.now();
    log.error(
      `redis: connection to ${redactUrl(this.url)} lost (${this.#lastError || "closed"}); publishing inside this cluster only until it is back`,
    );
  }

  #resubscribe(): void {
    if (this.#channels.size > 0) this.#subCommand("subscribe", [...this.#channels]);
    if (this.#patterns.size > 0) this.#subCommand("psubscribe", [...this.#patterns.keys()]);
  }

  #subCommand(kind: "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe", keys: string[]): void {
    const sub = this.#sub;
    // Not connected: "ready" subscribes to everything wanted then.
    if (sub === undefined || sub.status !== "ready") return;
    this.#subsInFlight++;
    const done = () => void this.#subsInFlight--;
    sub[kind](...keys).then(done, (err: Error) => {
      done();
      log.debug(`redis: ${kind} failed: ${err.message}`);
    });
  }

  /** Keep-alive: a PING per interval on each connection; one still unanswered after an interval means Redis is gone. */
  #keepAlive(): void {
    for (const [name, conn] of [["publishing", this.#pub], ["subscribing", this.#sub]] as const) {
      if (conn === undefined || conn.status !== "ready") continue;
      const state = conn.iodine!;
      if (state.pingSince !== 0) {
        log.error(`redis: no answer on the ${name} connection for ${this.#ping} s; reconnecting`);
        this.#lastError = `no answer for ${this.#ping} s`;
        state.pingSince = 0;
        conn.disconnect(true);
        continue;
      }
      state.pingSince = Date.now();
      conn.ping().then(
        () => void (state.pingSince = 0),
        () => void (state.pingSince = 0),
      );
    }
  }

  #ready(conn: Conn): Promise<void> {
    if (conn.status === "ready") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        conn.off("ready", onReady);
        reject(new Error(`redis: not connected to ${redactUrl(this.url)}${this.#lastError ? ` (${this.#lastError})` : ""}`));
      }, CMD_WAIT_MS);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      conn.once("ready", onReady);
    });
  }

  // --- publishing ---

  #flush = (): void => {
    this.#flushQueued = false;
    const queue = this.#queue;
    const pub = this.#pub;
    if (queue.length === 0) return;
    // What is remembered so far is sent now (or never): a fence from here on may forget it.
    this.#flushedSeq = this.#seq;
    if (pub === undefined || pub.status !== "ready") {
      queue.length = 0;
      this.#queueBytes = 0;
      return;
    }
    const n = queue.length / 2;
    const bytes = this.#queueBytes;
    this.#waiting += n;
    this.#waitingBytes += bytes;
    const answered = () => {
      this.#waiting -= n;
      this.#waitingBytes -= bytes;
      if (this.#behind && this.#waiting < MAX_WAITING / 2 && this.#waitingBytes < MAX_WAITING_BYTES / 2) {
        this.#behind = false;
        log.info("redis: caught up; publishing through Redis again");
      }
    };
    if (this.#script) {
      // One EVALSHA per batch: a command of ioredis costs ~2 µs of CPU, a script argument a fraction.
      const batches: Promise<unknown>[] = [];
      for (let i = 0; i < queue.length; i += SCRIPT_BATCH * 2) {
        const args = queue.slice(i, i + SCRIPT_BATCH * 2);
        batches.push(
          (pub as Conn & ScriptCommands).iodinePublish(...args).catch((err: Error) => {
            // Refused after the probe said yes (SCRIPT FLUSH and EVAL refused since): PUBLISH from now on.
            if (err.name !== "ReplyError") return;
            this.#refuseScripts(err);
            return this.#pipeline(pub, args);
          }),
        );
      }
      Promise.all(batches).then(answered, answered);
    } else this.#pipeline(pub, queue).then(answered, answered);
    queue.length = 0;
    this.#queueBytes = 0;
    this.#startFence();
  };

  /**
   * On every (re)connection: can this Redis run the publishing script? Until it answers, and if it
   * cannot (an ACL, a managed Redis without EVAL), one PUBLISH per message (same order either way:
   * one connection).
   */
  #probeScripts(pub: Conn): void {
    this.#script = false;
    (pub as Conn & ScriptCommands).iodinePublish().then(
      () => void (this.#script = this.#pub === pub),
      (err: Error) => {
        if (err.name === "ReplyError") this.#refuseScripts(err);
      },
    );
  }

  #refuseScripts(err: Error): void {
    this.#script = false;
    if (this.#scriptRefused) return;
    this.#scriptRefused = true;
    log.warn(`redis: cannot publish through a script (${err.message}); using one PUBLISH per message`);
  }

  #pipeline(pub: Conn, queue: (string | Buffer)[]): Promise<unknown> {
    const pipeline = pub.pipeline();
    for (let i = 0; i < queue.length; i += 2) pipeline.publish(queue[i] as string, queue[i + 1]!);
    return pipeline.exec();
  }

  // --- echoes ---

  /** Could Redis send this publish back to the subscribing connection? */
  #mayEcho(channel: string): boolean {
    if (this.#subsInFlight > 0 || this.#channels.has(channel)) return true;
    if (this.#patterns.size > 0) for (const test of this.#patterns.values()) if (test(channel)) return true;
    return false;
  }

  /** Forgets, once Redis ran them and their echoes would have arrived, the publishes that did not echo. */
  #startFence(): void {
    if (this.#fencing || this.#echoes.size === 0) return;
    const pub = this.#pub;
    const sub = this.#sub;
    if (pub?.status !== "ready" || sub?.status !== "ready") return;
    // Only publishes already handed to ioredis: the PING goes out after them.
    const upTo = this.#flushedSeq;
    if (upTo === 0 || !this.#echoes.hasBefore(upTo + 1)) return;
    this.#fencing = true;
    pub
      .ping()
      .then(() => sub.ping())
      .then(
        () => {
          this.#fencing = false;
          this.#echoes.forgetBefore(upTo + 1);
          this.#startFence();
        },
        // Tried again on the next publish or when the connections are back.
        () => void (this.#fencing = false),
      );
  }

  // --- receiving ---

  /** A message from the subscribing connection; `stream` is "" for a channel subscription, else the pattern. */
  #receive(stream: string, channel: Buffer, message: Buffer): void {
    const seen = this.#groupSeen;
    if (
      this.#groupMessage !== undefined &&
      !seen.includes(stream) &&
      channel.equals(this.#groupChannel!) &&
      message.equals(this.#groupMessage)
    ) {
      // Another copy of the same publish (through another subscription).
      seen.push(stream);
      return;
    }
    this.#groupChannel = channel;
    this.#groupMessage = message;
    seen.length = 0;
    seen.push(stream);
    let name = this.#lastChannel;
    if (this.#lastChannelBytes === undefined || !channel.equals(this.#lastChannelBytes)) {
      name = this.#lastChannel = channel.toString();
      this.#lastChannelBytes = channel;
    }
    if (this.#echoes.size > 0 && this.#echoes.isEcho(name, message)) return;
    // Redis keeps bytes: text when they are UTF-8 (what `redis-cli PUBLISH` sends), bytes otherwise.
    const text = isUtf8(message);
    if (deliverFromEngine(name, message, text)) return;
    publish(name, text ? message.toString() : new Uint8Array(message), CLUSTER);
  }
}
