// WebSocket connections made by `Iodine.upgrade`: Bun's ServerWebSocket behind the connection
// object, and the Bun `websocket` handlers that route each event either to an iodine connection
// or to a Bun-native app's own handlers (both can live on one server).
import { counts } from "../metrics/counters.ts";
import type { Server, ServerWebSocket, WebSocketHandler } from "bun";
import { BaseConnection, mib, openConnections, OUTGOING_LIMIT } from "./connection.ts";
import { log } from "../log.ts";
import { bunTopicsMayEnd, watchBunSocket, type NativeTopics } from "../pubsub/registry.ts";
import type { Handler, Message, SnakeHandler, SubscribeOptions } from "../types.ts";

/**
 * On a permessage-deflate connection (RFC 7692), messages from this size up go compressed; shorter
 * ones go plain, for the subscribers of a publish too (http/server.ts hands this to the registry).
 * Bun compresses per connection, so a publish is compressed once per subscriber. Server CPU per
 * delivery, `server.publish(topic, text, false)` vs `(…, true)` on a raw Bun.serve with
 * perMessageDeflate, to 1,000 bench/pubsub-client.ts sockets that took it (bench/pubsub-routes.ts
 * word text, 2 shared cores; the 64 B and 4 KiB rows of `bun bench/pubsub.ts --only deflate` agree):
 *     16 B: 223 ns plain vs 2,700 ns compressed, and the frame grew to 18 B
 *     64 B: 240 ns vs 3,940 ns, 58 B on the wire      256 B: 293 ns vs 5,750 ns, 138 B
 *   1 KiB:  373 ns vs 9,107 ns, 372 B                 4 KiB: 1,117 ns vs 25,745 ns, 1,180 B
 * Compression costs ~3 µs a message before its first byte: under 1 KiB it saves a few hundred bytes
 * at most (still one TCP segment) for 12–20× the CPU. Node's `ws` draws its line at 1 KiB too.
 */
export const DEFLATE_MIN = 1024;

const encoder = new TextEncoder();

/** An iodine WebSocket connection; it is also the socket's `ws.data`, which is how events find it. */
export class WsConnection extends BaseConnection implements NativeTopics {
  readonly protocol = "websocket" as const;
  #ws: ServerWebSocket<WsConnection> | undefined;
  #limit = OUTGOING_LIMIT;
  /** `Iodine.upgrade`'s `deflate`: undefined follows the server (`--deflate`) */
  readonly #deflate: boolean | undefined;
  /** messages this long and longer are sent compressed (if the client agreed to permessage-deflate) */
  #compressFrom = Infinity;

  constructor(handler: Handler | SnakeHandler, request: Request, deflate: boolean | undefined) {
    super(handler, request, "Iodine.upgrade");
    this.#deflate = deflate;
  }

  /** Before the upgrade: whether this connection takes permessage-deflate when the client offers it. */
  useDeflate(serverDefault: boolean): boolean {
    const on = this.#deflate ?? serverDefault;
    this.#compressFrom = on ? DEFLATE_MIN : Infinity;
    return on;
  }

  attach(ws: ServerWebSocket<WsConnection>, limit: number): void {
    this.#ws = ws;
    this.#limit = limit;
  }

  write(data: Message): boolean {
    return this.#send(data, undefined);
  }

  close(): void {
    this.#close(1000); // 1000: normal closure (RFC 6455 §7.4.1)
  }

  protected override goAway(): void {
    this.#close(1001, "server going away"); // 1001: going away (RFC 6455 §7.4.1), as Bun-native sockets get
  }

  #close(code: number, reason?: string): void {
    if (this.#ws === undefined || !this.isOpen) return;
    this.markClosed();
    this.#ws.close(code, reason); // queued data goes first
  }

  get pending(): number {
    return this.#ws?.getBufferedAmount() ?? 0;
  }

  /** Writes a published message: text unless it is bytes or the subscription asked for binary. */
  deliver(message: Message, options: SubscribeOptions | undefined, channel?: string): void {
    this.#send(
      options?.as === "binary" && typeof message === "string" ? encoder.encode(message) : message,
      channel,
    );
  }

  /** After a native publish on `channel` (see pubsub/registry.ts): Bun queued it without asking us. */
  checkOutgoing(channel: string): void {
    const ws = this.#ws;
    if (ws !== undefined && this.isOpen && ws.getBufferedAmount() > this.#limit)
      this.#overLimit(ws, channel);
  }

  /**
   * Sends, unless the message does not fit on top of what is already waiting: then the connection
   * is closed with 1013 while the close frame can still be queued behind that data. A message to an
   * empty buffer always goes, so one large message is never refused (Bun does the same).
   * Bun's send() answers the bytes written, -1 (queued) or 0: dropped because the socket is
   * closing or past backpressureLimit (Bun then ends it with 1006 on its own), and also for an
   * empty message, which did go out.
   */
  #send(data: Message, channel: string | undefined): boolean {
    const ws = this.#ws;
    if (ws === undefined || !this.isOpen) return false;
    const waiting = ws.getBufferedAmount();
    const size = typeof data === "string" ? data.length : data.byteLength; // UTF-16 units: close enough
    if (waiting > 0 && waiting + size > this.#limit) {
      this.#overLimit(ws, channel);
      return false;
    }
    if (ws.send(data, size >= this.#compressFrom) !== 0) return true;
    if (ws.getBufferedAmount() > this.#limit) {
      this.#overLimit(ws, channel);
      return false;
    }
    return size === 0 && ws.readyState === 1;
  }

  /** SPEC §5: a connection that cannot keep up is closed with 1013 (Try Again Later, RFC 6455 §7.4.1) and logged once. */
  #overLimit(ws: ServerWebSocket<WsConnection>, channel: string | undefined): void {
    const path = this.request ? new URL(this.request.url).pathname : "";
    const ip = ws.remoteAddress.startsWith("::ffff:")
      ? ws.remoteAddress.slice(7)
      : ws.remoteAddress;
    const on = channel === undefined ? "" : ` on channel ${JSON.stringify(channel)}`;
    log.warn(
      `WebSocket ${ip} ${path} closed (1013): too slow${on}, ${ws.getBufferedAmount()} bytes still ` +
        `waiting to be sent (outgoing limit ${mib(this.#limit)})`,
    );
    counts.slowCloses++;
    this.markClosed();
    ws.close(1013, "outgoing buffer limit");
  }

  nativeSubscribe(channel: string): void {
    this.#ws?.subscribe(channel);
  }

  nativeUnsubscribe(channel: string): void {
    if (this.isOpen) this.#ws?.unsubscribe(channel);
  }
}

/**
 * The open sockets of Bun-native apps: a graceful stop closes them (1001, going away), since Bun's
 * server.stop() would otherwise wait for them until the drain deadline.
 */
export const nativeSockets = new Set<ServerWebSocket<unknown>>();

/**
 * The `websocket` option of Bun.serve: iodine's connections carry a WsConnection as `ws.data`;
 * any other socket was upgraded by a Bun-native app and goes to its own handlers.
 */
export function websocketHandlers(
  native: WebSocketHandler<unknown> | undefined,
  server: () => Server<unknown>,
): WebSocketHandler<unknown> {
  const limit = native?.backpressureLimit ?? OUTGOING_LIMIT;
  return {
    open(ws) {
      const c = ws.data;
      if (c instanceof WsConnection) {
        c.attach(ws as ServerWebSocket<WsConnection>, limit);
        openConnections.add(c);
        c.dispatch("onOpen");
      } else {
        nativeSockets.add(ws);
        watchBunSocket(ws, server());
        native?.open?.(ws);
      }
    },
    message(ws, message) {
      const c = ws.data;
      if (c instanceof WsConnection) c.dispatch("onMessage", message);
      else native?.message?.(ws, message);
    },
    drain(ws) {
      const c = ws.data;
      if (c instanceof WsConnection) c.dispatch("onDrained");
      else native?.drain?.(ws);
    },
    close(ws, code, reason) {
      const c = ws.data;
      if (c instanceof WsConnection) {
        openConnections.delete(c);
        c.closed();
      } else {
        nativeSockets.delete(ws);
        bunTopicsMayEnd();
        native?.close?.(ws, code, reason);
      }
    },
    ...(native?.ping ? { ping: native.ping } : {}),
    ...(native?.pong ? { pong: native.pong } : {}),
  };
}
