// `Iodine.connect` (SPEC §4): outgoing WebSocket connections on Bun's client `WebSocket`, with the
// same handler callbacks as the server side; raw `tcp://`, `tls://` and `unix:` ones go to raw.ts.
import { BaseConnection, openConnections } from "./connection.ts";
import { IodineError } from "../errors.ts";
import { log } from "../log.ts";
import { connectRaw } from "./raw.ts";
import { parseReconnect, ReconnectingClient, type ReconnectOptions } from "./reconnect.ts";
import { TLS } from "../tls.ts";
import type { TLSOptions as BunTLSOptions } from "bun";
import type { Connection, Handler, Message, SnakeHandler, SubscribeOptions } from "../types.ts";

/** Options of `Iodine.connect`. */
export interface ConnectOptions {
  /** where to connect: `ws://`, `wss://`, `tcp://host:port`, `tls://host:port` or `unix:/path` */
  url: string;
  /** the connection's callbacks (camelCase, or iodine's snake_case names) */
  handler: Handler | SnakeHandler;
  /** seconds between WebSocket pings, 0 = none (raw: the initial `client.timeout`, default 0). @default 40 */
  ping?: number;
  /**
   * TLS for `wss://`, `tls://` and `tcp://` (which it turns into TLS): an `Iodine.TLS` (trusted CAs,
   * a client certificate, ALPN), or for WebSockets `{ rejectUnauthorized, ca }`.
   */
  tls?:
    | TLS
    | {
        /** refuse a server whose certificate does not verify. @default true */
        rejectUnauthorized?: boolean;
        /** PEM of the certificate authority (or self-signed certificate) to trust. @default the system's CAs */
        ca?: string;
      };
  /** headers for the upgrade request (cookies, authorization …). @default none */
  headers?: Record<string, string>;
  /**
   * Reconnect whenever the connection fails or closes, until `close()` or `Iodine.stop()`: `true`
   * (the first retry after 0.1 s, each wait doubling up to 5 s, jittered) or `{ min, max }` seconds.
   * The connection object stays the same; `onOpen` runs on every connect and `onClose` once, at the
   * end; while down `isOpen` is false and `write` returns false (the data is dropped). Subscriptions
   * made on the connection are made again after each reconnect, on a history channel
   * (`Iodine.history`) from the last position they saw, so nothing published meanwhile is missed.
   * @default false
   */
  reconnect?: boolean | ReconnectOptions;
}

const DEFAULT_PING = 40;
/** setInterval's longest delay (2^31 − 1 ms); a longer one fires at once. */
const MAX_PING = Math.floor(2_147_483_647 / 1000);
/** how often `pending` is checked for onDrained, only while bytes are queued */
const DRAIN_POLL_MS = 10;
const RAW_SCHEMES = new Set(["tcp:", "tls:", "unix:"]);
const encoder = new TextEncoder();

/**
 * Opens a client connection and returns it at once; `onOpen` runs when it is connected, and
 * `onClose` runs exactly once in any case, also when it never opened (the failure is logged).
 * With `reconnect`, it connects again until closed (see `ConnectOptions.reconnect`).
 * @throws TypeError for a bad URL, handler or option; IodineError `ECONNECT_SCHEME` for another scheme.
 * @example
 * Iodine.connect({
 *   url: "ws://localhost:3000/",
 *   handler: { onOpen: (c) => c.write("Hello"), onMessage: (c, data) => console.log(data) },
 * });
 */
export function connect(options: ConnectOptions): Connection {
  if (options === null || typeof options !== "object") {
    throw new TypeError(
      `Iodine.connect: options must be an object, got ${options === null ? "null" : typeof options}`,
    );
  }
  const url = parseUrl(options.url);
  const ping = options.ping ?? DEFAULT_PING;
  if (typeof ping !== "number" || !(ping >= 0 && ping <= MAX_PING)) {
    throw new RangeError(
      `Iodine.connect: "ping" must be a number of seconds 0–${MAX_PING}, got "${String(ping)}"`,
    );
  }
  const backoff = parseReconnect(options.reconnect);
  if (RAW_SCHEMES.has(url.protocol)) {
    if (options.tls !== undefined && !(options.tls instanceof TLS)) {
      throw new TypeError(`Iodine.connect: "tls" for a raw connection must be an Iodine.TLS`);
    }
    if (options.tls !== undefined && url.protocol === "unix:") {
      throw new TypeError(
        `Iodine.connect: "tls" over a Unix socket is not supported ("${url.href}")`,
      );
    }
    const rawTls = options.tls;
    const c =
      backoff === undefined
        ? connectRaw(url, options.handler, rawTls)
        : new ReconnectingClient("raw", url.href, options.handler, backoff, (handler, report) =>
            connectRaw(url, handler, rawTls, report),
          );
    if (options.ping !== undefined) c.timeout = ping;
    return c;
  }
  if (options.tls !== undefined && url.protocol !== "wss:") {
    throw new TypeError(`Iodine.connect: "tls" needs a wss:// URL, got "${url.href}"`);
  }
  const tls = options.tls instanceof TLS ? options.tls.clientOptions() : options.tls;
  const headers = options.headers;
  if (backoff === undefined)
    return new WsClientConnection(url, options.handler, ping, tls, headers);
  return new ReconnectingClient(
    "websocket",
    url.href,
    options.handler,
    backoff,
    (handler, report) => new WsClientConnection(url, handler, ping, tls, headers, report),
  );
}

function parseUrl(raw: unknown): URL {
  let url: URL;
  try {
    url = new URL(String(raw));
  } catch (cause) {
    throw new TypeError(
      `Iodine.connect: "url" must be a ws://, wss://, tcp://, tls:// or unix: URL, got "${String(raw)}"`,
      { cause },
    );
  }
  if (url.protocol === "ws:" || url.protocol === "wss:" || url.protocol === "unix:") return url;
  if (url.protocol === "tcp:" || url.protocol === "tls:") {
    if (url.hostname === "" || url.port === "") {
      throw new TypeError(
        `Iodine.connect: a ${url.protocol}// URL needs a host and a port, got "${url.href}"`,
      );
    }
    return url;
  }
  throw new IodineError(
    "ECONNECT_SCHEME",
    `Iodine.connect: "url" must be ws://, wss://, tcp://, tls:// or unix:, got the scheme "${url.protocol}" in "${url.href}"`,
  );
}

// --- connection ---

/** A WebSocket client connection: Bun's `WebSocket` behind the iodine connection object. */
export class WsClientConnection extends BaseConnection {
  readonly protocol = "websocket" as const;
  /** the URL connected to */
  readonly url: string;
  #ws: WebSocket;
  #opened = false;
  /** close() was called: a failure to open is then no error */
  #closing = false;
  #failureLogged = false;
  /** hears why it failed (by default logged; a reconnecting client decides itself) */
  #report: ((failure: string) => void) | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #drainTimer: ReturnType<typeof setInterval> | undefined;

  constructor(
    url: URL,
    handler: Handler | SnakeHandler,
    ping: number,
    tls: BunTLSOptions | undefined,
    headers: ConnectOptions["headers"],
    report?: (failure: string) => void,
  ) {
    super(handler, undefined, "Iodine.connect");
    this.url = url.href;
    this.#report = report;
    try {
      this.#ws = new WebSocket(url.href, {
        ...(headers ? { headers } : {}),
        ...(tls ? { tls } : {}),
      });
    } catch (cause) {
      throw new TypeError(`Iodine.connect: ${(cause as Error).message}`, { cause });
    }
    this.#ws.binaryType = "arraybuffer";
    this.#ws.onopen = () => this.#onOpen(ping);
    this.#ws.onmessage = (e) => {
      this.dispatch(
        "onMessage",
        typeof e.data === "string" ? e.data : new Uint8Array(e.data as ArrayBuffer),
      );
    };
    this.#ws.onerror = (e) => this.#onError(e as ErrorEvent);
    this.#ws.onclose = (e) => this.#onClose(e.code);
  }

  /** False until the connection opened, and again once it is closing. */
  override get isOpen(): boolean {
    return this.#opened && super.isOpen && this.#ws.readyState === WebSocket.OPEN;
  }

  write(data: Message): boolean {
    if (!this.isOpen) return false;
    this.#ws.send(data);
    this.#watchDrain();
    return true;
  }

  /** Closes with 1000 after the queued data; while still connecting, gives up (onClose follows). */
  close(): void {
    if (this.#closing || !super.isOpen) return;
    this.#closing = true;
    this.markClosed();
    this.waitForClose();
    this.#ws.close(1000); // 1000: normal closure (RFC 6455 §7.4.1)
  }

  get pending(): number {
    return this.#ws.bufferedAmount;
  }

  /** Writes a published message: text unless it is bytes or the subscription asked for binary. */
  deliver(message: Message, options: SubscribeOptions | undefined): void {
    if (!this.isOpen) return;
    this.#ws.send(
      options?.as === "binary" && typeof message === "string" ? encoder.encode(message) : message,
    );
    this.#watchDrain();
  }

  // --- internal ---

  #onOpen(ping: number): void {
    this.#opened = true;
    openConnections.add(this);
    if (ping > 0) {
      this.#pingTimer = setInterval(() => this.#ws.ping(), ping * 1000);
      this.#pingTimer.unref(); // the socket keeps the process alive, not its pings
    }
    this.dispatch("onOpen");
  }

  #onError(e: ErrorEvent): void {
    if (this.#closing || this.#failureLogged) return;
    // Bun's message repeats the URL ("WebSocket connection to '…' failed: …"); the code says what failed.
    const detail = e.message.replace(/^WebSocket connection to '[^']*' failed: /, "");
    const code = (e.error as { code?: unknown } | undefined)?.code;
    const why = typeof code === "string" && !detail.includes(code) ? `${detail} (${code})` : detail;
    this.#fail(`${this.#opened ? "failed" : "failed to open"}: ${why}`);
  }

  #onClose(code: number): void {
    clearInterval(this.#pingTimer);
    clearInterval(this.#drainTimer);
    this.#drainTimer = undefined;
    if (!this.#closing && !this.#failureLogged) {
      if (!this.#opened) this.#fail(`failed to open (close code ${code})`);
      else this.#report?.(`closed by the server (close code ${code})`);
    }
    openConnections.delete(this);
    this.closed();
  }

  /** Once per connection: what went wrong, logged (or told to a reconnecting client). */
  #fail(failure: string): void {
    this.#failureLogged = true;
    if (this.#report !== undefined) this.#report(failure);
    else log.error(`Iodine.connect: ${this.url} ${failure}`);
  }

  /** Bun's client WebSocket has no drain event: poll `bufferedAmount` while bytes are queued. */
  #watchDrain(): void {
    if (this.#drainTimer !== undefined || this.#ws.bufferedAmount === 0) return;
    this.#drainTimer = setInterval(() => {
      if (this.#ws.bufferedAmount > 0) return;
      clearInterval(this.#drainTimer);
      this.#drainTimer = undefined;
      this.dispatch("onDrained");
    }, DRAIN_POLL_MS);
    this.#drainTimer.unref();
  }
}
