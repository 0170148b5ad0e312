// Pub/sub in one process (SPEC §5), through the CLI with real WebSocket clients: fan-out to many
// subscribers, exact and pattern channels, any bytes and any channel name, unsubscribe, a Bun-native
// app's `server.publish`, and a slow consumer being cut off without hurting the others.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { fixture, nap, startCli, within, type CliProcess } from "./harness.ts";
import { RawWs } from "./raw-ws.ts";

type Msg = string | Uint8Array;

/** A Bun WebSocket client with a queue of received messages (text as string, binary as bytes). */
class Client implements Disposable {
  ws: WebSocket;
  opened: Promise<void>;
  closed: Promise<CloseEvent>;
  #queue: Msg[] = [];
  #wake: (() => void) | undefined;
  constructor(url: string) {
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    const open = Promise.withResolvers<void>();
    const closed = Promise.withResolvers<CloseEvent>();
    this.opened = open.promise;
    this.closed = closed.promise;
    this.ws.onopen = () => open.resolve();
    this.ws.onerror = () => open.reject(new Error("websocket error"));
    this.ws.onclose = (e) => {
      open.reject(new Error(`closed before open (${e.code})`));
      closed.resolve(e);
      this.#wake?.();
    };
    this.ws.onmessage = (e) => {
      this.#queue.push(typeof e.data === "string" ? e.data : new Uint8Array(e.data as ArrayBuffer));
      this.#wake?.();
    };
    this.opened.catch(() => {});
  }
  /** The next `n` messages, in arrival order. */
  async take(n: number, ms = 5000): Promise<Msg[]> {
    const deadline = Date.now() + ms;
    while (this.#queue.length < n) {
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`closed with ${this.#queue.length}/${n} messages`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out with ${this.#queue.length}/${n} messages`);
      const pause = nap(left);
      this.#wake = pause.wake;
      await pause.done;
      this.#wake = undefined;
    }
    return this.#queue.splice(0, n);
  }
  async next(ms = 5000): Promise<Msg> {
    return (await this.take(1, ms))[0]!;
  }
  /** Messages up to (not including) the first one for which `stop` is true, which is consumed. */
  async until(stop: (m: Msg) => boolean, ms = 5000): Promise<Msg[]> {
    const out: Msg[] = [];
    const deadline = Date.now() + ms;
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      if (stop(m)) return out;
      out.push(m);
    }
  }
  send(m: Msg) {
    this.ws.send(m);
  }
  /** Sends a fixture command and returns the messages that arrived before its ack, then the ack. */
  async command(c: Record<string, unknown>): Promise<{ before: Msg[]; ack: Record<string, unknown> }> {
    this.send(JSON.stringify(c));
    let ack: Record<string, unknown> = {};
    const before = await this.until((m) => {
      if (typeof m !== "string" || !m.startsWith('{"ack":')) return false;
      ack = JSON.parse(m);
      return ack.ack === c.op && ack.ch === c.ch;
    });
    return { before, ack };
  }
  /** Everything that arrived so far: a command's ack comes after every message published before it. */
  async sync(): Promise<Msg[]> {
    return (await this.command({ op: "sync", ch: "\u0000sync" })).before;
  }
  [Symbol.dispose]() {
    this.ws.close();
  }
}

const sha256 = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");
const bytes = (text: string) => new TextEncoder().encode(text);

/** The fixture's message `i` of `size` bytes: i as a big-endian u32, then (i + k) & 255 at offset k. */
function generated(i: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let k = 4; k < size; k++) out[k] = (i + k) & 255;
  new DataView(out.buffer).setUint32(0, i);
  return out;
}

/** Bytes that are not a pattern: xorshift32, seeded. */
function noise(size: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed;
  for (let k = 0; k < size; k++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[k] = x & 255;
  }
  return out;
}

describe("pub/sub in one process", () => {
  let srv: CliProcess;
  let wsUrl: string;
  beforeAll(async () => {
    srv = await startCli(["-p", "0", fixture("pubsub-app.ts")]);
    wsUrl = srv.url.replace("http", "ws") + "/ws";
  });
  afterAll(async () => {
    await srv?.[Symbol.asyncDispose]();
  });

  async function client(): Promise<Client> {
    const c = new Client(wsUrl);
    await within(c.opened, 5000, "websocket open");
    return c;
  }
  async function publish(channel: string, message: Msg): Promise<void> {
    const text = typeof message === "string" ? "&text=1" : "";
    const res = await fetch(`${srv.url}/publish?ch=${encodeURIComponent(channel)}${text}`, { method: "POST", body: message });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  }
  /** Iodine.subscribe / Iodine.unsubscribe in the server (POST /server/sub, /server/unsub). */
  const server = async (path: string): Promise<string> => {
    const res = await fetch(srv.url + path, { method: "POST" });
    expect(res.status).toBe(200);
    return await res.text();
  };
  /** What the server's Iodine.subscribe callbacks got since the last call. */
  const serverLog = async () => (await (await fetch(`${srv.url}/server/log`)).json()) as Record<string, string>[];

  test("1,000 subscribers each get every one of 100 messages exactly once, in order", async () => {
    const clients: Client[] = [];
    try {
      for (let batch = 0; batch < 10; batch++) {
        const some = Array.from({ length: 100 }, () => new Client(wsUrl));
        clients.push(...some);
        await within(Promise.all(some.map((c) => c.opened)), 10_000, `batch ${batch} of sockets to open`);
        await within(Promise.all(some.map((c) => c.command({ op: "sub", ch: "fan-out" }))), 10_000, "subscribe acks");
      }
      using publisher = await client();
      const sent = Array.from({ length: 100 }, (_, i) => `message ${i}`);
      for (const text of sent) publisher.send(JSON.stringify({ op: "pub", ch: "fan-out", text }));
      publisher.send(JSON.stringify({ op: "pub", ch: "fan-out", text: "end" }));
      const got = await within(
        Promise.all(clients.map((c) => c.until((m) => m === "end", 15_000))),
        15_000,
        "every subscriber to get 100 messages",
      );
      const wrong = got.filter((list) => list.length !== sent.length || list.some((m, i) => m !== sent[i]));
      expect(wrong.length).toBe(0);
      expect(got[0]).toEqual(sent);
      expect(got.length).toBe(1000);
    } finally {
      for (const c of clients) c.ws.close();
    }
  }, 20_000);

  test("exact and pattern channels through connections (native topic, JS delivery, callbacks)", async () => {
    using exact = await client();
    using star = await client();
    using range = await client();
    using literal = await client();
    using callback = await client();
    await exact.command({ op: "sub", ch: "chat.room1" });
    await star.command({ op: "sub", ch: "chat.*", match: "redis" });
    await range.command({ op: "sub", ch: "chat.room[0-9]", match: "redis" });
    await literal.command({ op: "sub", ch: "chat.*" });
    await callback.command({ op: "csub", ch: "chat.?obby", match: "redis" });

    await publish("chat.room1", "hello");
    await publish("chat.lobby", "lobby");
    await publish("chat.roomA", "letter");
    await publish("other", "nobody");
    await publish("chat.*", "star");

    expect(await exact.sync()).toEqual(["hello"]);
    expect(await star.sync()).toEqual(["hello", "lobby", "letter", "star"]);
    expect(await range.sync()).toEqual(["hello"]);
    expect(await literal.sync()).toEqual(["star"]);
    expect(await callback.sync()).toEqual([JSON.stringify({ cb: "chat.lobby", text: "lobby" })]);
  });

  test("exact and pattern channels through Iodine.subscribe in the server", async () => {
    await serverLog(); // clear
    await server("/server/sub?ch=news.sport");
    await server("/server/sub?ch=" + encodeURIComponent("news.[st]*") + "&match=redis");
    using c = await client();
    await c.command({ op: "pub", ch: "news.sport", text: "goal" }); // a connection publishes
    await publish("news.tech", "chips"); // and HTTP does
    await publish("news.weather", "rain");
    expect(await serverLog()).toEqual([
      { key: "news.sport", channel: "news.sport", text: "goal" },
      { key: "pattern news.[st]*", channel: "news.sport", text: "goal" },
      { key: "pattern news.[st]*", channel: "news.tech", text: "chips" },
    ]);
    expect(await server("/server/unsub?ch=news.sport")).toBe("true");
    expect(await server("/server/unsub?ch=" + encodeURIComponent("news.[st]*") + "&match=redis")).toBe("true");
    expect(await server("/server/unsub?ch=news.sport")).toBe("false");
    await publish("news.sport", "after");
    expect(await serverLog()).toEqual([]);
  });

  test("any bytes, any size, empty messages, Unicode channels and messages", async () => {
    using native = await client(); // no callback: Bun's topic fan-out
    using binary = await client(); // as: "binary": the JS registry
    using callback = await client();
    using pattern = await client();
    const unicode = "チャット/😀";
    for (const ch of ["raw", unicode]) {
      await native.command({ op: "sub", ch });
      await binary.command({ op: "sub", ch, as: "binary" });
      await callback.command({ op: "csub", ch });
    }
    await pattern.command({ op: "sub", ch: "チャット/*", match: "redis" });
    await serverLog();
    await server("/server/sub?ch=raw");

    const all = new Uint8Array(256).map((_, i) => i);
    const big = noise(1024 * 1024);
    await publish("raw", all);
    await publish("raw", big);
    await publish("raw", "");
    await publish("raw", new Uint8Array(0));
    const text = "こんにちは 😀 — ünïcödé, tab\t, NUL \u0000, end";
    await publish(unicode, text);

    const [a0, a1, a2, a3, a4, ...restA] = await native.sync();
    expect(restA).toEqual([]);
    expect(a0).toBeInstanceOf(Uint8Array);
    expect(a0).toEqual(all);
    expect(a1).toBeInstanceOf(Uint8Array);
    expect((a1 as Uint8Array).length).toBe(big.length);
    expect(sha256(a1 as Uint8Array)).toBe(sha256(big));
    expect(a2).toBe("");
    expect(a3).toBeInstanceOf(Uint8Array);
    expect((a3 as Uint8Array).length).toBe(0);
    expect(a4).toBe(text);

    const b = await binary.sync();
    expect(b.length).toBe(5);
    expect(b[0]).toEqual(all);
    expect(sha256(b[1] as Uint8Array)).toBe(sha256(big));
    expect(b[2]).toEqual(new Uint8Array(0)); // "" as binary
    expect(b[3]).toEqual(new Uint8Array(0));
    expect(b[4]).toEqual(bytes(text));

    const base64 = (u: Uint8Array) => Buffer.from(u).toString("base64");
    const expected: Record<string, string>[] = [
      { cb: "raw", base64: base64(all) },
      { cb: "raw", base64: base64(big) },
      { cb: "raw", text: "" },
      { cb: "raw", base64: "" },
      { cb: unicode, text },
    ];
    expect((await callback.sync()).map((m) => JSON.parse(m as string))).toEqual(expected);
    expect(await pattern.sync()).toEqual([text]);
    const log = await serverLog();
    expect(log.map(({ key: _, ...rest }) => rest)).toEqual(expected.slice(0, 4).map(({ cb, ...r }) => ({ channel: cb!, ...r })));
    await server("/server/unsub?ch=raw");
  });

  test("unsubscribe stops delivery (a later message still arrives, the unsubscribed one never does)", async () => {
    using c = await client();
    await c.command({ op: "sub", ch: "a" });
    await c.command({ op: "sub", ch: "p.*", match: "redis" });
    await c.command({ op: "csub", ch: "cb" });
    await c.command({ op: "sub", ch: "sentinel" });
    await publish("a", "a1");
    await publish("p.x", "p1");
    await publish("cb", "c1");
    expect(await c.sync()).toEqual(["a1", "p1", JSON.stringify({ cb: "cb", text: "c1" })]);

    expect((await c.command({ op: "unsub", ch: "a" })).ack.result).toBe(true);
    expect((await c.command({ op: "unsub", ch: "p.*", match: "redis" })).ack.result).toBe(true);
    expect((await c.command({ op: "unsub", ch: "cb" })).ack.result).toBe(true);
    expect((await c.command({ op: "unsub", ch: "a" })).ack.result).toBe(false);
    await publish("a", "a2");
    await publish("p.x", "p2");
    await publish("cb", "c2");
    await publish("sentinel", "after");
    expect(await c.next()).toBe("after");
    expect(await c.sync()).toEqual([]);
  });
});

describe("a Bun-native app's server.publish and iodine pub/sub in one process", () => {
  test("server.publish reaches the app's own ws.subscribe sockets, iodine connections and Iodine.subscribe", async () => {
    await using srv = await startCli(["-p", "0", fixture("pubsub-native-app.ts")]);
    const ws = srv.url.replace("http", "ws");
    using own = new Client(`${ws}/native?topic=mix`);
    using iodine = new Client(`${ws}/iodine?topic=mix`);
    expect(await own.next()).toBe("subscribed mix");
    expect(await iodine.next()).toBe("subscribed mix");
    const post = async (path: string, body: string) => {
      const res = await fetch(srv.url + path, { method: "POST", body });
      expect(await res.text()).toBe("published");
    };
    await post("/publish?topic=mix", "server.publish from fetch");
    await post("/iodine-publish?topic=mix", "Iodine.publish");
    own.send("publish server.publish from a websocket handler");
    const expected = ["server.publish from fetch", "Iodine.publish", "server.publish from a websocket handler"];
    expect(await own.take(3)).toEqual(expected);
    expect(await iodine.take(3)).toEqual(expected);
    const log = await (await fetch(`${srv.url}/log`)).json();
    expect(log).toEqual(expected.map((m) => `mix:${m}`));

    // A topic only the app's own sockets subscribe to (no iodine connection on it).
    using alone = new Client(`${ws}/native?topic=alone`);
    expect(await alone.next()).toBe("subscribed alone");
    await post("/publish?topic=alone", "server.publish, no iodine connection");
    await post("/iodine-publish?topic=alone", "Iodine.publish, no iodine connection");
    expect(await alone.take(2)).toEqual(["server.publish, no iodine connection", "Iodine.publish, no iodine connection"]);
  }, 15_000);
});

const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);

describe("a subscriber that cannot keep up", () => {
  test("is closed and logged at the 16 MiB outgoing limit while a fast one gets everything", async () => {
    await using srv = await startCli(["-p", "0", fixture("pubsub-app.ts")]);
    const pid = Number(await (await fetch(`${srv.url}/pid`)).text());
    expect(pid).toBe(srv.proc.pid); // one process: its RSS is the server's memory

    // Two readers that stop reading: one on Bun's native topic, one on JS delivery (as: "binary").
    using slowNative = await RawWs.open(srv.port, "/slow-native");
    using slowJs = await RawWs.open(srv.port, "/slow-js");
    slowNative.sendText(JSON.stringify({ op: "sub", ch: "flood" }));
    slowJs.sendText(JSON.stringify({ op: "sub", ch: "flood", as: "binary" }));
    expect((await slowNative.frame()).payload.toString()).toBe('{"ack":"sub","ch":"flood"}');
    expect((await slowJs.frame()).payload.toString()).toBe('{"ack":"sub","ch":"flood"}');
    slowNative.socket.pause();
    slowJs.socket.pause();

    using fast = new Client(srv.url.replace("http", "ws") + "/fast");
    await within(fast.opened, 5000, "fast client open");
    await fast.command({ op: "sub", ch: "flood" });
    const rssBefore = rssKiB(pid);

    // 64 × 1 MiB, each in its own request; the fast reader stays at most 4 messages behind.
    const SIZE = 1024 * 1024;
    const COUNT = 64;
    const WINDOW = 4;
    let checked = 0;
    const checkNext = async () => {
      const m = await fast.next(10_000);
      expect(m).toBeInstanceOf(Uint8Array);
      expect(Buffer.from(m as Uint8Array).equals(generated(checked, SIZE))).toBe(true);
      checked++;
    };
    let peakRss = rssBefore;
    for (let i = 0; i < COUNT; i++) {
      const res = await fetch(`${srv.url}/gen?ch=flood&i=${i}&size=${SIZE}`, { method: "POST" });
      expect(await res.text()).toBe("published");
      if (i >= WINDOW) await checkNext();
      if (i % 8 === 0) peakRss = Math.max(peakRss, rssKiB(pid));
    }
    while (checked < COUNT) await checkNext();
    expect(checked).toBe(COUNT);
    peakRss = Math.max(peakRss, rssKiB(pid));

    // One line per slow connection, naming it and the channel; the server goes on.
    await srv.waitFor(/\/slow-native closed \(1013\)/, 5000);
    await srv.waitFor(/\/slow-js closed \(1013\)/, 5000);
    const lines = srv.stderr().split("\n").filter((l) => l.includes("(1013)"));
    expect(lines.length).toBe(2);
    for (const l of lines) expect(l).toMatch(/^iodine: .*"flood"/);
    expect(srv.proc.exitCode).toBeNull();
    expect(await (await fetch(`${srv.url}/pid`)).text()).toBe(String(pid));
    expect((peakRss - rssBefore) / 1024).toBeLessThan(200);

    // What the slow readers get when they read at last: a gap-free prefix of the messages, then a
    // 1013 close frame (queued behind them) and the end of the stream — never a message after a gap.
    for (const slow of [slowNative, slowJs]) {
      slow.socket.resume();
      const { frames, leftover } = await slow.rest(10_000);
      const data = frames.slice(0, -1);
      expect(data.length).toBeGreaterThan(0);
      expect(data.length).toBeLessThan(COUNT);
      data.forEach((f, i) => {
        expect(f.opcode).toBe(2);
        expect(f.payload.equals(generated(i, SIZE))).toBe(true);
      });
      const close = frames.at(-1)!;
      expect(close.opcode).toBe(8);
      expect(close.payload.readUInt16BE(0)).toBe(1013);
      expect(leftover).toBe(0);
    }
    // The fast reader is still subscribed and open.
    await fetch(`${srv.url}/publish?ch=flood&text=1`, { method: "POST", body: "still here" });
    expect(await fast.next()).toBe("still here");
  }, 30_000);

  test("is closed and logged when one burst of publishes overruns it (Bun already dropped a message)", async () => {
    await using srv = await startCli(["-p", "0", fixture("pubsub-app.ts")]);
    const pid = srv.proc.pid;
    using slow = await RawWs.open(srv.port, "/burst");
    slow.sendText(JSON.stringify({ op: "sub", ch: "burst" }));
    expect((await slow.frame()).payload.toString()).toBe('{"ack":"sub","ch":"burst"}');
    slow.socket.pause();
    const rssBefore = rssKiB(pid);
    // 64 × 1 MiB in one turn of the server's event loop: Bun queues to 16 MiB, then drops.
    const res = await fetch(`${srv.url}/gen?ch=burst&i=0&size=${1024 * 1024}&count=64`, { method: "POST" });
    expect(await res.text()).toBe("published");
    const rssAfter = rssKiB(pid);
    await srv.waitFor(/\/burst closed \(1013\)[^\n]*"burst"/, 5000);
    expect(srv.stderr().split("\n").filter((l) => l.includes("(1013)")).length).toBe(1);
    expect((rssAfter - rssBefore) / 1024).toBeLessThan(200);
    slow.socket.resume();
    // Bun had dropped a message and then discarded the socket's buffer, so no close frame could go
    // out: the reader gets a gap-free prefix (then perhaps the cut-off start of one more) and the end.
    const { frames } = await slow.rest(10_000);
    expect(frames.length).toBeGreaterThan(0);
    expect(frames.length).toBeLessThan(64);
    frames.forEach((f, i) => {
      expect(f.opcode).toBe(2);
      expect(f.payload.equals(generated(i, 1024 * 1024))).toBe(true);
    });
    expect(await (await fetch(`${srv.url}/pid`)).text()).toBe(String(pid));
  }, 30_000);
});
