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
