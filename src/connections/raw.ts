// Raw TCP/Unix connections (SPEC §4), accepted by a listener (raw-listener.ts, on Bun.listen) or
// opened by `Iodine.connect({ url: "tcp://…" | "unix:/…" })` on Bun.connect, with the handler
// callbacks and connection object of WebSockets. Bun's socket.write is unbuffered (it may take part
// of the data); what it does not take waits here, bounded, and goes out on `drain`.
import { counts } from "../metrics/counters.ts";
import type { Socket, SocketHandler } from "bun";
import { IodineError } from "../errors.ts";
import { log } from "../log.ts";
import type { TLS } from "../tls.ts";
import type { Handler, Message, SnakeHandler, SubscribeOptions } from "../types.ts";
import { BaseConnection, mib, openConnections, OUTGOING_LIMIT } from "./connection.ts";

const encoder = new TextEncoder();
/** how often idle timeouts and stuck closes are checked, ms (the resolution of `client.timeout`) */
const SWEEP_MS = 250;
/** a closing connection whose peer does not take the pending bytes is cut after this long, ms */
const CLOSE_DEADLINE_MS = 10_000;

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

  constructor(
    handler: Handler | SnakeHandler,
    where: string,
    peer: string,
    limit = OUTGOING_LIMIT,
  ) {
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
    if (!this.write(message) && this.isOpen)
      log.debug(`raw ${this.peer}: a message on ${JSON.stringify(channel)} was not written`);
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
      if (this.#pending > 0 && now - this.#closingSince > CLOSE_DEADLINE_MS)
        this.#socket?.terminate();
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
    counts.slowCloses++;
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

export function startSweep(): void {
  if (sweeper !== undefined) return;
  sweeper = setInterval(() => {
    now = performance.now();
    for (const c of rawConnections) c.tick();
  }, SWEEP_MS);
  sweeper.unref();
}

// --- handlers ---

export function socketHandlers(): SocketHandler<RawConnection, "uint8array"> {
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

// --- clients ---

/**
 * Opens a raw client connection (`tcp://host:port`, `tls://host:port` or `unix:/path`); `report`
 * hears why it failed to open (by default logged; a reconnecting client decides itself).
 */
export function connectRaw(
  url: URL,
  handler: Handler | SnakeHandler,
  tls: TLS | undefined,
  report: (failure: string) => void = (failure) =>
    log.error(`Iodine.connect: ${url.href} ${failure}`),
): RawConnection {
  startSweep();
  const peer = url.protocol === "unix:" ? unixPath(url) : url.host;
  const c = new RawConnection(handler, "Iodine.connect", peer);
  const secure = url.protocol === "tls:" || tls !== undefined;
  const socket: SocketHandler<RawConnection, "uint8array"> = {
    ...socketHandlers(),
    open(s) {
      // A server whose certificate does not verify: Bun opens, then closes. Not an open for us.
      if (secure && !s.authorized) {
        report(
          `failed to open: TLS handshake failed: ${describeTlsError(s.getAuthorizationError()) ?? "the server's certificate is not trusted"}`,
        );
        s.terminate();
        c.ended();
        return;
      }
      c.attach(s);
    },
    connectError(_s, err) {
      report(`failed to open: ${err.message}`);
      c.ended();
    },
  };
  // Bun.connect reads an empty `tls: {}` as "no TLS": say `true` (system CAs) then.
  const options = tls?.clientOptions();
  const tlsOption = secure
    ? { tls: options !== undefined && Object.keys(options).length > 0 ? options : true }
    : {};
  const handlers = socket as unknown as SocketHandler<RawConnection>;
  const opened =
    url.protocol === "unix:"
      ? Bun.connect<RawConnection>({ unix: peer, socket: handlers, data: c, ...tlsOption })
      : Bun.connect<RawConnection>({
          hostname: url.hostname.replace(/^\[|\]$/g, ""),
          port: Number(url.port),
          socket: handlers,
          data: c,
          ...tlsOption,
        });
  // connectError reports the failure; the promise's rejection is the same news.
  opened.catch(() => {});
  return c;
}

/** `unix:/tmp/x.sock` and `unix:///tmp/x.sock` both name /tmp/x.sock. */
function unixPath(url: URL): string {
  const path = decodeURIComponent(url.pathname);
  if (!path.startsWith("/"))
    throw new IodineError(
      "ECONNECT_URL",
      `Iodine.connect: a unix: URL needs an absolute path, got "${url.href}"`,
    );
  return path;
}

/** What a TLS handshake error says, with its code when the message lacks it. */
export function describeTlsError(err: Error | null): string | undefined {
  if (err === null) return undefined;
  const code = (err as NodeJS.ErrnoException).code;
  return code !== undefined && !err.message.includes(code)
    ? `${err.message} (${code})`
    : err.message;
}
