// Redis URLs (SPEC §5): checked before anything connects, so a URL ioredis would choke on (a port
// that is not a number), or one that means something pub/sub cannot honour (a database number), is
// one message at start, not an ioredis stack or a crash after "connected".

/**
 * What is wrong with a `redis://` or `rediss://` URL, as the end of a sentence that begins with
 * the URL's name (`--redis …`), or undefined when it will do. The scheme is the caller's check.
 * `?sharded` (the CLI's Redis Cluster switch) is allowed.
 */
export function redisUrlProblem(url: string): string | undefined {
  const shown = JSON.stringify(redactUrl(url));
  const m = /^rediss?:\/\/([^/?#]*)([^?#]*)(\?[^#]*)?/i.exec(url);
  if (m === null) return `must be a redis:// or rediss:// URL, got ${shown}`;
  const authority = m[1]!;
  const hostPort = authority.slice(authority.lastIndexOf("@") + 1);
  const bracketed = /^\[[^\]]*\]/.exec(hostPort)?.[0];
  const host = bracketed ?? hostPort.split(":")[0]!;
  const rest = hostPort.slice(host.length);
  if (host === "") return `needs a host (redis://host:6379), got ${shown}`;
  if (rest !== "" && !rest.startsWith(":")) return `is not a valid URL, got ${shown}`;
  const port = rest.slice(1);
  if (rest !== "" && (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535)) {
    return `needs a port 1–65535, got "${port}" in ${shown}`;
  }
  const path = m[2]!;
  const db = new URLSearchParams(m[3] ?? "").get("db");
  if ((path !== "" && path !== "/" && path !== "/0") || (db !== null && db !== "0")) {
    const what = path !== "" && path !== "/" && path !== "/0" ? path : `db=${db}`;
    // ioredis would SELECT it (and fail on a name); PUBLISH/SUBSCRIBE ignore it either way.
    return `names a database ("${what}"), which Redis pub/sub ignores (a channel is the same in every database): leave it out of ${shown}`;
  }
  try {
    new URL(url);
  } catch {
    return `is not a valid URL, got ${shown}`;
  }
  return undefined;
}

/** The URL with its password (or lone user name) replaced by `***`, for log lines. */
export function redactUrl(url: string): string {
  return url.replace(
    /\/\/([^@/]*)@/,
    (_, auth: string) => `//${auth.includes(":") ? auth.replace(/:.*/, ":***") : "***"}@`,
  );
}
