// Clients that reconnect (issue 19): `Iodine.connect({ reconnect })` returns one connection object
// for the client's whole life. Behind it, a transport connection (client.ts's WebSocket or raw.ts's
// socket) is opened again and again with back-off until `close()` or `Iodine.stop()`. `onOpen` runs
// on every connect, `onClose` once at the very end. The handler's subscriptions are held while the
// client is down and made again once it is up; on a history channel from the last position the
// subscription saw, so what was published meanwhile is delivered, in order, before live messages.
import { log } from "../log.ts";
import { historyFor, parsePosition } from "../pubsub/history.ts";
import { LIVE } from "../pubsub/recovery.ts";
import {
  historyTop,
  keyOf,
  subscribeConnection,
  unsubscribeConnection,
} from "../pubsub/registry.ts";
import type {
  Handler,
  Message,
  Position,
  Protocol,
  SnakeHandler,
  SubscribeCallback,
  SubscribeOptions,
  Subscribed,
} from "../types.ts";
import { BaseConnection, openConnections } from "./connection.ts";

/** `reconnect` of `Iodine.connect` as an object: the back-off, in seconds. */
export interface ReconnectOptions {
  /** the first wait; each failed attempt doubles it. @default 0.1 */
  min?: number;
  /** the longest wait; a connection that stayed up this long starts the back-off over. @default 5 (or `min` if larger) */
  max?: number;
}

/** A validated back-off, ms. */
export interface Backoff {
  minMs: number;
  maxMs: number;
}

/** What the client needs of a transport connection: the connection, and how to write a publish to it. */
export type Transport = BaseConnection & {
  deliver(message: Message, options: SubscribeOptions | undefined, channel?: string): void;
};

/** Opens one transport; `report` hears why it failed (to open), instead of the log. */
export type OpenTransport = (handler: Handler, report: (failure: string) => void) => Transport;

const DEFAULT_MIN = 0.1;
const DEFAULT_MAX = 5;
/** setTimeout's longest delay (2^31 − 1 ms), in seconds */
const MAX_WAIT = Math.floor(2_147_483_647 / 1000);

/**
 * Reads the `reconnect` option: undefined for none.
 * @throws TypeError for anything but a boolean or `{ min?, max? }` of seconds with min ≤ max.
 */
export function parseReconnect(value: unknown): Backoff | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return { minMs: DEFAULT_MIN * 1000, maxMs: DEFAULT_MAX * 1000 };
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw new TypeError(
      `Iodine.connect: "reconnect" must be true, false or { min, max } (seconds), got ${describe(value)}`,
    );
  for (const key of Object.keys(value))
    if (key !== "min" && key !== "max")
      throw new TypeError(`Iodine.connect: "reconnect" takes min and max (seconds), got "${key}"`);
  const { min, max } = value as ReconnectOptions;
  for (const [name, v] of [
    ["min", min],
    ["max", max],
  ] as const)
    if (v !== undefined && (typeof v !== "number" || !(v > 0 && v <= MAX_WAIT)))
      throw new TypeError(
        `Iodine.connect: "reconnect.${name}" must be a number of seconds > 0 and ≤ ${MAX_WAIT}, got ${describe(v)}`,
      );
  const lo = min ?? Math.min(DEFAULT_MIN, max ?? DEFAULT_MIN);
  const hi = max ?? Math.max(DEFAULT_MAX, lo);
  if (hi < lo)
    throw new TypeError(
      `Iodine.connect: "reconnect.max" (${hi} s) must not be less than "reconnect.min" (${lo} s)`,
    );
  return { minMs: lo * 1000, maxMs: hi * 1000 };
}

const describe = (v: unknown) =>
  typeof v === "string" ? JSON.stringify(v) : v === null ? "null" : `${typeof v} ${String(v)}`;

/** A subscription of the handler, kept across reconnects. */
interface Wanted {
  channel: string;
  /** as given, without `since` */
  options: SubscribeOptions | undefined;
  callback: SubscribeCallback | undefined;
  /** a history channel (exact, declared with Iodine.history): it resumes from `position` */
  history: boolean;
  /** where to resume: the last position seen, else where the subscription started */
  position: Position | undefined;
  /** made on the current connection */
  made: boolean;
  /** made while the client was down: settles once it is made */
  waiting: PromiseWithResolvers<Subscribed> | undefined;
}

/** The connection `Iodine.connect({ reconnect })` returns: the same object across reconnects. */
export class ReconnectingClient extends BaseConnection {
  readonly protocol: Protocol;
  /** the URL connected to */
  readonly url: string;
  #open: OpenTransport;
  #backoff: Backoff;
  #inner: Transport | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** close() or Iodine.stop(): no more attempts */
  #stopped = false;
  #timeout = 0;
  /** doublings of the next wait since the back-off last started over */
  #step = 0;
  /** when the current transport opened (0: it has not) */
  #openedAt = 0;
  /** why the current transport failed, as it reported */
  #failure: string | undefined;
  /** the failure last logged (or taken as part of the outage logged) */
  #told: string | undefined;
  /** a line said it is down and none yet that it is up again */
  #unanswered = false;
  /** the last line said it was lost: the failed reopen that follows says nothing new */
  #justLost = false;
  #downSince = 0;
  #attempts = 0;
  readonly #wanted = new Map<string, Wanted>();
  /** the transport's callbacks: events go on to this connection's handler */
  readonly #relay: Handler = {
    onOpen: () => this.#up(),
    onMessage: (_c, data) => this.dispatch("onMessage", data),
    onDrained: () => this.dispatch("onDrained"),
    onTimeout: () => this.dispatch("onTimeout"),
    onClose: () => this.#down(),
  };

  constructor(
    protocol: Protocol,
    url: string,
    handler: Handler | SnakeHandler,
    backoff: Backoff,
    open: OpenTransport,
  ) {
    super(handler, undefined, "Iodine.connect");
    this.protocol = protocol;
    this.url = url;
    this.#backoff = backoff;
    this.#open = open;
    // The first attempt throws at the caller (a bad URL or header), as a plain connect does.
    this.#inner = open(this.#relay, (failure) => (this.#failure = failure));
    // Here for its whole life, also while down: Iodine.stop() then ends the waiting too.
    openConnections.add(this);
  }

  /** True while connected; false while it waits to reconnect and once closed. */
  override get isOpen(): boolean {
    return this.#inner !== undefined && this.#inner.isOpen && super.isOpen;
  }

  override get timeout(): number {
    return this.#timeout;
  }

  override set timeout(seconds: number) {
    this.#timeout = seconds;
    if (this.#inner !== undefined) this.#inner.timeout = seconds;
  }

  get pending(): number {
    return this.#inner?.pending ?? 0;
  }

  /** Writes on the current connection; while down it returns false and the data is dropped. */
  write(data: Message): boolean {
    return this.isOpen && this.#inner!.write(data);
  }

  /** Stops for good: closes the connection (after pending data) or ends the wait; onClose follows once. */
  close(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.markClosed();
    this.waitForClose();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#inner !== undefined) this.#inner.close();
    else queueMicrotask(() => this.#finish());
  }

  /** Iodine.stop(): onShutdown then close while connected; while down, just stop. */
  override shutdown(): void {
    if (this.#stopped) return;
    if (this.isOpen) super.shutdown();
    else this.close();
  }

  deliver(message: Message, options: SubscribeOptions | undefined, channel?: string): void {
    this.#inner?.deliver(message, options, channel);
  }

  /**
   * As on any connection, and kept: made again after each reconnect. On a history channel without
   * `since`, a subscription made again (an onOpen that subscribes on every connect) resumes from
   * where the one it replaces stood. While down it is held, and its promise settles once made.
   */
  override subscribe(
    channel: string,
    options?: SubscribeOptions | SubscribeCallback,
    callback?: SubscribeCallback,
  ): Promise<Subscribed> {
    const [opts, cb] = typeof options === "function" ? [undefined, options] : [options, callback];
    if (!this.isOpen) {
      // Validates the channel and callback; a connection that is not open makes nothing.
      const none = subscribeConnection(this, channel, opts, cb);
      if (this.#stopped) return none;
      if (opts?.since !== undefined && parsePosition(opts.since) === undefined)
        throw new TypeError(
          `client.subscribe: "since" must be a position { epoch, offset } or its "epoch:offset" text, got ${JSON.stringify(opts.since)}`,
        );
    }
    const key = keyOf(channel, opts);
    const { since, ...rest } = opts ?? {};
    const old = this.#wanted.get(key);
    const w: Wanted = {
      channel,
      options: opts === undefined ? undefined : rest,
      callback: cb,
      history: opts?.match !== "redis" && historyFor(channel) !== undefined,
      position: since === undefined ? undefined : parsePosition(since),
      made: false,
      waiting: undefined,
    };
    if (since === undefined && w.history && old !== undefined)
      w.position = this.subscriptions.get(key)?.position ?? old.position;
    old?.waiting?.resolve(LIVE);
    if (!this.isOpen) {
      w.waiting = Promise.withResolvers<Subscribed>();
      this.#wanted.set(key, w);
      return w.waiting.promise;
    }
    const made = this.#make(key, w, since ?? w.position);
    this.#wanted.set(key, w);
    return made;
  }

  override unsubscribe(channel: string, options?: SubscribeOptions): boolean {
    const key = keyOf(channel, options);
    const w = this.#wanted.get(key);
    this.#wanted.delete(key);
    w?.waiting?.resolve(LIVE);
    return unsubscribeConnection(this, channel, options) || w !== undefined;
  }

  // --- internal ---

  /** Subscribes on the current connection, and follows where a history subscription stands. */
  #make(key: string, w: Wanted, since: Position | string | undefined): Promise<Subscribed> {
    const options = since === undefined ? w.options : { ...w.options, since };
    const made = subscribeConnection(this, w.channel, options, w.callback);
    w.made = true;
    const sub = this.subscriptions.get(key);
    if (!w.history || sub === undefined) return made;
    const from = w.position !== undefined && since === w.position ? w.position : undefined;
    // Without since: where the channel stood once the subscription was in effect (it saw all after).
    const at =
      since === undefined
        ? made.then(() => historyTop(w.channel))
        : made.then((r) => {
            if (!r.recovered && from !== undefined && sub.dropped !== true)
              log.warn(
                `Iodine.connect: ${this.url}: ${JSON.stringify(w.channel)} resumed without what was published while it was down (its history no longer reaches back to ${from.epoch}:${from.offset})`,
              );
            return r.position;
          });
    // A subscription dropped meanwhile (down again, replaced) keeps the position it had.
    void at.then((p) => {
      if (p !== undefined && sub.dropped !== true) w.position = p;
    });
    return made;
  }

  /** The transport opened: the handler's onOpen, then its subscriptions that onOpen did not make again. */
  #up(): void {
    const inner = this.#inner!;
    // This client stands for it in openConnections (Iodine.stop() shuts the client down, not it).
    openConnections.delete(inner);
    this.#openedAt = performance.now();
    if (this.#unanswered)
      log.info(
        `Iodine.connect: ${this.url} connected again after ${((this.#openedAt - this.#downSince) / 1000).toFixed(1)} s (attempt ${this.#attempts})`,
      );
    this.#unanswered = false;
    this.#justLost = false;
    this.#attempts = 0;
    this.dispatch("onOpen");
    for (const [key, w] of this.#wanted) {
      if (w.made || !this.isOpen) continue;
      const made = this.#make(key, w, w.history ? w.position : undefined);
      w.waiting?.resolve(made);
      w.waiting = undefined;
    }
  }

  /** The transport closed: hold the subscriptions, then stop for good or wait and try again. */
  #down(): void {
    const lasted = this.#openedAt > 0 ? performance.now() - this.#openedAt : -1;
    this.#inner = undefined;
    this.#openedAt = 0;
    for (const [key, w] of this.#wanted) {
      const sub = this.subscriptions.get(key);
      w.made = false;
      if (sub === undefined) continue;
      w.position = sub.position ?? w.position;
      unsubscribeConnection(this, w.channel, w.options);
    }
    if (this.#stopped) return this.#finish();
    if (lasted >= this.#backoff.maxMs) this.#step = 0;
    const wait = this.#nextWait();
    this.#tell(lasted, wait);
    this.#timer = setTimeout(() => this.#attempt(), wait);
  }

  /**
   * One log line per change of state, not per attempt: lost (or failing to open, first or for a new
   * reason), then connected again. A failed reopen right after a loss is the same outage, and a
   * connection that did not last, lost as the one before, is the same trouble (a flapping server).
   */
  #tell(lasted: number, wait: number): void {
    const failure = this.#failure ?? (lasted >= 0 ? "closed by the peer" : "failed to open");
    const { minMs, maxMs } = this.#backoff;
    const start = () => {
      this.#told = failure;
      if (!this.#unanswered) this.#downSince = performance.now();
      this.#unanswered = true;
    };
    if (lasted >= 0 && !(lasted < maxMs && this.#told === failure)) {
      start();
      this.#justLost = true;
      log.warn(`Iodine.connect: ${this.url} lost: ${failure}; reconnecting`);
    } else if (lasted < 0 && failure !== this.#told && !this.#justLost) {
      start();
      log.error(
        `Iodine.connect: ${this.url} ${failure}; retrying every ${minMs / 1000}–${maxMs / 1000} s until it opens`,
      );
    } else {
      if (this.#justLost) this.#told = failure;
      this.#justLost = false;
      log.debug(
        `Iodine.connect: ${this.url} attempt ${this.#attempts}: ${failure}; next in ${Math.round(wait)} ms`,
      );
    }
  }

  #attempt(): void {
    this.#timer = undefined;
    this.#attempts++;
    this.#failure = undefined;
    try {
      this.#inner = this.#open(this.#relay, (failure) => (this.#failure = failure));
      this.#inner.timeout = this.#timeout;
    } catch (err) {
      this.#failure = `failed to open: ${err instanceof Error ? err.message : String(err)}`;
      this.#down();
    }
  }

  /** The step doubles from min to max; each wait is a random 50–100 % of it, so clients spread out. */
  #nextWait(): number {
    const { minMs, maxMs } = this.#backoff;
    const step = Math.min(maxMs, minMs * 2 ** this.#step);
    if (step < maxMs) this.#step++;
    return step * (0.5 + Math.random() / 2);
  }

  /** Stopped for good: what waited resolves, the subscriptions go, onClose runs (once). */
  #finish(): void {
    openConnections.delete(this);
    for (const w of this.#wanted.values()) w.waiting?.resolve(LIVE);
    this.#wanted.clear();
    this.closed();
  }
}
