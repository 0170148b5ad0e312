// Answering for a static file (SPEC §6) from its cached representations: conditional requests,
// one byte range, the encoding the client accepts (RFC 9110 §§8.4, 13, 14), and for X-Sendfile the
// app's own response with the file as its body.
import { clock } from "../log.ts";

const MAX_ENCODINGS = 256;

// What describes the app's own (discarded) body, or the sendfile request itself.
const APP_FRAMING = [
  "x-sendfile",
  "content-length",
  "content-encoding",
  "content-range",
  "transfer-encoding",
];

// --- types ---

/** One representation on disk: the file itself or its `.br` / `.gz` sibling. */
export interface Variant {
  path: string;
  size: number;
  mtimeMs: number;
  ino: number;
  etag: string;
  lastModified: string;
  /** Last-Modified in whole seconds since the epoch, as HTTP dates carry them */
  lastModifiedS: number;
  /** the contents when small enough to keep in memory */
  bytes: Uint8Array | undefined;
  /** headers of a 200 (Content-Length, Content-Type, validators, Vary, Content-Encoding) */
  headers: Headers;
  /** headers of a 304 (RFC 9110 §15.4.5: the validators and Vary, nothing about the body) */
  notModified: Headers;
}

export interface FileEntry {
  identity: Variant;
  br: Variant | undefined;
  gzip: Variant | undefined;
  /** bytes held in memory by this entry's variants */
  memory: number;
  /** dropped from the cache (changed on disk or evicted): whoever holds it must look again */
  evicted: boolean;
  /** performance.now() of the last look at the disk */
  checkedAt: number;
}

/** q-values a client gave for the encodings we may have on disk (0 = not acceptable). */
export type Accepts = { br: number; gzip: number };

// --- answering ---

/**
 * Builds the response for a file: 200, 206, 304 or 416. `app` is set for X-Sendfile; `accepts` is
 * the caller's cache of parsed Accept-Encoding values.
 */
export function reply(
  req: Request,
  head: boolean,
  f: FileEntry,
  app: Response | undefined,
  accepts: Map<string, Accepts>,
): Response {
  const h = req.headers;
  const id = f.identity;
  // The app chose a status other than 200 (e.g. 403 with a page): send the file as it is.
  const plain = app !== undefined && app.status !== 200;

  // Range first, because it decides the variant: ranges are served from the identity bytes.
  let range: [number, number] | null | undefined;
  if (!head && !plain) {
    // RFC 9110 §14.2: Range is defined for GET only, so HEAD ignores it.
    const r = h.get("range");
    if (r !== null && ifRangeHolds(h.get("if-range"), id)) range = parseRange(r, id.size);
  }
  const v =
    range === undefined && (f.br !== undefined || f.gzip !== undefined)
      ? pick(f, h.get("accept-encoding"), accepts)
      : id;

  // RFC 9110 §13.2.2: If-None-Match, and only without it If-Modified-Since.
  if (!plain) {
    const inm = h.get("if-none-match");
    if (
      inm !== null ? etagMatches(inm, v.etag) : isNotModifiedSince(h.get("if-modified-since"), v)
    ) {
      return build(app, 304, null, v.notModified);
    }
  }
  if (range === null) {
    const headers = new Headers({ "content-range": `bytes */${id.size}`, "content-length": "0" });
    return build(app, 416, null, headers);
  }
  if (range !== undefined) {
    const [start, end] = range;
    const headers = new Headers(id.headers);
    headers.set("content-range", `bytes ${start}-${end}/${id.size}`);
    headers.set("content-length", String(end - start + 1));
    const body =
      id.bytes !== undefined
        ? id.bytes.subarray(start, end + 1)
        : Bun.file(id.path).slice(start, end + 1);
    return build(app, 206, body, headers);
  }
  if (head) {
    // Bun leaves Date and Content-Type off a HEAD answer unless they are set explicitly.
    const headers = new Headers(v.headers);
    headers.set("date", clock.http);
    return build(app, plain ? app.status : 200, null, headers);
  }
  // Sliced to the size we announced, so a file growing under us cannot overrun Content-Length.
  // (Bun adds `Content-Disposition: filename="…"` to a file body only when the type is
  // application/octet-stream: a harmless download name for files of unknown type.)
  const body = v.bytes ?? Bun.file(v.path).slice(0, v.size);
  if (app === undefined) return new Response(body, { headers: v.headers });
  return build(app, plain ? app.status : 200, body, v.headers);
}

/** Chooses the variant by Accept-Encoding: the highest q that we have, br on a tie. */
function pick(f: FileEntry, ae: string | null, accepts: Map<string, Accepts>): Variant {
  if (ae === null) return f.identity;
  let a = accepts.get(ae);
  if (a === undefined) {
    if (accepts.size >= MAX_ENCODINGS) accepts.clear();
    a = parseAcceptEncoding(ae);
    accepts.set(ae, a);
  }
  const br = f.br !== undefined ? a.br : 0;
  const gzip = f.gzip !== undefined ? a.gzip : 0;
  if (br > 0 && br >= gzip) return f.br!;
  if (gzip > 0) return f.gzip!;
  return f.identity;
}

// --- internal ---

/**
 * Attaches a body and headers to the app's response for X-Sendfile (its other headers kept,
 * X-Sendfile and the old body's framing dropped), or makes a fresh response for the public folder.
 */
function build(
  app: Response | undefined,
  status: number,
  body: Uint8Array | Blob | null,
  ours: Headers,
): Response {
  if (app === undefined) return new Response(body, { status, headers: ours });
  const headers = new Headers(app.headers);
  for (const name of APP_FRAMING) headers.delete(name);
  // The app may know the type better (an upload stored without an extension). Bun's implicit
  // type for a string body is not a choice the app made, so the file's own type wins over it.
  const appType = headers.get("content-type");
  const keepType = appType !== null && appType !== "text/plain;charset=utf-8";
  for (const [name, value] of ours) {
    if (name === "content-type" && keepType) continue;
    if (name === "vary") {
      const vary = headers.get("vary");
      if (vary !== null && !/accept-encoding|\*/i.test(vary))
        headers.set("vary", `${vary}, ${value}`);
      else if (vary === null) headers.set("vary", value);
      continue;
    }
    headers.set(name, value);
  }
  if (status === 304) headers.delete("content-type");
  return new Response(body, { status, headers });
}

/** RFC 9110 §13.1.2: weak comparison against a list, or `*` for any current representation. */
function etagMatches(header: string, etag: string): boolean {
  if (header === etag) return true;
  for (const raw of header.split(",")) {
    const tag = raw.trim();
    if (tag === "*") return true;
    if ((tag.startsWith("W/") ? tag.slice(2) : tag) === etag) return true;
  }
  return false;
}

/** RFC 9110 §13.1.3: not modified when Last-Modified (to the second) ≤ the date given. */
function isNotModifiedSince(header: string | null, v: Variant): boolean {
  if (header === null) return false;
  if (header === v.lastModified) return true;
  const t = Date.parse(header);
  return !Number.isNaN(t) && v.lastModifiedS * 1000 <= t;
}

/** RFC 9110 §13.1.5: a strong ETag must match exactly, a date must equal Last-Modified. */
function ifRangeHolds(header: string | null, id: Variant): boolean {
  if (header === null) return true;
  if (header.startsWith('"')) return header === id.etag;
  if (header.startsWith("W/")) return false; // weak tags never validate a range
  const t = Date.parse(header);
  return !Number.isNaN(t) && t === id.lastModifiedS * 1000;
}

/**
 * One `bytes=a-b`, `a-` or `-n` range, clamped to the file (RFC 9110 §14.1.2).
 * Returns null when unsatisfiable (416) and undefined to ignore the header (200 with the whole
 * file). Several ranges are ignored on purpose: RFC 9110 §14.2 lets a server ignore Range, real
 * clients (browsers, media players, download resumers) ask for one, and multipart/byteranges
 * would be a slow path that mostly serves range-amplification attacks.
 */
function parseRange(header: string, size: number): [number, number] | null | undefined {
  const m = /^bytes=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)[ \t]*$/i.exec(header);
  if (m === null) return undefined;
  const first = m[1]!;
  const last = m[2]!;
  if (first === "") {
    if (last === "") return undefined;
    const n = Number(last);
    if (n === 0 || size === 0) return null;
    return [Math.max(0, size - n), size - 1];
  }
  const start = Number(first);
  const end = last === "" ? Infinity : Number(last);
  if (end < start) return undefined; // invalid range-spec: ignore the header
  if (start >= size) return null;
  return [start, Math.min(end, size - 1)];
}

/** q-values for br and gzip (x-gzip is its alias, RFC 9110 §8.4.1.3); `*` covers the unnamed. */
function parseAcceptEncoding(header: string): Accepts {
  let br = -1;
  let gzip = -1;
  let star = -1;
  for (const part of header.split(",")) {
    const semi = part.indexOf(";");
    const name = (semi === -1 ? part : part.slice(0, semi)).trim().toLowerCase();
    let q = 1;
    if (semi !== -1) {
      const m = /(?:^|;)\s*q\s*=\s*([0-9.]+)/i.exec(part.slice(semi));
      if (m !== null) q = Number(m[1]);
      if (Number.isNaN(q)) q = 0; // a malformed weight is not a yes
    }
    if (name === "br") br = q;
    else if (name === "gzip" || name === "x-gzip") gzip = q;
    else if (name === "*") star = q;
  }
  return { br: br >= 0 ? br : Math.max(star, 0), gzip: gzip >= 0 ? gzip : Math.max(star, 0) };
}
