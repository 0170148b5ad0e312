// Request guards (SPEC §10) that Bun's parser leaves to us: the Host field. A valid Host costs one
// header look-up and one regular expression; the rare rest goes through `unusualHost`.
import type { Server } from "bun";
import { badRequest, type Answer } from "./responses.ts";

/**
 * RFC 9112 §3.2 wants 400 for a request with two Host fields (Bun joins them with ", ") or an
 * invalid one (Bun then gives a relative `req.url`, and `new URL(req.url)` throws in the app).
 * Host is uri-host [ ":" port ] (RFC 3986 §3.2.2): an IP literal or reg-name characters.
 */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=%]+)(?::\d*)?$/;
export function validHost(host: string | null): boolean {
  return host !== null && HOST.test(host);
}

/**
 * The rare requests whose Host is not a plain valid one. No Host at all is an HTTP/1.0 request
 * (Bun answers 400 itself for HTTP/1.1): Bun gives it a relative URL, so the app gets a copy
 * with an absolute one (RFC 9112 §3.3: the server's own authority). A WebSocket handshake needs
 * HTTP/1.1 and a Host (RFC 6455 §4.1), so one without gets 400 here; Bun shows no HTTP version on
 * a Request, so an HTTP/1.0 handshake that does carry a Host cannot be told apart (README).
 */
export function unusualHost(
  req: Request,
  server: Server<unknown>,
  next: (req: Request) => Answer,
  onBad?: (res: Response) => void,
): Answer {
  if (
    req.headers.get("host") === null &&
    req.url.startsWith("/") &&
    req.headers.get("upgrade")?.toLowerCase() !== "websocket"
  ) {
    const authority = `${server.hostname && server.hostname !== "0.0.0.0" ? server.hostname : "localhost"}:${server.port}`;
    const body = req.method === "GET" || req.method === "HEAD" ? null : req.body;
    const copy = new Request(`${server.url.protocol}//${authority}${req.url}`, {
      method: req.method,
      headers: req.headers,
      body,
      signal: req.signal,
    });
    return next(copy);
  }
  const bad = badRequest();
  onBad?.(bad);
  return bad;
}
