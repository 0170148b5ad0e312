// iodine's WebSocket connections (SPEC §4): Iodine.upgrade with a handler, every callback, the
// connection object, serialised callbacks, and pub/sub through connections (SPEC §5).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { fixture, startCli, type CliProcess } from "./harness.ts";

/** A WebSocket client with a queue of received messages. */
class Client {
  ws: WebSocket;
  #queue: (string | Uint8Array)[] = [];
  #waiters: ((m: string | Uint8Array) => void)[] = [];
  opened: Promise<void>;
  closed: Promise<CloseEvent>;
  constructor(url: string, headers?: Record<string, string>) {
    this.ws = new WebSocket(url, headers ? { headers } : undefined);
    this.ws.binaryType = "arraybuffer";
    this.opened = new Promise((res, rej) => {
      this.ws.onopen = () => res();
      this.ws.onerror = () => rej(new Error("websocket error"));
    });
    this.closed = new Promise((res) => (this.ws.onclose = res));
    this.ws.onmessage = (e) => {
      const m = typeof e.data === "string" ? e.data : new Uint8Array(e.data as ArrayBuffer);
      const w = this.#waiters.shift();
      if (w) w(m);
      else this.#queue.push(m);
    };
  }
  next(ms = 3000): Promise<string | Uint8Array> {
    const m = this.#queue.shift();
    if (m !== undefined) return Promise.resolve(m);
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error("no message within " + ms + " ms")), ms);
      this.#waiters.push((x) => {
        clearTimeout(t);
        res(x);
      });
    });
  }
  send(m: string | Uint8Array) {
    this.ws.send(m);
  }
  [Symbol.dispose]() {
    this.ws.close();
  }
}

let srv: CliProcess;
let wsUrl: string;
beforeAll(async () => {
  srv = await startCli(["-v", "-p", "0", fixture("ws-iodine-app.ts")]);
  wsUrl = srv.url.replace("http", "ws");
});
afterAll(async () => {
  await srv?.[Symbol.asyncDispose]();
});

async function connect(path = "/chat"): Promise<Client> {
  const c = new Client(wsUrl + path);
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
    const c = new Client(small.url.replace("http", "ws") + "/big");
    await c.opened;
    expect(await c.next()).toBe("open websocket /big");
    c.send("x".repeat(1000));
    expect(await c.next()).toBe(`echo ${"x".repeat(1000)}`);
    c.send("y".repeat(1025));
    expect((await c.closed).code).toBe(1009);
  });

  test("a graceful stop gives onShutdown (which may still write), then closes, then exit 0", async () => {
    await using own = await startCli(["-p", "0", fixture("ws-iodine-app.ts")]);
    const a = new Client(own.url.replace("http", "ws") + "/a");
    const b = new Client(own.url.replace("http", "ws") + "/b");
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
