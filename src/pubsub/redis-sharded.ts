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
// - History and presence (`Iodine.history`, `Iodine.presence`): not kept in a Redis Cluster (no
//   HISTORY_API; one sequence across shards needs a cross-slot script). Each cluster's master keeps its
//   own history (its epoch, its clients) and publishes raw; presence counts this cluster only.
import type { Cluster, ClusterNode, ClusterOptions } from "ioredis";
import { log } from "../log.ts";
import type { Message } from "../types.ts";
import { EchoLog, type Sent } from "./echoes.ts";
import { DONE } from "./engine-api.ts";
import {
  Backlog,
  ioredis,
  plural,
  RedisEngineBase,
  secondsSince,
  type RedisEngineOptions,
} from "./redis-common.ts";
import { redactUrl } from "./redis-url.ts";

/**
 * Publishes waiting for an answer past which publishes stay in the cluster: fewer than the classic
 * engine's million, as each one here is an ioredis command (there, 512 share one script call).
 */
const MAX_WAITING = 100_000;

/** How long a remembered publish waits for its echo. */
const ECHO_MS = 5_000;
/** A subscription change not answered within this is retried. */
const WAIT_MS = 5_000;

/**
 * The Redis Cluster (sharded pub/sub) engine:
 * `Iodine.PubSub.default = new ShardedRedisEngine("redis://node-1:6379")` (any one node).
 * `rediss://` is TLS; a username and password go in the URL and are used for every node.
 */
export class ShardedRedisEngine extends RedisEngineBase {
  readonly label = "Redis Cluster";
  #node: ClusterNode;
  #options: ClusterOptions;
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
  #nodesDown = new Map<string, { since: number; last: number; probing: boolean }>();
  #backlog = new Backlog("redis (sharded)", MAX_WAITING);
  // Echoes, per channel in publish order.
  #echoes = new EchoLog();

  constructor(url: string, options: RedisEngineOptions = {}) {
    const node = parseUrl(url);
    const names = { api: "ShardedRedisEngine", cmd: "sharded.cmd", log: "redis (sharded)" };
    super(
      names,
      url,
      options,
      node ? undefined : "must be redis://host:port or rediss://host:port",
    );
    const parsed = node!; // any other URL was refused above
    this.#node = {
      host: parsed.hostname.replace(/^\[|\]$/g, ""),
      port: Number(parsed.port || 6379),
    };
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

  // --- PubSubEngine ---

  protected openConnections(): void {
    this.#start();
    this.#timers = [
      setInterval(() => this.#tick(), 1000),
      setInterval(() => this.#keepAlive(), this.pingSeconds * 1000),
    ];
    for (const t of this.#timers) t.unref?.();
  }

  protected closeConnections(): void {
    const cluster = this.#cluster;
    this.#cluster = undefined;
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#restart);
    this.state.up = false;
    this.#echoes.clear();
    this.#nodesDown.clear();
    this.forgetPings();
    cluster?.disconnect();
  }

  subscribe(channel: string): Promise<void> {
    if (this.#channels.has(channel)) return DONE;
    this.#channels.add(channel);
    return this.#sync(channel);
  }

  psubscribe(pattern: string): Promise<void> {
    if (this.#refused.has(pattern)) return DONE;
    this.#refused.add(pattern);
    log.error(
      `redis (sharded): the pattern ${JSON.stringify(pattern)} is delivered inside this cluster only: Redis has no sharded pattern subscription`,
    );
    return DONE;
  }

  unsubscribe(key: string, pattern: boolean): void {
    if (pattern || !this.#channels.delete(key)) return;
    void this.#sync(key);
  }

  /** Sends a message published in the cluster to the master that owns its channel. */
  publish(channel: string, message: Message): void {
    const cluster = this.#cluster;
    if (cluster === undefined || cluster.status !== "ready" || !this.#backlog.hasRoom()) return;
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
    this.#backlog.add(1, bytes);
    const answered = (receivers: unknown) => {
      // No subscriber on the shard (or no answer): our own subscription cannot echo it.
      if (sent !== undefined && receivers === 0) this.#echoes.drop(sent);
      this.#backlog.answered(1, bytes);
    };
    cluster.spublish(channel, data).then(answered, () => answered(0));
  }

  protected commandConnection(): Cluster | undefined {
    return this.#cluster;
  }

  protected ownConnection(): Cluster {
    return (this.#cmdOnly ??= this.#newCluster(true));
  }

  // --- the cluster ---

  #newCluster(reconnect: boolean): Cluster {
    const options = reconnect
      ? this.#options
      : { ...this.#options, clusterRetryStrategy: () => null };
    const cluster = new (ioredis().Cluster)([this.#node], options);
    // Always attached: a Cluster without an "error" listener throws on the first failed reconnection.
    cluster.on("error", (err: Error) => void (this.lastError = err.message));
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
    cluster.on(
      "smessageBuffer",
      (channel: Buffer, message: Buffer) => mine() && this.#receive(channel, message),
    );
    cluster.on("ready", () => mine() && this.#connected(cluster));
    cluster.on("end", () => {
      if (!mine()) return;
      this.#lost();
      this.#restart = setTimeout(
        () => this.isOpen && this.#start(),
        Math.min(++this.#attempts * 100, 1000),
      );
    });
    const nodeError = (err: Error, key: string) => mine() && this.#nodeFailed(key, err);
    cluster.on("node error", nodeError);
    cluster.on("nodeError", nodeError);
  }

  /** One log line when the cluster connects, and every wanted channel subscribed. */
  #connected(cluster: Cluster): void {
    const again = this.state.everUp;
    const after = this.state.cameUp();
    this.#attempts = 0;
    log.info(
      again
        ? `redis (sharded): connected to ${redactUrl(this.url)} again${after}; ${plural(this.#channels.size, "channel")} subscribed again`
        : `redis (sharded): connected to the Redis Cluster at ${redactUrl(this.url)}${after} (${cluster.nodes("master").length} masters, sharded pub/sub)`,
    );
    this.#backlog.resume();
    // A new Cluster holds no subscription: what failed on the old one is sent again with the rest.
    this.#retry.clear();
    for (const channel of this.#channels) this.#sync(channel);
  }

  /** One log line when the connection to the whole cluster goes away (or cannot be made at start-up). */
  #lost(): void {
    this.#nodesDown.clear();
    this.forgetPings();
    if (this.state.wentDown()) {
      log.error(
        `redis (sharded): connection to ${redactUrl(this.url)} lost (${this.lastError || "closed"}); publishing inside this cluster only until it is back`,
      );
    } else if (this.state.neverUp()) {
      log.error(
        `redis (sharded): cannot connect to ${redactUrl(this.url)} (${this.lastError || "no answer"}); publishing inside this cluster only, retrying`,
      );
    }
  }

  /** A node failed: one line when it starts failing; `#tick` notices when it is back. */
  #nodeFailed(key: string, err: Error): void {
    this.lastError = err.message;
    if (!this.state.up) return;
    const down = this.#nodesDown.get(key);
    if (down !== undefined) {
      down.last = Date.now();
      return;
    }
    this.#nodesDown.set(key, { since: Date.now(), last: Date.now(), probing: false });
    log.error(
      `redis (sharded): node ${key} is unreachable (${err.message}); its channels reach this cluster only until it is back`,
    );
  }

  /** Once a second: forget old echoes, retry failed subscription changes, probe failing nodes. */
  #tick(): void {
    this.#echoes.forgetBefore(Date.now() - ECHO_MS);
    this.#resync();
    const cluster = this.#cluster;
    if (cluster === undefined || !this.state.up) return;
    for (const [key, down] of this.#nodesDown) {
      // Quiet for a second (a node that is away fails many times a second), then a PING through it.
      if (down.probing || Date.now() - down.last < 1000) continue;
      const node = cluster.nodes("all").find((n) => `${n.options.host}:${n.options.port}` === key);
      const back = (how: string) => {
        this.#nodesDown.delete(key);
        log.info(`redis (sharded): node ${key} ${how} after ${secondsSince(down.since)}`);
      };
      if (node === undefined) {
        back("is no longer used");
        continue;
      }
      down.probing = true;
      const probed = (ok: boolean) => {
        down.probing = false;
        if (ok && Date.now() - down.last >= 1000 && this.#nodesDown.get(key) === down)
          back("is back");
      };
      node.ping().then(
        () => probed(true),
        () => probed(false),
      );
    }
  }

  /** Keep-alive: a PING per interval to each master; one unanswered for a whole interval means a hung node. */
  #keepAlive(): void {
    const cluster = this.#cluster;
    if (cluster === undefined || !this.state.up) return;
    for (const node of cluster.nodes("master")) {
      if (node.status !== "ready" || !this.isHung(node)) continue;
      this.forgetPings();
      this.lastError = `no answer from ${node.options.host}:${node.options.port} for ${this.pingSeconds} s`;
      log.error(`redis (sharded): ${this.lastError}; reconnecting`);
      cluster.disconnect(true);
      return;
    }
  }

  // --- subscriptions ---

  /**
   * Sends SSUBSCRIBE or SUNSUBSCRIBE for one channel (one call per channel: one slot per call). A retried
   * SSUBSCRIBE goes after a SUNSUBSCRIBE: ioredis lists a channel again on each SSUBSCRIBE, even a failed one.
   */
  #sync(channel: string, retry = false): Promise<void> {
    const cluster = this.#cluster;
    if (cluster === undefined || cluster.status !== "ready") {
      this.#retry.add(channel);
      return DONE;
    }
    const want = this.#channels.has(channel);
    this.#inFlight++;
    let settled = false;
    const { promise, resolve } = Promise.withResolvers<void>();
    const settle = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.#inFlight--;
      if (!ok) this.#retry.add(channel);
      resolve();
    };
    // A change that never settles (ioredis drops an SSUBSCRIBE answered with MOVED) is retried too.
    const timer = setTimeout(() => settle(false), WAIT_MS);
    if (want && retry) cluster.sunsubscribe(channel).catch(() => {});
    (want ? cluster.ssubscribe(channel) : cluster.sunsubscribe(channel)).then(
      () => settle(true),
      (err: Error) => {
        log.debug(
          `redis (sharded): ${want ? "ssubscribe" : "sunsubscribe"} ${JSON.stringify(channel)} failed: ${err.message}`,
        );
        settle(false);
      },
    );
    return promise;
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
    this.deliver(channel, message);
  }
}

/** The URL as a URL when it is a redis:// or rediss:// one (the node to start from). */
function parseUrl(url: string): URL | undefined {
  try {
    if (typeof url === "string" && /^rediss?:\/\//.test(url)) return new URL(url);
  } catch {
    // refused by the constructor
  }
  return undefined;
}
