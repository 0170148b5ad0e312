// The public surface of iodine for Bun: the `Iodine` object and the public types.
import pkg from "../package.json" with { type: "json" };
import { connect, type ConnectOptions } from "./connections/client.ts";
import { defineHandler } from "./connections/handler.ts";
import {
  CLUSTER,
  defaultEngine,
  PROCESS,
  setDefaultEngine,
  type PubSubEngine,
  type PubSubScope,
} from "./pubsub/engine-api.ts";
import { presence, publish, subscribeProcess, unsubscribeProcess } from "./pubsub/registry.ts";
import { declareHistory } from "./pubsub/history.ts";
import { RedisEngine } from "./pubsub/redis.ts";
import { ShardedRedisEngine } from "./pubsub/redis-sharded.ts";
import { onState, type StateEvent } from "./hooks.ts";
import { addListener, noteScriptUse, placement, requestStart, stopAll } from "./lifecycle.ts";
import { run, runAfter, runEvery } from "./timers.ts";
import { Mustache } from "./mustache.ts";
import { TLS } from "./tls.ts";
import type {
  Connection,
  HistoryOptions,
  ListenOptions,
  Message,
  ProcessSubscribeCallback,
  Subscribed,
  SubscribeOptions,
} from "./types.ts";
import { upgrade, upgradeKind } from "./connections/upgrade.ts";

/**
 * The iodine API.
 * @example
 * import { Iodine } from "iodine-bun";
 * Iodine.listen({ service: "http", port: 3000, handler: () => new Response("Hello World!") });
 * Iodine.start();
 */
export const Iodine = {
  /** The package version. */
  version: pkg.version as string,
  /** True in the process that supervises workers; in a single process both flags are true. */
  get isMaster(): boolean {
    return placement().isMaster;
  },
  /** True in a process that serves connections; in a single process both flags are true. */
  get isWorker(): boolean {
    return placement().isWorker;
  },
  /**
   * Registers a service. As in iodine it is raw TCP/Unix (a handler per connection, SPEC §4) unless
   * `service: "http"`, a `public` folder or an app object with `fetch` make it HTTP (several may run
   * on different ports, SPEC §3).
   */
  listen(options: ListenOptions): void {
    addListener(options);
  },
  /**
   * Starts every registered listener (script mode); under the CLI it starts once the module has loaded.
   * With no listener the process runs its timers, clients and pub/sub until `Iodine.stop()` or a signal.
   */
  start(): Promise<void> {
    return requestStart();
  },
  /** Stops the server gracefully: in-flight requests finish, connections get onShutdown, then the process may exit. */
  stop(): Promise<void> {
    return stopAll();
  },
  /** `"websocket"`, `"sse"` or undefined: what the request asks to be upgraded to. */
  upgradeKind,
  /** Hands a WebSocket (or SSE) request to a handler; return its result from `fetch`. */
  upgrade,
  /** Opens a client connection (`ws://`, `wss://`, `tcp://`, `tls://`, `unix:`) driven by a handler with the same callbacks. */
  connect(options: ConnectOptions): Connection {
    noteScriptUse();
    return connect(options);
  },
  /**
   * Subscribes the process: `callback(channel, message)` for each message (SPEC §5; on a history
   * channel the position comes third). Resolves once the subscription is in effect everywhere
   * (every worker, and Redis with an engine); with `since`, once the history after it was delivered.
   */
  subscribe(
    channel: string,
    options: SubscribeOptions | ProcessSubscribeCallback,
    callback?: ProcessSubscribeCallback,
  ): Promise<Subscribed> {
    if (typeof options === "function") return subscribeProcess(channel, undefined, options);
    return subscribeProcess(channel, options, callback!);
  },
  /**
   * Keeps the last `size` messages of `channel` (or of every channel a `{ match: "redis" }` pattern
   * names) for `ttl` seconds (SPEC §5): each message gets a position, `subscribe(…, { since })`
   * replays what came after one, and SSE streams resume from `Last-Event-ID`. Call it where the app
   * loads (every process), before publishing on the channel.
   */
  history(channel: string, options?: HistoryOptions): void {
    declareHistory(channel, options);
  },
  /** Subscriptions to exactly `channel` across the cluster and, with Redis, every cluster on it. */
  presence(channel: string): Promise<number> {
    return presence(channel);
  },
  /** Cancels a process subscription; true when there was one. */
  unsubscribe(channel: string, options?: SubscribeOptions): boolean {
    return unsubscribeProcess(channel, options);
  },
  /**
   * Publishes a message (a string, or bytes) to every subscriber of `channel`: in the cluster and,
   * with an external engine (Redis), beyond. `engine` narrows or redirects it: `Iodine.PubSub.CLUSTER`
   * (this cluster only), `Iodine.PubSub.PROCESS` (this process only), or another engine (to it alone).
   */
  publish(channel: string, message: Message, engine?: PubSubEngine | PubSubScope): boolean {
    return publish(channel, message, engine);
  },
  /** Pub/sub engines (SPEC §5). */
  PubSub: {
    /** The engine every publish goes through besides the cluster: CLUSTER (none) or e.g. a Redis engine. */
    get default(): PubSubEngine | PubSubScope {
      return defaultEngine() ?? CLUSTER;
    },
    set default(engine: PubSubEngine | PubSubScope) {
      setDefaultEngine(engine);
    },
    /** Publish scope: every process of this cluster, not the external engine. */
    CLUSTER,
    /** Publish scope: this process only. */
    PROCESS,
    /** The Redis engine: `Iodine.PubSub.default = new Iodine.PubSub.Redis("redis://localhost:6379")`. */
    Redis: RedisEngine,
    /**
     * The Redis Cluster engine: sharded pub/sub (SSUBSCRIBE/SPUBLISH), any node's URL;
     * `Iodine.PubSub.default = new Iodine.PubSub.RedisSharded("redis://node-1:7000")`.
     */
    RedisSharded: ShardedRedisEngine,
  },
  /**
   * Runs `fn` at a moment of the process lifecycle (SPEC §8), e.g. `"enter_child"` in each worker
   * after the app loaded — where an app opens its database pool per worker.
   */
  onState(event: StateEvent, fn: () => unknown): void {
    onState(event, fn);
  },
  /** TLS settings for listeners and clients: `new Iodine.TLS().useCertificate({ cert, key }).trust(ca)` (SPEC §9). */
  TLS,
  /**
   * Mustache templates (SPEC §9), parsed once: `new Iodine.Mustache({ file }).render(data)`, or
   * `Iodine.Mustache.render({ file | template, data })` for one-offs.
   */
  Mustache,
  /** Runs `fn` on the next turn of the event loop. */
  run,
  /** Runs `fn` once after `ms` milliseconds. */
  runAfter,
  /** Runs `fn` every `ms` milliseconds, `times` times (or until stopped). */
  runEvery,
};

export { defineHandler };

// Apps and their handlers.
export type { AppModule, AppObject, FetchHandler, IodineServer } from "./types.ts";
// Connections.
export type { Connection, Handler, Message, Protocol, SnakeHandler } from "./types.ts";
export type { UpgradeKind, UpgradeOptions } from "./connections/upgrade.ts";
export type { ConnectOptions } from "./connections/client.ts";
export type { ReconnectOptions } from "./connections/reconnect.ts";
export type { SSEEvent } from "./types.ts";
// Lifecycle.
export type { StateEvent } from "./hooks.ts";
// Pub/sub and timers.
export type { SubscribeCallback, SubscribeOptions, TimerHandle } from "./types.ts";
export type { HistoryOptions, Position, ProcessSubscribeCallback, Subscribed } from "./types.ts";
export type { PubSubEngine, PubSubScope } from "./pubsub/engine-api.ts";
export type { RedisEngine, RedisEngineOptions } from "./pubsub/redis.ts";
export type { ShardedRedisEngine } from "./pubsub/redis-sharded.ts";
// Options.
export type {
  HandlerFactory,
  HttpListenOptions,
  ListenOptions,
  RawListenOptions,
  TLSOptions,
  TLSSettings,
} from "./types.ts";
export type { TLS } from "./tls.ts";
export type { Mustache, MustacheOptions, MustacheRenderOptions } from "./mustache.ts";
export type { RawConnection } from "./connections/raw.ts";
// Errors.
export { IodineError, ListenError } from "./errors.ts";
