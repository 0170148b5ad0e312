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
// While Redis is away, publishes reach the local cluster only (one line per state change). History
// channels (`Iodine.history`) are not published raw: redis-history.ts keeps their history and
// the cluster's presence in this Redis, and their messages come back with a header (never echoes).
import type { Redis as IORedis, RedisOptions } from "ioredis";
import { log } from "../log.ts";
import type { Message } from "../types.ts";
import { EchoLog } from "./echoes.ts";
import { DONE, HISTORY_API, PUBLISH_BYTES, type BytesEngine } from "./engine-api.ts";
import { compileGlob } from "./match.ts";
import { BatchSender } from "./redis-batch.ts";
import { RedisHistory } from "./redis-history.ts";
import {
  Backlog,
  ioredis,
  plural,
  RedisEngineBase,
  type RedisEngineOptions,
} from "./redis-common.ts";
import { redactUrl } from "./redis-url.ts";

export type { RedisEngineOptions };

/** Publishes waiting for Redis's answer past which publishes stay in the cluster until it catches up (bytes: MAX_WAITING_BYTES). */
export const MAX_WAITING = 1_000_000;

/**
 * The Redis pub/sub engine: `Iodine.PubSub.default = new Iodine.PubSub.Redis("redis://host:6379")`,
 * or `iodine -r redis://host:6379`. `rediss://` is TLS; a username and password go in the URL.
 */
export class RedisEngine extends RedisEngineBase implements BytesEngine {
  readonly label = "Redis";
  #pub: IORedis | undefined;
  #sub: IORedis | undefined;
  /** only `cmd` (an engine iodine does not use here): a publishing connection of its own */
  #cmdOnly: IORedis | undefined;
  // What the cluster wants (what the subscribing connection should be subscribed to).
  #channels = new Set<string>();
  #patterns = new Map<string, (channel: string) => boolean>();
  #subsInFlight = 0;
  /** Redis confirmed every wanted channel on the subscribing connection since it came up: history may go to Redis */
  #subscribedAll = false;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  // Publishing: batched once per turn of the event loop.
  #queue: (string | Buffer)[] = [];
  #queueBytes = 0;
  #flushQueued = false;
  #sender = new BatchSender();
  #backlog = new Backlog("redis", MAX_WAITING);
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
  #history = new RedisHistory({
    pub: () => this.#pub,
    sub: () => (this.#subscribedAll ? this.#sub : undefined),
    deliverAt: (channel, bytes, text, position) => this.deliverAt(channel, bytes, text, position),
  });
  /** history and presence in this Redis (engine-api.ts HistoryEngine) */
  readonly [HISTORY_API] = this.#history;

  constructor(url: string, options: RedisEngineOptions = {}) {
    const form =
      typeof url === "string" && /^rediss?:\/\//.test(url)
        ? undefined
        : "must start with redis:// or rediss://";
    super({ api: "Iodine.PubSub.Redis", cmd: "redis.cmd", log: "redis" }, url, options, form);
  }

  // --- PubSubEngine ---

  protected openConnections(): void {
    this.#pub = this.#connect("pub");
    this.#sub = this.#connect("sub");
    this.#sub.on("messageBuffer", (channel: Buffer, message: Buffer) =>
      this.#receive("", channel, message),
    );
    this.#sub.on("pmessageBuffer", (pattern: string, channel: Buffer, message: Buffer) =>
      this.#receive(pattern, channel, message),
    );
    this.#sub.on("ready", () => this.#resubscribe());
    this.#pingTimer = setInterval(() => this.#keepAlive(), this.pingSeconds * 1000);
    this.#pingTimer.unref?.();
    this.#history.open();
    for (const c of [this.#pub, this.#sub]) c.connect().catch(() => {});
  }

  protected closeConnections(): void {
    clearInterval(this.#pingTimer);
    this.#history.close();
    const conns = [this.#pub, this.#sub];
    this.#pub = this.#sub = undefined;
    this.state.reset();
    this.#queue.length = 0;
    this.#queueBytes = 0;
    this.#backlog.clear();
    this.#echoes.clear();
    this.#fencing = false;
    for (const c of conns) c?.disconnect();
  }

  subscribe(channel: string): Promise<void> {
    if (this.#channels.has(channel)) return DONE;
    this.#channels.add(channel);
    return this.#subCommand("subscribe", [channel]);
  }

  psubscribe(pattern: string): Promise<void> {
    if (this.#patterns.has(pattern)) return DONE;
    this.#patterns.set(pattern, compileGlob(pattern));
    return this.#subCommand("psubscribe", [pattern]);
  }

  unsubscribe(key: string, pattern: boolean): void {
    if (pattern ? !this.#patterns.delete(key) : !this.#channels.delete(key)) return;
    void this.#subCommand(pattern ? "punsubscribe" : "unsubscribe", [key]);
  }

  /**
   * Sends a message published in the cluster to Redis (batched per turn of the event loop). An engine
   * iodine does not use here (`Iodine.publish(ch, m, otherRedis)`) publishes on its `cmd` connection.
   */
  publish(channel: string, message: Message): void {
    if (!this.isOpen) {
      this.cmd(
        "PUBLISH",
        channel,
        typeof message === "string" ? message : Buffer.from(message),
      ).catch((err: Error) =>
        log.error(
          `redis: cannot publish to ${JSON.stringify(channel)} on ${redactUrl(this.url)} (${err.message})`,
        ),
      );
      return;
    }
    if (!this.#canPublish()) return;
    let data: string | Buffer;
    if (this.#mayEcho(channel)) {
      data = Buffer.from(message);
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
    return pub !== undefined && pub.status === "ready" && this.#backlog.hasRoom();
  }

  #enqueue(channel: string, data: string | Buffer): void {
    this.#queue.push(channel, data);
    this.#queueBytes += data.length;
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      setImmediate(this.#flush);
    }
  }

  protected commandConnection(): IORedis | undefined {
    return this.#pub;
  }

  protected ownConnection(): IORedis {
    if (this.#cmdOnly === undefined) {
      this.#cmdOnly = this.#connect("cmd");
      this.#cmdOnly.connect().catch(() => {});
    }
    return this.#cmdOnly;
  }

  // --- connections ---

  #connect(role: "pub" | "sub" | "cmd"): IORedis {
    const options: RedisOptions = {
      lazyConnect: true,
      // Nothing waits for a connection that is away: publishes stay in the cluster (at most once
      // across machines), subscriptions are sent again on "ready".
      enableOfflineQueue: false,
      autoResubscribe: false,
      // A publish in flight when the connection drops fails, never sent again late (redis-history.ts).
      maxRetriesPerRequest: role === "pub" ? 0 : null,
      retryStrategy: (times) => Math.min(times * 100, 1000),
      connectTimeout: 5_000,
      connectionName: `iodine-${role}-${process.pid}`,
    };
    const conn = new (ioredis().Redis)(this.url, options);
    if (role === "pub") {
      this.#sender.prepare(conn, () => this.#pub === conn);
      this.#history.prepare(conn);
    }
    conn.on("error", (err: Error) => {
      this.lastError = err.message;
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
    if (!this.isOpen) return;
    const up = this.#pub?.status === "ready" && this.#sub?.status === "ready";
    if (up === this.state.up) {
      if (!up && this.lastError !== "" && this.state.neverUp()) {
        log.error(
          `redis: cannot connect to ${redactUrl(this.url)} (${this.lastError}); publishing inside this cluster only, retrying`,
        );
      }
      return;
    }
    if (up) {
      const again = this.state.everUp;
      const after = this.state.cameUp();
      this.#backlog.resume();
      const subs = `${plural(this.#channels.size, "channel")} and ${plural(this.#patterns.size, "pattern")}`;
      if (!again)
        log.info(
          `redis: connected to ${redactUrl(this.url)}${after} (publish and subscribe connections)`,
        );
      else
        log.info(
          `redis: connected to ${redactUrl(this.url)} again${after}; ${subs} subscribed again`,
        );
      this.#startFence();
      return;
    }
    this.state.wentDown();
    log.error(
      `redis: connection to ${redactUrl(this.url)} lost (${this.lastError || "closed"}); publishing inside this cluster only until it is back`,
    );
  }

  #resubscribe(): void {
    this.#subscribedAll = false;
    const sub = this.#sub;
    void Promise.all([
      this.#channels.size > 0 ? this.#subCommand("subscribe", [...this.#channels]) : DONE,
      this.#patterns.size > 0 ? this.#subCommand("psubscribe", [...this.#patterns.keys()]) : DONE,
    ]).then(() => void (this.#subscribedAll = this.#sub === sub && sub?.status === "ready"));
  }

  /** Resolves once Redis answered (or at once while it is away: "ready" subscribes to everything wanted then). */
  #subCommand(
    kind: "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe",
    keys: string[],
  ): Promise<void> {
    const sub = this.#sub;
    if (sub === undefined || sub.status !== "ready") return DONE;
    this.#subsInFlight++;
    const done = () => void this.#subsInFlight--;
    return sub[kind](...keys).then(done, (err: Error) => {
      done();
      log.debug(`redis: ${kind} failed: ${err.message}`);
    });
  }

  /** Keep-alive: a PING per interval on each connection; one still unanswered after an interval means Redis is gone. */
  #keepAlive(): void {
    for (const [name, conn] of [
      ["publishing", this.#pub],
      ["subscribing", this.#sub],
    ] as const) {
      if (conn === undefined || conn.status !== "ready" || !this.isHung(conn)) continue;
      log.error(
        `redis: no answer on the ${name} connection for ${this.pingSeconds} s; reconnecting`,
      );
      this.lastError = `no answer for ${this.pingSeconds} s`;
      conn.disconnect(true);
    }
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
    this.#backlog.add(n, bytes);
    const answered = () => this.#backlog.answered(n, bytes);
    this.#sender.send(pub, queue).then(answered, answered);
    queue.length = 0;
    this.#queueBytes = 0;
    this.#startFence();
  };

  // --- echoes ---

  /** Could Redis send this publish back to the subscribing connection? */
  #mayEcho(channel: string): boolean {
    if (this.#subsInFlight > 0 || this.#channels.has(channel)) return true;
    if (this.#patterns.size > 0)
      for (const test of this.#patterns.values()) if (test(channel)) return true;
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
    // A history message is never an echo: the cluster delivers it only when it comes back.
    if (this.#history.receive(name, message)) return;
    if (this.#echoes.size > 0 && this.#echoes.isEcho(name, message)) return;
    this.deliver(name, message);
  }
}
