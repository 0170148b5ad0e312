// Bun's `routes` (SPEC §3), matched by Bun's own router before `fetch`: each handler function goes
// through iodine's request path; static answers stay Bun's own unless every request must pass us.
import type { Fetch } from "./request.ts";

const METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "PATCH",
  "OPTIONS",
  "CONNECT",
  "TRACE",
]);

/**
 * Bun's routes with every handler function wrapped by `wrap` (iodine's request path: guards,
 * Iodine.upgrade, error, X-Sendfile, HEAD, the access log). Static `Response`s and `Bun.file`s stay
 * Bun's own (served natively) unless `everyRequest` asks for a function per request too (the access
 * log, a hand-over); HTML imports always stay Bun's.
 */
export function bunRoutes(
  routes: Record<string, unknown>,
  wrap: (h: Fetch) => Fetch,
  everyRequest: boolean,
): Record<string, unknown> {
  const one = (value: unknown): unknown => {
    if (typeof value === "function") return wrap(value as Fetch);
    if (!everyRequest) return value;
    if (value instanceof Response) return wrap(() => value.clone() as Response);
    if (value instanceof Blob) return wrap(() => new Response(value));
    return value;
  };
  const out: Record<string, unknown> = {};
  for (const [path, value] of Object.entries(routes)) {
    const perMethod =
      value !== null &&
      typeof value === "object" &&
      Object.getPrototypeOf(value) === Object.prototype;
    if (perMethod && Object.keys(value).every((k) => METHODS.has(k))) {
      out[path] = Object.fromEntries(Object.entries(value).map(([method, v]) => [method, one(v)]));
    } else out[path] = one(value);
  }
  return out;
}
