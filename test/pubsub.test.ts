// Pub/sub in one process (SPEC §5), through the CLI with real WebSocket clients: the behaviour suite
// (test/suites/pubsub.ts: fan-out to many subscribers, exact and pattern channels, any bytes and any
// channel name, unsubscribe, a Bun-native app's publishes) in this mode, and a slow consumer being
// cut off without hurting the others.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { fixture, startCli } from "./harness.ts";
import { oneProcess, pubsubSuite } from "./suites/pubsub.ts";
import { RawWs, WsClient } from "./ws.ts";

pubsubSuite(oneProcess({ fanOut: [{ subscribers: 1000, messages: 100 }], stream: 1000 }));

/** The fixture's message `i` of `size` bytes: i as a big-endian u32, then (i + k) & 255 at offset k. */
function generated(i: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let k = 4; k < size; k++) out[k] = (i + k) & 255;
  new DataView(out.buffer).setUint32(0, i);
  return out;
}

const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);

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

    await using fast = await WsClient.open(srv.url.replace("http", "ws") + "/fast");
    fast.send(JSON.stringify({ op: "sub", ch: "flood" }));
    expect(await fast.next()).toBe('{"ack":"sub","ch":"flood"}');
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
    const lines = srv
      .stderr()
      .split("\n")
      .filter((l) => l.includes("(1013)"));
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
    const res = await fetch(`${srv.url}/gen?ch=burst&i=0&size=${1024 * 1024}&count=64`, {
      method: "POST",
    });
    expect(await res.text()).toBe("published");
    const rssAfter = rssKiB(pid);
    await srv.waitFor(/\/burst closed \(1013\)[^\n]*"burst"/, 5000);
    expect(
      srv
        .stderr()
        .split("\n")
        .filter((l) => l.includes("(1013)")).length,
    ).toBe(1);
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
