// Public types of iodine for Bun. Everything here is re-exported from src/index.ts.
import type { BunFile, Server, WebSocketHandler } from "bun";

/** The server an app's `fetch` receives: Bun's own, with `upgrade`, `publish`, `requestIP` … */
export type IodineServer = Server<unknown>;

/** An HTTP handler, as Bun.serve's `fetch` (SPEC §3, shape 1). */
export type FetchHandler = (req: Request, server: IodineServer) => Response | Promise<Response>;

/** An app object: Bun's own convention, so Hono, Elysia and `export default { fetch }` run unchanged. */
export interface AppObject {
  fetch: FetchHandler;
  /** Bun-native WebSocket handlers (SPEC §3, shape 3). */
  websocket?: WebSocketHandler<unknown>;
  /** Bun's `export default { port, fetch }` convention: used when neither `-p` nor `$PORT` is given. */
  port?: number | string;
  hostname?: string;
}

/** What an app module may export as `default`. */
export type AppModule = FetchHandler | AppObject;

/** TLS material: PEM text or a `Bun.file`. */
export interface TLSOptions {
  cert: string | BunFile;
  key: string | BunFile;
  /** passphrase of an encrypted key */
  passphrase?: string;
}

/**
 * An `Iodine.TLS` (src/tls.ts implements it): a certificate, the peers to trust and ALPN, for
 * listeners and clients. Named here by its methods, so that this file imports no implementation.
 */
export interface TLSSettings {
  /** The certificate (chain) and key this side presents: PEM text or `Bun.file`s. */
  useCertificate(o: { cert: string | BunFile; key: string | BunFile; pass?: string }): this;
  /** Trusts a certificate authority (or a self-signed certificate) for the peer. */
  trust(ca: string | BunFile): this;
  /** The application protocols offered or accepted by ALPN, most preferred first. */
  alpn(...protocols: string[]): this;
  /** True once `useCertificate` was called. */
  readonly hasCertificate: boolean;
  /** True when a listener with these settings asks clients for a certificate (`trust`). */
  readonly verifiesPeer: boolean;
}

/**
 * Options of `Iodine.listen`: a raw service (the default, as in iodine) or an HTTP one. A listener
 * without `service` is raw unless its handler is an app object with `fetch`, or `public` is given
 * (SPEC §4); a fetch *function* needs `service: "http"`.
 */
export type ListenOptions = HttpListenOptions | RawListenOptions;

/**
 * Options of `Iodine.listen` for an HTTP service (SPEC §3): `service: "http"`, or an app object
 * with `fetch`, or a `public` folder says so.
 */
export type HttpListenOptions = HttpListenFields &
  ({ service: "http" } | { handler: AppObject } | { public: string });

interface HttpListenFields {
  /** `"http"`; may be left out when `handler` is an object with `fetch` or `public` is given */
  service?: "http";
  /** TCP port; 0 picks a free one. @default the CLI's port, else 3000 */
  port?: number;
  /** address to bind. @default all interfaces */
  hostname?: string;
  /** a Unix socket path instead of a TCP port */
  unix?: string;
  /** the app: a fetch function or an object with `fetch` (and optionally Bun's `websocket`) */
  handler: AppModule;
  /** public folder served before the app (SPEC §6). @default the CLI's `--www` */
  public?: string;
  /** TLS for this listener: `{ cert, key }` or an `Iodine.TLS`. @default the CLI's `--tls*` options */
  tls?: TLSOptions | TLSSettings;
}

/** Makes the handler of each new raw connection: a function, or a class (then `new`-ed). */
export type HandlerFactory = (() => Handler | SnakeHandler) | (new () => Handler | SnakeHandler);

/** Options of `Iodine.listen` for a raw service (SPEC §4). */
export interface RawListenOptions {
  /** `"raw"` (or iodine's `"tcp"`): bytes in, bytes out, no HTTP. @default "raw" */
  service?: "raw" | "tcp";
  /** TCP port; 0 picks a free one. @default the CLI's port, else 3000 */
  port?: number;
  /** address to bind. @default all interfaces */
  hostname?: string;
  /** a Unix socket path instead of a TCP port */
  unix?: string;
  /**
   * The handler of each connection: a function returning one (`() => new Echo()`), a class, or one
   * object shared by every connection (iodine's `module EchoProtocol … extend self`).
   */
  handler: HandlerFactory | Handler | SnakeHandler;
  /** TLS for this listener: an `Iodine.TLS` (client certificates, ALPN) or `{ cert, key }`. */
  tls?: TLSSettings | TLSOptions;
  /** each connection's initial `client.timeout`, seconds. @default 0 (none) */
  timeout?: number;
}

// --- connections (SPEC §4) ---

/** What a message or a publish carries: text, or bytes. */
export type Message = string | Uint8Array;

/** The kind of a connection. */
export type Protocol = "websocket" | "sse" | "raw";

/**
 * A WebSocket, SSE or raw connection, passed first to every callback of its handler.
 */
export interface Connection {
  /** Queues data to send (SSE: one `data:` event). False when the connection is closed. */
  write(data: Message): boolean;
  /** Closes the connection after the pending data is sent. */
  close(): void;
  readonly isOpen: boolean;
  /** Bytes queued for sending and not yet accepted by the socket. */
  readonly pending: number;
  /** Seconds of silence before `onTimeout` (raw) — 0 means never. */
  timeout: number;
  readonly protocol: Protocol;
  /** The upgrade request, where there was one. */
  readonly request: Request | undefined;
  /** The handler; assigning another one switches protocol objects (iodine's handler swap). */
  handler: Handler | SnakeHandler;
  /**
   * Subscribes this connection; without a callback, each message is written to it. The promise
   * resolves once the subscription is in effect everywhere (every worker, and Redis with an engine):
   * a message published after that reaches it. Ignoring the promise is fine.
   */
  subscribe(channel: string, callback: SubscribeCallback): Promise<Subscribed>;
  subscribe(
    channel: string,
    options?: SubscribeOptions,
    callback?: SubscribeCallback,
  ): Promise<Subscribed>;
  /** Cancels a subscription made by this connection; true when there was one. */
  unsubscribe(channel: string, options?: SubscribeOptions): boolean;
  /** Publishes to every subscriber of `channel` (`engine` as for `Iodine.publish`). */
  publish(channel: string, message: Message, engine?: PubSubEngine | PubSubScope): boolean;
  /** SSE only: sends an event with any of `event`, `id`, `data`, `retry` (CR/LF in `event`/`id` throws). */
  writeEvent?(event: SSEEvent): boolean;
}

/** One Server-Sent Event (https://html.spec.whatwg.org/multipage/server-sent-events.html). */
export interface SSEEvent {
  event?: string;
  id?: string;
  data?: string;
  /** reconnection time for the browser, ms */
  retry?: number;
}

/** The callbacks of a connection, all optional; the connection is always the first argument. */
export interface Handler {
  onOpen?(client: Connection): unknown;
  onMessage?(client: Connection, data: Message): unknown;
  onDrained?(client: Connection): unknown;
  onTimeout?(client: Connection): unknown;
  onShutdown?(client: Connection): unknown;
  onClose?(client: Connection): unknown;
}

/** iodine's (Ruby) spelling of the same callbacks; `ping` is `onTimeout`. */
export interface SnakeHandler {
  on_open?(client: Connection): unknown;
  on_message?(client: Connection, data: Message): unknown;
  on_drained?(client: Connection): unknown;
  ping?(client: Connection): unknown;
  on_shutdown?(client: Connection): unknown;
  on_close?(client: Connection): unknown;
}

// --- pub/sub (SPEC §5) ---

export interface SubscribeOptions {
  /** `"redis"`: the channel is a Redis glob pattern (`*`, `?`, `[a-z]`, `\` escape). */
  match?: "redis";
  /** How a connection without a callback receives messages. @default text unless the message is bytes */
  as?: "text" | "binary";
  /**
   * A history channel (`Iodine.history`): deliver the retained messages after this position first,
   * then live ones, with no gap and no duplicate. A `Position` or its `"epoch:offset"` text.
   */
  since?: Position | string;
  /**
   * A history channel: deliver the last `rewind` messages it retains first (a page that opens and
   * shows the last lines), then live ones. `since`, or a stream's Last-Event-ID, wins over it.
   */
  rewind?: number;
}

/**
 * Where a message stands in its history channel (SPEC §5), written `"<epoch>:<offset>"`: `offset`
 * grows by one per message of the channel; `epoch` names the lifetime of the store that counted it.
 */
export interface Position {
  readonly epoch: string;
  readonly offset: number;
}

/** What a subscription promise resolves to. */
export interface Subscribed {
  /**
   * False when `since` was given and the history no longer reaches back to it (trimmed, expired,
   * another epoch): the subscription is live, and the app should reload its state.
   */
  recovered: boolean;
  /** The last position this subscriber has seen of a history channel, when `since` was given. */
  position: Position | undefined;
}

/** `Iodine.history(channel, options)`: what to keep of a channel (or, with `match`, of many). */
export interface HistoryOptions {
  /** messages kept per channel. @default 100 */
  size?: number;
  /** seconds a message is kept. @default 300 */
  ttl?: number;
  /** `"redis"`: `channel` is a Redis glob pattern naming every channel it matches */
  match?: "redis";
}

/**
 * Called for each message; on a connection subscription the connection is the third argument. On a
 * history channel the message's position comes last.
 */
export type SubscribeCallback = (
  channel: string,
  message: Message,
  client?: Connection,
  position?: Position,
) => unknown;

/** `Iodine.subscribe`'s callback: on a history channel the message's position comes last. */
export type ProcessSubscribeCallback = (
  channel: string,
  message: Message,
  position?: Position,
) => unknown;

/**
 * An external pub/sub engine, set as `Iodine.PubSub.default`. iodine calls it only in the process
 * that holds the cluster's interest (the master, or the single process):
 * - `subscribe`/`psubscribe` when the first process of the cluster starts wanting a channel or a
 *   Redis glob pattern, `unsubscribe` when the last one stops (`pattern` says which kind);
 * - `publish` with every message published in the cluster (except those published with
 *   `Iodine.PubSub.CLUSTER` or `PROCESS`), after it was delivered inside the cluster.
 * Messages the engine receives from elsewhere go to the cluster with `host.deliver(channel, message)`
 * (the host `open` was given) or, from anywhere, `Iodine.publish(channel, message, Iodine.PubSub.CLUSTER)`.
 * A method that throws is logged. `subscribe` and `psubscribe` may return a promise that resolves
 * once the subscription is in place: a subscription in the cluster resolves only after it.
 * @example
 * Iodine.PubSub.default = {
 *   open(host) { feed.on("message", (channel, text) => host.deliver(channel, text)); },
 *   subscribe: (channel) => feed.follow(channel),
 *   psubscribe: (pattern) => feed.followPattern(pattern),
 *   unsubscribe: (key, pattern) => feed.stop(key, pattern),
 *   publish: (channel, message) => feed.send(channel, message),
 * };
 */
export interface PubSubEngine {
  subscribe(channel: string): void | Promise<void>;
  psubscribe(pattern: string): void | Promise<void>;
  unsubscribe(channel: string, pattern: boolean): void;
  publish(channel: string, message: Message): void;
  /** Optional: iodine starts using the engine in this process (before the first subscribe). */
  open?(host: PubSubEngineHost): void;
  /** Optional: iodine stops using it (the process stops, or another engine became the default). */
  close?(): void | Promise<void>;
  /** Optional: a short name for the master's start-up line (`cluster + Redis pub/sub`). @default "custom engine" */
  readonly label?: string;
}

/** What iodine hands an engine's `open(host)`: where the engine puts what it receives. */
export interface PubSubEngineHost {
  /**
   * A message the engine received from elsewhere: delivered to every subscriber of this cluster,
   * never handed back to the engine (as `Iodine.publish(channel, message, Iodine.PubSub.CLUSTER)`).
   */
  deliver(channel: string, message: Message): void;
}

/** `Iodine.PubSub.CLUSTER` / `PROCESS`: where a publish may go, when passed to `Iodine.publish`. */
export interface PubSubScope {
  readonly scope: "cluster" | "process";
}

// --- timers (SPEC §8) ---

/** A scheduled task; `stop()` cancels what has not run yet. */
export interface TimerHandle {
  stop(): void;
  /** False once the task ran its last time or was stopped. */
  readonly isActive: boolean;
}
