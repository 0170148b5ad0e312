// `Iodine.upgradeKind` and `Iodine.upgrade` (iodine's env['rack.upgrade?'] / env['rack.upgrade']):
// the app says which handler takes the connection; the server does the upgrade when the app's
// answer comes back (it holds the Bun server, the app need not).
import { resolveHandler } from "./handler.ts";
import { SseConnection } from "./sse.ts";
import { WsConnection } from "./websocket.ts";
import type { Handler, SnakeHandler } from "../types.ts";

/** What a request asks to become. */
export type UpgradeKind = "websocket" | "sse";

/** Options of `Iodine.upgrade`. */
export interface UpgradeOptions {
  /** headers (cookies …) for the upgrade response */
  headers?: Bun.HeadersInit;
  /**
   * WebSocket only: accept permessage-deflate (RFC 7692) if the client offers it; messages of 1 KiB
   * and more are then sent compressed. @default the CLI's `--deflate` (off)
   */
  deflate?: boolean;
}

/** The app's answer to an upgrade request: the server sees it and upgrades the socket. */
export class UpgradeResponse extends Response {
  readonly connection: WsConnection | SseConnection;
  readonly upgradeHeaders: Bun.HeadersInit | undefined;
  constructor(connection: WsConnection | SseConnection, headers: Bun.HeadersInit | undefined) {
    super(null, { status: connection.protocol === "websocket" ? 101 : 200 });
    this.connection = connection;
    this.upgradeHeaders = headers;
  }
}

/** `"websocket"`, `"sse"` or undefined: what the request asks to be upgraded to (SPEC §4). */
export function upgradeKind(req: Request): UpgradeKind | undefined {
  const h = req.headers;
  const upgrade = h.get("upgrade");
  if (upgrade !== null) return upgrade.toLowerCase() === "websocket" ? "websocket" : undefined;
  if (req.method === "GET") {
    const accept = h.get("accept");
    if (accept !== null && accept.includes("text/event-stream")) return "sse";
  }
  return undefined;
}

/**
 * Hands the connection to `handler`. Returns the Response the app returns from `fetch`
 * (for a request that asks for no upgrade: 400).
 * @example
 * if (Iodine.upgradeKind(req)) return Iodine.upgrade(req, new ChatHandler(), { headers: { "set-cookie": "a=b" } });
 */
export function upgrade(
  req: Request,
  handler: Handler | SnakeHandler,
  options: UpgradeOptions = {},
): Response {
  const kind = upgradeKind(req);
  const deflate = options.deflate;
  if (deflate !== undefined && typeof deflate !== "boolean") {
    throw new TypeError(
      `Iodine.upgrade: "deflate" must be a boolean, got ${JSON.stringify(deflate) ?? typeof deflate}`,
    );
  }
  if (kind === "websocket")
    return new UpgradeResponse(new WsConnection(handler, req, deflate), options.headers);
  if (kind === "sse") return new UpgradeResponse(new SseConnection(handler, req), options.headers);
  // 400: the request asks for no upgrade we know (SPEC §10); a bad handler still throws.
  resolveHandler(handler, "Iodine.upgrade");
  return new Response("Bad Request: no WebSocket or EventSource upgrade was requested", {
    status: 400,
    headers: { "content-type": "text/plain;charset=utf-8" },
  });
}
