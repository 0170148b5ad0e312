// The connection object shared by WebSocket, SSE and raw connections (SPEC §4): the handler and its
// resolved callbacks, per-connection callback serialisation, exactly-once onClose, subscriptions.
import type { PubSubEngine, PubSubScope } from "../pubsub/engine-api.ts";
import { resolveHandler, type Callbacks } from "./handler.ts";
import { logException } from "../log.ts";
import {
  publish,
  subscribeConnection,
  unsubscribeConnection,
  type Subscription,
} from "../pubsub/registry.ts";
import type {
  Connection,
  Handler,
  Message,
  Protocol,
  SnakeHandler,
  SubscribeCallback,
  SubscribeOptions,
  Subscribed,
} from "../types.ts";

type Event = "onOpen" | "onMessage" | "onDrained" | "onTimeout" | "onShutdown" | "onClose";

/**
 * A connection's outgoing-buffer limit (SPEC §5): past it, the connection is closed (a WebSocket
 * with 1013) and logged. http/server.ts gives Bun the same number as `backpressureLimit` (a
 * Bun-native app may set its own, which then counts for iodine's WebSockets too).
 */
export const OUTGOING_LIMIT = 16 * 1024 * 1024;

/** A byte count for a log line: `16 MiB`, or `1000 bytes`. */
export const mib = (n: number): string => (n % 1048576 === 0 ? `${n / 1048576} MiB` : `${n} bytes`);

/** Every connection that is open in this process, for onShutdown on a graceful stop. */
export const openConnections = new Set<BaseConnection>();

/** Closed connections whose callbacks (an async onClose, say) are still running. */
const settling = new Set<Promise<void>>();

/**
 * Resolves once the callbacks of every closed connection have returned, so a graceful stop does
 * not exit under an `onClose` that is still publishing "ann left" (SPEC §8).
 */
export async function closedCallbacksDone(): Promise<void> {
  while (settling.size > 0) await Promise.all(settling);
}

/** What each kind of connection does with bytes; the rest is shared. */
export abstract class BaseConnection implements Connection {
  abstract readonly protocol: Protocol;
  abstract write(data: Message): boolean;
  abstract close(): void;
  abstract get pending(): number;

  readonly request: Request | undefined;
  #timeout = 0;
  #callbacks: Callbacks;
  /** the tail of this connection's callback chain while a callback's promise is pending */
  #busy: Promise<void> | undefined;
  #closed = false;
  #closeNotified = false;
  #closeWait: PromiseWithResolvers<void> | undefined;
  /** this connection's subscriptions, by key (channel or pattern), so close can drop them all */
  readonly subscriptions = new Map<string, Subscription>();

  constructor(handler: Handler | SnakeHandler, request: Request | undefined, where: string) {
    this.#callbacks = resolveHandler(handler, where);
    this.request = request;
  }

  get isOpen(): boolean {
    return !this.#closed;
  }

  /** Seconds of silence before onTimeout (raw); 0 = never. An accessor, so a wrapper can pass it on. */
  get timeout(): number {
    return this.#timeout;
  }

  set timeout(seconds: number) {
    this.#timeout = seconds;
  }

  get handler(): Handler | SnakeHandler {
    return this.#callbacks.handler;
  }

  /** Swapping the handler resolves the new one at once (a bad one throws here, at the caller). */
  set handler(h: Handler | SnakeHandler) {
    this.#callbacks = resolveHandler(h, "client.handler");
  }

  subscribe(
    channel: string,
    options?: SubscribeOptions | SubscribeCallback,
    callback?: SubscribeCallback,
  ): Promise<Subscribed> {
    const [opts, cb] = typeof options === "function" ? [undefined, options] : [options, callback];
    return subscribeConnection(this, channel, opts, cb);
  }

  unsubscribe(channel: string, options?: SubscribeOptions): boolean {
    return unsubscribeConnection(this, channel, options);
  }

  publish(channel: string, message: Message, engine?: PubSubEngine | PubSubScope): boolean {
    return publish(channel, message, engine);
  }

  // --- for the protocol implementations ---

  /** Marks the connection closed (no more writes); onClose follows through `closed()`. */
  protected markClosed(): void {
    this.#closed = true;
  }

  /**
   * Runs a callback of this connection. Callbacks never overlap: while one returned a pending
   * Promise, later events wait for it, in order (SPEC §4). A throw is logged and touches only
   * this connection.
   */
  dispatch(event: Event, data?: Message): void {
    if (this.#busy !== undefined) {
      this.#waitFor(this.#busy.then(() => this.#call(event, data)));
      return;
    }
    const result = this.#call(event, data);
    if (result !== undefined) this.#waitFor(result);
  }

  /** Later events wait for `tail`; once it settles as the last link, the connection is idle again. */
  #waitFor(tail: Promise<void>): void {
    this.#busy = tail;
    tail.then(() => {
      if (this.#busy === tail) this.#busy = undefined;
    });
  }

  /** A graceful stop: onShutdown (which may still write), then close once it has returned. */
  shutdown(): void {
    if (!this.isOpen) return;
    this.dispatch("onShutdown");
    if (this.#busy !== undefined) this.#busy.then(() => this.goAway());
    else this.goAway();
  }

  /** Closes because this server goes away; a WebSocket says so with its close code. */
  protected goAway(): void {
    this.close();
  }

  /** The connection is gone: drop its subscriptions and call onClose exactly once. */
  closed(): void {
    this.#closed = true;
    if (this.#closeNotified) return;
    this.#closeNotified = true;
    for (const sub of [...this.subscriptions.values()])
      unsubscribeConnection(this, sub.key, sub.options);
    this.dispatch("onClose");
    const busy = this.#busy;
    if (busy !== undefined) {
      const done = busy.then(() => void settling.delete(done));
      settling.add(done);
    }
    this.#closeWait?.resolve();
  }

  /**
   * A client's close is under way (the server's close frame, a reconnect's wait): a graceful stop
   * waits for its onClose too, as for the callbacks of closed connections.
   */
  protected waitForClose(): void {
    if (this.#closeNotified || this.#closeWait !== undefined) return;
    const wait = (this.#closeWait = Promise.withResolvers<void>());
    settling.add(wait.promise);
    void wait.promise.then(() => settling.delete(wait.promise));
  }

  /** Calls now; a returned Promise is returned (settled errors logged) so later events wait for it. */
  #call(event: Event, data: Message | undefined): Promise<void> | undefined {
    const fn = this.#callbacks[event];
    if (fn === undefined) return undefined;
    try {
      const r =
        event === "onMessage"
          ? (fn as (c: Connection, d: Message) => unknown)(this, data!)
          : (fn as (c: Connection) => unknown)(this);
      if (
        r !== null &&
        typeof r === "object" &&
        typeof (r as PromiseLike<unknown>).then === "function"
      ) {
        return Promise.resolve(r as PromiseLike<unknown>).then(
          () => undefined,
          (err) => logException(`${this.protocol} ${event} callback`, err),
        );
      }
    } catch (err) {
      logException(`${this.protocol} ${event} callback`, err);
    }
    return undefined;
  }
}
