// Static files and X-Sendfile (SPEC §6). `serve` runs before the app on every request, so a hit
// is one Map lookup plus a Response built from prebuilt parts: files up to `maxCachedFile` are
// answered from memory (Bun.file costs ~3× as much per request for a 1 KB file), larger ones
// through Bun.file so Bun uses sendfile(2). Misses are cached too, so random URLs stay cheap.
// The disk is looked at again at most once a second per path (synchronous fs calls, misses only).
import { readFileSync, realpathSync, statSync, type Stats } from "node:fs";
import { resolve } from "node:path";
import { IodineError } from "../errors.ts";
import { log, startClock } from "../log.ts";
import { badRequest, notFound } from "./responses.ts";
import { reply, type Accepts, type FileEntry, type Variant } from "./static-reply.ts";

/** Options for {@link StaticFiles}. */
export interface StaticOptions {
  /** the public folder (absolute or relative to cwd) */
  root: string;
  /** files up to this size are kept in memory. @default 64 KiB */
  maxCachedFile?: number;
  /** total bytes of file contents kept in memory across entries. @default 64 MiB */
  maxCacheBytes?: number;
}

const REVALIDATE_MS = 1000;
// Bounds on the number of entries, so that requests for random paths cannot grow memory.
const MAX_PATHS = 10_000;
const MAX_FILES = 10_000;

// --- types ---

/** What a request path names: a file, nothing (the app answers), or a symlink out of root. */
type Target = FileEntry | "missing" | "outside";

type PathEntry = { target: Target; checkedAt: number };

// --- public ---

/**
 * The public folder (`--www`) and the X-Sendfile resolver.
 * @example
 * const files = new StaticFiles({ root: "public" });
 * Bun.serve({ fetch: (req) => files.serve(req, req.method, new URL(req.url).pathname) ?? app(req) });
 */
export class StaticFiles {
  #root: string;
  /** root with exactly one trailing slash: what every real path served must start with */
  #prefix: string;
  #maxCachedFile: number;
  #maxCacheBytes: number;
  #cacheBytes = 0;
  /** raw request path → what it names, hits and misses alike (one lookup per request) */
  #paths = new Map<string, PathEntry>();
  /** real path → contents and prebuilt headers; shared by every spelling of the same file */
  #files = new Map<string, FileEntry>();
  /** Accept-Encoding value → parsed q-values: clients send a handful of distinct strings */
  #accepts = new Map<string, Accepts>();

  constructor(opts: StaticOptions) {
    const maxCachedFile = opts.maxCachedFile ?? 64 * 1024;
    const maxCacheBytes = opts.maxCacheBytes ?? 64 * 1024 * 1024;
    checkSize("maxCachedFile", maxCachedFile);
    checkSize("maxCacheBytes", maxCacheBytes);
    let root: string;
    try {
      root = realpathSync(resolve(opts.root));
    } catch (cause) {
      throw new IodineError(
        "ESTATIC_ROOT",
        `static: the public folder "${opts.root}" does not exist`,
        { cause },
      );
    }
    if (!statSync(root).isDirectory()) {
      throw new IodineError(
        "ESTATIC_ROOT",
        `static: the public folder "${opts.root}" is not a directory`,
      );
    }
    this.#root = root === "/" ? "" : root;
    this.#prefix = this.#root + "/";
    this.#maxCachedFile = maxCachedFile;
    this.#maxCacheBytes = maxCacheBytes;
    startClock();
  }

  /**
   * Answers a GET or HEAD whose path names a file (or a folder with an index.html) under root.
   * `pathname` is the raw path of the request target: percent-encoded, without the query.
   * Returns a 400 for a malicious path, a 404 for a symlink out of root, and undefined when the
   * app should answer (another method, no such file, or a dotfile).
   */
  serve(req: Request, method: string, pathname: string): Response | undefined {
    if (method !== "GET" && method !== "HEAD") return undefined;
    const now = performance.now(); // monotonic: a wall-clock step back must not freeze revalidation
    let entry = this.#paths.get(pathname);
    const t = entry?.target;
    if (
      entry === undefined ||
      now - entry.checkedAt >= REVALIDATE_MS ||
      (typeof t === "object" && t.evicted)
    ) {
      const target = this.#lookPublic(pathname, now);
      // Refusals are not cached: they are rare in honest traffic, and each one is logged.
      if (target === "bad") return badRequest();
      if (entry === undefined) {
        if (this.#paths.size >= MAX_PATHS) this.#paths.clear(); // contents survive in #files
        this.#paths.set(pathname, (entry = { target, checkedAt: now }));
      } else {
        entry.target = target;
        entry.checkedAt = now;
      }
    }
    const target = entry.target;
    if (target === "missing") return undefined;
    if (target === "outside") return notFound();
    return reply(req, method === "HEAD", target, undefined, this.#accepts);
  }

  /**
   * X-Sendfile: returns `res` with the file at `absPath` as its body, under the same encoding,
   * conditional and range rules as the public folder. The app's status and other headers are
   * kept and X-Sendfile is dropped; a missing file gives a 404 and an error line. The path is
   * the app's choice, so it is not confined to root (a relative one is taken from the cwd).
   */
  sendfile(req: Request, res: Response, absPath: string): Response | Promise<Response> {
    if (res.body !== null && !res.bodyUsed) res.body.cancel().catch(() => {});
    const path = resolve(absPath);
    const f = this.#lookSendfile(path, performance.now());
    if (f === undefined) {
      log.error(`X-Sendfile: no such file ${JSON.stringify(absPath)}`);
      return notFound();
    }
    return reply(req, req.method === "HEAD", f, res, this.#accepts);
  }

  // --- resolving paths ---

  /** Decodes and checks a request path, then finds what it names under root. */
  #lookPublic(pathname: string, now: number): Target | "bad" {
    let rel = pathname;
    if (pathname.indexOf("%") !== -1) {
      // An encoded slash or backslash would turn one segment into several after decoding.
      if (/%(?:2f|5c)/i.test(pathname)) return refuse(pathname, "encoded slash");
      try {
        rel = decodeURIComponent(pathname);
      } catch {
        return refuse(pathname, "bad percent-encoding");
      }
    }
    if (rel.charCodeAt(0) !== 47) return refuse(pathname, "not an absolute path");
    if (rel.indexOf("\\") !== -1) return refuse(pathname, "backslash");
    if (rel.indexOf("\0") !== -1) return refuse(pathname, "NUL");
    const segments = rel.split("/");
    for (let i = 1; i < segments.length; i++) {
      const s = segments[i]!;
      if (s === "..") return refuse(pathname, "dot-dot segment");
      // Dotfiles (.env, .git/, .htpasswd) are left to the app, as serve-static's default does:
      // a deploy that copies them into the public folder should not publish them. The one
      // exception is /.well-known/ (RFC 8615), which exists to be served.
      if (s.charCodeAt(0) === 46 && s !== "." && !(i === 1 && s === ".well-known"))
        return "missing";
    }
    let full = this.#root + rel;
    let st = statFile(full);
    if (st?.isDirectory()) {
      // iodine serves the index for both /dir and /dir/ and does not redirect.
      full += full.endsWith("/") ? "index.html" : "/index.html";
      st = statFile(full);
    }
    if (st === undefined || !st.isFile()) return "missing";
    const real = realPath(full);
    if (real === undefined) return "missing";
    if (!real.startsWith(this.#prefix)) {
      log.warn(
        `static: ${JSON.stringify(pathname)} leads outside the public folder (to ${JSON.stringify(real)})`,
      );
      return "outside";
    }
    return this.#load(real, st, true, now);
  }

  /**
   * Finds the file an X-Sendfile names. The app may have just written it, so the file itself is
   * stat'ed on every call and never cached as missing; its siblings are re-checked once a second.
   */
  #lookSendfile(path: string, now: number): FileEntry | undefined {
    const st = statFile(path);
    if (st === undefined || !st.isFile()) return undefined;
    const f = this.#files.get(path);
    if (f !== undefined && now - f.checkedAt < REVALIDATE_MS && isSame(f.identity, st)) return f;
    return this.#load(path, st, false, now);
  }

  // --- the cache ---

  /** Returns the cached entry for a file if nothing changed on disk, else reads it again. */
  #load(path: string, st: Stats, confine: boolean, now: number): FileEntry {
    const br = this.#sibling(path + ".br", confine);
    const gz = this.#sibling(path + ".gz", confine);
    const old = this.#files.get(path);
    if (
      old !== undefined &&
      isSame(old.identity, st) &&
      isSame(old.br, br?.st) &&
      isSame(old.gzip, gz?.st)
    ) {
      old.checkedAt = now;
      return old;
    }
    if (old !== undefined) this.#evict(path, old);

    const type = Bun.file(path).type; // Bun's MIME table; text types already carry charset=utf-8
    const vary = br !== undefined || gz !== undefined;
    const identity = this.#variant(path, st, type, "", vary);
    const brV = br && this.#variant(br.path, br.st, type, "br", vary);
    const gzV = gz && this.#variant(gz.path, gz.st, type, "gzip", vary);
    const memory = [identity, brV, gzV].reduce((n, v) => n + (v?.bytes?.byteLength ?? 0), 0);
    const f: FileEntry = { identity, br: brV, gzip: gzV, memory, evicted: false, checkedAt: now };
    this.#files.set(path, f);
    this.#cacheBytes += f.memory;
    // Evict the oldest loads first; the entry just loaded stays even if it alone is over budget.
    for (const [key, victim] of this.#files) {
      if (this.#cacheBytes <= this.#maxCacheBytes && this.#files.size <= MAX_FILES) break;
      if (victim === f) break;
      this.#evict(key, victim);
    }
    return f;
  }

  #evict(key: string, f: FileEntry): void {
    this.#files.delete(key);
    this.#cacheBytes -= f.memory;
    f.evicted = true;
    // Path entries may still point at it until they next look: let the bytes go now.
    for (const v of [f.identity, f.br, f.gzip]) if (v !== undefined) v.bytes = undefined;
  }

  /** A precompressed sibling, if it is a regular file (and, for the public folder, inside it). */
  #sibling(path: string, confine: boolean): { path: string; st: Stats } | undefined {
    const st = statFile(path);
    if (st === undefined || !st.isFile()) return undefined;
    if (!confine) return { path, st };
    const real = realPath(path);
    return real !== undefined && real.startsWith(this.#prefix) ? { path: real, st } : undefined;
  }

  #variant(
    path: string,
    st: Stats,
    type: string,
    encoding: "" | "br" | "gzip",
    vary: boolean,
  ): Variant {
    let bytes: Uint8Array | undefined;
    if (st.size <= this.#maxCachedFile) {
      try {
        bytes = readFileSync(path);
      } catch {
        bytes = undefined; // unreadable now: Bun.file will report it per request
      }
    }
    const size = bytes?.byteLength ?? st.size;
    // Strong validator from mtime and size, as nginx builds it, plus the coding: each
    // representation needs its own ETag (RFC 9110 §8.8.3).
    const tag = Math.trunc(st.mtimeMs).toString(16) + "-" + size.toString(16);
    const etag = encoding === "" ? `"${tag}"` : `"${tag}-${encoding === "br" ? "br" : "gz"}"`;
    const lastModified = new Date(st.mtimeMs).toUTCString();
    const headers = new Headers({
      "content-type": type,
      "content-length": String(size),
      etag,
      "last-modified": lastModified,
    });
    // Only the identity variant takes ranges (they are served from it). Not advertising them on a
    // compressed body keeps a naive resumer from splicing identity bytes onto a br download.
    if (encoding === "") headers.set("accept-ranges", "bytes");
    else headers.set("content-encoding", encoding);
    if (vary) headers.set("vary", "Accept-Encoding");
    const notModified = new Headers({ etag, "last-modified": lastModified });
    if (vary) notModified.set("vary", "Accept-Encoding");
    return {
      path,
      size,
      mtimeMs: st.mtimeMs,
      ino: st.ino,
      etag,
      lastModified,
      lastModifiedS: Math.floor(st.mtimeMs / 1000),
      bytes,
      headers,
      notModified,
    };
  }
}

// --- internal ---

function checkSize(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(
      `StaticFiles: "${name}" must be a non-negative integer, got ${String(value)}`,
    );
  }
}

function refuse(pathname: string, why: string): "bad" {
  log.warn(`static: refused ${JSON.stringify(pathname)} (${why})`);
  return "bad";
}

/** stat that answers undefined for anything that is not there (ENOENT, ENOTDIR, EACCES, ELOOP…). */
function statFile(path: string): Stats | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

function realPath(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    return undefined;
  }
}

function isSame(v: Variant | undefined, st: Stats | undefined): boolean {
  if (v === undefined || st === undefined) return v === st;
  return v.mtimeMs === st.mtimeMs && v.size === st.size && v.ino === st.ino;
}
