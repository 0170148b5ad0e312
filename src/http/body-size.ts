// The access log's byte count (SPEC §7). Bun offers no way to learn a Response's body size without
// reading it (`res.headers` has no Content-Length, `res.body` is a stream for every kind of body), so
// while the access log is on the CLI swaps the global `Response`, before the app loads, for a
// subclass that remembers the body it was given; the log measures it after the app answered.
// Measured: ~0.01–0.03 µs more per `new Response("…")`. Without -v nothing here runs.

/** The Response Bun made, kept before any swap: iodine's own `instanceof` checks use it (no hook). */
export const NativeResponse = globalThis.Response;

/** The body a tracked Response was made with (null for none); absent on an untracked one. */
const BODY = Symbol("iodine.body");
type Tracked = Response & { [BODY]?: unknown };
type Body = ConstructorParameters<typeof NativeResponse>[0];

const JSON_TYPE = "application/json;charset=utf-8";
const JSON_INIT: ResponseInit = { headers: { "content-type": JSON_TYPE } };

let tracking = false;
const ordinaryHasInstance = Function.prototype[Symbol.hasInstance];

/**
 * Replaces the global `Response` with a subclass that records each body (idempotent). Code that
 * captured `Response` earlier, or made its responses before this ran, is untracked: its lines show
 * the Content-Length it carries, else `-`.
 */
export function trackResponseBodies(): void {
  if (tracking) return;
  tracking = true;
  class TrackedResponse extends NativeResponse {
    // Two named parameters, not a rest array: no array per response.
    constructor(body?: Body, init?: ResponseInit) {
      super(body, init);
      (this as Tracked)[BODY] = body ?? null;
    }

    // A fetch() result, Response.error() and the like are native Responses: they stay instances.
    // An app's own subclass of Response inherits this hook, and keeps the ordinary test.
    static override [Symbol.hasInstance](value: unknown): boolean {
      return this === TrackedResponse
        ? value instanceof NativeResponse
        : ordinaryHasInstance.call(this, value);
    }

    /** Stringified once here, so the log knows the length without a second stringify. */
    static override json(data?: unknown, init?: number | ResponseInit): Response {
      let text: string | undefined;
      try {
        text = JSON.stringify(data);
      } catch {
        text = undefined;
      }
      // What JSON cannot hold (undefined, a function, a BigInt, a cycle): Bun's own error.
      if (text === undefined) return NativeResponse.json(data, init);
      let res: Response;
      if (init === undefined) res = new NativeResponse(text, JSON_INIT);
      // Bun also takes a bare status.
      else if (typeof init === "number")
        res = new NativeResponse(text, { ...JSON_INIT, status: init });
      else {
        res = new NativeResponse(text, init);
        if (!res.headers.has("content-type")) res.headers.set("content-type", JSON_TYPE);
      }
      (res as Tracked)[BODY] = text;
      return res;
    }

    static override redirect(url: string, statusOrInit?: number | ResponseInit): Response {
      const res = NativeResponse.redirect(url, statusOrInit as number);
      (res as Tracked)[BODY] = null;
      return res;
    }

    override clone(): Response {
      const copy = super.clone() as Response;
      (copy as Tracked)[BODY] = (this as Tracked)[BODY];
      return copy;
    }
  }
  // `Response.name` and stack traces read as before.
  Object.defineProperty(TrackedResponse, "name", { value: "Response" });
  globalThis.Response = TrackedResponse;
}

/**
 * The bytes of the body Bun sends for `res`, or -1 when unknown: a stream, an async generator, a
 * FormData (its boundary is made when sent), a response made before tracking began. For a known
 * body Bun sends its real length whatever Content-Length the app set (measured), so the body wins.
 */
export function bodyBytes(res: Response): number {
  const body = (res as Tracked)[BODY];
  if (body === null) return 0;
  if (typeof body === "string") return body.length === 0 ? 0 : Buffer.byteLength(body, "utf8");
  if (body === undefined || typeof body !== "object") return -1;
  if (body instanceof Blob) return body.size; // Bun.file too
  if (body instanceof ArrayBuffer || body instanceof SharedArrayBuffer) return body.byteLength;
  if (ArrayBuffer.isView(body)) return body.byteLength;
  if (body instanceof URLSearchParams) return body.toString().length; // percent-encoded: ASCII
  return -1;
}
