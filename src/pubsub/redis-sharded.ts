// The sharded Redis engine (SPEC §5): pub/sub across machines through a Redis Cluster, with
// SSUBSCRIBE/SPUBLISH, on ioredis 5's Cluster (`shardedSubscribers: true`). The path for users who
// outgrow one Redis: each channel lives on the master that owns its slot, so publishes spread over
// the masters instead of being broadcast to every node as classic PUBLISH is in a cluster.
//
// The process that holds the cluster's interest opens one ioredis Cluster at a time. It keeps at most
// two connections per node, however many channels: one for commands (SPUBLISH, `cmd`) and, on a
// master that owns a wanted channel, one sharded subscriber. Channel names and payloads stay raw, so
// `redis-cli -c SPUBLISH chat hi` reaches iodine subscribers. (ioredis bounds the subscribers itself,
// so channels need no mapping onto hash-tag partitions, which would break that interop.)
//
// - Patterns: Redis has no sharded pattern subscription. A pattern is refused with one log line and
//   is delivered inside this cluster only.
// - Echoes: the cluster delivers its own publishes itself, so Redis's echo of them is dropped without
//   wrapping the payload. A publish to a channel the cluster wants (or while a subscription change is
//   in flight) is remembered; an incoming message with the same channel and bytes is its echo. One
//   is forgotten when SPUBLISH reaches no subscriber or fails (no echo can come), else after ~5 s: the
//   per-node PING fence the classic engine uses needs the subscriber connections, which ioredis does
//   not expose. So an echo later than 5 s is delivered twice, and within 5 s of a publish whose echo
//   never came (an unsubscribe raced it) a foreign message with the same bytes is dropped.
// - Outages: publishes to a master that is away fail at once (no retry queue, so nothing arrives late
//   or out of order); they reach the local cluster only. ioredis subscribes again on a master that
//   comes back; after the whole cluster was away a new Cluster subscribes everything (`#start`); a
//   subscription change that failed is retried every second. While a master is down, ioredis
//   reconnects its sharded subscriber in a tight loop (hundreds of errors a second, about one CPU
//   core): the engine logs one line per change of state, never per error.
import { isUtf8 } from "node:buffer";
import type { Cluster, ClusterNode, ClusterOptions, Redis } from "ioredis";
import { log } from "../log.ts";
import type { Message } from "../types.ts";
import { relayCommand } from "./engine.ts";
import { CLUSTER, defaultEngine, type PubSubEngine } from "./engine-api.ts";
import { EchoLog, type Sent } from "./echoes.ts";
import { ioredis } from "./ioredis.ts";
import { publish } from "./registry.ts";
import { MAX_WAITING_BYTES, type RedisEngineOptions } from "./redis.ts";
import { redactUrl, redisUrlProblem } from "./redis-url.ts";

/**
 * Publishes waiting for an answer past which publishes stay in the cluster: fewer than the classic
 * engine's million, as each one here is an ioredis command (there, 512 share one script call).
 */
const MAX_WAITING = 100_000;

/** How long a remembered publish waits for its echo. */
const ECHO_MS = 5_000;
/** A subscription change not answered within this is retried; `cmd` waits this long for the cluster. */
const WAIT_MS = 5_000;


/**
 * The Redis Cluster (sharded pub/sub) engine:
 * `Iodine.PubSub.default = new ShardedRedisEngine("redis://node-1:6379")` (any one node).
 * `rediss://` is TLS; a username and password go in the URL and are used for every node.
 */
export class ShardedRedisEngine implements PubSubEngine {
  readonly url: string;
  #node: ClusterNode;
  #options: ClusterOptions;
  #ping: number;
  #opened = false;
  /** replaced by a new one whenever it ends (see `#start`) */
  #cluster: Cluster | undefined;
  /** only `cmd` on an engine iodine does not use here */
  #cmdOnly: Cluster | undefined;
  #timers: ReturnType<typeof setInterval>[] = [];
  #restart: ReturnType<typeof setTimeout> | undefined;
  #attempts = 0;
  // What the cluster wants; channels whose subscription must be (re)sent; changes in flight.
  #channels = new Set<string>();
  #retry = new Set<string>();
  #inFlight = 0;
  #refused = new Set<string>();
  // State, for one log line per change.
  #up = false;
  #everUp = false;
  #downSince = 0;
  #lastError = "";
  #nodesDown = new Map<string, { since: number; last: number; probing: boolean }>();
  #pings = new Map<Redis, number>();
  // Publishing.
  #waiting = 0;
  #waitingBytes = 0;
  #behind = false;
  // Echoes, per channel in publish order.
  #echoes = new EchoLog();

  constructor(url: string, options: RedisEngineOptions = {}) {
    let parsed: URL | undefined;
    try {
      if (typeof url === "string" && /^rediss?:\/\//.test(url)) parsed = new URL(url);
    } catch {
      // refused below
    }
    if (parsed === undefined) {
      throw new TypeError(`ShardedRedisEngine: the URL must be redis://host:port or rediss://host:port, got ${JSON.stringify(url)}`);
    }
    const problem = redisUrlProblem(url);
    if (problem !== undefined) throw new TypeError(`ShardedRedisEngine: the URL ${problem}`);
    this.url = url;
    this.#ping = options.ping ?? 300;
    if (!(this.#ping > 0)) throw new TypeError(`ShardedRedisEngine: "ping" must be a positive number of seconds`);
    this.#node = { host: parsed.hostname.replace(/^\[|\]$/g, ""), port: Number(parsed.port || 6379) };
    this.#options = {
      shardedSubscribers: true,
      lazyConnect: true,
      // Nothing waits for a master that is away, and nothing is retried later out of order:
      // publishes stay in the cluster (at most once across machines).
      enableOfflineQueue: false,
      retryDelayOnFailover: 0,
      retryDelayOnClusterDown: 0,
      // SPUBLISHes of one turn of the event loop go out as one pipeline per master.
      enableAutoPipelining: true,
      clusterRetryStrategy: (times) => Math.min(times * 100, 1000),
      redisOptions: {
        username: parsed.username ? decodeURIComponent(parsed.username) : undefined,
        password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
        tls: parsed.protocol === "rediss:" ? {} : undefined,
        connectTimeout: 5_000,
        connectionName: `iodine-sharded-${process.pid}`,
      },
    };
  }

  /** True while the Redis Cluster is connected (some master may still be away). */
  get connected(): boolean {
    return this.#up;
  }

  // --- PubSubEngine ---

  open(): void {
    if (this.#opened) return;
    this.#opened = true;
    this.#start();
    this.#timers = [setInterval(() => this.#tick(), 1000), setInterval(() => this.#keepAlive(), this.#ping * 1000)];
    for (const t of this.#timers) t.unref?.();
  }

  close(): void {
    if (!this.#opened) return;
    this.#opened = false;
    const cluster = this.#cluster;
    this.#cluster = undefined;
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#restart);
    this.#up = false;
    this.#echoes.clear();
    this.#nodesDown.clear();
    this.#pings.clear();
    cluster?.disconnect();
  }

  subscribe(channel: string): void {
    if (this.#channels.has(channel)) return;
    this.#channels.add(channel);
    this.#sync(channel);
  }

  psubscribe(pattern: string): void {
    if (this.#refused.has(pattern)) return;
    this.#refused.add(pattern);
    log.error(
      `redis (sharded): the pattern ${JSON.stringify(pattern)} is delivered inside this cluster only: Redis has no sharded pattern subscription`,
    );
  }

  unsubscribe(key: string, pattern: boolean): void {
    if (pattern || !this.#channels.delete(key)) return;
    this.#sync(key);
  }

  /** Sends a message published in the cluster to the master that owns its channel. */
  publish(channel: string, message: Message): void {
    const cluster = this.#cluster;
    if (cluster === undefined || cluster.status !== "ready") return;
    if (this.#waiting >= MAX_WAITING || this.#waitingBytes >= MAX_WAITING_BYTES) {
      if (!this.#behind) {
        this.#behind = true;
        log.error(
          `redis (sharded): ${this.#waiting} publishes (${this.#waitingBytes} bytes) wait for Redis to answer; ` +
            `publishing inside this cluster only until it catches up`,
        );
      }
      return;
    }
    let data: string | Buffer;
    let sent: Sent | undefined;
    if (this.#mayEcho(channel)) {
      data = Buffer.from(message);
      sent = this.#echoes.remember(channel, data, Date.now());
    } else {
      // Bytes are copied: ioredis encodes them later, and the caller may reuse its buffer.
      data = typeof message === "string" ? message : Buffer.from(message);
    }
    const bytes = data.length;
    this.#waiting++;
    this.#waitingBytes += bytes;
    const answered = (receivers: unknown) => {
      // No subscriber on the shard (or no answer): our own subscription cannot echo it.
      if (sent !== undefined && receivers === 0) this.#echoes.drop(sent);
      this.#waiting--;
      this.#waitingBytes -= bytes;
      if (this.#behind && this.#waiting < MAX_WAITING / 2 && this.#waitingBytes < MAX_WAITING_BYTES / 2) {
        this.#behind = false;
        log.info("redis (sharded): caught up; publishing through Redis again");
      }
    };
    cluster.spublish(channel, data).then(answered, () => answered(0));
  }

  /**
   * Runs any Redis command on the cluster (routed by its first key) and resolves to its reply, e.g.
   * `await sharded.cmd("CLUSTER", "INFO")`. In a cluster worker it runs in the master.
   */
  async cmd(command: string, ...args: (string | number | Buffer)[]): Promise<unknown> {
    if (typeof command !== "string") throw new TypeError(`sharded.cmd: the command must be a string, got ${typeof command}`);
    let cluster = this.#cluster;
    if (cluster === undefined) {
      const relay = relayCommand();
      if (relay !== undefined && defaultEngine() === this) return relay([command, ...args.map(String)]);
      cluster = this.#cmdOnly ??= this.#newCluster(true);
    }
    if (cluster.status !== "ready") {
      const ready = new Promise((resolve) => cluster.once("ready", resolve));
      const timeout = Bun.sleep(WAIT_MS).then(() => "timeout");
      if ((await Promise.race([ready, timeout])) === "timeout") {
        throw new Error(`redis (sharded): not connected to ${redactUrl(this.url)}${this.#lastError ? ` (${this.#lastError})` : ""}`);
      }
    }
    return cluster.call(command, ...args);
  }

  // --- the cluster ---

  #newCluster(reconnect: boolean): Cluster {
    const options = reconnect ? this.#options : { ...this.#options, clusterRetryStrategy: () => null };
    const cluster = new (ioredis().Cluster)([this.#node], options);
    // Always attached: a Cluster without an "error" listener throws on the first failed reconnection.
    cluster.on("error", (err: Error) => void (this.#lastError = err.message));
    cluster.connect().catch(() => {});
    return cluster;
  }

  /**
   * Connects a new Cluster, and another one whenever it ends. ioredis 5.11.1 does reconnect a Cluster
   * by itself, but after the whole cluster was away its sharded subscribers stay gone ("No sharded
   * subscriber for slot"); a fresh Cluster subscribes every wanted channel again.
   */
  #start(): void {
    const cluster = (this.#cluster = this.#newCluster(false));
    const mine = () => this.#cluster === cluster;
    cluster.on("smessageBuffer", (channel: Buffer, message: Buffer) => mine() && this.#receive(channel, message));
    cluster.on("ready", () => mine() && this.#connected(cluster));
    cluster.on("end", () => {
      if (!mine()) return;
      this.#lost();
      this.#restart = setTimeout(() => this.#opened && this.#start(), Math.min(++this.#attempts * 100, 1000));
    });
    const nodeError = (err: Error, key: string) => mine() && this.#nodeFailed(key, err);
    cluster.on("node error", nodeError);
    cluster.on("nodeError", nodeError);
  }

  /** One log line when the cluster connects, and every wanted channel subscribed. */
  #connected(cluster: Cluster): void {
    this.#up = true;
    this.#attempts = 0;
    const after = this.#downSince === 0 ? "" : ` after ${((Date.now() - this.#downSince) / 1000).toFixed(1)} s`;
    const n = this.#channels.size;
    log.info(
      this.#everUp
        ? `redis (sharded): connected to ${redactUrl(this.url)} again${after}; ${n} channel${n === 1 ? "" : "s"} subscribed again`
        : `redis (sharded): connected to the Redis Cluster at ${redactUrl(this.url)}${after} (${cluster.nodes("master").length} masters, sharded pub/sub)`,
    );
    this.#everUp = true;
    this.#downSince = 0;
    this.#behind = false;
    // A new Cluster holds no subscription: what failed on the old one is sent again with the rest.
    this.#retry.clear();
    for (const channel of this.#channels) this.#sync(channel);
  }

  /** One log line when the connection to the whole cluster goes away (or cannot be made at start-up). */
  #lost(): void {
    this.#nodesDown.clear();
    this.#pings.clear();
    if (this.#up) {
      this.#up = false;
      this.#downSince = Date.now();
      log.error(`redis (sharded): connection to ${redactUrl(this.url)} lost (${this.#lastError || "closed"}); publishing inside this cluster only until it is back`);
    } else if (!this.#everUp && this.#downSince === 0) {
      this.#downSince = Date.now();
      log.error(`redis (sharded): cannot connect to ${redactUrl(this.url)} (${this.#lastError || "no answer"}); publishing inside this cluster only, retrying`);
    }
  }

  /** A node failed: one line when it starts failing; `#tick` notices when it is back. */
  #nodeFailed(key: string, err: Error): void {
    this.#lastError = err.message;
    if (!this.#up) return;
    const down = this.#nodesDown.get(key);
    if (down !== undefined) {
      down.last = Date.now();
      return;
    }
    this.#nodesDown.set(key, { since: Date.now(), last: Date.now(), probing: false });
    log.error(`redis (sharded): node ${key} is unreachable (${err.message}); its channels reach this cluster only until it is back`);
  }

  /** Once a second: forget old echoes, retry failed subscription changes, probe failing nodes. */
  #tick(): void {
    this.#echoes.forgetBefore(Date.now() - ECHO_MS);
    this.#resync();
    const cluster = this.#cluster;
    if (cluster === undefined || !this.#up) return;
    for (const [key, down] of this.#nodesDown) {
      // Quiet for a second (a node that is away fails many times a second), then a PING through it.
      if (down.probing || Date.now() - down.last < 1000) continue;
      const node = cluster.nodes("all").find((n) => `${n.options.host}:${n.options.port}` === key);
      const back = (how: string) => {
        this.#nodesDown.delete(key);
        log.info(`redis (sharded): node ${key} ${how} after ${((Date.now() - down.since) / 1000).toFixed(1)} s`);
      };
      if (node === undefined) {
        back("is no longer used");
        continue;
      }
      down.probing = true;
      const probed = (ok: boolean) => {
        down.probing = false;
        if (ok && Date.now() - down.last >= 1000 && this.#nodesDown.get(key) === down) back("is back");
      };
      node.ping().then(() => probed(true), () => probed(false));
    }
  }

  /** Keep-alive: a PING per interval to each master; one unanswered for a whole interval means a hung node. */
  #keepAlive(): void {
    const cluster = this.#cluster;
    if (cluster === undefined || !this.#up) return;
    for (const node of cluster.nodes("master")) {
      if (node.status !== "ready") continue;
      if (this.#pings.has(node)) {
        this.#pings.clear();
        this.#lastError = `no answer from ${node.options.host}:${node.options.port} for ${this.#ping} s`;
        log.error(`redis (sharded): ${this.#lastError}; reconnecting`);
        cluster.disconnect(true);
        return;
      }
      this.#pings.set(node, Date.now());
      const done = () => void this.#pings.delete(node);
      node.ping().then(done, done);
    }
  }

  // --- subscriptions ---

  /**
   * Sends SSUBSCRIBE or SUNSUBSCRIBE for one channel (one call per channel: one slot per call). A retried
   * SSUBSCRIBE goes after a SUNSUBSCRIBE: ioredis lists a channel again on each SSUBSCRIBE, even a failed one.
   */
  #sync(channel: string, retry = false): void {
    const cluster = this.#cluster;
    if (cluster === undefined || cluster.status !== "ready") {
      this.#retry.add(channel);
      return;
    }
    const want = this.#channels.has(channel);
    this.#inFlight++;
    let settled = false;
    const settle = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.#inFlight--;
      if (!ok) this.#retry.add(channel);
    };
    // A change that never settles (ioredis drops an SSUBSCRIBE answered with MOVED) is retried too.
    const timer = setTimeout(() => settle(false), WAIT_MS);
    if (want && retry) cluster.sunsubscribe(channel).catch(() => {});
    (want ? cluster.ssubscribe(channel) : cluster.sunsubscribe(channel)).then(
      () => settle(true),
      (err: Error) => {
        log.debug(`redis (sharded): ${want ? "ssubscribe" : "sunsubscribe"} ${JSON.stringify(channel)} failed: ${err.message}`);
        settle(false);
      },
    );
  }

  #resync(): void {
    if (this.#retry.size === 0 || this.#cluster?.status !== "ready") return;
    const channels = [...this.#retry];
    this.#retry.clear();
    for (const channel of channels) this.#sync(channel, true);
  }

  // --- echoes ---

  #mayEcho(channel: string): boolean {
    return this.#inFlight > 0 || this.#channels.has(channel);
  }

  // --- receiving ---

  #receive(channelBytes: Buffer, message: Buffer): void {
    const channel = channelBytes.toString();
    if (this.#echoes.size > 0 && this.#echoes.isEcho(channel, message)) return;
    // Redis keeps bytes: text when they are UTF-8 (what `redis-cli SPUBLISH` sends), bytes otherwise.
    const m = isUtf8(message) ? message.toString() : new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    publish(channel, m, CLUSTER);
  }
}
