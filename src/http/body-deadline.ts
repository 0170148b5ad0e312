// SPEC §10: a request body has a deadline of its own (--body-timeout), apart from keep-alive (-k).
import type { Server } from "bun";
import type { Answer } from "./responses.ts";

/** What goes on after the deadline is set: the app's part of the request path. */
type Next = (req: Request, server: Server<unknown>, method: string) => Answer;

export interface BodyDeadline {
  /** calls `next` under the deadline */
  run(req: Request, server: Server<unknown>, method: string, next: Next): Answer;
}

// Requests whose app set its own timeout with `server.timeout(req, s)`: the body deadline leaves them be.
const timedByApp = new WeakSet<Request>();

/**
 * While a body comes in, Bun resets its idle timer only each time 16 KiB × the timeout has arrived,
 * so a body trickled slower than that held its connection (and the app awaiting it) for the whole
 * `-k`. A request with a body gets `server.timeout(req, bodyTimeout)` before the app runs; once the
 * app has read the body and answered, the connection is back on the keep-alive timeout. An app that
 * answered without reading the body leaves the connection on the deadline, so the unread rest cannot
 * trickle on for `-k`; an app that set its own `server.timeout(req, s)` keeps it. Undefined when the
 * deadline is off or not shorter than `-k`.
 */
export function bodyDeadline(bodyTimeout: number, keepAlive: number): BodyDeadline | undefined {
  if (bodyTimeout <= 0 || (keepAlive > 0 && bodyTimeout >= keepAlive)) return undefined;
  const answered = (
    req: Request,
    server: Server<unknown>,
    res: Response | undefined,
  ): Response | undefined => {
    if (res !== undefined && req.bodyUsed && !timedByApp.has(req)) server.timeout(req, keepAlive);
    return res;
  };
  return {
    run(req, server, method, next) {
      server.timeout(req, bodyTimeout);
      timedByApp.delete(req); // that call went through noteAppTimeouts' wrapper, which took it for the app's
      const res = next(req, server, method);
      if (res instanceof Promise) return res.then((r) => answered(req, server, r));
      return answered(req, server, res);
    },
  };
}

/** Learns which requests the app gave a timeout of its own, which the body deadline then leaves be. */
export function noteAppTimeouts(server: Server<unknown>): void {
  const ownTimeout = server.timeout.bind(server);
  Object.defineProperty(server, "timeout", {
    configurable: true,
    value: (req: Request, seconds: number) => {
      timedByApp.add(req);
      ownTimeout(req, seconds);
    },
  });
}

/** RFC 9112 §6.3: a request has a body when it declares a length above 0 or a transfer coding. */
export function hasBody(req: Request): boolean {
  const headers = req.headers;
  const length = headers.get("content-length");
  return length !== null ? length !== "0" : headers.get("transfer-encoding") !== null;
}
