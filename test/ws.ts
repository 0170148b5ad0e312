// The tests' WebSocket clients, in one place: `WsClient` (Bun's WebSocket with awaitable reads, the
// one every test uses), the clients of test/fixtures/cluster-app.ts (`ready pid N`) and of
// examples/chat.ts (a chatter), `Clients` (a set closed together), the probe and fence barriers that
// replace fixed sleeps, and `RawWs` for tests that must see the wire (handshake head, RSV1, a reader
// that stops reading).
import { expect } from "bun:test";
import { connect, type Socket } from "node:net";
import { nap, Waiters, within } from "./harness.ts";

export type Msg = string | Uint8Array;

/**
 * What a probe carries. Probes are sent until a route is there (a subscription crossing the bus or
 * Redis); a client keeps them in `received` but never queues them for `next()`, so a probe that
 * arrives late cannot be mistaken for a message, and no test has to clear what it got.
 */
export const PROBE = "⟨probe⟩";
/** What a fence carries (see `fenced`). */
export const FENCE = "⟨fence⟩";

/** A message's text for a probe check: short binary messages are decoded (a probe published as bytes). */
const shortText = (m: Msg) =>
  typeof m === "string" ? m : m.byteLength < 256 ? new TextDecoder().decode(m) : "";

/** A probe (also inside a longer message: a chat line, a callback's JSON, as bytes). */
export const isProbe = (m: Msg) => shortText(m).includes(PROBE);

const textOf = (m: Msg) => (typeof m === "string" ? m : new TextDecoder().decode(m));

export interface WsOptions {
  /** extra request headers (Bun's WebSocket accepts them) */
  headers?: Record<string, string>;
  /** messages, besides probes, that are kept in `received` but not queued (a fixture's acks) */
  ignore?: (m: Msg) => boolean;
}

// --- the client ---

/**
 * A WebSocket client with awaitable reads: `next()`, `take(n)` and `until(stop)` read the queue
 * in arrival order (text as string, binary as bytes); `waitFor(match)` looks at everything received.
 * Each wait ends with the awaited message, or fails at once when the socket closes, or after `ms`.
 */
export class WsClient implements Disposable, AsyncDisposable {
  readonly ws: WebSocket;
  readonly url: string;
  /** every message received so far, in order, probes and ignored ones included */
  readonly received: Msg[] = [];
  readonly opened: Promise<void>;
  readonly closed: Promise<CloseEvent>;
  #queue: Msg[] = [];
  #head = 0;
  #waiters = new Waiters();
  #isClosed = false;
  #ignore: (m: Msg) => boolean;

  /** Starts connecting; `await client.opened` (or use `WsClient.open`) before sending. */
  constructor(url: string, o: WsOptions = {}) {
    this.url = url;
    this.ws = new WebSocket(url, o.headers ? { headers: o.headers } : undefined);
    this.ws.binaryType = "arraybuffer";
    const extra = o.ignore;
    this.#ignore = extra ? (m) => isProbe(m) || extra(m) : isProbe;
    const open = Promise.withResolvers<void>();
    const closed = Promise.withResolvers<CloseEvent>();
    this.opened = open.promise;
    this.closed = closed.promise;
    this.opened.catch(() => {});
    this.ws.onopen = () => open.resolve();
    this.ws.onerror = () => open.reject(new Error(`cannot open ${url}`));
    this.ws.onclose = (e) => {
      open.reject(new Error(`${url} closed before it opened (${e.code})`));
      this.#isClosed = true;
      closed.resolve(e);
      this.#waiters.wake();
    };
    this.ws.onmessage = (e) => {
      const m = typeof e.data === "string" ? e.data : new Uint8Array(e.data as ArrayBuffer);
      this.received.push(m);
      if (!this.#ignore(m)) this.#queue.push(m);
      this.#waiters.wake();
    };
  }

  /** Opens a client and waits for the open (rejects after `ms`). */
  static async open(url: string, o: WsOptions = {}, ms = 5000): Promise<WsClient> {
    const c = new WsClient(url, o);
    await within(c.opened, ms, `${url} to open`);
    return c;
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  send(m: Msg): void {
    this.ws.send(m);
  }

  close(code?: number, reason?: string): void {
    this.ws.close(code, reason);
  }

  /** How many messages are queued and not read yet. */
  get queued(): number {
    return this.#queue.length - this.#head;
  }

  /** The next message in the queue. */
  async next(ms = 5000): Promise<Msg> {
    return (await this.take(1, ms))[0]!;
  }

  /** The next `n` messages, in arrival order. */
  take(n: number, ms = 5000): Promise<Msg[]> {
    return this.#wait(
      () => (this.queued >= n ? this.#read(n) : undefined),
      () => `${n} messages (have ${this.queued})`,
      ms,
    );
  }

  /** The messages before the first one `stop` matches (a string: equal to it), which is read too. */
  until(stop: ((m: Msg) => boolean) | string, ms = 5000): Promise<Msg[]> {
    const hit = typeof stop === "string" ? (m: Msg) => m === stop : stop;
    let from = this.#head;
    return this.#wait(
      () => {
        for (; from < this.#queue.length; from++) {
          if (hit(this.#queue[from]!)) {
            const before = this.#read(from - this.#head);
            this.#read(1);
            return before;
          }
        }
        return undefined;
      },
      () =>
        `${typeof stop === "string" ? JSON.stringify(stop) : "the message awaited"} (have ${this.queued} others)`,
      ms,
    );
  }

  /** Takes every message queued now, without waiting. */
  drain(): Msg[] {
    return this.#read(this.queued);
  }

  /**
   * The first message received (since the client opened, probes included, read or not) that
   * `match` matches; a string matches a text message equal to it. Does not touch the queue.
   */
  waitFor(match: ((m: Msg) => boolean) | string, ms = 5000): Promise<Msg> {
    const hit = typeof match === "string" ? (m: Msg) => m === match : match;
    let from = 0;
    return this.#wait(
      () => {
        for (; from < this.received.length; from++)
          if (hit(this.received[from]!)) return this.received[from]!;
        return undefined;
      },
      () => (typeof match === "string" ? JSON.stringify(match) : "a matching message"),
      ms,
    );
  }

  /** Whether some message received so far is `text` (or contains it, with `partial`). */
  heard(text: string, partial = false): boolean {
    return this.received.some(
      (m) => typeof m === "string" && (partial ? m.includes(text) : m === text),
    );
  }

  #read(n: number): Msg[] {
    const out = this.#queue.slice(this.#head, this.#head + n);
    this.#head += n;
    if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return out;
  }

  #wait<T>(check: () => T | undefined, what: () => string, ms: number): Promise<T> {
    return this.#waiters.until(check, {
      ended: () => this.#isClosed,
      ms,
      fail: (why) =>
        new Error(
          `${why === "ended" ? `${this.url} closed while waiting for` : `timed out after ${ms} ms waiting for`} ${what()}`,
        ),
    });
  }

  [Symbol.dispose](): void {
    this.ws.close();
  }

  /** Closes and waits (at most 2 s) for the close to complete. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#isClosed) this.ws.close();
    await Promise.race([this.closed, new Promise((r) => setTimeout(r, 2000).unref())]);
  }
}

// --- clients of test/fixtures/cluster-app.ts ---

/** A client of test/fixtures/cluster-app.ts: its first message, `ready pid N`, names its event loop. */
export interface WorkerClient extends WsClient {
  /** the event loop that holds it: "pid", or "pid.thread" under --threads */
  pid: string;
}

/** Opens a cluster-app client and reads its `ready pid N`. */
export async function workerClient(url: string, o: WsOptions = {}): Promise<WorkerClient> {
  const c = await WsClient.open(url, o);
  const first = textOf(await c.next());
  const pid = /^ready pid ([\d.]+)$/.exec(first)?.[1];
  if (pid === undefined) {
    c.close();
    throw new Error(`${url}: first message ${JSON.stringify(first)}, not "ready pid N"`);
  }
  return Object.assign(c, { pid });
}

/** A set of clients closed together: `await using clients = new Clients()`. */
export class Clients implements AsyncDisposable {
  #all: WsClient[] = [];

  add<T extends WsClient>(c: T): T {
    this.#all.push(c);
    return c;
  }

  async open(url: string, o?: WsOptions): Promise<WsClient> {
    return this.add(await WsClient.open(url, o));
  }

  async worker(url: string, o?: WsOptions): Promise<WorkerClient> {
    return this.add(await workerClient(url, o));
  }

  /** Connects until two clients are held by two different event loops (the kernel picks). */
  async oneOnEach(url: string, o?: WsOptions): Promise<[WorkerClient, WorkerClient]> {
    const byPid = new Map<string, WorkerClient>();
    for (let i = 0; i < 100 && byPid.size < 2; i++) {
      const c = await workerClient(url, o);
      if (byPid.has(c.pid)) await c[Symbol.asyncDispose]();
      else byPid.set(c.pid, this.add(c));
    }
    expect(byPid.size).toBe(2);
    return [...byPid.values()] as [WorkerClient, WorkerClient];
  }

  /** A cluster-app client held by the event loop `pid` (connects until the kernel picks that one). */
  async onWorker(url: string, pid: string, o?: WsOptions): Promise<WorkerClient> {
    for (let i = 0; i < 100; i++) {
      const c = await workerClient(url, o);
      if (c.pid === pid) return this.add(c);
      await c[Symbol.asyncDispose]();
    }
    throw new Error(`no connection to ${url} reached ${pid} in 100 tries`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.#all.splice(0).map((c) => c[Symbol.asyncDispose]()));
  }
}

// --- barriers ---

let barriers = 0;

/**
 * Sends `poke(probe)` with a fresh probe text until every one of `to` has received it (or a later
 * one), waiting up to `step` ms for each poke to arrive before the next: a route that forms
 * asynchronously (a subscription crossing the bus or Redis) is awaited by its first delivery, not
 * by a fixed sleep. Probes never reach a queue, so nothing needs clearing afterwards.
 */
export async function untilHeard(
  poke: (probe: string) => unknown,
  to: WsClient[],
  o: { ms?: number; step?: number; what?: string } = {},
): Promise<void> {
  const ms = o.ms ?? 8000;
  const step = o.step ?? 100;
  const tag = `${PROBE} ${++barriers}.`;
  const mine = (m: Msg) => shortText(m).includes(tag);
  const deadline = Date.now() + ms;
  for (let i = 0; ; i++) {
    const waiting = to.filter((c) => !c.received.some(mine));
    if (waiting.length === 0) return;
    if (Date.now() > deadline)
      throw new Error(
        `${o.what ?? "a probe"} not heard by ${waiting.length} of ${to.length} within ${ms} ms`,
      );
    await poke(`${tag}${i}`);
    await Promise.all(waiting.map((c) => c.waitFor(mine, step).catch(() => {})));
  }
}

/** `from` sends probes (cluster-app publishes what a socket sends on its channel) until each of `to` heard one. */
export const linked = (from: WsClient, to: WsClient[], ms?: number) =>
  untilHeard((probe) => from.send(probe), to, { ms });

/**
 * What each reader gets before fences from `senders`: each sender's `send(text)` publishes a fence
 * (from a client, or from anywhere: an HTTP request, a Redis client);
 * each reader reads until it has had the fence of every sender (but its own, with `skipOwn`: a
 * Bun-native publish leaves the sender out) and returns the other messages. Called once each reader
 * has read what it expected, a duplicate (an echo delivered twice) or a stray published earlier
 * comes through the same path before the fence of a sender elsewhere, so the extras of a correct
 * run are [], found without waiting any fixed time.
 */
export async function fenced(
  senders: { client?: WsClient; send: (text: string) => unknown }[],
  readers: WsClient[],
  o: { skipOwn?: boolean; ms?: number } = {},
): Promise<Msg[][]> {
  const tag = `${FENCE} ${++barriers}.`;
  const fences = senders.map((s, i) => ({ ...s, text: `${tag}${i}` }));
  for (const f of fences) await f.send(f.text);
  return Promise.all(
    readers.map(async (r) => {
      const want = new Set(fences.filter((f) => !(o.skipOwn && f.client === r)).map((f) => f.text));
      const extras: Msg[] = [];
      while (want.size > 0) {
        let hit = "";
        const isFence = (m: Msg) => typeof m === "string" && want.has(m) && ((hit = m), true);
        extras.push(...(await r.until(isFence, o.ms ?? 8000)));
        want.delete(hit);
      }
      return extras;
    }),
  );
}

// --- examples/chat.ts ---

/** A chatter of examples/chat.ts's room, opened once its own "joined" line came. */
export interface Chatter extends WsClient {
  name: string;
}

/** The text of one of examples/chat.ts's WebSocket lines (`{"id":"epoch:offset","text":…}`). */
export function chatText(m: Msg): string | undefined {
  if (typeof m !== "string" || !m.startsWith("{")) return undefined;
  return (JSON.parse(m) as { text?: string }).text;
}

/** A `waitFor` match for the chat line `text`. */
export const chatLine = (text: string) => (m: Msg) => chatText(m) === text;

/** Joins the room at `base`/chat as `name`, the way the chat page does; rejects after `ms`. */
export async function chatter(base: string, name: string, ms = 5000): Promise<Chatter> {
  const c = new WsClient(`${base.replace(/^http/, "ws")}/chat?name=${name}`);
  try {
    await within(c.opened, ms, `${name} to connect to ${base}`);
    await c.waitFor(chatLine(`${name} joined (websocket)`), ms);
  } catch (err) {
    c.close();
    throw err;
  }
  return Object.assign(c, { name });
}

/** `from` says probes until `to` hears one: the room's subscription has crossed the bus or Redis. */
export const chatLinked = (from: Chatter, to: Chatter, ms = 5000) =>
  untilHeard((probe) => from.send(probe), [to], { ms, what: `${from.name}'s probe at ${to.name}` });

// --- on the wire ---

export interface Frame {
  opcode: number;
  /** RSV1: the payload is compressed (permessage-deflate, RFC 7692 §6) */
  rsv1: boolean;
  payload: Buffer;
}

/** A WebSocket client on a node:net socket, so the test sees the wire and decides when (and whether) it reads. */
export class RawWs implements Disposable {
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
  static async open(
    port: number,
    path: string,
    headers: Record<string, string> = {},
  ): Promise<RawWs> {
    const socket = connect(port, "127.0.0.1");
    const raw = new RawWs(socket);
    const extra = Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join("");
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
    this.socket.write(
      Buffer.concat([head, mask, Buffer.from(payload).map((b, i) => b ^ mask[i % 4]!)]),
    );
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
