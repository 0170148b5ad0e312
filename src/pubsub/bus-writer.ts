// The writing side of the cluster bus (bus.ts has the frames' layout and the reader).
import {
  FRAME_ALL,
  FRAME_CMD,
  FRAME_CTL,
  FRAME_HELLO,
  FRAME_HPUB,
  FRAME_PUB,
  FRAME_REPLY,
  FRAME_SUB,
  FRAME_SYNC,
  FRAME_UNSUB,
  HEADER,
  MAX_FRAME,
  PUB_BYTES,
  PUB_CLUSTER_ONLY,
  PUB_SEQUENCE,
} from "./bus.ts";

import type { Position } from "../types.ts";

const encoder = new TextEncoder();

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
   * text (from Redis), sent as text without decoding it here. `sequence`: a history channel's
   * message for the hub to sequence (PUB bit 2).
   */
  publish(
    channel: string,
    message: string | Uint8Array,
    clusterOnly = false,
    textBytes = false,
    sequence = false,
  ): number {
    const text = typeof message === "string";
    if (channel.length + message.length > MAX_FRAME) throw tooBig();
    // Worst case of UTF-8 is 3 bytes per UTF-16 unit.
    this.#reserve(HEADER + 5 + channel.length * 3 + (text ? message.length * 3 : message.length));
    const start = this.#len;
    const buf = this.#buf;
    buf[start + 4] = FRAME_PUB;
    buf[start + 5] =
      (text || textBytes ? 0 : PUB_BYTES) |
      (clusterOnly ? PUB_CLUSTER_ONLY : 0) |
      (sequence ? PUB_SEQUENCE : 0);
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

  /**
   * Appends an HPUB frame: a history channel's message (`text`: its bytes are UTF-8) with its
   * position; `request` 0 for a live one. Returns where the message starts in the frame.
   */
  positioned(
    channel: string,
    message: Uint8Array,
    text: boolean,
    position: Position,
    request: number,
  ): number {
    const epoch = encoder.encode(position.epoch);
    if (epoch.length > 255) throw new RangeError("an epoch may be at most 255 bytes");
    if (channel.length * 3 + message.length > MAX_FRAME - 300) throw tooBig();
    this.#reserve(HEADER + 18 + epoch.length + channel.length * 3 + message.length);
    const start = this.#len;
    const buf = this.#buf;
    buf[start + 4] = FRAME_HPUB;
    let at = start + HEADER;
    buf[at] = text ? 0 : PUB_BYTES;
    writeU32(buf, at + 1, request);
    writeU32(buf, at + 5, position.offset >>> 0);
    writeU32(buf, at + 9, Math.floor(position.offset / 0x100000000));
    buf[at + 13] = epoch.length;
    buf.set(epoch, at + 14);
    at += 14 + epoch.length;
    const ch = encoder.encodeInto(channel, buf.subarray(at + 4)).written;
    writeU32(buf, at, ch);
    at += 4 + ch;
    const messageAt = at - start;
    buf.set(message, at);
    at += message.length;
    writeU32(buf, start, at - start - 4);
    this.#len = at;
    return messageAt;
  }

  /** A CTL frame (history and presence control, control.ts): `id` 0 wants no answer. */
  control(id: number, json: string): void {
    this.#idFrame(FRAME_CTL, id, -1, json);
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

function writeU32(buf: Uint8Array, at: number, v: number): void {
  buf[at] = v & 255;
  buf[at + 1] = (v >>> 8) & 255;
  buf[at + 2] = (v >>> 16) & 255;
  buf[at + 3] = (v >>> 24) & 255;
}
