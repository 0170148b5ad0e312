// Every example in examples/ runs through the real CLI and shows the behaviour its header promises.
import { describe, expect, test } from "bun:test";
import { brotliDecompressSync } from "node:zlib";
import { join } from "node:path";
import { Iodine } from "../src/index.ts";
import {
  freePort,
  openStream,
  runCli,
  runCommand,
  startCli,
  startCommand,
  tempDir,
  ROOT,
} from "./harness.ts";
import { rawClient, type RawClient } from "./raw-client.ts";
import { chatLine, chatText, fenced, WsClient } from "./ws.ts";

const example = (name: string) => join(ROOT, "examples", name);

describe("examples", () => {
  test("hello.ts answers Hello World!", async () => {
    await using srv = await startCli(["-p", "0", example("hello.ts")]);
    const res = await fetch(srv.url + "/");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("Hello World!");
  });

  test("static/: the public folder with a pre-compressed asset, the app for the rest", async () => {
    await using srv = await startCli([
      "-p",
      "0",
      "--www",
      example("static/public"),
      example("static/app.ts"),
    ]);
    const css = await Bun.file(example("static/public/style.css")).text();
    const br = await fetch(srv.url + "/style.css", {
      headers: { "accept-encoding": "br" },
      decompress: false,
    });
    expect(br.headers.get("content-encoding")).toBe("br");
    expect(br.headers.get("vary")).toContain("Accept-Encoding");
    expect(
      new TextDecoder().decode(brotliDecompressSync(new Uint8Array(await br.arrayBuffer()))),
    ).toBe(css);
    const gz = await fetch(srv.url + "/style.css", {
      headers: { "accept-encoding": "gzip" },
      decompress: false,
    });
    expect(gz.headers.get("content-encoding")).toBe("gzip");
    expect(new TextDecoder().decode(Bun.gunzipSync(new Uint8Array(await gz.arrayBuffer())))).toBe(
      css,
    );
    const index = await fetch(srv.url + "/");
    expect(index.headers.get("content-type")).toStartWith("text/html");
    expect(await index.text()).toBe(await Bun.file(example("static/public/index.html")).text());
    const missing = await fetch(srv.url + "/nothing-here");
    expect(missing.status).toBe(404);
    expect(await missing.text()).toBe("Not found");
  });

  test("chat.ts: a WebSocket chatter and an EventSource follower share the room; the server prints it", async () => {
    await using srv = await startCli(["-p", "0", example("chat.ts")]);
    const page = await fetch(srv.url + "/");
    expect(page.headers.get("content-type")).toBe("text/html;charset=utf-8");
    expect(await page.text()).toContain("<title>iodine chat</title>");

    const sse = await openStream(srv.url + "/chat?name=bob");
    // A history channel: each event carries its position as its id.
    const bobJoined = await sse.until(/id: (\S+):1\ndata: bob joined \(sse\)\n\n/);
    const epoch = /id: (\S+):1\n/.exec(bobJoined)![1]!;
    try {
      await using ws = await WsClient.open(srv.url.replace("http", "ws") + "/chat?name=ann");
      // A new WebSocket chatter gets the room's last lines first, each as {id, text}.
      expect(await ws.take(2)).toEqual([
        JSON.stringify({ id: `${epoch}:1`, text: "bob joined (sse)" }),
        JSON.stringify({ id: `${epoch}:2`, text: "ann joined (websocket)" }),
      ]);
      ws.send("hi all");
      expect(await ws.next()).toBe(JSON.stringify({ id: `${epoch}:3`, text: "ann: hi all" }));
      await sse.until(`id: ${epoch}:3\ndata: ann: hi all\n\n`);
    } finally {
      sse.close();
    }
    await srv.waitFor(
      /\[chat\] bob joined \(sse\)\n\[chat\] ann joined \(websocket\)\n\[chat\] ann: hi all\n/,
      5000,
      "stdout",
    );
    await srv.waitFor(/\[chat\] ann left\n\[chat\] bob left\n/, 5000, "stdout");

    // Resuming: `?since=` (the page's reconnect) or Last-Event-ID (an EventSource's) gets what came after.
    await using again = await WsClient.open(
      `${srv.url.replace("http", "ws")}/chat?name=ann&since=${epoch}:2`,
    );
    expect((await again.take(4)).map(chatText)).toEqual([
      "ann: hi all",
      "ann left",
      "bob left",
      "ann joined (websocket)",
    ]);
    const resumed = await openStream(srv.url + "/chat?name=eve", { "last-event-id": `${epoch}:4` });
    try {
      await resumed.until("data: eve joined (sse)\n\n");
      expect(resumed.text()).toStartWith(`id: ${epoch}:5\ndata: bob left\n\n`);
    } finally {
      resumed.close();
    }
  });

  test("chat.ts: a new chatter gets the room's last 100 lines, then live ones", async () => {
    await using srv = await startCli(["-p", "0", example("chat.ts")]);
    const room = srv.url.replace("http", "ws") + "/chat";
    {
      await using ann = await WsClient.open(`${room}?name=ann`);
      for (let i = 1; i <= 120; i++) ann.send(String(i));
      await ann.waitFor(chatLine("ann: 120"));
    }
    await srv.waitFor(/\[chat\] ann left\n/, 5000, "stdout");
    const printed = srv
      .stdout()
      .split("\n")
      .filter((l) => l.startsWith("[chat] "))
      .map((l) => l.slice(7));
    expect(printed).toHaveLength(122);
    await using bob = await WsClient.open(`${room}?name=bob`);
    expect((await bob.take(101)).map(chatText)).toEqual([
      ...printed.slice(-100),
      "bob joined (websocket)",
    ]);
    bob.send("hi");
    expect(chatText(await bob.next())).toBe("bob: hi");
  });

  test("chat.ts through `bun run iodine` (the README's quick start)", async () => {
    await using srv = await startCommand(["bun", "run", "iodine", "-p", "0", "examples/chat.ts"]);
    expect(await (await fetch(srv.url + "/")).text()).toContain("<title>iodine chat</title>");
    expect(await srv.stop("SIGTERM")).toBe(0);
  });

  test("custom-engine.ts: two servers (one a -w 2 cluster) share rooms through the example engine", async () => {
    const [p1, p2] = [freePort(), freePort()];
    const peer = (p: number) => ({ env: { PEERS: `http://127.0.0.1:${p}` } });
    await using one = await startCli(["-p", String(p1), "-w", "2", example("custom-engine.ts")], {
      ...peer(p2),
      timeout: 20_000,
    });
    await using two = await startCli(["-p", String(p2), example("custom-engine.ts")], peer(p1));
    {
      await using ws = await WsClient.open(`ws://127.0.0.1:${p1}/room/lobby`);
      // The engine hears the cluster's interest (in the master)...
      await one.waitFor(/engine: the cluster wants lobby\n/, 5000, "stdout");
      // ...and carries publishes between the servers, once each, in both directions.
      const say = (port: number, text: string) =>
        fetch(`http://127.0.0.1:${port}/room/lobby`, { method: "POST", body: text });
      await say(p2, "from two");
      await say(p1, "from one");
      expect((await ws.take(2)).sort()).toEqual(["from one", "from two"]);
      // A second copy would come before a fence said on each server after it.
      expect(
        await fenced(
          [p2, p1].map((p) => ({ send: (t: string) => say(p, t) })),
          [ws],
        ),
      ).toEqual([[]]);
    }
    await one.waitFor(/engine: the cluster no longer wants lobby\n/, 5000, "stdout");
    expect(await two.stop("SIGTERM")).toBe(0);
  }, 30_000);

  test("echo.ts (script mode): 1 MB comes back byte for byte in odd chunk sizes; bye closes after its goodbye", async () => {
    const port = freePort();
    await using srv = await startCommand([process.execPath, example("echo.ts")], {
      env: { PORT: String(port) },
    });
    expect(srv.url).toBe(`tcp://127.0.0.1:${port}`);
    await using c = await rawClient({ port });
    const banner = await c.waitFor(/Echo server running on iodine for Bun [\d.]+\.\r\n/);
    const data = new Uint8Array(1 << 20);
    for (let i = 0; i < data.length; i += 65536)
      crypto.getRandomValues(data.subarray(i, i + 65536));
    const sizes = [1, 3, 7, 13, 127, 1021, 4093, 65537, 131071];
    for (let at = 0, i = 0; at < data.length; i++) {
      const n = sizes[i % sizes.length]!;
      c.write(data.subarray(at, at + n));
      at += n;
    }
    await c.waitForBytes(banner.length + data.length, 10_000);
    const back = c.bytes().subarray(banner.length);
    expect(back.length).toBe(data.length);
    expect(Buffer.compare(back, data)).toBe(0);
    c.write("bye\n");
    await c.closed;
    expect(c.text().endsWith("Goodbye.\r\n")).toBe(true);
  });

  test("echo.ts: a quiet client is asked, then let go (runAfter); answering in time keeps it", async () => {
    await using srv = await startCli(["-p", "0", example("echo.ts")], {
      env: { ECHO_IDLE: "1", ECHO_GRACE_MS: "400" },
    });
    await using quiet = await rawClient({ port: srv.port });
    await using talker = await rawClient({ port: srv.port });
    await quiet.waitFor("Are you still there?\r\n", 3000);
    await talker.waitFor("Are you still there?\r\n", 3000);
    talker.write("yes\n");
    await quiet.closed;
    expect(quiet.text()).toEndWith("Closing an idle connection.\r\n");
    await talker.waitFor("yes\n");
    expect(talker.isClosed()).toBe(false);
    // A graceful stop says so to whoever is still connected (onShutdown), then closes.
    expect(await srv.stop("SIGTERM")).toBe(0);
    await talker.closed;
    expect(talker.text()).toContain("Server going away.\r\n");
  });

  test("echo.ts, telnet-chat.ts and unix-echo.ts are written as iodine writes them: no `service` (raw is the default)", async () => {
    for (const name of ["echo.ts", "telnet-chat.ts", "unix-echo.ts"]) {
      const listens = (await Bun.file(example(name)).text()).match(/Iodine\.listen\(\{[^}]*\}\)/g);
      expect(listens?.length).toBe(1);
      expect(listens![0]).not.toContain("service");
    }
  });

  describe("echo-client.ts (a client script: Iodine.connect, Iodine.start, no listener)", () => {
    const SAID =
      [
        `server: Echo server running on iodine for Bun ${Iodine.version}.`,
        "server: Hello from an iodine client script",
        "server: Goodbye.",
        "closed",
      ].join("\n") + "\n";

    test("bun echo-client.ts: talks to echo.ts, and Iodine.stop() from onClose ends it with exit 0", async () => {
      await using srv = await startCommand([process.execPath, example("echo.ts")], {
        env: { PORT: "0" },
      });
      const r = await runCommand([process.execPath, example("echo-client.ts")], {
        env: { ECHO_URL: srv.url },
      });
      expect(r).toEqual({
        code: 0,
        stdout: SAID,
        stderr:
          "iodine: running with no listener (timers, clients, pub/sub) until Iodine.stop(), SIGINT or SIGTERM\n",
      });
    });

    test("the same under the CLI, with -w 2 (it runs once, as one process)", async () => {
      await using srv = await startCli(["-p", "0", example("echo.ts")]);
      const r = await runCli(["-w", "2", example("echo-client.ts")], {
        env: { ECHO_URL: srv.url },
      });
      expect(r.stdout).toBe(SAID);
      expect(r.stderr).toContain("echo-client.ts opens no listener: it runs as one process");
      expect(r.code).toBe(0);
    });

    test("nothing listening: onClose without onOpen, one log line, exit 1", async () => {
      const url = `tcp://127.0.0.1:${freePort()}`;
      const r = await runCommand([process.execPath, example("echo-client.ts")], {
        env: { ECHO_URL: url },
      });
      expect(r.stdout).toBe("closed\n");
      expect(r.stderr).toContain(`iodine: Iodine.connect: ${url} failed to open`);
      expect(r.code).toBe(1);
    });
  });

  test("unix-echo.ts: echo over a Unix socket, the socket file removed on stop", async () => {
    using dir = tempDir();
    const path = join(dir.path, "echo.sock");
    await using srv = await startCommand([process.execPath, example("unix-echo.ts")], {
      env: { ECHO_SOCKET: path },
    });
    expect(srv.url).toBe(`unix:${path}`);
    await using c = await rawClient({ unix: path });
    await c.waitFor(`echo on unix:${path}\n`);
    c.write("über unix\n");
    await c.waitFor("über unix\n");
    expect(await srv.stop("SIGTERM")).toBe(0);
    expect(await Bun.file(path).exists()).toBe(false);
  });

  describe("telnet-chat.ts", () => {
    const login = async (port: number, nickname: string): Promise<RawClient> => {
      const c = await rawClient({ port });
      await c.waitFor("Enter nickname to log in to chat room:\n");
      c.write(nickname + "\r\n");
      await c.waitFor(`Welcome ${nickname}\n`);
      return c;
    };

    test("two clients: login, nickname errors, broadcast, bye, leaving; the login timeout says Time's up", async () => {
      await using srv = await startCli(["-p", "0", example("telnet-chat.ts")], {
        env: { LOGIN_TIMEOUT: "1" },
      });
      await using ann = await rawClient({ port: srv.port });
      await ann.waitFor("Enter nickname to log in to chat room:\n");
      ann.write("two words\n");
      await ann.waitFor("Nickname error, try again.\nEnter nickname to log in to chat room:\n");
      ann.write("\r\n");
      await ann.waitFor(/Nickname error, try again\.\n.*\n.*Nickname error, try again\.\n/s);
      // A line typed in pieces, and a chat line typed ahead of the welcome.
      ann.write("an");
      await Bun.sleep(20); // the stimulus itself: the rest of the line typed 20 ms later
      ann.write("n\nearly bird\n");
      await ann.waitFor("Welcome ann\n");
      await ann.waitFor("ann: early bird\n");
      await using bob = await login(srv.port, "bob");
      await ann.waitFor("bob joined the chat.\n");
      bob.write("hello ann\n");
      await ann.waitFor("bob: hello ann\n");
      await bob.waitFor("bob: hello ann\n");
      bob.write("BYE\n");
      await bob.closed;
      expect(bob.text()).toEndWith("Goodbye.\n");
      await ann.waitFor("bob left the chat.\n");
      // A connection that never logs in is let go after LOGIN_TIMEOUT seconds.
      await using idle = await rawClient({ port: srv.port });
      await idle.closed;
      expect(idle.text()).toBe("Enter nickname to log in to chat room:\nTime's up... goodbye.\n");
      // Logged-in chatters stay (their timeout pings instead).
      expect(ann.isClosed()).toBe(false);
      expect(await srv.stop("SIGTERM")).toBe(0);
      await ann.closed;
      expect(ann.text()).toEndWith("Server is shutting down... try reconnecting later.\n");
    });

    test("bun telnet-chat.ts (script mode, as iodine runs it): two raw clients log in and chat", async () => {
      await using srv = await startCommand([process.execPath, example("telnet-chat.ts")], {
        env: { PORT: "0" },
      });
      expect(srv.url).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
      await using ann = await login(srv.port, "ann");
      await using bob = await login(srv.port, "bob");
      await ann.waitFor("bob joined the chat.\n");
      ann.write("hi bob\n");
      await bob.waitFor("ann: hi bob\n");
      bob.write("hi ann\n");
      await ann.waitFor("bob: hi ann\n");
      expect(await srv.stop("SIGTERM")).toBe(0);
    });

    test("-w 2: the room spans the workers; an idle chatter gets System: ping", async () => {
      await using srv = await startCli(["-p", "0", "-w", "2", example("telnet-chat.ts")], {
        env: { CHAT_TIMEOUT: "1" },
        timeout: 20_000,
      });
      expect(srv.stderr()).toMatch(
        /listening on tcp:\/\/0\.0\.0\.0:\d+ \(2 workers, cluster pub\/sub\)/,
      );
      const people = await Promise.all(["a1", "b2", "c3", "d4"].map((n) => login(srv.port, n)));
      try {
        // A subscription reaches the other worker one bus hop after the Welcome: d4 speaks until
        // everyone heard it once, then everyone hears its next line.
        for (let i = 0; !people.every((p) => p.text().includes("d4: probe")); i++) {
          if (i === 50) throw new Error("d4's probe not heard by everyone");
          people[3]!.write(`probe ${i}\n`);
          await Promise.all(people.map((p) => p.waitFor("d4: probe", 100).catch(() => {})));
        }
        people[3]!.write("hi from d4\n");
        for (const p of people) await p.waitFor("d4: hi from d4\n");
        await people[0]!.waitFor("System: ping\n", 3000);
      } finally {
        for (const p of people) await p[Symbol.asyncDispose]();
      }
    }, 30_000);
  });

  test("mustache.ts: the page and its partial rendered per request, the visitor's name escaped", async () => {
    await using srv = await startCli(["-p", "0", example("mustache.ts")]);
    const res = await fetch(srv.url + "/?name=" + encodeURIComponent('<ann & "bob">'));
    expect(res.headers.get("content-type")).toBe("text/html;charset=utf-8");
    const html = await res.text();
    expect(html).toContain(
      '<head><meta charset="utf-8"><title>iodine for Bun: Mustache</title></head>',
    );
    expect(html).toContain("<li>parse once ✓</li>");
    expect(html).toContain("<li>escape &lt;html&gt; &amp; quotes</li>");
    expect(html).toContain("<p>Hello, &lt;ann &amp; &quot;bob&quot;&gt;!</p>");
    expect(html).not.toContain("<ann");
  });
});
