// When the app fails a request (SPEC §3, §10): its own `error(err)` answers as under Bun.serve;
// otherwise one log line and a plain 500. A client that went away is not an app error, and an
// answer that is not a Response is named in the log line.
import type { Server } from "bun";
import { describeError, log, logException } from "../log.ts";
import { internalError } from "./responses.ts";

/** Bun's `error` option: called with the server as `this`. */
export type AppErrorHandler = (this: Server<unknown>, error: Error) => unknown;

/**
 * The app's `error(err)` answers (SPEC §3, as Bun.serve): its Response, or, when it returns none
 * or throws itself, the plain 500 with both logged.
 */
export function answerError(
  server: Server<unknown>,
  err: unknown,
  onError: AppErrorHandler,
): Response | Promise<Response> {
  const fallback = (why: unknown) => {
    logException("app error", err);
    if (why !== err) logException("the app's error handler failed", why);
    return internalError();
  };
  const take = (r: unknown) => (r instanceof Response ? r : fallback(err));
  try {
    const r = onError.call(server, err instanceof Error ? err : new Error(String(err)));
    return r instanceof Promise ? r.then(take, fallback) : take(r);
  } catch (thrown) {
    return fallback(thrown);
  }
}

/** The app's `fetch` (or a route) threw or rejected. */
export function appFailed(
  req: Request,
  server: Server<unknown>,
  err: unknown,
  onError: AppErrorHandler | undefined,
): Response | Promise<Response> {
  // SPEC §10: a client that went away mid-request (the app's body read rejects with an AbortError)
  // is not an app error. The signal is only looked at here, on the failure path.
  if (req.signal.aborted) {
    log.debug(`the client went away during ${req.method} ${req.url}: ${describeError(err)}`);
    return internalError();
  }
  if (onError !== undefined) return answerError(server, err, onError);
  logException(`app error on ${req.method} ${req.url}`, err);
  return internalError();
}

/** The app answered with something other than a Response. */
export function notAResponse(req: Request, method: string, res: unknown): Response {
  log.error(`the app returned ${describe(res)} instead of a Response for ${method} ${req.url}`);
  return internalError();
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") {
    // A protocol factory given as an HTTP app (`export default () => new Protocol()`, or
    // `Iodine.listen({ service: "http", handler: () => new Protocol() })`) lands here.
    const o = v as Record<string, unknown>;
    const handler = ["onOpen", "onMessage", "on_open", "on_message"].some(
      (k) => typeof o[k] === "function",
    );
    const hint = handler
      ? `: a connection handler; a raw TCP service is Iodine.listen({ port, handler }) without service "http"`
      : "";
    return `an object (${v.constructor?.name ?? "Object"})${hint}`;
  }
  return typeof v === "undefined" ? "undefined" : `a ${typeof v}`;
}
