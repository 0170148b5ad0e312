// One end of a bus connection (bus.ts has the frames): what the hub holds per worker (hub.ts) and
// a worker holds to the hub (member.ts).
import type { Socket } from "bun";
import { FrameReader, type FrameSink } from "./bus.ts";
import { FrameWriter } from "./bus-writer.ts";

/** Bytes a link may hold unsent (its peer not reading) before it is closed and logged. */
export const LINK_LIMIT = 256 * 1024 * 1024;

/** Bytes this process's links took in and wrote out (the master's show the whole bus: SPEC §7a). */
export const busBytes = { in: 0, out: 0 };

/**
 * One end of a bus connection: frames out through a FrameWriter flushed once per turn of the event
 * loop (setImmediate: every publish of that turn in one write), frames in through a FrameReader.
 * While the socket is away (connecting, reconnecting) frames wait in the writer.
 */
export class Link {
  readonly out = new FrameWriter();
  reader: FrameReader;
  #sink: FrameSink;
  #socket: Socket<unknown> | undefined;
  /** bytes the socket did not take yet */
  #unsent: Uint8Array | undefined;
  #flushQueued = false;
  #onOverflow: (bytes: number) => void;

  constructor(sink: FrameSink, onOverflow: (bytes: number) => void) {
    this.#sink = sink;
    this.reader = new FrameReader(sink);
    this.#onOverflow = onOverflow;
  }

  get socket(): Socket<unknown> | undefined {
    return this.#socket;
  }

  /** Bytes from the socket. */
  receive(data: Uint8Array): void {
    busBytes.in += data.length;
    this.reader.push(data);
  }

  /** Binds the link to a (new) socket with a fresh reader; what was waiting is sent. */
  attach(socket: Socket<unknown>): void {
    this.#socket = socket;
    this.reader = new FrameReader(this.#sink);
    this.flushSoon();
  }

  detach(): void {
    this.#socket = undefined;
    this.#unsent = undefined;
  }

  /** Call after writing to `out`. */
  flushSoon(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    setImmediate(this.#flush);
  }

  #flush = (): void => {
    this.#flushQueued = false;
    const socket = this.#socket;
    if (socket === undefined) {
      // No socket yet (or between reconnections): frames wait, within the same bound.
      if (this.out.length > LINK_LIMIT) {
        this.#onOverflow(this.out.length);
        this.out.take();
      }
      return;
    }
    if (this.#unsent !== undefined) {
      // Wait for drain; meanwhile frames gather in the writer (bounded below).
      if (this.#unsent.length + this.out.length > LINK_LIMIT)
        this.#onOverflow(this.#unsent.length + this.out.length);
      return;
    }
    if (this.out.length === 0) return;
    // No copy of the rest: the writer leaves this buffer alone until the take after next, and
    // there is no next take while something is unsent.
    const bytes = this.out.take();
    const n = socket.write(bytes);
    if (n > 0) busBytes.out += n;
    if (n < bytes.length) this.#unsent = bytes.subarray(Math.max(n, 0));
  };

  /** The socket's drain event: send what it could not take, then what gathered since. */
  drain(): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    while (this.#unsent !== undefined) {
      const n = socket.write(this.#unsent);
      if (n > 0) busBytes.out += n;
      if (n < this.#unsent.length) {
        this.#unsent = this.#unsent.subarray(Math.max(n, 0));
        return;
      }
      this.#unsent = undefined;
    }
    if (this.out.length > 0) this.flushSoon();
  }
}
