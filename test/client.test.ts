// Iodine.connect (SPEC §4): WebSocket clients get the same callbacks as server-side connections.
// Real servers: Bun.serve on port 0 in this process, and the CLI with the command-protocol fixture;
// the cases that log (a connection that never opens) or stop the process run in a subprocess.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server, ServerWebSocket } from "bun";
import { connect, type ConnectOptions } from "../src/connections/client.ts";
import { IodineError } from "../src/errors.ts";
import { publish } from "../src/pubsub/registry.ts";
import { selfSigned } from "../src/tls.ts";
import type { Connection, Handler, Message } from "../src/types.ts";
import {
  fixture,
  freePort,
  ROOT,
  runCli,
  runCommand,
  startCli,
  startCommand,
  type CliProcess,
} from "./harness.ts";

/** A handler that records every callback and queues messages for `next()`. */
class Recorder implements Handler {
  events: string[] = [];
  readonly opened = Promise.withResolvers<Connection>();
  readonly closed = Promise.withResolvers<void>();
  readonly drained = Promise.withResolvers<number>();
  #queue: Message[] = [];
  #waiters: ((m: Message) => void)[] = [];

  onOpen(c: Connection) {
    this.events.push("open");
    this.opened.resolve(c);
  }
  onMessage(_c: Connection, data: Message) {
    this.events.push("message");
    const w = this.#waiters.shift();
    if (w) w(data);
    else this.#queue.push(data);
  }
  onDrained(c: Connection) {
    this.events.push("drained");
    this.drained.resolve(c.pending);
  }
  onClose() {
    this.events.push("close");
    this.closed.resolve();
  }
  next(ms = 3000): Promise<Message> {
    const m = this.#queue.shift();
    if (m !== undefined) return Promise.resolve(m);
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error(`no message within ${ms} ms`)), ms);
      this.#waiters.push((x) => {
        clearTimeout(t);
        res(x);
      });
    });
  }
}

/** Connects and waits for onOpen; disposing closes the connection. */
async function open(url: string, extra: Partial<ConnectOptions> = {}) {
  const h = new Recorder();
  const client = connect({ url, handler: h, ...extra });
  await h.opened.promise;
  return Object.assign(h, { client, [Symbol.dispose]: () => client.close() });
}

/** A Bun.serve WebSocket echo server on port 0 that records what it saw. */
function echoServer(tls?: { cert: string; key: string }) {
  const seen = {
    headers: [] as (string | null)[],
    closes: [] as number[],
    received: [] as (string | number)[],
    pings: 0,
    /** resolves at the third ping */
    pinged: Promise.withResolvers<void>(),
  };
  const server: Server<undefined> = Bun.serve({
    port: 0,
    ...(tls ? { tls } : {}),
    fetch(req, srv) {
      seen.headers.push(req.headers.get("x-token"));
      return srv.upgrade(req) ? undefined : new Response("not an upgrade", { status: 400 });
    },
    websocket: {
      message(ws: ServerWebSocket<undefined>, m) {
        if (typeof m === "string" && m === "please close") return ws.close(1000);
        if (typeof m !== "string" && m.length > 1024) return void seen.received.push(m.length);
        seen.received.push(typeof m === "string" ? m : m.length);
        ws.send(m);
      },
      ping() {
        if (++seen.pings === 3) seen.pinged.resolve();
      },
      close(_ws, code) {
        seen.closes.push(code);
      },
    },
  });
  return Object.assign(server, { seen });
}

/** Runs a fixture to completion and returns its exit code, stdout and stderr. */
const runFixture = (args: string[]) => runCommand([process.execPath, ...args]);

const EVERY_BYTE = new Uint8Array(256).map((_, i) => i);

describe("Iodine.connect against Bun.serve", () => {
  test("onOpen, then text and binary (every byte value) round trips; close() → 1000 and onClose once", async () => {
    using server = echoServer();
    const h = new Recorder();
    const client = connect({
      url: `ws://127.0.0.1:${server.port}/`,
      handler: h,
      headers: { "x-token": "t1" },
    });
    expect(client.isOpen).toBe(false);
    expect(client.write("too early")).toBe(false);
    expect(await h.opened.promise).toBe(client);
    expect([client.protocol, client.request, client.isOpen, client.pending]).toEqual([
      "websocket",
      undefined,
      true,
      0,
    ]);
    expect(server.seen.headers).toEqual(["t1"]);
    expect(client.write("hello")).toBe(true);
    expect(await h.next()).toBe("hello");
    client.write(EVERY_BYTE);
    const back = await h.next();
    expect(back).toBeInstanceOf(Uint8Array);
    expect(back).toEqual(EVERY_BYTE);
    client.close();
    await h.closed.promise;
    expect(client.isOpen).toBe(false);
    expect(client.write("after")).toBe(false);
    // Another full round trip gives a late second onClose time to show up.
    {
      using other = await open(`ws://127.0.0.1:${server.port}/`);
      other.client.write("x");
      expect(await other.next()).toBe("x");
    }
    expect(h.events).toEqual(["open", "message", "message", "close"]);
    expect(server.seen.closes[0]).toBe(1000);
    expect(server.seen.received).toEqual(["hello", 256, "x"]);
  });

  test("the server closing the connection → onClose once", async () => {
    using server = echoServer();
    const c = await open(`ws://127.0.0.1:${server.port}/`);
    c.client.write("please close");
    await c.closed.promise;
    expect(c.client.isOpen).toBe(false);
    expect(c.client.write("gone")).toBe(false);
    c.client.close(); // a no-op now: no second onClose
    using other = await open(`ws://127.0.0.1:${server.port}/`);
    other.client.write("y");
    expect(await other.next()).toBe("y");
    expect(c.events).toEqual(["open", "close"]);
  });

  test("iodine's snake_case callbacks work the same", async () => {
    using server = echoServer();
    const events: string[] = [];
    const done = Promise.withResolvers<void>();
    connect({
      url: `ws://127.0.0.1:${server.port}/`,
      handler: {
        on_open: (c) => {
          events.push("on_open");
          c.write("snake");
        },
        on_message: (c, data) => {
          events.push(`on_message ${String(data)}`);
          c.close();
        },
        on_close: () => {
          events.push("on_close");
          done.resolve();
        },
      },
    });
    await done.promise;
    expect(events).toEqual(["on_open", "on_message snake", "on_close"]);
  });

  test("onDrained once the queued bytes are sent (pending > 0, then 0)", async () => {
    using server = echoServer();
    using c = await open(`ws://127.0.0.1:${server.port}/`);
    const chunk = new Uint8Array(8 * 1024 * 1024);
    for (let i = 0; i < 4; i++) c.client.write(chunk);
    expect(c.client.pending).toBeGreaterThan(0);
    expect(await c.drained.promise).toBe(0);
    c.client.write("sync");
    expect(await c.next()).toBe("sync");
    expect(server.seen.received).toEqual([
      chunk.length,
      chunk.length,
      chunk.length,
      chunk.length,
      "sync",
    ]);
    expect(c.events).toEqual(["open", "drained", "message"]);
  });

  test("ping: the server receives a ping every `ping` seconds", async () => {
    using server = echoServer();
    const t0 = performance.now();
    using _c = await open(`ws://127.0.0.1:${server.port}/`, { ping: 0.02 });
    await server.seen.pinged.promise;
    expect(performance.now() - t0).toBeGreaterThanOrEqual(50);
  });

  test("wss:// with tls.ca trusting a self-signed certificate, and rejectUnauthorized: false", async () => {
    const tls = await selfSigned();
    using server = echoServer(tls);
    {
      using c = await open(`wss://localhost:${server.port}/`, { tls: { ca: tls.cert } });
      c.client.write("secure");
      expect(await c.next()).toBe("secure");
    }
    using c = await open(`wss://localhost:${server.port}/`, { tls: { rejectUnauthorized: false } });
    c.client.write(EVERY_BYTE);
    expect(await c.next()).toEqual(EVERY_BYTE);
  });
});

describe("a connection that never opens: onClose once, one log line", () => {
  test("connection refused", async () => {
    const url = `ws://127.0.0.1:${freePort()}/`;
    const r = await runFixture([fixture("client-events.ts"), url]);
    expect(r).toEqual({
      code: 0,
      stdout: "close\n",
      stderr: `iodine: Iodine.connect: ${url} failed to open: Failed to connect (ECONNREFUSED)\n`,
    });
  });

  test("wss:// to a self-signed certificate without tls.ca", async () => {
    using server = echoServer(await selfSigned());
    const url = `wss://localhost:${server.port}/`;
    const r = await runFixture([fixture("client-events.ts"), url]);
    expect(r).toEqual({
      code: 0,
      stdout: "close\n",
      stderr: `iodine: Iodine.connect: ${url} failed to open: TLS handshake failed: self signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)\n`,
    });
    expect(server.seen.closes).toEqual([]);
  });

  test("the server refuses the upgrade (HTTP 400)", async () => {
    using server = Bun.serve({ port: 0, fetch: () => new Response("no", { status: 400 }) });
    const url = `ws://127.0.0.1:${server.port}/`;
    const r = await runFixture([fixture("client-events.ts"), url]);
    expect(r).toEqual({
      code: 0,
      stdout: "close\n",
      stderr: `iodine: Iodine.connect: ${url} failed to open: Expected 101 status code: 400\n`,
    });
  });

  test("close() while connecting: onClose once, nothing logged", async () => {
    using server = echoServer();
    const r = await runFixture([
      fixture("client-events.ts"),
      `ws://127.0.0.1:${server.port}/`,
      "abort",
    ]);
    expect(r).toEqual({ code: 0, stdout: "close\n", stderr: "" });
  });

  test("for comparison, an opened one: message, then close", async () => {
    using server = echoServer();
    const r = await runFixture([fixture("client-events.ts"), `ws://127.0.0.1:${server.port}/`]);
    expect(r).toEqual({ code: 0, stdout: "message hello\nclose\n", stderr: "" });
  });
});

test("Iodine.stop(): an open client gets onShutdown (it may still write), then a 1000 close", async () => {
  const said: string[] = [];
  const closed = Promise.withResolvers<number>();
  using server = Bun.serve({
    port: 0,
    fetch: (req, srv) => (srv.upgrade(req) ? undefined : new Response("no", { status: 400 })),
    websocket: {
      message: (_ws, m) => void said.push(String(m)),
      close: (_ws, code) => closed.resolve(code),
    },
  });
  const r = await runFixture([fixture("client-stop.ts"), `ws://127.0.0.1:${server.port}/`]);
  expect(r).toEqual({ code: 0, stdout: "open\nshutdown\nclose\n", stderr: "" });
  expect(await closed.promise).toBe(1000);
  expect(said).toEqual(["bye"]);
});

describe("Iodine.start() with no listener: timers, clients and pub/sub run until Iodine.stop() (iodine's client scripts)", () => {
  const script = fixture("timers-pubsub-script.ts");
  const RUNNING =
    "iodine: running with no listener (timers, clients, pub/sub) until Iodine.stop(), SIGINT or SIGTERM\n";
  const TICKS = "ticks 1\nticks 2\nticks 3\nstart_shutdown\non_finish\n";

  test("bun script.ts: the lifecycle, three ticks published by runEvery to a subscriber, stopped by the third; exit 0", async () => {
    const r = await runFixture([script]);
    expect(r).toEqual({
      code: 0,
      stdout: `pre_start\nenter_child\non_start\nstart returned\n${TICKS}`,
      stderr: RUNNING,
    });
  });

  test("under the CLI: the same script runs once the module has loaded; exit 0", async () => {
    const r = await runCli(["-p", "0", script]);
    expect(r).toEqual({
      code: 0,
      stdout: `start returned\npre_start\nenter_child\non_start\n${TICKS}`,
      stderr: RUNNING,
    });
  });

  test("under the CLI with -w 2: one line says it runs as one process, and it runs once", async () => {
    const r = await runCli(["-p", "0", "-w", "2", script]);
    expect(r).toEqual({
      code: 0,
      stdout: `start returned\npre_start\nenter_child\non_start\n${TICKS}`,
      stderr: `iodine: ${script} opens no listener: it runs as one process (--workers and --threads apply to listeners)\n${RUNNING}`,
    });
  });

  test("nothing scheduled: the process stays up until SIGTERM, then stops gracefully with exit 0", async () => {
    await using p = await startCommand([process.execPath, script], {
      env: { WAIT: "1" },
      noListener: true,
    });
    await p.waitFor(/start returned\n/, 5000, "stdout");
    expect(p.proc.exitCode).toBeNull();
    expect(await p.stop("SIGTERM")).toBe(0);
    expect(p.stdout()).toBe(
      "pre_start\nenter_child\non_start\nstart returned\nstart_shutdown\non_finish\n",
    );
    expect(p.stderr()).toBe(`${RUNNING}iodine: SIGTERM: stopping gracefully\n`);
  });
});

describe("Iodine.connect against the iodine CLI (command-protocol fixture)", () => {
  let srv: CliProcess;
  let wsUrl: string;
  beforeAll(async () => {
    srv = await startCli(["-p", "0", fixture("ws-iodine-app.ts")]);
    wsUrl = srv.url.replace("http", "ws");
  });
  afterAll(async () => {
    await srv?.[Symbol.asyncDispose]();
  });

  async function openCli(path = "/client") {
    const c = await open(wsUrl + path);
    expect(await c.next()).toBe(`open websocket ${path}`);
    return c;
  }

  test("echo of text and of every byte value; the server's close → onClose once", async () => {
    const c = await openCli("/room/7");
    c.client.write("hi");
    expect(await c.next()).toBe("echo hi");
    c.client.write(EVERY_BYTE);
    expect(await c.next()).toEqual(EVERY_BYTE);
    c.client.write("close");
    await c.closed.promise;
    using other = await openCli();
    other.client.write("still up");
    expect(await other.next()).toBe("echo still up");
    expect(c.events).toEqual(["open", "message", "message", "message", "close"]);
  });

  test("subscribe with a callback: delivered in this process, with the connection", async () => {
    using c = await openCli();
    const got: [string, Message, Connection | undefined][] = [];
    c.client.subscribe("client-cb", (ch, m, conn) => void got.push([ch, m, conn]));
    publish("client-cb", "one");
    c.client.publish("client-cb", EVERY_BYTE);
    expect(got).toEqual([
      ["client-cb", "one", c.client],
      ["client-cb", EVERY_BYTE, c.client],
    ]);
    expect(c.client.unsubscribe("client-cb")).toBe(true);
    publish("client-cb", "after");
    expect(got.length).toBe(2);
  });

  test("subscribe without a callback: each message is written to the socket (as text or binary)", async () => {
    using c = await openCli();
    c.client.subscribe("client-relay");
    c.client.subscribe("client-bin", { as: "binary" });
    publish("client-relay", "relayed");
    expect(await c.next()).toBe("echo relayed");
    publish("client-bin", "AB");
    expect(await c.next()).toEqual(new TextEncoder().encode("AB"));
    publish("client-relay", EVERY_BYTE);
    expect(await c.next()).toEqual(EVERY_BYTE);
  });

  test("closing drops the connection's subscriptions", async () => {
    const c = await openCli();
    let calls = 0;
    c.client.subscribe("client-gone", () => void calls++);
    c.client.subscribe("client-gone-2");
    c.client.close();
    await c.closed.promise;
    publish("client-gone", "x");
    publish("client-gone-2", "x");
    expect(calls).toBe(0);
    expect(
      (c.client as unknown as { subscriptions: Map<string, unknown> }).subscriptions.size,
    ).toBe(0);
  });

  test("examples/ws-client.ts sends its greeting, prints the echo and exits", async () => {
    const r = await runFixture([`${ROOT}/examples/ws-client.ts`, `${wsUrl}/`]);
    expect(r).toEqual({
      code: 0,
      stdout: "received: open websocket /\nreceived: echo Hello, iodine!\nclosed\n",
      stderr: "",
    });
  });
});

describe("misuse throws at the call site", () => {
  const handler = {};
  const errorOf = (o: unknown) => {
    try {
      connect(o as ConnectOptions);
    } catch (err) {
      const e = err as Error & { code?: string };
      return `${e.name}${e.code ? `[${e.code}]` : ""}: ${e.message}`;
    }
    return "no error";
  };

  test("URLs", () => {
    expect(errorOf({ url: "not a url", handler })).toBe(
      'TypeError: Iodine.connect: "url" must be a ws://, wss://, tcp://, tls:// or unix: URL, got "not a url"',
    );
    expect(errorOf({ url: "tcp://localhost", handler })).toBe(
      'TypeError: Iodine.connect: a tcp:// URL needs a host and a port, got "tcp://localhost"',
    );
    expect(errorOf({ url: "http://localhost/", handler })).toBe(
      'IodineError[ECONNECT_SCHEME]: Iodine.connect: "url" must be ws://, wss://, tcp://, tls:// or unix:, got the scheme "http:" in "http://localhost/"',
    );
    let thrown: unknown;
    try {
      connect({ url: "gopher://h:1", handler });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(IodineError);
  });

  test("options and handler", () => {
    const url = "ws://127.0.0.1:1/";
    expect(errorOf(undefined)).toBe(
      "TypeError: Iodine.connect: options must be an object, got undefined",
    );
    expect(errorOf({ url, handler, ping: -1 })).toBe(
      'RangeError: Iodine.connect: "ping" must be a number of seconds 0–2147483, got "-1"',
    );
    expect(errorOf({ url, handler, ping: "40" })).toBe(
      'RangeError: Iodine.connect: "ping" must be a number of seconds 0–2147483, got "40"',
    );
    expect(errorOf({ url, handler, tls: { ca: "x" } })).toBe(
      'TypeError: Iodine.connect: "tls" needs a wss:// URL, got "ws://127.0.0.1:1/"',
    );
    expect(errorOf({ url, handler: null })).toBe(
      "TypeError: Iodine.connect: handler must be an object, got null",
    );
    expect(errorOf({ url, handler: { onOpen() {}, on_open() {} } })).toBe(
      "TypeError: Iodine.connect: handler defines both onOpen and on_open",
    );
  });
});
