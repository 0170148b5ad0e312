// What the CLI makes from its settings around the app: TLS (a self-signed certificate made once per
// cluster), the Redis engine of `-r`, the public folder check and the pid file.
import { CliError } from "../errors.ts";
import { nodeFs } from "../lazy-node.ts";
import type { PubSubEngine, TLSOptions } from "../types.ts";
import type { Settings } from "./settings.ts";

/** `--tls-cert`/`--tls-key`, else `--tls`: a self-signed certificate, made by the master and handed to its workers. */
export async function tlsFor(s: Settings, inWorker: boolean): Promise<TLSOptions | undefined> {
  if (!s.tls && s.tlsCert === undefined) return undefined;
  // Loaded only for TLS: a plain start does not pay for it.
  const { selfSigned, tlsFromFiles } = await import("../tls.ts");
  if (s.tlsCert !== undefined && s.tlsKey !== undefined)
    return tlsFromFiles(s.tlsCert, s.tlsKey, s.tlsPass);
  const cert = process.env.IODINE_TLS_CERT_PEM;
  const key = process.env.IODINE_TLS_KEY_PEM;
  if (s.tls && inWorker && cert && key) return { cert, key };
  if (s.tls) return selfSigned();
  return undefined;
}

/** The environment that hands a self-signed certificate, made once, to every worker. */
export function tlsForWorkers(s: Settings, tls: TLSOptions | undefined): Record<string, string> {
  return tls && s.tlsCert === undefined
    ? { IODINE_TLS_CERT_PEM: String(tls.cert), IODINE_TLS_KEY_PEM: String(tls.key) }
    : {};
}

/** `-r URL`: the Redis engine, or with `?sharded` in the URL the Redis Cluster (sharded pub/sub) engine. */
export async function redisEngine(url: string, ping: number): Promise<PubSubEngine> {
  // Loaded only with -r: a start without Redis does not pay for the engines.
  const sharded = /[?&]sharded(=(1|true|yes))?(?=&|$)/;
  if (!sharded.test(url))
    return new (await import("../pubsub/redis.ts")).RedisEngine(url, { ping });
  const { ShardedRedisEngine } = await import("../pubsub/redis-sharded.ts");
  const plain = url
    .replace(sharded, (m) => (m.startsWith("?") ? "?" : ""))
    .replace(/\?&/, "?")
    .replace(/\?$/, "");
  return new ShardedRedisEngine(plain, { ping });
}

/** `--www DIR` names a folder that is there. */
export function checkPublicFolder(www: string | undefined): void {
  if (www !== undefined && !isDirectory(www)) throw new CliError(`public folder not found: ${www}`);
}

function isDirectory(path: string): boolean {
  try {
    return nodeFs().statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** `--pid FILE`: this process's pid, removed on exit. */
export function writePid(file: string | undefined): void {
  if (file === undefined) return;
  try {
    nodeFs().writeFileSync(file, `${process.pid}\n`);
  } catch (err) {
    throw new CliError(
      `cannot write the pid file "${file}": ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
  process.on("exit", () => {
    const fs = nodeFs();
    if (fs.existsSync(file)) fs.unlinkSync(file);
  });
}
