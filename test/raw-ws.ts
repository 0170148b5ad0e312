// A WebSocket client on a node:net socket, for tests that must see the wire: the handshake's
// response head, each frame's RSV1 bit (permessage-deflate), and a reader that can stop reading.
import { expect } from "bun:test";
import { connect, type Socket } from "node:net";
import { nap, within } from "./harness.ts";

export interface Frame {
  opcode: number;
  /** RSV1: the payload is compressed (permessage-deflate, RFC 7692 §6) */
  rsv1: boolean;
  payload: Buffer;
}

/** A WebSocket client on a node:net socket, so the test decides when (and whether) it reads. */
export class RawWs {
  socket: Socket;
  ended: Promise<void>;
  /** the server's response head (status line and headers) */
  head = "";
  #buf = Buffer.alloc(0);
  #chunks: Buffer[] = [];
  #wake: (() => void) | undefined;
  #done = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    const ended = Promise.withResolvers<void>();
    this.ended = ended.promise;
    socket.on("data", (d: Buffer) => {
      this.#chunks.push(d);
      this.#wake?.();
    });
    const end = () => {
      this.#done = true;
      ended.resolve();
      this.#wake?.();
    };
    socket.on("end", end);
    socket.on("close", end);
    socket.on("error", end);
  }

  /** Opens a WebSocket on `path`; `headers` are extra request lines (`Sec-WebSocket-Extensions: …`). */
  static async open(port: number, path: string, headers: Record<string, string> = {}): Promise<RawWs> {
    const socket = connect(port, "127.0.0.1");
    const raw = new RawWs(socket);
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`,
    );
    const head = await raw.#read((b) => {
      const end = b.indexOf("\r\n\r\n");
      return end === -1 ? undefined : end + 4;
    }, 5000);
    raw.head = head.toString("latin1");
    expect(raw.head).toStartWith("HTTP/1.1 101");
    return raw;
  }

  /** Waits until `size(buffer)` says how many bytes make the next item, and takes them. */
  async #read(size: (b: Buffer) => number | undefined, ms: number): Promise<Buffer> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.#chunks.length > 0) {
        this.#buf = Buffer.concat([this.#buf, ...this.#chunks]);
        this.#chunks = [];
      }
      const n = size(this.#buf);
      if (n !== undefined) {
        const out = this.#buf.subarray(0, n);
        this.#buf = this.#buf.subarray(n);
        return out;
      }
      if (this.#done) throw new Error(`connection ended with ${this.#buf.length} unparsed bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timed out reading the raw socket");
      const pause = nap(left);
      this.#wake = pause.wake;
      await pause.done;
      this.#wake = undefined;
    }
  }

  /** One masked text frame (clients must mask, RFC 6455 §5.3). */
  sendText(text: string): void {
    this.sendFrame(1, Buffer.from(text));
  }

  /** One masked frame, FIN set; `rsv1` marks a compressed payload. */
  sendFrame(opcode: number, payload: Uint8Array, rsv1 = false): void {
    const len = payload.length;
    const head = Buffer.alloc(len < 126 ? 2 : len < 65536 ? 4 : 10);
    head[0] = 0x80 | (rsv1 ? 0x40 : 0) | opcode;
    if (len < 126) head[1] = 0x80 | len;
    else if (len < 65536) {
      head[1] = 0x80 | 126;
      head.writeUInt16BE(len, 2);
    } else {
      head[1] = 0x80 | 127;
      head.writeBigUInt64BE(BigInt(len), 2);
    }
    const mask = Buffer.from([1, 2, 3, 4]);
    this.socket.write(Buffer.concat([head, mask, Buffer.from(payload).map((b, i) => b ^ mask[i % 4]!)]));
  }

  async frame(ms = 5000): Promise<Frame> {
    const raw = await this.#read((b) => frameSize(b), ms);
    return parseFrame(raw);
  }

  /** Reads to the end of the stream: every complete frame, and how many bytes of a cut one were left. */
  async rest(ms: number): Promise<{ frames: Frame[]; leftover: number }> {
    await within(this.ended, ms, "the server to end the slow connection");
    const all = Buffer.concat([this.#buf, ...this.#chunks]);
    this.#chunks = [];
    const frames: Frame[] = [];
    let off = 0;
    for (;;) {
      const n = frameSize(all.subarray(off));
      if (n === undefined) break;
      frames.push(parseFrame(all.subarray(off, off + n)));
      off += n;
    }
    return { frames, leftover: all.length - off };
  }

  [Symbol.dispose]() {
    this.socket.destroy();
  }
}

function frameSize(b: Buffer): number | undefined {
  if (b.length < 2) return undefined;
  let len = b[1]! & 127;
  let head = 2;
  if (len === 126) {
    if (b.length < 4) return undefined;
    len = b.readUInt16BE(2);
    head = 4;
  } else if (len === 127) {
    if (b.length < 10) return undefined;
    len = Number(b.readBigUInt64BE(2));
    head = 10;
  }
  return b.length >= head + len ? head + len : undefined;
}

function parseFrame(b: Buffer): Frame {
  const len = b[1]! & 127;
  const head = len === 126 ? 4 : len === 127 ? 10 : 2;
  return { opcode: b[0]! & 15, rsv1: (b[0]! & 0x40) !== 0, payload: b.subarray(head) };
}
