// The cluster bus framing (src/pubsub/bus.ts, SPEC §5, §8): FrameWriter → FrameReader round trips
// under arbitrary chunking, truncated streams, garbage and corrupted streams checked against a
// reference parser written from the format comment, each malformed frame's BusError, the writer's
// size limit and the order of 10,000 frames. No sockets: the reader is fed chunks as a socket would.
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  BusError,
  FRAME_ALL,
  FRAME_CMD,
  FRAME_CTL,
  FRAME_HELLO,
  FRAME_HPUB,
  FRAME_REPLY,
  FRAME_PUB,
  FRAME_SUB,
  FRAME_SYNC,
  FRAME_UNSUB,
  FrameReader,
  MAX_FRAME,
  messageOf,
  type FrameSink,
} from "../src/pubsub/bus.ts";
import { FrameWriter } from "../src/pubsub/bus-writer.ts";
import type { Position } from "../src/types.ts";

type Frame =
  | {
      type: "pub";
      channel: string;
      message: string | Uint8Array;
      clusterOnly?: true;
      sequence?: true;
    }
  | {
      type: "hpub";
      channel: string;
      message: Uint8Array;
      text: boolean;
      epoch: string;
      offset: number;
      request: number;
    }
  | { type: "ctl"; id: number; json: string }
  | { type: "interest"; subscribe: boolean; key: string; pattern: boolean }
  | { type: "hello"; text: string }
  | { type: "all"; want: boolean }
  | { type: "cmd"; id: number; args: string }
  | { type: "reply"; id: number; ok: boolean; json: string }
  | { type: "sync"; id: number };

/** Records every frame it is handed; a PUB's bytes are copied (their memory is the chunk's). */
class Recorder implements FrameSink {
  frames: Frame[] = [];
  /** the `frame` argument of each onPublish, as the master would forward it */
  published: Uint8Array[] = [];

  onPublish(
    channel: string,
    frame: Uint8Array,
    at: number,
    binary: boolean,
    clusterOnly: boolean,
    sequence: boolean,
  ): void {
    this.frames.push({
      type: "pub",
      channel,
      message: messageOf(frame, at, binary),
      ...(clusterOnly ? { clusterOnly } : {}),
      ...(sequence ? { sequence } : {}),
    });
    this.published.push(frame.slice());
  }
  onPositioned(
    channel: string,
    frame: Uint8Array,
    at: number,
    binary: boolean,
    position: Position,
    request: number,
  ): void {
    const { epoch, offset } = position;
    const message = frame.slice(at);
    this.frames.push({ type: "hpub", channel, message, text: !binary, epoch, offset, request });
  }
  onControl(id: number, json: string): void {
    this.frames.push({ type: "ctl", id, json });
  }
  onWantAll(want: boolean): void {
    this.frames.push({ type: "all", want });
  }
  onCommand(id: number, args: string): void {
    this.frames.push({ type: "cmd", id, args });
  }
  onReply(id: number, ok: boolean, json: string): void {
    this.frames.push({ type: "reply", id, ok, json });
  }
  onSync(id: number): void {
    this.frames.push({ type: "sync", id });
  }
  onInterest(subscribe: boolean, key: string, pattern: boolean): void {
    this.frames.push({ type: "interest", subscribe, key, pattern });
  }
  onHello(text: string): void {
    this.frames.push({ type: "hello", text });
  }
}

function write(w: FrameWriter, f: Frame): void {
  if (f.type === "pub")
    w.publish(f.channel, f.message, f.clusterOnly === true, false, f.sequence === true);
  else if (f.type === "hpub")
    w.positioned(f.channel, f.message, f.text, { epoch: f.epoch, offset: f.offset }, f.request);
  else if (f.type === "ctl") w.control(f.id, f.json);
  else if (f.type === "interest") w.interest(f.subscribe, f.key, f.pattern);
  else if (f.type === "hello") w.hello(f.text);
  else if (f.type === "all") w.wantAll(f.want);
  else if (f.type === "cmd") w.command(f.id, f.args);
  else if (f.type === "sync") w.sync(f.id);
  else w.reply(f.id, f.ok, f.json);
}

/** The bytes of `frames` (a copy) and the offset at which each frame ends. */
function encode(
  frames: readonly Frame[],
  w = new FrameWriter(),
): { bytes: Uint8Array; ends: number[] } {
  const ends = frames.map((f) => {
    write(w, f);
    return w.length;
  });
  return { bytes: w.take().slice(), ends };
}

/** Cuts `bytes` into chunks (copies) whose sizes cycle through `sizes`; 0 is an empty chunk. */
function split(bytes: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const cycle = sizes.some((n) => n > 0) ? sizes : [1];
  const out: Uint8Array[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = cycle[i % cycle.length]!;
    out.push(bytes.slice(at, at + n));
    at += n;
  }
  return out;
}

/**
 * Pushes the chunks into a fresh reader, scribbling over each chunk once pushed (the socket reuses
 * its buffer, so the reader must have copied what it keeps; "a" bytes, so that a stale view can
 * still look like a channel name). Stops at the first error: a BusError is returned, anything else
 * is rethrown (and fails the test).
 */
function feed(
  chunks: readonly Uint8Array[],
  sink = new Recorder(),
): { sink: Recorder; error: BusError | undefined } {
  const reader = new FrameReader(sink);
  for (const chunk of chunks) {
    try {
      reader.push(chunk);
    } catch (e) {
      if (e instanceof BusError) return { sink, error: e };
      throw e;
    }
    chunk.fill(0x61);
  }
  return { sink, error: undefined };
}

/** The BusError that `bytes` (one chunk, or several) must raise, and what was delivered before it. */
function rejected(...chunks: (number[] | Uint8Array)[]): { message: string; frames: Frame[] } {
  const { sink, error } = feed(chunks.map((c) => Uint8Array.from(c)));
  if (error === undefined) throw new Error("expected a BusError, the input was accepted");
  return { message: error.message, frames: sink.frames };
}

/** The sink methods a test does not look at. */
const ignored = {
  onInterest() {},
  onHello() {},
  onWantAll() {},
  onCommand() {},
  onReply() {},
  onSync() {},
  onPositioned() {},
  onControl() {},
};

const u32 = (n: number): number[] => [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255];

/** A frame built by hand: the length prefix counts the type byte and the body. */
function frame(type: number, ...body: (number | number[])[]): number[] {
  const bytes = body.flat();
  return [...u32(1 + bytes.length), type, ...bytes];
}

// ---- A reference parser, written from the format comment at the top of bus.ts -------------------

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** The frames a whole stream holds, and whether it breaks (a partial frame at the end is not an error). */
function reference(bytes: Uint8Array): { frames: Frame[]; error: boolean } {
  const frames: Frame[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const name = (b: Uint8Array): string | undefined => {
    try {
      return strictUtf8.decode(b);
    } catch {
      return undefined;
    }
  };
  const broken = { frames, error: true };
  let at = 0;
  while (bytes.length - at >= 4) {
    const size = view.getUint32(at, true);
    if (size === 0 || size > MAX_FRAME) return broken;
    if (bytes.length - at - 4 < size) break;
    const type = bytes[at + 4]!;
    const body = bytes.subarray(at + 5, at + 4 + size);
    at += 4 + size;
    if (type === FRAME_PUB) {
      if (body.length < 5 || body[0]! > 7) return broken;
      const chLen = view.getUint32(body.byteOffset - bytes.byteOffset + 1, true);
      if (chLen > body.length - 5) return broken;
      const channel = name(body.subarray(5, 5 + chLen));
      if (channel === undefined) return broken;
      const rest = body.subarray(5 + chLen);
      const message = (body[0]! & 1) === 1 ? rest.slice() : lenientUtf8.decode(rest);
      frames.push({
        type: "pub",
        channel,
        message,
        ...((body[0]! & 2) === 2 ? { clusterOnly: true as const } : {}),
        ...((body[0]! & 4) === 4 ? { sequence: true as const } : {}),
      });
    } else if (type === FRAME_HPUB) {
      // flags | u32 request | u32 offset low | u32 offset high | u8 epoch length | epoch | u32 channel length | channel | message
      if (body.length < 18 || body[0]! > 1) return broken;
      const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
      const epochEnd = 14 + body[13]!;
      if (epochEnd + 4 > body.length) return broken;
      const epoch = name(body.subarray(14, epochEnd));
      const chLen = v.getUint32(epochEnd, true);
      if (epoch === undefined || epochEnd + 4 + chLen > body.length) return broken;
      const channel = name(body.subarray(epochEnd + 4, epochEnd + 4 + chLen));
      if (channel === undefined) return broken;
      frames.push({
        type: "hpub",
        channel,
        message: body.slice(epochEnd + 4 + chLen),
        text: body[0] === 0,
        epoch,
        offset: v.getUint32(5, true) + v.getUint32(9, true) * 2 ** 32,
        request: v.getUint32(1, true),
      });
    } else if (type === FRAME_CTL) {
      if (body.length < 4) return broken;
      const json = name(body.subarray(4));
      if (json === undefined) return broken;
      frames.push({
        type: "ctl",
        id: new DataView(body.buffer, body.byteOffset, 4).getUint32(0, true),
        json,
      });
    } else if (type === FRAME_SUB || type === FRAME_UNSUB) {
      if (body.length < 1 || body[0]! > 1) return broken;
      const key = name(body.subarray(1));
      if (key === undefined) return broken;
      frames.push({ type: "interest", subscribe: type === FRAME_SUB, key, pattern: body[0] === 1 });
    } else if (type === FRAME_HELLO) {
      const text = name(body);
      if (text === undefined) return broken;
      frames.push({ type: "hello", text });
    } else if (type === FRAME_ALL) {
      if (body.length !== 1 || body[0]! > 1) return broken;
      frames.push({ type: "all", want: body[0] === 1 });
    } else if (type === FRAME_CMD || type === FRAME_REPLY) {
      const head = type === FRAME_CMD ? 4 : 5;
      if (body.length < head || (type === FRAME_REPLY && body[4]! > 1)) return broken;
      const id = new DataView(body.buffer, body.byteOffset, 4).getUint32(0, true);
      const t = name(body.subarray(head));
      if (t === undefined) return broken;
      frames.push(
        type === FRAME_CMD
          ? { type: "cmd", id, args: t }
          : { type: "reply", id, ok: body[4] === 1, json: t },
      );
    } else if (type === FRAME_SYNC) {
      if (body.length !== 4) return broken;
      frames.push({
        type: "sync",
        id: new DataView(body.buffer, body.byteOffset, 4).getUint32(0, true),
      });
    } else return broken;
  }
  return { frames, error: false };
}

// ---- Arbitraries ---------------------------------------------------------------------------------

/** UTF-8's edges (1 to 4 bytes), NUL, U+FFFD, a noncharacter and U+FEFF (a BOM that is data). */
const EDGES = [
  "\0",
  "a",
  "\x7f",
  "\u0080",
  "é",
  "\u07ff",
  "\u0800",
  "€",
  "\ufeff",
  "\ufffd",
  "\uffff",
  "\u{10000}",
  "😀",
  "\u{10ffff}",
];

/** Channel names, keys, hello texts and text messages: any Unicode without lone surrogates. */
const text = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 12 }),
  fc.string({ unit: "binary", maxLength: 12 }),
  fc.string({ unit: fc.constantFrom(...EDGES), maxLength: 8 }),
  // repeated names and names of equal length: the reader's one-entry channel-name cache
  fc.constantFrom("", "a", "b", "aa", "ab", "ac", "é", "😀"),
);

/** Byte messages: small ones here, larger ones in "past the writer's first buffer" below. */
const bytes = fc.uint8Array({ maxLength: 48 });

/** A byte message of 60–140 KB (a pattern, not random: cheap to make and to compare). */
const bigBytes = fc
  .tuple(fc.integer({ min: 60_000, max: 140_000 }), fc.nat(255))
  .map(([n, seed]) => new Uint8Array(n).map((_, i) => (i * 31 + seed) & 255));

const anyFrame: fc.Arbitrary<Frame> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .record({
        type: fc.constant("pub" as const),
        channel: text,
        message: fc.oneof(text, bytes),
        only: fc.boolean(),
        sequence: fc.boolean(),
      })
      .map(({ only, sequence, ...f }): Frame => ({
        ...f,
        ...(only ? { clusterOnly: true as const } : {}),
        ...(sequence ? { sequence: true as const } : {}),
      })),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      type: fc.constant("hpub" as const),
      channel: text,
      message: bytes,
      text: fc.boolean(),
      // epochs have no ':' and at most 255 bytes; offsets up to 2^53 - 1
      epoch: text.filter((t) => !t.includes(":") && new TextEncoder().encode(t).length < 256),
      offset: fc.oneof(fc.nat(), fc.maxSafeNat()),
      request: fc.nat({ max: 0xffffffff }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      type: fc.constant("ctl" as const),
      id: fc.nat({ max: 0xffffffff }),
      json: text,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      type: fc.constant("interest" as const),
      subscribe: fc.boolean(),
      key: text,
      pattern: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ type: fc.constant("hello" as const), text }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant("all" as const), want: fc.boolean() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      type: fc.constant("cmd" as const),
      id: fc.nat({ max: 0xffffffff }),
      args: text,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      type: fc.constant("reply" as const),
      id: fc.nat({ max: 0xffffffff }),
      ok: fc.boolean(),
      json: text,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ type: fc.constant("sync" as const), id: fc.nat({ max: 0xffffffff }) }),
  },
);
const frames = fc.array(anyFrame, { maxLength: 24 });

/** Chunk sizes: many 0–8 byte chunks (1-byte ones and split length headers), some larger, some whole. */
const chunking = fc.array(
  fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 0, max: 8 }) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 300 }) },
    { weight: 1, arbitrary: fc.constant(Number.MAX_SAFE_INTEGER) },
  ),
  { minLength: 1, maxLength: 16 },
);

const RUNS = { numRuns: 300 };

// ---- Tests -----------------------------------------------------------------------------------------

describe("round trip", () => {
  // One writer for every run: take() must leave it empty and reusable.
  const shared = new FrameWriter();

  test("any frames, any chunking: the same frames in the same order, PUB frames byte for byte", () => {
    fc.assert(
      fc.property(frames, chunking, (sent, sizes) => {
        const { bytes, ends } = encode(sent, shared);
        expect(shared.length).toBe(0);
        const { sink, error } = feed(split(bytes, sizes));
        expect(error).toBeUndefined();
        expect(sink.frames).toEqual(sent);

        // Each onPublish `frame` is exactly that frame's encoded bytes...
        const pubBytes = sent.flatMap((f, i) =>
          f.type === "pub" ? [bytes.slice(i === 0 ? 0 : ends[i - 1], ends[i])] : [],
        );
        expect(sink.published).toEqual(pubBytes);
        // ...so forwarding them with raw() (as the master does) reaches a second reader unchanged.
        const forward = new FrameWriter();
        for (const f of sink.published) forward.raw(f);
        const again = feed(split(forward.take().slice(), sizes));
        expect(again.error).toBeUndefined();
        expect(again.sink.frames).toEqual(sent.filter((f) => f.type === "pub"));
      }),
      RUNS,
    );
  });

  test("frames past the writer's first 64 KiB buffer, in chunks of 1–64 KiB", () => {
    // Chunks of at least 1 KB: 1-byte chunks of large frames would only make the run long.
    const big: fc.Arbitrary<Frame> = fc.oneof(
      anyFrame,
      fc.record({ type: fc.constant("pub" as const), channel: text, message: bigBytes }),
    );
    const coarse = fc.array(fc.integer({ min: 1024, max: 65_536 }), { minLength: 1, maxLength: 8 });
    fc.assert(
      fc.property(fc.array(big, { maxLength: 8 }), coarse, (sent, sizes) => {
        const { bytes, ends } = encode(sent, shared);
        const { sink, error } = feed(split(bytes, sizes));
        expect(error).toBeUndefined();
        expect(sink.frames).toEqual(sent);
        const pubBytes = sent.flatMap((f, i) =>
          f.type === "pub" ? [bytes.slice(i === 0 ? 0 : ends[i - 1], ends[i])] : [],
        );
        expect(sink.published).toEqual(pubBytes);
      }),
      { numRuns: 40 },
    );
  });

  // A large frame in many chunks is kept as a list of parts and joined once, when complete (joining
  // on every chunk was quadratic: a 64 MiB frame in 64 KiB chunks took 31 s).
  test("a 4 MiB frame in 4 KiB chunks arrives whole, once", () => {
    const w = new FrameWriter();
    const message = new Uint8Array(4 << 20).map((_, i) => i & 255);
    w.publish("big", message);
    const bytes = w.take().slice();
    const got: Uint8Array[] = [];
    const reader = new FrameReader({
      ...ignored,
      onPublish: (_c, f, at, binary) => void got.push(messageOf(f, at, binary) as Uint8Array),
    });
    for (let at = 0; at < bytes.length; at += 4096) reader.push(bytes.subarray(at, at + 4096));
    expect(got).toHaveLength(1);
    expect(got[0]!.length).toBe(message.length);
    expect(Buffer.compare(got[0]!, message)).toBe(0);
  });

  test("the empty channel, the empty message and empty keys and texts", () => {
    const sent: Frame[] = [
      { type: "pub", channel: "", message: "" },
      { type: "pub", channel: "", message: new Uint8Array(0) },
      { type: "interest", subscribe: true, key: "", pattern: false },
      { type: "interest", subscribe: false, key: "", pattern: true },
      { type: "hello", text: "" },
    ];
    const { sink, error } = feed([encode(sent).bytes]);
    expect(error).toBeUndefined();
    expect(sink.frames).toEqual(sent);
  });

  test("the channel-name cache: same name, same length, a last byte apart, and a reused chunk", () => {
    const pub = (channel: string): Frame => ({ type: "pub", channel, message: "m" });
    const sent = ["ab", "ab", "ac", "ab", "", "", "a", "é", "\u00e8", "é", "aa"].map(pub);
    // One frame per chunk, each chunk scribbled over with "a" bytes once pushed: a cache that kept a
    // view of the chunk would now hold "aa" under the name "é" and hand it out for "aa".
    const chunks = sent.map((f) => encode([f]).bytes);
    const { sink, error } = feed(chunks);
    expect(error).toBeUndefined();
    expect(sink.frames).toEqual(sent);
  });

  test("a text message with bytes that are not UTF-8 is not a link error: they decode as U+FFFD", () => {
    const { sink, error } = feed([Uint8Array.from(frame(FRAME_PUB, 0, u32(1), 0x61, 0xff, 0x62))]);
    expect(error).toBeUndefined();
    expect(sink.frames).toEqual([{ type: "pub", channel: "a", message: "\ufffdb" }]);
  });

  // A TextDecoder strips a leading U+FEFF unless built with ignoreBOM: then "\ufeffroom" would
  // arrive as "room", and reach the wrong subscribers in the other workers.
  const BOM = "\ufeff";
  const bomCases: [string, Frame][] = [
    ["channel name", { type: "pub", channel: `${BOM}room`, message: "m" }],
    ["text message", { type: "pub", channel: "room", message: `${BOM}m` }],
    ["subscription key", { type: "interest", subscribe: true, key: `${BOM}room`, pattern: false }],
    ["hello text", { type: "hello", text: `${BOM}worker 1` }],
  ];
  for (const [what, f] of bomCases) {
    test(`a leading U+FEFF in a ${what} survives the round trip`, () => {
      expect(feed([encode([f]).bytes]).sink.frames).toEqual([f]);
    });
  }
});

describe("truncated streams", () => {
  test("a proper prefix delivers exactly the frames complete in it and never throws", () => {
    const cut = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
    fc.assert(
      fc.property(
        fc.array(anyFrame, { minLength: 1, maxLength: 24 }),
        cut,
        chunking,
        (sent, where, sizes) => {
          const { bytes, ends } = encode(sent);
          const n = Math.floor(where * bytes.length);
          const { sink, error } = feed(split(bytes.subarray(0, n), sizes));
          expect(error).toBeUndefined();
          expect(sink.frames).toEqual(sent.filter((_, i) => ends[i]! <= n));
        },
      ),
      RUNS,
    );
  });

  test("every prefix of a short stream, byte by byte", () => {
    const sent: Frame[] = [
      { type: "hello", text: "w1" },
      { type: "pub", channel: "é", message: Uint8Array.of(1, 2) },
      { type: "interest", subscribe: true, key: "a*", pattern: true },
    ];
    const { bytes, ends } = encode(sent);
    for (let n = 0; n < bytes.length; n++) {
      const { sink, error } = feed(split(bytes.subarray(0, n), [1]));
      expect(error).toBeUndefined();
      expect(sink.frames).toEqual(sent.filter((_, i) => ends[i]! <= n));
    }
  });
});

describe("garbage and corrupted streams", () => {
  /**
   * The reader on `input` in chunks: it throws nothing but BusError, delivers exactly the frames the
   * reference parser finds before the break (none after it), and throws iff the stream is broken.
   */
  function agreesWithReference(input: Uint8Array, sizes: readonly number[]): void {
    const { sink, error } = feed(split(input, sizes));
    const expected = reference(input);
    expect(sink.frames).toEqual(expected.frames);
    expect(error !== undefined).toBe(expected.error);
  }

  test("random bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), chunking, agreesWithReference), RUNS);
  });

  test("random frames: any type, flags, kind, channel length and body, mostly well framed", () => {
    const utf8OrNot = fc.oneof(
      text.map((s) => new TextEncoder().encode(s)),
      fc.uint8Array({ maxLength: 12 }),
    );
    const u32s = fc.oneof(fc.integer({ min: 0, max: 24 }), fc.nat({ max: 0xffffffff }));
    const body = fc.oneof(
      fc
        .tuple(fc.integer({ min: 0, max: 5 }), u32s, utf8OrNot, utf8OrNot)
        .map(([flags, chLen, ch, msg]) => [FRAME_PUB, flags, ...u32(chLen), ...ch, ...msg]),
      fc
        .tuple(
          fc.integer({ min: 0, max: 2 }),
          fc.uint8Array({ maxLength: 14 }),
          fc.nat(6),
          utf8OrNot,
          u32s,
          utf8OrNot,
        )
        .map(([flags, head, epochLen, ch, chLen, msg]) => [
          FRAME_HPUB,
          flags,
          ...head.subarray(0, 12),
          epochLen,
          ...ch.subarray(0, epochLen),
          ...u32(chLen),
          ...ch,
          ...msg,
        ]),
      fc
        .tuple(fc.constantFrom(FRAME_SUB, FRAME_UNSUB), fc.integer({ min: 0, max: 3 }), utf8OrNot)
        .map(([type, kind, key]) => [type, kind, ...key]),
      utf8OrNot.map((t) => [FRAME_HELLO, ...t]),
      fc
        .tuple(
          fc.constantFrom(FRAME_ALL, FRAME_CMD, FRAME_REPLY, FRAME_CTL),
          fc.uint8Array({ maxLength: 6 }),
          utf8OrNot,
        )
        .map(([type, head, t]) => [type, ...head, ...t]),
      fc
        .tuple(fc.nat(255), fc.uint8Array({ maxLength: 12 }))
        .map(([type, rest]) => [type, ...rest]),
      fc.constant([]), // a zero length prefix
    );
    // The length prefix is right, or now and then anything (too short, too long, past MAX_FRAME).
    const framed = fc
      .tuple(body, fc.option(u32s, { freq: 8 }))
      .map(([b, size]) => [...u32(size ?? b.length), ...b]);
    const stream = fc.array(framed, { maxLength: 8 }).map((fs) => Uint8Array.from(fs.flat()));
    fc.assert(fc.property(stream, chunking, agreesWithReference), RUNS);
  });

  test("valid streams with bytes overwritten and random bytes appended", () => {
    const edits = fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 });
    fc.assert(
      fc.property(
        frames,
        edits,
        fc.uint8Array({ maxLength: 16 }),
        chunking,
        (sent, changes, tail, sizes) => {
          const { bytes } = encode(sent);
          const input = new Uint8Array(bytes.length + tail.length);
          input.set(bytes);
          input.set(tail, bytes.length);
          for (const [i, v] of changes) if (input.length > 0) input[i % input.length] = v;
          agreesWithReference(input, sizes);
        },
      ),
      RUNS,
    );
  });
});

describe("malformed frames throw a BusError", () => {
  const cases: [string, number[], RegExp][] = [
    ["length prefix 0", [0, 0, 0, 0], /frame length 0 out of range/],
    ["length prefix 0xFFFFFFFF", [255, 255, 255, 255], /frame length 4294967295 out of range/],
    [
      "length prefix MAX_FRAME + 1",
      u32(MAX_FRAME + 1),
      new RegExp(`frame length ${MAX_FRAME + 1} out of range`),
    ],
    ["frame type 0", frame(0, 1, 2), /unknown frame type 0/],
    ["frame type 11", frame(11), /unknown frame type 11/],
    ["HPUB too short", frame(FRAME_HPUB, 0, u32(0), u32(1)), /HPUB frame too short/],
    [
      "HPUB with flags 2",
      frame(FRAME_HPUB, 2, u32(0), u32(1), u32(0), 0, u32(0)),
      /HPUB frame with unknown flags 2/,
    ],
    [
      "HPUB whose epoch runs past the frame",
      frame(FRAME_HPUB, 0, u32(0), u32(1), u32(0), 9, u32(0)),
      /epoch past the frame/,
    ],
    [
      "HPUB whose channel runs past the frame",
      frame(FRAME_HPUB, 0, u32(0), u32(1), u32(0), 0, u32(3), 0x61),
      /channel length 3 past the frame/,
    ],
    ["CTL too short", frame(FRAME_CTL, 1, 2), /CTL frame too short/],
    ["frame type 255", frame(255, 0), /unknown frame type 255/],
    ["PUB with flags 8", frame(FRAME_PUB, 8, u32(1), 0x61), /PUB frame with unknown flags 8/],
    ["PUB with flags 255", frame(FRAME_PUB, 255, u32(0)), /PUB frame with unknown flags 255/],
    ["PUB without a whole channel length", frame(FRAME_PUB, 0, 0, 0, 0), /PUB frame too short/],
    ["PUB with no body", frame(FRAME_PUB), /PUB frame too short/],
    [
      "PUB whose channel runs past the frame",
      frame(FRAME_PUB, 0, u32(4), 0x61, 0x62, 0x63),
      /channel length 4 past the frame/,
    ],
    [
      "PUB whose channel length is 2^31",
      frame(FRAME_PUB, 1, u32(0x80000000), 0x61),
      /past the frame/,
    ],
    [
      "PUB whose channel length is 2^32 - 1",
      frame(FRAME_PUB, 0, u32(0xffffffff)),
      /past the frame/,
    ],
    ["SUB with kind 2", frame(FRAME_SUB, 2, 0x61), /SUB frame with unknown kind 2/],
    ["UNSUB with kind 255", frame(FRAME_UNSUB, 255), /SUB frame with unknown kind 255/],
    ["SUB with no body", frame(FRAME_SUB), /SUB frame too short/],
    ["PUB channel 0xFF", frame(FRAME_PUB, 0, u32(1), 0xff), /not UTF-8/],
    ["PUB channel with a cut sequence", frame(FRAME_PUB, 1, u32(2), 0xe2, 0x82, 9), /not UTF-8/],
    ["PUB channel with an overlong '/'", frame(FRAME_PUB, 0, u32(2), 0xc0, 0xaf), /not UTF-8/],
    [
      "PUB channel with an encoded surrogate",
      frame(FRAME_PUB, 0, u32(3), 0xed, 0xa0, 0x80),
      /not UTF-8/,
    ],
    ["PUB channel past U+10FFFF", frame(FRAME_PUB, 0, u32(4), 0xf4, 0x90, 0x80, 0x80), /not UTF-8/],
    ["SUB key 0xFF", frame(FRAME_SUB, 0, 0x61, 0xff), /not UTF-8/],
    ["UNSUB key with a lone continuation byte", frame(FRAME_UNSUB, 1, 0x80), /not UTF-8/],
    ["HELLO text 0xFE", frame(FRAME_HELLO, 0xfe), /not UTF-8/],
    ["ALL with no body", frame(FRAME_ALL), /ALL frame must hold one byte/],
    ["ALL with 2", frame(FRAME_ALL, 2), /ALL frame must hold one byte/],
    ["ALL with two bytes", frame(FRAME_ALL, 1, 1), /ALL frame must hold one byte/],
    ["CMD without a whole id", frame(FRAME_CMD, 1, 0, 0), /CMD frame too short/],
    ["CMD text 0xFF", frame(FRAME_CMD, u32(1), 0xff), /not UTF-8/],
    [
      "REPLY without a status",
      frame(FRAME_REPLY, u32(1)),
      /REPLY frame too short or with a bad status/,
    ],
    [
      "REPLY with status 2",
      frame(FRAME_REPLY, u32(1), 2, 0x31),
      /REPLY frame too short or with a bad status/,
    ],
    ["SYNC without a whole id", frame(FRAME_SYNC, 1, 0), /SYNC frame must hold a 4-byte id/],
    ["SYNC with more than an id", frame(FRAME_SYNC, u32(1), 0), /SYNC frame must hold a 4-byte id/],
  ];
  for (const [what, input, message] of cases) {
    test(what, () => {
      expect(rejected(input).message).toMatch(message);
      // Byte by byte, the same error (no partial frame is ever judged on what it does not hold yet).
      const { message: again } = rejected(...input.map((b) => [b]));
      expect(again).toMatch(message);
    });
  }

  test("a length prefix past MAX_FRAME is refused on its 4th byte, before any body arrives", () => {
    const reader = new FrameReader(new Recorder());
    const header = u32(0xffffffff);
    for (const b of header.slice(0, 3)) reader.push(Uint8Array.of(b));
    expect(() => reader.push(Uint8Array.of(header[3]!))).toThrow(BusError);

    // Also when the header comes after a complete frame, split across two chunks.
    const hello = frame(FRAME_HELLO, 0x68, 0x69);
    const { message, frames } = rejected([...hello, 0x01, 0x00], [0x00, 0x08]);
    expect(message).toMatch(/frame length 134217729 out of range/);
    expect(frames).toEqual([{ type: "hello", text: "hi" }]);
  });

  test("a length prefix of exactly MAX_FRAME waits for its body", () => {
    const { sink, error } = feed([Uint8Array.from([...u32(MAX_FRAME), FRAME_HELLO, 0x61])]);
    expect(error).toBeUndefined();
    expect(sink.frames).toEqual([]);
  });

  test("frames before the broken one in the same chunk are delivered, none after it", () => {
    const hi = (c: number) => frame(FRAME_HELLO, c);
    const { message, frames } = rejected([...hi(0x61), ...hi(0x62), ...frame(11), ...hi(0x63)]);
    expect(message).toMatch(/unknown frame type 11/);
    expect(frames).toEqual([
      { type: "hello", text: "a" },
      { type: "hello", text: "b" },
    ]);
  });
});

describe("the writer's size limit", () => {
  test("a message over the limit is a RangeError; the writer is left as it was and still works", () => {
    // The one large allocation of this file: MAX_FRAME + 1 bytes, and views of it.
    const big = new Uint8Array(MAX_FRAME + 1);
    big[MAX_FRAME - 7] = 0x5a;
    const w = new FrameWriter();
    w.publish("a", "x");
    const before = w.length;

    // Refused by its length alone, before anything is written.
    expect(() => w.publish("", big)).toThrow(RangeError);
    expect(w.length).toBe(before);
    // Within MAX_FRAME by length, but with the PUB header the body is MAX_FRAME + 1: refused once
    // encoded, and the bytes written past the end are not kept.
    expect(() => w.publish("", big.subarray(0, MAX_FRAME - 5))).toThrow(RangeError);
    expect(() => w.publish("é", big.subarray(0, MAX_FRAME - 7))).toThrow(RangeError);
    expect(w.length).toBe(before);

    w.publish("b", Uint8Array.of(1, 2, 3));
    const { sink, error } = feed([w.take().slice()]);
    expect(error).toBeUndefined();
    expect(sink.frames).toEqual([
      { type: "pub", channel: "a", message: "x" },
      { type: "pub", channel: "b", message: Uint8Array.of(1, 2, 3) },
    ]);

    // The largest message that fits (a body of exactly MAX_FRAME) is written and accepted.
    w.publish("", big.subarray(0, MAX_FRAME - 6));
    const out = w.take();
    expect(out.length).toBe(4 + MAX_FRAME);
    let got: [string, number, number, boolean, number] | undefined;
    new FrameReader({
      ...ignored,
      onPublish: (channel, f, at, binary) =>
        (got = [channel, f.length, at, binary, f[f.length - 1]!]),
    }).push(out);
    expect(got).toEqual(["", 4 + MAX_FRAME, 10, true, 0x5a]);
  });
});

describe("many frames", () => {
  test("10,000 PUB frames arrive in order under any chunking", () => {
    const N = 10_000;
    const sent: Frame[] = [];
    for (let i = 0; i < N; i++) {
      const channel = `room/${i % 13}${i % 3 === 0 ? "" : "/é"}`;
      sent.push({
        type: "pub",
        channel,
        message: i % 2 === 0 ? `message ${i}` : Uint8Array.from(u32(i)),
      });
    }
    const { bytes } = encode(sent);
    const sizes = fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 8 });
    fc.assert(
      fc.property(sizes, (s) => {
        const { sink, error } = feed(split(bytes, s));
        expect(error).toBeUndefined();
        expect(sink.frames.length).toBe(N);
        expect(sink.frames).toEqual(sent);
      }),
      { numRuns: 10 },
    );
    // And one byte at a time.
    expect(feed(split(bytes, [1])).sink.frames).toEqual(sent);
  });
});
