// The cluster bus: frames between the master and its workers over a Unix socket (SPEC §5, §8).
// Transport only: it knows frames (here) and links (link.ts), not channels' meaning (that is the
// hub's, hub.ts, and each worker's, member.ts).
//
// A frame is `u32 LE body length | u8 type | body`. Bodies:
//   PUB    u8 flags (bit 0: the message is bytes, else UTF-8 text; bit 1: for this cluster only,
//          not for an external engine such as Redis) | u32 LE channel length | channel UTF-8 |
//          message bytes (to the end of the frame)
//   SUB, UNSUB   u8 kind (0 exact channel, 1 Redis glob pattern) | key UTF-8
//   HELLO  UTF-8 text (who is calling, for logs)
//   ALL    u8 (1: send every publish, an external engine takes them all; 0: only what is wanted)
//   CMD    u32 LE id | UTF-8 JSON array of strings (a worker's `redis.cmd(...)`)
//   REPLY  u32 LE id | u8 ok (1) or error (0) | UTF-8 JSON (the reply, or the error message)
//   SYNC   u32 LE id: answered by a REPLY with that id once every frame before it was handled
// Writes are appended to one buffer per link and sent once per turn of the event loop (link.ts).

export const FRAME_PUB = 1;
export const FRAME_SUB = 2;
export const FRAME_UNSUB = 3;
export const FRAME_HELLO = 4;
export const FRAME_ALL = 5;
export const FRAME_CMD = 6;
export const FRAME_REPLY = 7;
export const FRAME_SYNC = 8;
const LAST_TYPE = FRAME_SYNC;
/** PUB flag bits */
const BYTES = 1;
const CLUSTER_ONLY = 2;

/** The largest frame body; a longer length prefix is a broken link. Messages above it are refused by publish. */
export const MAX_FRAME = 64 * 1024 * 1024;

const HEADER = 5;
const encoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is part of a channel name or a message, not a byte-order mark.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A frame the reader cannot accept: the link that carried it is closed (SPEC §10). */
export class BusError extends Error {
  override name = "BusError";
}

/** What a reader hands over, one call per complete frame. */
export interface FrameSink {
  /**
   * A published message. `frame` is the whole frame (header included), ready to forward byte for
   * byte; `messageOf(frame, at, binary)` decodes the message when this process needs it.
   * `clusterOnly`: not for an external engine (published with `Iodine.PubSub.CLUSTER`).
   */
  onPublish(
    channel: string,
    frame: Uint8Array,
    at: number,
    binary: boolean,
    clusterOnly: boolean,
  ): void;
  /** `pattern` is true for a Redis glob subscription */
  onInterest(subscribe: boolean, key: string, pattern: boolean): void;
  onHello(text: string): void;
  /** the hub takes every publish (an external engine is attached), or no longer */
  onWantAll(want: boolean): void;
  /** a command for the external engine (`args` is the JSON text of an array of strings) */
  onCommand(id: number, args: string): void;
  /** the answer to a command or a sync: its reply as JSON text, or an error message (JSON string) */
  onReply(id: number, ok: boolean, json: string): void;
  /** a barrier: answer it (a REPLY with `id`) once every frame that came before is handled */
  onSync(id: number): void;
}

/**
 * Splits a byte stream into frames. `push` throws a BusError for a frame it cannot accept and
 * never hands over a partial or mis-framed one; after an error the reader must not be used again.
 */
export class FrameReader {
  #sink: FrameSink;
  /** chunks of an incomplete frame carried over (joined once, when the frame is complete) */
  #rest: Uint8Array[] = [];
  #restLength = 0;
  /** the byte count of the incomplete frame, once its header has arrived (else 0) */
  #need = 0;
  // One-entry cache: a stream of messages on the same channel decodes its name once.
  #lastChannelBytes = new Uint8Array(0);
  #lastChannel = "";

  constructor(sink: FrameSink) {
    this.#sink = sink;
  }

  push(chunk: Uint8Array): void {
    let buf = chunk;
    if (this.#restLength > 0) {
      const total = this.#restLength + chunk.length;
      if (total < this.#need) {
        // Still short of the frame: keep a copy (the chunk's memory belongs to the socket).
        this.#rest.push(chunk.slice());
        this.#restLength = total;
        return;
      }
      buf = new Uint8Array(total);
      let at = 0;
      for (const part of this.#rest) {
        buf.set(part, at);
        at += part.length;
      }
      buf.set(chunk, at);
      this.#rest = [];
      this.#restLength = 0;
      this.#need = 0;
    }
    let at = 0;
    while (buf.length - at >= 4) {
      const size =
        (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16)) + buf[at + 3]! * 0x1000000;
      if (size < 1 || size > MAX_FRAME) throw new BusError(`frame length ${size} out of range`);
      if (buf.length - at - 4 < size) break;
      this.#frame(buf, at, at + 4 + size);
      at += 4 + size;
    }
    // Keep the unfinished tail: copied, since the chunk's memory belongs to the socket.
    if (at < buf.length) {
      const tail = buf.slice(at);
      this.#rest = [tail];
      this.#restLength = tail.length;
      // The loop checked the length prefix when it is here: the frame's full size is known.
      this.#need =
        tail.length >= 4
          ? 4 + (tail[0]! | (tail[1]! << 8) | (tail[2]! << 16)) + tail[3]! * 0x1000000
          : 0;
    }
  }

  #frame(buf: Uint8Array, start: number, end: number): void {
    const type = buf[start + 4]!;
    const body = start + HEADER;
    if (type === FRAME_PUB) {
      if (end - body < 5) throw new BusError("PUB frame too short");
      const flags = buf[body]!;
      if (flags > (BYTES | CLUSTER_ONLY))
        throw new BusError(`PUB frame with unknown flags ${flags}`);
      const chLen = readU32(buf, body + 1);
      const chStart = body + 5;
      if (chStart + chLen > end)
        throw new BusError(`PUB frame channel length ${chLen} past the frame`);
      const channel = this.#channel(buf, chStart, chStart + chLen);
      this.#sink.onPublish(
        channel,
        buf.subarray(start, end),
        chStart + chLen - start,
        (flags & BYTES) !== 0,
        (flags & CLUSTER_ONLY) !== 0,
      );
      return;
    }
    if (type === FRAME_SUB || type === FRAME_UNSUB) {
      if (end - body < 1) throw new BusError("SUB frame too short");
      const kind = buf[body]!;
      if (kind > 1) throw new BusError(`SUB frame with unknown kind ${kind}`);
      this.#sink.onInterest(
        type === FRAME_SUB,
        utf8(buf.subarray(body + 1, end), "a subscription key"),
        kind === 1,
      );
      return;
    }
    if (type === FRAME_HELLO) {
      this.#sink.onHello(utf8(buf.subarray(body, end), "a HELLO text"));
      return;
    }
    if (type === FRAME_ALL) {
      if (end - body !== 1 || buf[body]! > 1)
        throw new BusError("ALL frame must hold one byte, 0 or 1");
      this.#sink.onWantAll(buf[body] === 1);
      return;
    }
    if (type === FRAME_CMD) {
      if (end - body < 4) throw new BusError("CMD frame too short");
      this.#sink.onCommand(readU32(buf, body), utf8(buf.subarray(body + 4, end), "a command"));
      return;
    }
    if (type === FRAME_REPLY) {
      if (end - body < 5 || buf[body + 4]! > 1)
        throw new BusError("REPLY frame too short or with a bad status");
      this.#sink.onReply(
        readU32(buf, body),
        buf[body + 4] === 1,
        utf8(buf.subarray(body + 5, end), "a reply"),
      );
      return;
    }
    if (type === FRAME_SYNC) {
      if (end - body !== 4) throw new BusError("SYNC frame must hold a 4-byte id");
      this.#sink.onSync(readU32(buf, body));
      return;
    }
    throw new BusError(`unknown frame type ${type} (1–${LAST_TYPE})`);
  }

  #channel(buf: Uint8Array, start: number, end: number): string {
    const cached = this.#lastChannelBytes;
    const len = end - start;
    if (cached.length === len) {
      let i = 0;
      while (i < len && cached[i] === buf[start + i]) i++;
      if (i === len) return this.#lastChannel;
    }
    const name = utf8(buf.subarray(start, end), "a channel name");
    this.#lastChannelBytes = buf.slice(start, end);
    this.#lastChannel = name;
    return name;
  }
}

/** The message of a PUB frame handed to `onPublish` (bytes are copied: the frame's memory is the socket's). */
export function messageOf(frame: Uint8Array, at: number, binary: boolean): string | Uint8Array {
  return binary ? frame.slice(at) : decoder.decode(frame.subarray(at));
}

// Channel names and keys were JS strings on the sending side: bytes that are not UTF-8 are a broken peer.
function utf8(bytes: Uint8Array, what: string): string {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    throw new BusError(`${what} that is not UTF-8`);
  }
}

/**
 * Appends frames to a growing buffer; `take()` hands the bytes over and continues in a second
 * buffer, so what `take()` returned stays valid until the `take()` after next (a link can keep the
 * part a socket did not accept without copying it).
 */
export class FrameWriter {
  #buf = new Uint8Array(64 * 1024);
  #spare = new Uint8Array(64 * 1024);
  #len = 0;

  get length(): number {
    return this.#len;
  }

  /**
   * Appends a PUB frame; returns where its message starts, counted from the frame's first byte.
   * `clusterOnly`: not for an external engine. `textBytes`: `message` is bytes known to be UTF-8
   * text (from Redis), sent as text without decoding it here.
   */
  publish(
    channel: string,
    message: string | Uint8Array,
    clusterOnly = false,
    textBytes = false,
  ): number {
    const text = typeof message === "string";
    if (channel.length + message.length > MAX_FRAME) throw tooBig();
    // Worst case of UTF-8 is 3 bytes per UTF-16 unit.
    this.#reserve(HEADER + 5 + channel.length * 3 + (text ? message.length * 3 : message.length));
    const start = this.#len;
    const buf = this.#buf;
    buf[start + 4] = FRAME_PUB;
    buf[start + 5] = (text || textBytes ? 0 : BYTES) | (clusterOnly ? CLUSTER_ONLY : 0);
    let at = start + HEADER + 5;
    const ch = encoder.encodeInto(channel, buf.subarray(at)).written;
    writeU32(buf, start + HEADER + 1, ch);
    at += ch;
    const messageAt = at - start;
    if (text) at += encoder.encodeInto(message, buf.subarray(at)).written;
    else {
      buf.set(message, at);
      at += message.length;
    }
    if (at - start - 4 > MAX_FRAME) throw tooBig();
    writeU32(buf, start, at - start - 4);
    this.#len = at;
    return messageAt;
  }

  interest(subscribe: boolean, key: string, pattern: boolean): void {
    if (key.length * 3 > MAX_FRAME) throw tooBig();
    this.#reserve(HEADER + 1 + key.length * 3);
    const start = this.#len;
    this.#buf[start + 4] = subscribe ? FRAME_SUB : FRAME_UNSUB;
    this.#buf[start + 5] = pattern ? 1 : 0;
    const n = encoder.encodeInto(key, this.#buf.subarray(start + HEADER + 1)).written;
    writeU32(this.#buf, start, 1 + 1 + n);
    this.#len = start + HEADER + 1 + n;
  }

  hello(text: string): void {
    if (text.length * 3 > MAX_FRAME) throw tooBig();
    this.#reserve(HEADER + text.length * 3);
    const start = this.#len;
    this.#buf[start + 4] = FRAME_HELLO;
    const n = encoder.encodeInto(text, this.#buf.subarray(start + HEADER)).written;
    writeU32(this.#buf, start, 1 + n);
    this.#len = start + HEADER + n;
  }

  wantAll(want: boolean): void {
    this.#reserve(HEADER + 1);
    const start = this.#len;
    writeU32(this.#buf, start, 2);
    this.#buf[start + 4] = FRAME_ALL;
    this.#buf[start + 5] = want ? 1 : 0;
    this.#len = start + HEADER + 1;
  }

  command(id: number, args: string): void {
    this.#idFrame(FRAME_CMD, id, -1, args);
  }

  reply(id: number, ok: boolean, json: string): void {
    this.#idFrame(FRAME_REPLY, id, ok ? 1 : 0, json);
  }

  sync(id: number): void {
    this.#idFrame(FRAME_SYNC, id, -1, "");
  }

  #idFrame(type: number, id: number, status: number, text: string): void {
    if (text.length * 3 > MAX_FRAME - 10) throw tooBig();
    const head = status < 0 ? 4 : 5;
    this.#reserve(HEADER + head + text.length * 3);
    const start = this.#len;
    this.#buf[start + 4] = type;
    writeU32(this.#buf, start + HEADER, id);
    if (status >= 0) this.#buf[start + HEADER + 4] = status;
    const n = encoder.encodeInto(text, this.#buf.subarray(start + HEADER + head)).written;
    writeU32(this.#buf, start, 1 + head + n);
    this.#len = start + HEADER + head + n;
  }

  /** Appends a frame that is already encoded (the master forwarding a PUB as it came). */
  raw(frame: Uint8Array): void {
    this.#reserve(frame.length);
    this.#buf.set(frame, this.#len);
    this.#len += frame.length;
  }

  /** The bytes written so far; the writer starts again in its other buffer (see above). */
  take(): Uint8Array {
    const out = this.#buf.subarray(0, this.#len);
    [this.#buf, this.#spare] = [this.#spare, this.#buf];
    this.#len = 0;
    return out;
  }

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#len + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.#buf.subarray(0, this.#len));
    this.#buf = grown;
  }
}

const tooBig = () =>
  new RangeError(
    `a frame on the cluster bus may be at most ${MAX_FRAME} bytes (a message with its channel name: ${MAX_FRAME - 6})`,
  );

function readU32(buf: Uint8Array, at: number): number {
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0;
}

function writeU32(buf: Uint8Array, at: number, v: number): void {
  buf[at] = v & 255;
  buf[at + 1] = (v >>> 8) & 255;
  buf[at + 2] = (v >>> 16) & 255;
  buf[at + 3] = (v >>> 24) & 255;
}
