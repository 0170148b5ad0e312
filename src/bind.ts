// Binding a listener (SPEC §2): an address this host cannot bind — not an address of this host,
// a hostname that does not resolve, a port in use, a socket folder that does not exist — is one
// `ListenError` naming the address and the reason, instead of Bun's bare errno and stack.
import { ListenError } from "./errors.ts";
import { nodePath } from "./lazy-node.ts";

/** Where a listener binds, as the start-up line names it. */
export interface Address {
  /** `http://127.0.0.1:3000`, `tcp://[::1]:4000`, `unix:/tmp/x.sock` */
  where: string;
  hostname: string | undefined;
  port: number;
  unix: string | undefined;
}

/** Runs `bind` (Bun.serve, Bun.listen); a failure becomes a `ListenError` saying why. */
export async function bindOrExplain<T>(a: Address, bind: () => T): Promise<T> {
  try {
    return bind();
  } catch (err) {
    throw new ListenError(`cannot listen on ${a.where}: ${await reason(a, err)}`, { cause: err });
  }
}

/**
 * The first worker of a cluster binds with SO_REUSEPORT, which Linux lets it share with any other
 * listener of this user that set it too (another iodine cluster, a Bun.serve with reusePort): the two
 * would split the connections without a word. A plain bind first finds the port taken.
 */
export async function probeFreePort(a: Address): Promise<void> {
  if (a.unix !== undefined || a.port === 0) return;
  const probe = await bindOrExplain(a, () =>
    Bun.listen({ hostname: a.hostname ?? "0.0.0.0", port: a.port, socket: { data() {} } }),
  );
  probe.stop(true);
}

async function reason(a: Address, err: unknown): Promise<string> {
  const e = err as NodeJS.ErrnoException;
  const code = typeof e?.code === "string" ? e.code : undefined;
  if (a.unix !== undefined) {
    if (code === "ENOENT")
      return `the folder ${nodePath().dirname(a.unix)} does not exist (ENOENT)`;
    if (code === "EACCES") return `permission denied (EACCES)`;
  } else {
    if (code === "EADDRINUSE") return `port ${a.port} is already in use (EADDRINUSE)`;
    if (code === "EADDRNOTAVAIL")
      return `${a.hostname ?? "0.0.0.0"} is not an address of this host (EADDRNOTAVAIL)`;
    if (code === "EACCES") {
      return a.port < 1024
        ? `permission denied (EACCES): ports below 1024 need root or CAP_NET_BIND_SERVICE`
        : `permission denied (EACCES)`;
    }
    // Bun says EINVAL (Bun.serve) or nothing (Bun.listen) for a name getaddrinfo cannot resolve.
    if (a.hostname !== undefined) {
      const unresolved = await Bun.dns.lookup(a.hostname).then(
        () => undefined,
        (lookup: NodeJS.ErrnoException) => String(lookup.code ?? "no address").replace(/^DNS_/, ""),
      );
      if (unresolved !== undefined)
        return `"${a.hostname}" is neither an IP address nor a hostname that resolves (${unresolved})`;
    }
  }
  const message = String(e?.message ?? err).split("\n")[0] ?? "";
  return code !== undefined && !message.includes(code) ? `${message} (${code})` : message;
}
