// iodine's WebSocket connections (SPEC §4): Iodine.upgrade with a handler, every callback, the
// connection object, serialised callbacks, pub/sub through connections (SPEC §5), and
// permessage-deflate (RFC 7692) by the CLI's --deflate or the upgrade's `deflate`.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { constants, deflateRawSync, inflateRawSync } from "node:zlib";
import { upgrade } from "../src/connections/upgrade.ts";
import { errorOf, fixture, startCli, type CliProcess } from "./harness.ts";
import { RawWs, WsClient } from "./ws.ts";

let srv: CliProcess;
let wsUrl: string;
beforeAll(async () => {
  srv = await startCli(["-v", "-p", "0", fixture("ws-iodine-app.ts")]);
  wsUrl = srv.url.replace("http", "ws");
});
afterAll(async () => {
  await srv?.[Symbol.asyncDispose]();
});

async function connect(path = "/chat"): Promise<WsClient> {
  const c = new WsClient(wsUrl + path);
  await c.opened;
  expect(await c.next()).toBe(`open websocket ${path}`);
  return c;
}

describe("WebSocket connections", () => {
  test("onOpen sees the upgrade request; onMessage echoes text and binary", async () => {
    using c = await connect("/room/1");
    c.send("hello");
    expect(await c.next()).toBe("echo hello");
    const bytes = new Uint8Array(256).map((_, i) => i);
    c.send(bytes);
    expect(await c.next()).toEqual(bytes);
  });

  test("client.close() closes after pending writes; onClose runs (the server keeps going)", async () => {
    const c = await connect();
    c.send("close");
    const ev = await c.closed;
    expect(ev.code).toBe(1000);
    using d = await connect();
    d.send("again");
    expect(await d.next()).toBe("echo again");
  });

  test("a callback's promise is awaited before the next callback of that connection runs", async () => {
    using c = await connect();
    c.send("slow 150");
    c.send("after");
    expect(await c.next()).toBe("slow 150 done");
    expect(await c.next()).toBe("echo after");
  });

  test("a throwing callback is logged and touches nothing else", async () => {
    using c = await connect();
    c.send("throw");
    await srv.waitFor(/websocket onMessage callback: Error: handler failure on purpose/);
    c.send("still here");
    expect(await c.next()).toBe("echo still here");
  });

  test("assigning client.handler swaps the protocol object (snake_case names work)", async () => {
    using c = await connect();
    c.send("info");
    expect(await c.next()).toBe("info open=true pending=0 timeout=0");
    c.send("swap");
    expect(await c.next()).toBe("swapped");
    c.send("now shouting");
    expect(await c.next()).toBe("NOW SHOUTING");
  });

  test("the upgrade response carries the headers given to Iodine.upgrade", async () => {
    const { rawRequest } = await import("./harness.ts");
    const raw = await rawRequest(
      srv.port,
      "GET /h HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      (r) => r.includes("\r\n\r\n"),
    );
    expect(raw).toStartWith("HTTP/1.1 101");
    expect(raw.split("\r\n\r\n")[0]).toMatch(/\r\nset-cookie: chat=1/i);
  });

  test("a message over --max-msg closes the socket with 1009", async () => {
    await using small = await startCli(["--max-msg", "1", "-p", "0", fixture("ws-iodine-app.ts")]);
    const c = new WsClient(small.url.replace("http", "ws") + "/big");
    await c.opened;
    expect(await c.next()).toBe("open websocket /big");
    c.send("x".repeat(1000));
    expect(await c.next()).toBe(`echo ${"x".repeat(1000)}`);
    c.send("y".repeat(1025));
    expect((await c.closed).code).toBe(1009);
  });

  test("a graceful stop gives onShutdown (which may still write), then closes, then exit 0", async () => {
    await using own = await startCli(["-p", "0", fixture("ws-iodine-app.ts")]);
    const a = new WsClient(own.url.replace("http", "ws") + "/a");
    const b = new WsClient(own.url.replace("http", "ws") + "/b");
    await Promise.all([a.opened, b.opened]);
    expect(await a.next()).toBe("open websocket /a");
    expect(await b.next()).toBe("open websocket /b");
    b.send("swap");
    expect(await b.next()).toBe("swapped");
    own.proc.kill("SIGTERM");
    expect(await a.next()).toBe("shutdown");
    expect(await b.next()).toBe("server going down");
    expect((await a.closed).code).toBe(1001); // going away (RFC 6455 §7.4.1)
    expect((await b.closed).code).toBe(1001);
    expect(await own.proc.exited).toBe(0);
  });

  test("onDrained runs after back-pressure, once the outgoing buffer has emptied", async () => {
    using c = await connect();
    c.send("flood");
    let n = 0;
    for (let m = await c.next(10_000); typeof m !== "string"; m = await c.next(10_000)) {
      expect(m.length).toBe(1024 * 1024);
      n++;
    }
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThan(15);
    expect(await c.next()).toBe("drained");
  });

  test("the upgrade is logged as 101 with -v", async () => {
    using _c = await connect("/logged");
    await srv.waitFor(/"GET \/logged HTTP\/1\.1" 101 - /);
  });
});

describe("pub/sub through connections", () => {
  test("exact channel: every subscriber gets each message once, in order; unsubscribe stops it", async () => {
    using a = await connect();
    using b = await connect();
    a.send("sub room");
    b.send("sub room");
    a.send("ping-a");
    expect(await a.next()).toBe("echo ping-a"); // a's subscribe has been processed
    b.send("ping-b");
    expect(await b.next()).toBe("echo ping-b");
    for (let i = 0; i < 100; i++) a.send(`pub room m${i}`);
    for (let i = 0; i < 100; i++) {
      expect(await a.next()).toBe(`m${i}`);
      expect(await b.next()).toBe(`m${i}`);
    }
    b.send("unsub room");
    expect(await b.next()).toBe("unsub true");
    a.send("pub room after");
    expect(await a.next()).toBe("after");
    b.send("pub other x");
    b.send("ping");
    expect(await b.next()).toBe("echo ping");
  });

  test("patterns (match: redis), binary delivery, callbacks, and publishes from HTTP", async () => {
    using c = await connect();
    c.send("psub news.*");
    c.send("bsub bin");
    c.send("csub cb");
    c.send("sync");
    expect(await c.next()).toBe("echo sync");
    await fetch(`${srv.url}/publish?channel=news.sport&message=goal`);
    expect(await c.next()).toBe("goal");
    await fetch(`${srv.url}/publish?channel=bin&message=AB`);
    expect(await c.next()).toEqual(new TextEncoder().encode("AB"));
    await fetch(`${srv.url}/publish?channel=cb&message=hi`);
    expect(await c.next()).toBe("cb cb hi");
    await fetch(`${srv.url}/publish?channel=weather&message=rain`);
    c.send("sync2");
    expect(await c.next()).toBe("echo sync2");
  });

  test("Iodine.subscribe in the server receives what connections publish", async () => {
    using c = await connect();
    c.send("pub server-side from-client");
    c.send("log");
    expect(await c.next()).toContain("server-side:from-client");
  });
});

// --- permessage-deflate ---

const OFFER = { "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits" };
const extensionsOf = (head: string) => /\r\nsec-websocket-extensions: *([^\r]*)/i.exec(head)?.[1];
/** About 40,000 characters of words, which deflate shrinks many times over. */
const BIG = Array.from({ length: 5_000 }, (_, i) => `word${i % 97} `).join("");
// RFC 7692 §7.2.1: a message is deflated with a sync flush and sent without the flush's 00 00 ff ff.
const TAIL = Buffer.from([0, 0, 0xff, 0xff]);
const deflated = (text: string) =>
  deflateRawSync(text, { finishFlush: constants.Z_SYNC_FLUSH }).subarray(0, -4);
const inflated = (payload: Buffer) =>
  inflateRawSync(Buffer.concat([payload, TAIL]), {
    finishFlush: constants.Z_SYNC_FLUSH,
  }).toString();

describe("permessage-deflate", () => {
  let z: CliProcess;
  beforeAll(async () => {
    z = await startCli(["-deflate", "-p", "0", fixture("ws-iodine-app.ts")]);
  });
  afterAll(async () => {
    await z?.[Symbol.asyncDispose]();
  });

  test("off by default: an offer gets no extension back, unless Iodine.upgrade says { deflate: true }", async () => {
    using plain = await RawWs.open(srv.port, "/d", OFFER);
    expect(extensionsOf(plain.head)).toBeUndefined();
    using on = await RawWs.open(srv.port, "/d?deflate=1", OFFER);
    expect(extensionsOf(on.head)).toStartWith("permessage-deflate");
    expect((await on.frame()).payload.toString()).toBe("open websocket /d");
    on.sendFrame(1, deflated(BIG), true);
    const echo = await on.frame();
    expect(echo.rsv1).toBe(true);
    expect(inflated(echo.payload)).toBe(`echo ${BIG}`);
  });

  test("-deflate: an offer gets permessage-deflate back; { deflate: false } and no offer get none", async () => {
    using on = await RawWs.open(z.port, "/z", OFFER);
    expect(extensionsOf(on.head)).toStartWith("permessage-deflate");
    using off = await RawWs.open(z.port, "/z?deflate=0", OFFER);
    expect(extensionsOf(off.head)).toBeUndefined();
    using none = await RawWs.open(z.port, "/z");
    expect(extensionsOf(none.head)).toBeUndefined();
    // Without the extension, a message of any size goes plain.
    for (const c of [off, none]) {
      expect((await c.frame()).payload.toString()).toBe("open websocket /z");
      c.sendText(BIG);
      expect(await c.frame()).toMatchObject({ rsv1: false, payload: Buffer.from(`echo ${BIG}`) });
    }
  });

  test("compressed both ways from 1 KiB up, shorter messages plain, through pub/sub too", async () => {
    using ws = await RawWs.open(z.port, "/z", OFFER);
    using plain = await RawWs.open(z.port, "/z?deflate=0", OFFER);
    const open = await ws.frame();
    expect(open).toMatchObject({ opcode: 1, rsv1: false });
    expect(open.payload.toString()).toBe("open websocket /z");
    expect((await plain.frame()).payload.toString()).toBe("open websocket /z");

    // A compressed message in; its echo goes out compressed.
    ws.sendFrame(1, deflated(BIG), true);
    const echo = await ws.frame();
    expect(echo.rsv1).toBe(true);
    expect(echo.payload.length).toBeLessThan(BIG.length / 4);
    expect(inflated(echo.payload)).toBe(`echo ${BIG}`);
    // The line: a 1,023-byte echo goes plain, a 1,024-byte one compressed.
    ws.sendText("a".repeat(1018));
    expect(await ws.frame()).toMatchObject({
      rsv1: false,
      payload: Buffer.from(`echo ${"a".repeat(1018)}`),
    });
    ws.sendText("a".repeat(1019));
    const line = await ws.frame();
    expect(line.rsv1).toBe(true);
    expect(inflated(line.payload)).toBe(`echo ${"a".repeat(1019)}`);

    // Publishes: Bun's native topic (sub) and iodine's own delivery (psub), to a deflate socket and a plain one.
    for (const c of [ws, plain]) {
      c.sendText("sub room");
      c.sendText("psub news.*");
      c.sendText("sync");
      expect((await c.frame()).payload.toString()).toBe("echo sync");
    }
    ws.sendText(`pub room ${BIG}`);
    ws.sendText("pub room short");
    ws.sendText(`pub news.big ${BIG}`);
    const got = [await ws.frame(), await ws.frame(), await ws.frame()];
    expect(got.map((f) => f.rsv1)).toEqual([true, false, true]);
    expect(got.map((f) => (f.rsv1 ? inflated(f.payload) : f.payload.toString()))).toEqual([
      BIG,
      "short",
      BIG,
    ]);
    const other = [await plain.frame(), await plain.frame(), await plain.frame()];
    expect(other.map((f) => f.rsv1)).toEqual([false, false, false]);
    expect(other.map((f) => f.payload.toString())).toEqual([BIG, "short", BIG]);
  });

  test("a WebSocket client (Bun's offers it) exchanges large messages both ways and through pub/sub", async () => {
    const url = z.url.replace("http", "ws");
    using a = new WsClient(`${url}/a`);
    using b = new WsClient(`${url}/b`);
    await Promise.all([a.opened, b.opened]);
    expect(a.ws.extensions).toStartWith("permessage-deflate");
    expect(await a.next()).toBe("open websocket /a");
    expect(await b.next()).toBe("open websocket /b");
    a.send(BIG);
    expect(await a.next()).toBe(`echo ${BIG}`);
    const bytes = new TextEncoder().encode(BIG);
    a.send(bytes);
    expect(await a.next()).toEqual(bytes);
    for (const c of [a, b]) {
      c.send("sub room");
      c.send("sync");
      expect(await c.next()).toBe("echo sync");
    }
    a.send(`pub room ${BIG}`);
    expect(await a.next()).toBe(BIG);
    expect(await b.next()).toBe(BIG);
  });

  test("a Bun-native app's sockets follow -deflate, unless the app sets perMessageDeflate itself", async () => {
    const offered = async (args: string[], env: Record<string, string> = {}) => {
      await using app = await startCli([...args, "-p", "0", fixture("websocket-app.ts")], { env });
      using ws = await RawWs.open(app.port, "/", OFFER);
      return extensionsOf(ws.head)?.split(";")[0];
    };
    expect(await offered([])).toBeUndefined();
    expect(await offered(["--deflate"])).toBe("permessage-deflate");
    expect(await offered(["--deflate"], { NATIVE_DEFLATE: "0" })).toBeUndefined();
    expect(await offered([], { NATIVE_DEFLATE: "1" })).toBe("permessage-deflate");
  });

  test('Iodine.upgrade: "deflate" must be a boolean', () => {
    const req = new Request("http://localhost/", { headers: { upgrade: "websocket" } });
    expect(errorOf(() => upgrade(req, {}, { deflate: "yes" as never }))).toBe(
      'TypeError: Iodine.upgrade: "deflate" must be a boolean, got "yes"',
    );
  });
});
