// WebSocket connections made by `Iodine.upgrade`: Bun's ServerWebSocket behind the connection
// object, and the Bun `websocket` handlers that route each event either to an iodine connection
// or to a Bun-native app's own handlers (both can live on one server).
import type { ServerWebSocket, WebSocketHandler } from "bun";
import { BaseConnection, openConnections } from "./connection.ts";
import type { NativeTopics } from "./pubsub/index.ts";
import type { Handler, Message, SnakeHandler, SubscribeOptions } from "./types.ts";

/** An iodine WebSocket connection; it is also the socket's `ws.data`, which is how events find it. */
export class WsConnection extends BaseConnection implements NativeTopics {
  readonly protocol = "websocket" as const;
  #ws: ServerWebSocket<WsConnection> | undefined;

  constructor(handler: Handler | SnakeHandler, request: Request) {
    super(handler, request, "Iodine.upgrade");
  }

  attach(ws: ServerWebSocket<WsConnection>): void {
    this.#ws = ws;
  }

  write(data: Message): boolean {
    const ws = this.#ws;
    if (ws === undefined || !this.isOpen) return false;
    // send() answers bytes sent, -1 (queued: back-pressure) or 0 (dropped: the socket is closing
    // or over its limit, and Bun closes it — see closeOnBackpressureLimit in server.ts).
    return ws.send(data) !== 0;
  }

  close(): void {
    if (this.#ws === undefined || !this.isOpen) return;
    this.markClosed();
    this.#ws.close(1000); // 1000: normal closure (RFC 6455 §7.4.1); queued data goes first
  }

  get pending(): number {
    return this.#ws?.getBufferedAmount() ?? 0;
  }

  /** Writes a published message: text unless it is bytes or the subscription asked for binary. */
  deliver(message: Message, options: SubscribeOptions | undefined): void {
    const ws = this.#ws;
    if (ws === undefined || !this.isOpen) return;
    if (options?.as === "binary" && typeof message === "string") ws.sendBinary(new TextEncoder().encode(message));
    else ws.send(message);
  }

  nativeSubscribe(channel: string): void {
    this.#ws?.subscribe(channel);
  }

  nativeUnsubscribe(channel: string): void {
    if (this.isOpen) this.#ws?.unsubscribe(channel);
  }
}

/**
 * The `websocket` option of Bun.serve: iodine's connections carry a WsConnection as `ws.data`;
 * any other socket was upgraded by a Bun-native app and goes to its own handlers.
 */
export function websocketHandlers(native: WebSocketHandler<unknown> | undefined): WebSocketHandler<unknown> {
  return {
    open(ws) {
      const c = ws.data;
      if (c instanceof WsConnection) {
        c.attach(ws as ServerWebSocket<WsConnection>);
        openConnections.add(c);
        c.dispatch("onOpen");
      } else native?.open?.(ws);
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
      } else native?.close?.(ws, code, reason);
    },
    ...(native?.ping ? { ping: native.ping } : {}),
    ...(native?.pong ? { pong: native.pong } : {}),
  };
}
