// Raw TCP/Unix connections (SPEC §4): `Iodine.listen({ port | unix, handler })` on Bun.listen and
// `Iodine.connect({ url: "tcp://…" | "unix:/…" })` on Bun.connect, with the handler callbacks and
// connection object of WebSockets. Bun's socket.write is unbuffered (it may take part of the
// data); what it does not take waits here, bounded, and goes out on `drain`.
import type { Socket, SocketHandler, SocketListener } from "bun";
import { BaseConnection, openConnections } from "./connection.ts";
import { IodineError } from "../errors.ts";
import { log, logException } from "../log.ts";
import { serverTls, TLS } from "../tls.ts";
import type { Handler, Message, RawListenOptions, SnakeHandler, SubscribeOptions, TLSOptions } from "../types.ts";
import { OUTGOING_LIMIT } from "./websocket.ts";

const encoder = new TextEncoder();
/** how often idle timeouts and stuck closes are checked, ms (the resolution of `client.timeout`) */
const SWEEP_MS = 250;
/** a closing connection whose peer does not take the pending bytes is cut after this long, ms */
const CLOSE_DEADLINE_MS = 10_000;
const mib = (n: number) => (n % 1048576 === 0 ? `${n / 1048576} MiB` : `${n} bytes`);

// --- connection ---

/** A raw TCP/Unix/TLS connection; it is also the Bun socket's `data`, which is how events find it. */
export class RawConnection extends BaseConnection {
  readonly protocol = "raw" as const;
  /** where the peer is (`127.0.0.1:51234`, or the Unix socket path), for logs */
  readonly peer: string;
  #socket: Socket<RawConnection> | undefined;
  /** bytes Bun did not take yet, oldest first; `#head` is how much of the first one went out */
  #queue: Uint8Array[] = [];
  #head = 0;
  #pending = 0;
  #limit: number;
  /** close() was called: end the socket once the queue is empty */
  #closing = false;
  #closingSince = 0;
  /** when traffic last moved, on the sweep's coarse clock */
  #lastActivity = now;
  /** the callback to call on drain: only after a write had to wait */
  #backedUp = false;

  constructor(handler: Handler | SnakeHandler, where: string, peer: string, limit = OUTGOING_LIMIT) {
    super(handler, undefined, where);
    this.peer = peer;
    this.#limit = limit;
  }

  /** The protocol agreed by TLS ALPN: a name, false when none was, undefined without TLS or before the handshake. */
  get alpnProtocol(): string | false | undefined {
    return this.#socket?.alpnProtocol ?? undefined;
  }

  override get isOpen(): boolean {
    return this.#socket !== undefined && super.isOpen;
  }

  get pending(): number {
    return this.#pending;
  }

  /**
   * Sends bytes (a string goes as UTF-8) without blocking: what the socket does not take at once
   * waits, in order. If the waiting bytes would pass the outgoing limit, the connection is closed
   * and logged (SPEC §5) and false is returned; a write to an empty queue always goes, so one large
   * write is never refused.
   */
  write(data: Message): boolean {
    const socket = this.#socket;
    if (socket === undefined || !super.isOpen) return false;
    this.#lastActivity = now;
    if (this.#pending === 0) {
      const size = typeof data === "string" ? Buffer.byteLength(data) : data.byteLength;
      if (size === 0) return true;
      const n = socket.write(data);
      if (n < 0) return false; // closed under us: onClose follows
      if (n === size) return true;
      // Keep what the socket did not take (a copy: the caller may reuse its buffer).
      const bytes = typeof data === "string" ? encoder.encode(data) : data;
      this.#enqueue(bytes.slice(n));
      return true;
    }
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    if (this.#pending + bytes.byteLength > this.#limit) {
      this.#overLimit();
      return false;
    }
    // Copy: the caller may reuse its buffer once write returned.
    this.#enqueue(bytes.slice());
    return true;
  }

  /** Closes after the pending bytes are sent (a peer that never takes them is cut after 10 s). */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#closingSince = now;
    this.markClosed();
    if (this.#socket === undefined) {
      // A client still connecting: it gives up when the socket arrives (or fails).
      return;
    }
    if (this.#pending === 0) this.#socket.end();
  }

  /** Writes a published message: the bytes, or the text as UTF-8. */
  deliver(message: Message, _options: SubscribeOptions | undefined, channel?: string): void {
    if (!this.write(message) && this.isOpen) log.debug(`raw ${this.peer}: a message on ${JSON.stringify(channel)} was not written`);
  }

  // --- for the socket handlers ---

  attach(socket: Socket<RawConnection>): void {
    this.#socket = socket;
    this.#lastActivity = now;
    if (this.#closing) {
      socket.end();
      return;
    }
    openConnections.add(this);
    rawConnections.add(this);
    this.dispatch("onOpen");
  }

  received(data: Uint8Array): void {
    this.#lastActivity = now;
    if (super.isOpen) this.dispatch("onMessage", data);
  }

  /** Bun can take more: send what waits; onDrained once the queue is empty after a wait. */
  drained(): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    while (this.#queue.length > 0) {
      const chunk = this.#queue[0]!;
      const n = socket.write(chunk, this.#head, chunk.byteLength - this.#head);
      if (n < 0) return;
      this.#pending -= n;
      this.#lastActivity = now;
      if (this.#head + n < chunk.byteLength) {
        this.#head += n;
        return;
      }
      this.#queue.shift();
      this.#head = 0;
    }
    if (this.#closing) {
      socket.end();
      return;
    }
    if (this.#backedUp) {
      this.#backedUp = false;
      this.dispatch("onDrained");
    }
  }

  /** The socket closed: onClose, exactly once. */
  ended(): void {
    this.#queue = [];
    this.#pending = 0;
    this.markClosed();
    openConnections.delete(this);
    rawConnections.delete(this);
    this.closed();
  }

  /** Called by the sweep: the idle timeout, and closes stuck behind a peer that stopped reading. */
  tick(): void {
    if (this.#closing) {
      if (this.#pending > 0 && now - this.#closingSince > CLOSE_DEADLINE_MS) this.#socket?.terminate();
      return;
    }
    if (this.timeout > 0 && now - this.#lastActivity >= this.timeout * 1000) {
      this.#lastActivity = now; // iodine pings again after another quiet period
      this.dispatch("onTimeout");
    }
  }

  #enqueue(bytes: Uint8Array): void {
    this.#queue.push(bytes);
    this.#pending += bytes.byteLength;
    this.#backedUp = true;
  }

  /** SPEC §5: a peer that cannot keep up is closed and logged once; the others are unaffected. */
  #overLimit(): void {
    log.warn(
      `raw connection ${this.peer} closed: too slow, ${this.#pending} bytes still waiting to be sent ` +
        `(outgoing limit ${mib(this.#limit)})`,
    );
    this.#closing = true;
    this.markClosed();
    this.#socket?.terminate();
  }
}

// --- idle timeouts ---

/** The sweep's coarse clock, ms: marking activity costs one assignment. */
let now = performance.now();
const rawConnections = new Set<RawConnection>();
let sweeper: ReturnType<typeof setInterval> | undefined;

function startSweep(): void {
  if (sweeper !== undefined) return;
  sweeper = setInterval(() => {
    now = performance.now();
    for (const c of rawConnections) c.tick();
  }, SWEEP_MS);
  sweeper.unref();
}

// --- handlers ---

function socketHandlers(): SocketHandler<RawConnection, "uint8array"> {
  return {
    binaryType: "uint8array",
    open(socket) {
      socket.data.attach(socket);
    },
    data(socket, data) {
      socket.data.received(data);
    },
    drain(socket) {
      socket.data.drained();
    },
    close(socket) {
      socket.data?.ended();
    },
    error(socket, err) {
      log.debug(`raw connection ${socket.data?.peer ?? "?"}: ${err.message}`);
    },
  };
}

// --- listeners ---

/** A bound raw listener. */
export interface RawListener {
  readonly port: number | undefined;
  /** Stops accepting; resolves once every connection it accepted has closed. */
  stop(): Promise<void>;
  /** Closes every remaining connection at once. */
  terminate(): void;
}

/** Turns the listen option into "make the next connection's handler". */
export function handlerMaker(handler: RawListenOptions["handler"], where: string): () => Handler | SnakeHandler {
  if (typeof handler === "function") {
    if (/^class[\s{]/.test(Function.prototype.toString.call(handler))) {
      const C = handler as new () => Handler | SnakeHandler;
      return () => new C();
    }
    return handler as () => Handler | SnakeHandler;
  }
  if (handler === null || typeof handler !== "object") {
    throw new TypeError(`${where}: "handler" must be a function returning a handler, a class or a handler object, got ${handler === null ? "null" : typeof handler}`);
  }
  return () => handler;
}

/** Binds a raw listener (TCP, TLS or Unix). */
export function listenRaw(o: {
  port: number;
  hostname: string | undefined;
  unix: string | undefined;
  handler: RawListenOptions["handler"];
  tls: TLS | TLSOptions | undefined;
  timeout: number;
  /** share the port with the other workers of a cluster (SO_REUSEPORT) */
  reusePort: boolean;
}): RawListener {
  startSweep();
  const make = handlerMaker(o.handler, "Iodine.listen");
  const mine = new Set<RawConnection>();
  let idle: (() => void) | undefined;
  /** a fetch function was given as the factory: said once, not per connection */
  let toldHttp = false;
  const base = socketHandlers();
  const socket: SocketHandler<RawConnection, "uint8array"> = {
    ...base,
    open(s) {
      const peer = o.unix ?? `${s.remoteAddress}:${s.remotePort}`;
      // Bun calls open for a TLS peer that failed the handshake (a client certificate not
      // trusted, no common ALPN protocol), then closes it: it never reaches the handler.
      if (verifying !== undefined) {
        const refused = tlsRefusal(s, verifying);
        if (refused !== undefined) {
          log.warn(`raw connection ${peer} refused: ${refused}`);
          s.terminate();
          return;
        }
      }
      let handler: Handler | SnakeHandler;
      let c: RawConnection;
      try {
        handler = make();
        if (handler instanceof Response || handler instanceof Promise) {
          // A fetch function (`() => new Response(…)`) given without `service: "http"` is raw (SPEC §4).
          if (!toldHttp) {
            toldHttp = true;
            const http = `a listener without "service" is raw: for HTTP write Iodine.listen({ service: "http", handler, … })`;
            const what = handler instanceof Response
              ? `a Response, not a connection handler; ${http}`
              : `a Promise: a factory returns the connection handler itself (${http})`;
            log.error(`raw listener on ${o.unix ?? `port ${listener.port}`}: the handler returned ${what}`);
          }
          s.terminate();
          return;
        }
        c = new RawConnection(handler, "Iodine.listen", peer);
      } catch (err) {
        logException(`raw connection ${peer}: the listener's handler factory failed`, err);
        s.terminate();
        return;
      }
      c.timeout = o.timeout;
      s.data = c;
      mine.add(c);
      c.attach(s);
    },
    close(s) {
      const c = s.data;
      if (c === undefined) return;
      mine.delete(c);
      c.ended();
      if (mine.size === 0) idle?.();
    },
  };
  const tls = o.tls === undefined ? {} : { tls: serverTls(o.tls) };
  /** undefined without TLS; else whether clients must present a trusted certificate */
  const verifying = o.tls === undefined ? undefined : o.tls instanceof TLS ? o.tls.verifiesPeer : (o.tls as { requestCert?: boolean }).requestCert === true;
  // Bun's types tie binaryType to the handler's second type parameter, which listen() does not pass on.
  const handlers = socket as unknown as SocketHandler<RawConnection>;
  const listener: SocketListener<RawConnection> & { port?: number } =
    o.unix !== undefined
      ? Bun.listen<RawConnection>({ unix: o.unix, socket: handlers, ...tls })
      : Bun.listen<RawConnection>({
          hostname: o.hostname ?? "0.0.0.0",
          port: o.port,
          socket: handlers,
          ...tls,
          // Bun.listen honours reusePort (Bun 1.4.5) though its types list it for connect only.
          ...(o.reusePort ? ({ reusePort: true } as object) : {}),
        });
  return {
    port: o.unix !== undefined ? undefined : listener.port,
    stop() {
      listener.stop(false);
      if (mine.size === 0) return Promise.resolve();
      return new Promise<void>((resolve) => (idle = resolve));
    },
    terminate() {
      listener.stop(true);
    },
  };
}

/** Why Bun's TLS handshake failed for this peer, or undefined when it did not. */
function tlsRefusal(s: Socket<RawConnection>, verifyingPeer: boolean): string | undefined {
  if (verifyingPeer && !s.authorized) return describeTlsError(s.getAuthorizationError()) ?? "no trusted certificate";
  const err = s.getAuthorizationError();
  // Without client certificates only a failed handshake (EPROTO: e.g. no common ALPN protocol) counts.
  if (err !== null && (err as NodeJS.ErrnoException).code === "EPROTO") return describeTlsError(err);
  return undefined;
}

function describeTlsError(err: Error | null): string | undefined {
  if (err === null) return undefined;
  const code = (err as NodeJS.ErrnoException).code;
  return code !== undefined && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}

// --- clients ---

/** Opens a raw client connection (`tcp://host:port`, `tls://host:port` or `unix:/path`). */
export function connectRaw(url: URL, handler: Handler | SnakeHandler, tls: TLS | undefined): RawConnection {
  startSweep();
  const peer = url.protocol === "unix:" ? unixPath(url) : url.host;
  const c = new RawConnection(handler, "Iodine.connect", peer);
  const secure = url.protocol === "tls:" || tls !== undefined;
  const socket: SocketHandler<RawConnection, "uint8array"> = {
    ...socketHandlers(),
    open(s) {
      // A server whose certificate does not verify: Bun opens, then closes. Not an open for us.
      if (secure && !s.authorized) {
        log.error(`Iodine.connect: ${url.href} failed to open: TLS handshake failed: ${describeTlsError(s.getAuthorizationError()) ?? "the server's certificate is not trusted"}`);
        s.terminate();
        c.ended();
        return;
      }
      c.attach(s);
    },
    connectError(_s, err) {
      log.error(`Iodine.connect: ${url.href} failed to open: ${err.message}`);
      c.ended();
    },
  };
  // Bun.connect reads an empty `tls: {}` as "no TLS": say `true` (system CAs) then.
  const options = tls?.clientOptions();
  const tlsOption = secure ? { tls: options !== undefined && Object.keys(options).length > 0 ? options : true } : {};
  const handlers = socket as unknown as SocketHandler<RawConnection>;
  const opened =
    url.protocol === "unix:"
      ? Bun.connect<RawConnection>({ unix: peer, socket: handlers, data: c, ...tlsOption })
      : Bun.connect<RawConnection>({ hostname: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port), socket: handlers, data: c, ...tlsOption });
  // connectError reports the failure; the promise's rejection is the same news.
  opened.catch(() => {});
  return c;
}

/** `unix:/tmp/x.sock` and `unix:///tmp/x.sock` both name /tmp/x.sock. */
function unixPath(url: URL): string {
  const path = decodeURIComponent(url.pathname);
  if (!path.startsWith("/")) throw new IodineError("ECONNECT_URL", `Iodine.connect: a unix: URL needs an absolute path, got "${url.href}"`);
  return path;
}
