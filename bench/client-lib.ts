// Helpers for the load-client processes (bench/pubsub-client.ts, bench/cluster-client.ts): raw TCP
// connections that speak just enough HTTP and WebSocket, and the JSON-lines command loop on stdin.
// Raw sockets, because a WebSocket object runs one JS event per message, and on a 2-core machine
// the client, not the server, would then set the pace.
import type { Socket, SocketHandler } from "bun";

export const HOST = "127.0.0.1";

// --- connections ---

/** An empty masked pong (any bytes reset the server's idle timer). */
export const PONG = new Uint8Array([0x8a, 0x80, 0, 0, 0, 0]);

/**
 * The request that opens a WebSocket on `path` (a fixed key: the answer's accept value goes unchecked).
 * `deflate`: offer permessage-deflate (RFC 7692) as browsers do; the frames that then arrive
 * compressed (RSV1) are counted, never inflated.
 */
export function upgradeRequest(path: string, deflate = false): string {
  return (
    `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
    (deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "") +
    "\r\n"
  );
}

/** What every raw connection keeps: its socket, the response head until it is whole, a frame header split across chunks. */
export class RawPeer<P> {
  socket: Socket<P> | undefined;
  /** before the response head (101 / 200) has arrived */
  head = "";
  ready = false;
  onReady: ((ok: boolean) => void) | undefined;
  hdr = new Uint8Array(10);
  hlen = 0;
}

/**
 * Takes the response head off the first chunks of a peer not yet `ready`: the offset in `buf` where
 * the stream proper starts, or -1 while the head is not whole and when its status line does not start
 * with `status` (the socket is then ended). Tells `onReady` either way.
 */
export function afterHead<P>(p: RawPeer<P>, buf: Buffer, status: string): number {
  p.head += buf.toString("latin1");
  const end = p.head.indexOf("\r\n\r\n");
  if (end < 0) return -1;
  const ok = p.head.startsWith(status);
  const from = buf.length - (p.head.length - end - 4);
  p.head = "";
  p.ready = true;
  p.onReady?.(ok);
  if (!ok) {
    p.socket?.end();
    return -1;
  }
  return from;
}

/**
 * One more byte of a frame header that did not come whole in one chunk: the payload length once the
 * header is complete (its opcode is then `hdr[0] & 0x0f`), -1 until then. Server frames are never masked.
 */
export function headerByte<P>(p: RawPeer<P>, byte: number): number {
  const h = p.hdr;
  h[p.hlen++] = byte;
  if (p.hlen < 2) return -1;
  const l7 = h[1]! & 0x7f;
  const need = l7 < 126 ? 2 : l7 === 126 ? 4 : 10;
  if (p.hlen < need) return -1;
  let l = l7;
  if (l7 === 126) l = (h[2]! << 8) | h[3]!;
  else if (l7 === 127) l = Number(new DataView(h.buffer).getBigUint64(2));
  p.hlen = 0;
  return l;
}

/** The handlers for a connection that failed before it was ready: an error, or a refused connect. */
export function failHandlers<P extends RawPeer<P>>() {
  return {
    error(socket: Socket<P>) {
      socket.data.onReady?.(false);
    },
    connectError(socket: Socket<P>) {
      socket.data.onReady?.(false);
    },
  };
}

/** Connects `p` to HOST:port; true once its response head is good, false on an error, a bad status or no head within `timeoutMs`. */
export async function connectPeer<P extends RawPeer<P>>(
  p: P,
  port: number,
  handlers: SocketHandler<P>,
  timeoutMs: number,
): Promise<boolean> {
  const ready = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    p.onReady = (ok) => {
      clearTimeout(timer);
      p.onReady = undefined;
      resolve(ok);
    };
  });
  try {
    await Bun.connect({ hostname: HOST, port, data: p, socket: handlers });
  } catch {
    return false;
  }
  if (!(await ready)) {
    p.socket?.terminate();
    return false;
  }
  return true;
}

// --- commands ---

/**
 * Answers each JSON line on stdin, one command after another, with a JSON line on stdout: `run`'s
 * result, or `{error}` (the error's `detail`), with the command's `seq`. Resolves when stdin closes
 * (the parent is done or gone), with `finished`, which settles once the commands still queued have run.
 */
export async function serveCommands<C extends { seq: number }>(
  run: (cmd: C) => Promise<object>,
  detail: "message" | "stack",
): Promise<{ finished: Promise<void> }> {
  const handle = async (line: string) => {
    const cmd = JSON.parse(line) as C;
    let out: object;
    try {
      out = await run(cmd);
    } catch (err) {
      out = { error: String(err instanceof Error ? err[detail] : err) };
    }
    process.stdout.write(JSON.stringify({ seq: cmd.seq, ...out }) + "\n");
  };
  let queue = Promise.resolve();
  let rest = "";
  const decoder = new TextDecoder();
  for await (const chunk of Bun.stdin.stream()) {
    rest += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (line.trim()) queue = queue.then(() => handle(line));
    }
  }
  return { finished: queue };
}
