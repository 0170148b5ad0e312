// A raw TCP/Unix test client on Bun.connect: collects every byte and waits for text, a byte count
// or the close. Shared by the raw-connection and example tests.
import type { Socket } from "bun";
import { Waiters } from "./harness.ts";

export interface RawClient extends AsyncDisposable {
  socket: Socket<undefined>;
  /** everything received so far */
  bytes(): Uint8Array;
  text(): string;
  /** resolves once the received text matches (rejects after ms, with what came) */
  waitFor(pattern: RegExp | string, ms?: number): Promise<string>;
  /** resolves once at least n bytes arrived */
  waitForBytes(n: number, ms?: number): Promise<void>;
  /** resolves when the server closed the connection */
  closed: Promise<void>;
  /** resolves once the server closed the connection (rejects after ms) */
  waitForClose(ms?: number): Promise<void>;
  isClosed(): boolean;
  write(data: string | Uint8Array): void;
}

export async function rawClient(
  where: { port: number; hostname?: string } | { unix: string },
): Promise<RawClient> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  let joined: Uint8Array | undefined;
  const waiters = new Waiters();
  let isClosed = false;
  const closed = Promise.withResolvers<void>();
  const bytes = () => {
    if (joined === undefined || joined.byteLength !== size) {
      joined = new Uint8Array(size);
      let at = 0;
      for (const c of chunks) {
        joined.set(c, at);
        at += c.byteLength;
      }
    }
    return joined;
  };
  // Decoded as it arrives, so waiting for text does not re-decode everything on each chunk.
  const decoder = new TextDecoder();
  let decoded = "";
  const text = () => decoded;
  // Writes wait here when the socket does not take them at once.
  let queue: Uint8Array[] = [];
  const handlers = {
    data(_s: Socket<undefined>, data: Uint8Array) {
      chunks.push(new Uint8Array(data));
      size += data.byteLength;
      decoded += decoder.decode(data, { stream: true });
      waiters.wake();
    },
    drain(s: Socket<undefined>) {
      while (queue.length > 0) {
        const c = queue[0]!;
        const n = s.write(c);
        if (n < c.byteLength) {
          queue[0] = c.subarray(Math.max(n, 0));
          return;
        }
        queue.shift();
      }
    },
    close() {
      isClosed = true;
      closed.resolve();
      waiters.wake();
    },
    error() {},
  };
  const socket =
    "unix" in where
      ? await Bun.connect({ unix: where.unix, socket: handlers })
      : await Bun.connect({
          hostname: where.hostname ?? "127.0.0.1",
          port: where.port,
          socket: handlers,
        });
  const until = (done: () => boolean, what: () => string, ms: number) =>
    waiters.until(() => (done() ? true : undefined), {
      ended: () => isClosed,
      ms,
      fail: (why) =>
        new Error(
          `${why === "ended" ? "closed before" : "timed out waiting for"} ${what()}; got ${JSON.stringify(text().slice(-500))}`,
        ),
    });
  return {
    socket,
    bytes,
    text,
    closed: closed.promise,
    isClosed: () => isClosed,
    async waitFor(pattern, ms = 5000) {
      // Only the tail can newly match a string: search from where the last look ended.
      let from = 0;
      const test = () => {
        if (typeof pattern !== "string") return pattern.test(decoded);
        const hit = decoded.includes(pattern, from);
        from = Math.max(0, decoded.length - pattern.length);
        return hit;
      };
      await until(test, () => String(pattern), ms);
      return text();
    },
    waitForBytes: async (n, ms = 5000) =>
      void (await until(
        () => size >= n,
        () => `${n} bytes (have ${size})`,
        ms,
      )),
    waitForClose: async (ms = 5000) =>
      void (await until(
        () => isClosed,
        () => "the server to close the connection",
        ms,
      )),
    write(data) {
      const b = typeof data === "string" ? new TextEncoder().encode(data) : data;
      if (queue.length > 0) {
        queue.push(b);
        return;
      }
      const n = socket.write(b);
      if (n < b.byteLength) queue.push(b.subarray(Math.max(n, 0)));
    },
    async [Symbol.asyncDispose]() {
      if (!isClosed) socket.end();
      await Promise.race([closed.promise, Bun.sleep(500)]);
    },
  };
}
