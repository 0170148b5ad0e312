// The cluster bus: frames between the master and its workers over a Unix socket (SPEC §5, §8).
// Transport only: it knows frames (here) and links (link.ts), not channels' meaning (that is the
// hub's, hub.ts, and each worker's, member.ts).
//
// A frame is `u32 LE body length | u8 type | body`. Bodies:
//   PUB    u8 flags (bit 0: the message is bytes, else UTF-8 text; bit 1: for this cluster only,
//          not for an external engine such as Redis; bit 2: a history channel's message, not
//          delivered by its sender: the hub sequences it and sends it to every process, the sender
//          included) | u32 LE channel length | channel UTF-8 | message bytes (to the end of the frame)
//   SUB, UNSUB   u8 kind (0 exact channel, 1 Redis glob pattern) | key UTF-8
//   HELLO  UTF-8 text (who is calling, for logs)
//   ALL    u8 (1: send every publish, an external engine takes them all; 0: only what is wanted)
//   CMD    u32 LE id | UTF-8 JSON array of strings (a worker's `redis.cmd(...)`)
//   REPLY  u32 LE id | u8 ok (1) or error (0) | UTF-8 JSON (the reply, or the error message)
//   SYNC   u32 LE id: answered by a REPLY with that id once every frame before it was handled
//   HPUB   a history channel's message with its position: u8 flags (bit 0 as PUB's) | u32 LE request
//          id (0: live; else a READ's answer, before its REPLY) | u32 LE offset low | u32 LE offset
//          high | u8 epoch length | epoch | u32 LE channel length | channel | message bytes
//   CTL    u32 LE id | UTF-8 JSON array: history and presence control (pubsub/control.ts); an id
//          other than 0 is answered by a REPLY
// Writes are appended to one buffer per link and sent once per turn of the event loop (link.ts);
// bus-writer.ts writes the frames.
import type { Position } from "../types.ts";

export const FRAME_PUB = 1;
export const FRAME_SUB = 2;
export const FRAME_UNSUB = 3;
export const FRAME_HELLO = 4;
export const FRAME_ALL = 5;
export const FRAME_CMD = 6;
export const FRAME_REPLY = 7;
export const FRAME_SYNC = 8;
export const FRAME_HPUB = 9;
export const FRAME_CTL = 10;
const LAST_TYPE = FRAME_CTL;
/** PUB flag bits */
export const PUB_BYTES = 1;
export const PUB_CLUSTER_ONLY = 2;
export const PUB_SEQUENCE = 4;

/** The largest frame body; a longer length prefix is a broken link. Messages above it are refused by publish. */
export const MAX_FRAME = 64 * 1024 * 1024;

export const HEADER = 5;
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
   * `sequence`: a history channel's message its sender did not deliver (PUB bit 2).
   */
  onPublish(
    channel: string,
    frame: Uint8Array,
    at: number,
    binary: boolean,
    clusterOnly: boolean,
    sequence: boolean,
  ): void;
  /** A history channel's message with its position; `request` 0 is live, else it answers a read. */
  onPositioned(
    channel: string,
    frame: Uint8Array,
    at: number,
    binary: boolean,
    position: Position,
    request: number,
  ): void;
  /** history and presence control: `json` is the text of an array (control.ts) */
  onControl(id: number, json: string): void;
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
      if (flags > (PUB_BYTES | PUB_CLUSTER_ONLY | PUB_SEQUENCE))
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
        (flags & PUB_BYTES) !== 0,
        (flags & PUB_CLUSTER_ONLY) !== 0,
        (flags & PUB_SEQUENCE) !== 0,
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
    if (type === FRAME_HPUB) return this.#positioned(buf, start, body, end);
    if (type === FRAME_CTL) {
      if (end - body < 4) throw new BusError("CTL frame too short");
      this.#sink.onControl(readU32(buf, body), utf8(buf.subarray(body + 4, end), "a control"));
      return;
    }
    throw new BusError(`unknown frame type ${type} (1–${LAST_TYPE})`);
  }

  #positioned(buf: Uint8Array, start: number, body: number, end: number): void {
    if (end - body < 18) throw new BusError("HPUB frame too short");
    const flags = buf[body]!;
    if (flags > PUB_BYTES) throw new BusError(`HPUB frame with unknown flags ${flags}`);
    const request = readU32(buf, body + 1);
    const offset = readU32(buf, body + 5) + readU32(buf, body + 9) * 0x100000000;
    const epochLen = buf[body + 13]!;
    const chLenAt = body + 14 + epochLen;
    if (chLenAt + 4 > end) throw new BusError("HPUB frame epoch past the frame");
    const epoch = utf8(buf.subarray(body + 14, chLenAt), "an epoch");
    const chLen = readU32(buf, chLenAt);
    const chStart = chLenAt + 4;
    if (chStart + chLen > end)
      throw new BusError(`HPUB frame channel length ${chLen} past the frame`);
    const channel = this.#channel(buf, chStart, chStart + chLen);
    this.#sink.onPositioned(
      channel,
      buf.subarray(start, end),
      chStart + chLen - start,
      (flags & PUB_BYTES) !== 0,
      { epoch, offset },
      request,
    );
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

export function readU32(buf: Uint8Array, at: number): number {
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0;
}
