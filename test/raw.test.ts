// Raw TCP/Unix services and clients (SPEC §4): the fixture test/fixtures/raw-app.ts under the real
// CLI, driven by raw sockets and by Iodine.connect.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Iodine, type Connection } from "../src/index.ts";
import { errorOf, fixture, startCli, tempDir, type CliProcess } from "./harness.ts";
import { rawClient } from "./raw-client.ts";

const rssOf = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]) * 1024;

describe("raw service", () => {
  let srv: CliProcess;
  beforeAll(async () => {
    srv = await startCli(["-p", "0", "-b", "127.0.0.1", fixture("raw-app.ts")]);
  });
  afterAll(async () => {
    await srv?.stop();
  });

  test("the listening line names the raw service with its real port", () => {
    expect(srv.url).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    expect(srv.stderr()).toContain(`listening on ${srv.url} (1 worker, 1 thread, raw)`);
  });

  test("onOpen writes, onMessage gets bytes as they arrive (a line split over writes)", async () => {
    await using c = await rawClient({ port: srv.port });
    await c.waitFor(/^hello \d+\n/);
    c.write("ec");
    await Bun.sleep(20); // the stimulus itself: the rest of the line written 20 ms later
    c.write("ho me\nsecond\n");
    await c.waitFor("echo me\nsecond\n");
  });

  test("close() sends what is pending first, then closes; onClose runs", async () => {
    await using c = await rawClient({ port: srv.port });
    await c.waitFor("hello");
    c.write("big 4\nclose\n");
    await c.closed;
    const got = c.bytes();
    // 4 MiB of "y" then "closing\n": nothing cut off by the close.
    expect(c.text().endsWith("closing\n")).toBe(true);
    expect(got.byteLength).toBe(c.text().indexOf("y") + (4 << 20) + "closing\n".length);
  });

  test("onDrained follows a write the socket could not take at once", async () => {
    await using c = await rawClient({ port: srv.port });
    await c.waitFor("hello");
    c.write("big 32\n");
    await c.waitFor("drained\n", 10_000);
    expect(c.bytes().byteLength).toBeGreaterThan(32 << 20);
  });

  test("a reader that stops reading: closed past the 16 MiB outgoing limit, server memory bounded, others served", async () => {
    const before = rssOf(srv.proc.pid);
    await using slow = await rawClient({ port: srv.port });
    await slow.waitFor("hello");
    slow.socket.pause(); // stop reading: the kernel buffers fill, then iodine's queue
    slow.write("flood\n");
    await srv.waitFor(
      /raw connection 127\.0\.0\.1:\d+ closed: too slow, \d+ bytes still waiting to be sent \(outgoing limit 16 MiB\)/,
      10_000,
    );
    const after = rssOf(srv.proc.pid);
    // The flood wrote ~1 GiB per second; the queue stopped at 16 MiB.
    expect(after - before).toBeLessThan(160 << 20);
    await using other = await rawClient({ port: srv.port });
    await other.waitFor("hello");
    other.write("still here\n");
    await other.waitFor("still here\n");
  }, 20_000);

  test("pub/sub on raw connections: a subscriber gets each publish written to it", async () => {
    await using a = await rawClient({ port: srv.port });
    await using b = await rawClient({ port: srv.port });
    await a.waitFor("hello");
    await b.waitFor("hello");
    a.write("sub room\n");
    b.write("sub room\n");
    await a.waitFor("subscribed room\n");
    await b.waitFor("subscribed room\n");
    a.write("pub room one two\n");
    await a.waitFor("one two\n");
    await b.waitFor("one two\n");
  });

  test("a handler factory that throws drops that connection with one log line; the next ones work", async () => {
    await using a = await rawClient({ port: srv.port });
    await a.waitFor("hello");
    a.write("refuse-next\n");
    await a.waitFor("ok\n");
    // Refused during accept: the connect itself may fail (reset) or the socket closes at once.
    const refused = await rawClient({ port: srv.port }).then(
      async (c) => {
        await c.closed;
        return c.text();
      },
      (err: Error) => `connect failed: ${err.message}`,
    );
    expect(refused).not.toContain("hello");
    await srv.waitFor(
      /the listener's handler factory failed: Error: factory refuses this connection/,
    );
    await using next = await rawClient({ port: srv.port });
    await next.waitFor("hello");
  });

  test("Iodine.connect tcp://: the same callbacks on the client side, onClose exactly once", async () => {
    const events: string[] = [];
    const closed = Promise.withResolvers<void>();
    let text = "";
    const c = Iodine.connect({
      url: srv.url,
      handler: {
        onOpen(client: Connection) {
          events.push("open");
          client.write("from iodine\n");
        },
        onMessage(client: Connection, data) {
          text += new TextDecoder().decode(data as Uint8Array);
          if (text.includes("from iodine\n")) client.close();
        },
        onClose() {
          events.push("close");
          closed.resolve();
        },
      },
    });
    expect(c.protocol).toBe("raw");
    await closed.promise;
    expect(events).toEqual(["open", "close"]);
    expect(text).toMatch(/^hello \d+\nfrom iodine\n$/);
  });
});

describe("raw service in a cluster", () => {
  test("-w 2: both workers accept on the shared port; a publish on one reaches a subscriber on the other", async () => {
    await using srv = await startCli(
      ["-p", "0", "-w", "2", "-b", "127.0.0.1", fixture("raw-app.ts")],
      { timeout: 20_000 },
    );
    const byPid = new Map<string, Awaited<ReturnType<typeof rawClient>>>();
    const extra = [];
    try {
      // SO_REUSEPORT spreads connections over the workers: connect until both have answered.
      for (let i = 0; i < 60 && byPid.size < 2; i++) {
        const c = await rawClient({ port: srv.port });
        const pid = /^hello (\d+)\n/.exec(await c.waitFor(/^hello \d+\n/))![1]!;
        if (byPid.has(pid)) extra.push(c);
        else byPid.set(pid, c);
      }
      expect(byPid.size).toBe(2);
      const [a, b] = [...byPid.values()];
      a!.write("sub lobby\n");
      await a!.waitFor("subscribed lobby\n");
      // The subscription reaches the other worker one bus hop later (README: cluster pub/sub):
      // probe until it does, then the message must arrive.
      for (let i = 0; !a!.text().includes("probe"); i++) {
        if (i === 50) throw new Error("no probe crossed to the other worker");
        b!.write(`pub lobby probe ${i}\n`);
        await a!.waitFor("probe", 100).catch(() => {});
      }
      b!.write("pub lobby across workers\n");
      await a!.waitFor("across workers\n");
    } finally {
      for (const c of [...byPid.values(), ...extra]) await c[Symbol.asyncDispose]();
    }
  }, 30_000);
});

describe("raw clients", () => {
  test("Iodine.connect to a port nobody listens on: one error line's worth, onClose without onOpen", async () => {
    const events: string[] = [];
    const done = Promise.withResolvers<void>();
    // Take the port, then free it: nothing listens there now.
    const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const free = l.port;
    l.stop(true);
    Iodine.connect({
      url: `tcp://127.0.0.1:${free}`,
      handler: {
        onOpen: () => void events.push("open"),
        onClose: () => (events.push("close"), done.resolve()),
      },
    });
    await done.promise;
    expect(events).toEqual(["close"]);
  });

  test("Iodine.connect unix:/path and a raw Unix listener started by the CLI (-b /path)", async () => {
    using dir = tempDir();
    const path = join(dir.path, "raw.sock");
    await using srv = await startCli(["-b", path, fixture("raw-app.ts")]);
    expect(srv.url).toBe(`unix:${path}`);
    const got = Promise.withResolvers<string>();
    let text = "";
    Iodine.connect({
      url: `unix:${path}`,
      handler: {
        onOpen: (c: Connection) => void c.write("over unix\n"),
        onMessage(c: Connection, data) {
          text += new TextDecoder().decode(data as Uint8Array);
          if (text.includes("over unix\n")) {
            got.resolve(text);
            c.close();
          }
        },
      },
    });
    expect(await got.promise).toMatch(/^hello \d+\nover unix\n$/);
  });

  test('a fetch function given without service: "http" is a raw listener: HTTP clients are dropped, one log line says what to write', async () => {
    await using srv = await startCli([
      "-p",
      "0",
      "-b",
      "127.0.0.1",
      fixture("fetch-without-service.ts"),
    ]);
    expect(srv.url).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    const http = srv.url.replace("tcp:", "http:") + "/";
    for (let i = 0; i < 2; i++) await expect(fetch(http)).rejects.toThrow();
    const told =
      /raw listener on port \d+: the handler returned a Response, not a connection handler; a listener without "service" is raw: for HTTP write Iodine\.listen\(\{ service: "http", handler, … \}\)\n/g;
    await srv.waitFor(told);
    // Once for the listener, not once per connection.
    expect(srv.stderr().match(told)).toHaveLength(1);
  });

  test("a raw handler factory exported as the app is a fetch handler (SPEC §3): a 500 and a log line saying what to write", async () => {
    await using srv = await startCli(["-p", "0", fixture("factory-as-app.ts")]);
    expect(srv.url).toStartWith("http://");
    expect((await fetch(srv.url + "/")).status).toBe(500);
    await srv.waitFor(
      /the app returned an object \(Protocol\): a connection handler; a raw TCP service is Iodine\.listen\(\{ port, handler \}\) without service "http" instead of a Response/,
    );
  });

  test("bad URLs and options are refused at the call", () => {
    const handler = {};
    expect(() => Iodine.connect({ url: "tcp://127.0.0.1", handler })).toThrow(
      /needs a host and a port/,
    );
    expect(() => Iodine.connect({ url: "ftp://x:1", handler })).toThrow(
      /ws:\/\/, wss:\/\/, tcp:\/\/, tls:\/\/ or unix:/,
    );
    expect(() => Iodine.connect({ url: "unix:relative.sock", handler })).toThrow(/absolute path/);
    expect(() => Iodine.listen({ service: "raw", handler: 42 as never })).toThrow(TypeError);
    expect(() => Iodine.listen({ service: "udp" as never, handler })).toThrow(
      /"service" must be "http", "raw" or "tcp"/,
    );
    expect(() => Iodine.listen({ service: "raw", handler, timeout: -1 })).toThrow(RangeError);
    // `(req) => Response` without service: a raw factory would be called with no request.
    expect(
      errorOf(() => Iodine.listen({ handler: ((req: Request) => new Response(req.url)) as never })),
    ).toBe(
      `TypeError: Iodine.listen: "handler" is a function of 1 argument(s), as a fetch handler is, but a listener without "service" ` +
        `is raw and calls its handler with none to make each connection's handler; for HTTP write Iodine.listen({ service: "http", handler, … })`,
    );
  });
});
