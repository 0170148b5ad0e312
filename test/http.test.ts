// The HTTP service through the real CLI: every app shape (SPEC §3), errors in the app (a plain 500
// and a logged stack), the request guards of SPEC §10, HEAD, keep-alive, TLS and pipelining.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createPrivateKey } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { selfSigned } from "../src/tls.ts";
import {
  fixture,
  rawRequest,
  startCli,
  startCommand,
  statusLines,
  tempDir,
  type CliProcess,
} from "./harness.ts";
import { WsClient } from "./ws.ts";

describe("app shapes", () => {
  test("a bare function receives the real Request and the server", async () => {
    await using srv = await startCli(["-p", "0", fixture("function-app.ts")]);
    const res = await fetch(srv.url + "/path?q=1", { method: "DELETE" });
    expect(await res.text()).toBe("DELETE /path?q=1 server=true");
  });

  test("an object with fetch keeps its `this`", async () => {
    await using srv = await startCli(["-p", "0", fixture("object-app.ts")]);
    expect(await (await fetch(srv.url + "/here")).text()).toBe("object app: /here");
  });

  test("Bun's `export default { port, fetch }`: the module's port is used when -p and $PORT are not given", async () => {
    await using srv = await startCli([fixture("port-app.ts")], { env: { PORT: undefined } });
    expect(srv.port).not.toBe(3000);
    expect(await (await fetch(srv.url)).text()).toBe("port from the module");
  });

  test("a Hono app runs unchanged", async () => {
    await using srv = await startCli(["-p", "0", fixture("hono-app.ts")]);
    expect(await (await fetch(srv.url + "/")).text()).toBe("hono root");
    expect(await (await fetch(srv.url + "/users/42")).json()).toEqual({ id: "42" });
    const echoed = await fetch(srv.url + "/echo", { method: "POST", body: "a body" });
    expect(await echoed.text()).toBe("a body");
    expect((await fetch(srv.url + "/missing")).status).toBe(404);
  });

  test("a Hono app with Hono's own WebSocket helper (hono/bun's upgradeWebSocket and websocket) runs unchanged", async () => {
    await using srv = await startCli(["-p", "0", fixture("hono-ws-app.ts")]);
    expect(await (await fetch(srv.url + "/")).text()).toBe("hono root");
    await using ws = await WsClient.open(srv.url.replace("http", "ws") + "/ws");
    ws.send("hi");
    expect(await ws.next()).toBe("hono echo: hi");
  });

  test("server.upgrade in an app without `websocket` handlers is a 500 naming the fix, as Bun.serve throws", async () => {
    await using srv = await startCli(["-p", "0", fixture("upgrade-no-websocket-app.ts")]);
    const ws = new WsClient(srv.url.replace("http", "ws") + "/");
    expect((await ws.closed).code).toBe(1006); // the handshake failed (a 500): no socket is left open with nobody listening
    await srv.waitFor(
      /app error on GET .*: TypeError: server\.upgrade: this app exports no `websocket` handlers/,
    );
    expect(await (await fetch(srv.url + "/")).text()).toBe("plain");
  });

  test("an Elysia app runs as the README exports it ({ fetch: app.fetch })", async () => {
    await using srv = await startCli(["-p", "0", fixture("elysia-app.ts")]);
    expect(await (await fetch(srv.url + "/")).text()).toBe("elysia root");
    expect(await (await fetch(srv.url + "/users/7")).json()).toEqual({ id: "7" });
    const echoed = await fetch(srv.url + "/echo", {
      method: "POST",
      body: "a body",
      headers: { "content-type": "text/plain" },
    });
    expect(await echoed.text()).toBe("a body");
    expect((await fetch(srv.url + "/missing")).status).toBe(404);
  });

  test("an Elysia app that calls app.listen() runs on every worker, its .ws() routes included", async () => {
    await using srv = await startCli(["-p", "0", "-w", "2", fixture("elysia-listen-app.ts")], {
      timeout: 20_000,
    });
    expect(await (await fetch(srv.url + "/")).text()).toBe("elysia listening");
    const pids = new Set<string>();
    for (let i = 0; i < 20 && pids.size < 2; i++) {
      await using ws = await WsClient.open(srv.url.replace("http", "ws") + "/echo");
      ws.send("hi");
      const reply = String(await ws.next());
      const m = /^echo hi from (\d+)$/.exec(reply);
      expect(m).not.toBeNull();
      pids.add(m![1]!);
    }
    expect(pids.size).toBe(2);
  }, 30_000);

  test("an exported Elysia app with .ws() routes gets one start-up line naming the fix", async () => {
    await using srv = await startCli(["-p", "0", fixture("elysia-ws-export-app.ts")]);
    expect(await (await fetch(srv.url + "/")).text()).toBe("elysia exported");
    expect(
      srv
        .stderr()
        .match(
          /this Elysia app has \.ws\(\) routes, which need the server its app\.listen\(\) makes: call app\.listen\(port\)/g,
        ),
    ).toHaveLength(1);
  });

  test("a Bun-native { fetch, websocket } app runs unchanged", async () => {
    await using srv = await startCli(["-p", "0", fixture("websocket-app.ts")]);
    {
      await using ws = await WsClient.open(srv.url.replace("http", "ws"));
      expect(await ws.next()).toBe("welcome");
      ws.send("hi");
      expect(await ws.next()).toBe("echo:hi");
    }
    expect((await fetch(srv.url)).status).toBe(426);
  });

  test("script mode under the CLI: every Iodine.listen is served, Iodine.start waits for the CLI", async () => {
    await using srv = await startCli(["-p", "0", fixture("script-app.ts")], {
      env: { SECOND_PORT: "0" },
    });
    const lines = await srv.waitFor(/listening on .*\n.*listening on http:\/\/0\.0\.0\.0:(\d+)/);
    expect(await (await fetch(srv.url)).text()).toBe("script mode A");
    expect(await (await fetch(`http://127.0.0.1:${lines[1]}/`)).text()).toBe("script mode B");
  });

  test("script mode without the CLI: `bun app.ts` starts itself ($PORT honoured)", async () => {
    await using srv = await startCommand([process.execPath, fixture("script-app.ts")], {
      env: { PORT: "0", SECOND_PORT: "0" },
    });
    expect(await (await fetch(srv.url)).text()).toBe("script mode A");
    expect(await srv.stop("SIGTERM")).toBe(0);
  });
});

describe("Iodine from the app", () => {
  test("a single process is both master and worker; Iodine.stop() stops it gracefully, exit 0", async () => {
    await using srv = await startCli(["-p", "0", fixture("stop-app.ts")]);
    expect(await (await fetch(srv.url + "/")).text()).toBe("isMaster=true isWorker=true");
    expect(await (await fetch(srv.url + "/stop")).text()).toBe("isMaster=true isWorker=true");
    expect(await srv.proc.exited).toBe(0);
  });

  test("-b ::1 listens on IPv6 loopback and prints the address in brackets", async () => {
    await using srv = await startCli(["-b", "::1", "-p", "0", fixture("function-app.ts")]);
    expect(srv.url).toMatch(/^http:\/\/\[::1\]:\d+$/);
    expect(await (await fetch(srv.url + "/v6")).text()).toBe("GET /v6 server=true");
  });
});

describe("errors in the app", () => {
  let srv: CliProcess;
  beforeAll(async () => {
    srv = await startCli(["-p", "0", fixture("errors-app.ts")]);
  });
  afterAll(async () => {
    await srv?.[Symbol.asyncDispose]();
  });

  test("a synchronous throw is a plain 500 and a logged stack", async () => {
    const res = await fetch(srv.url + "/sync");
    expect(res.status).toBe(500);
    const body = await res.text();
    expect(body).toBe("Internal Server Error");
    await srv.waitFor(
      /app error on GET http:\/\/[^ ]+\/sync: Error: sync failure in the app\n\s+at syncFail/,
    );
  });

  test("a rejected promise is a plain 500 and a logged stack", async () => {
    const res = await fetch(srv.url + "/async");
    expect(res.status).toBe(500);
    expect(await res.text()).toBe("Internal Server Error");
    await srv.waitFor(
      /app error on GET http:\/\/[^ ]+\/async: Error: async failure in the app\n\s+at /,
    );
  });

  test("an error with an empty stack is logged by its name and message, never an empty reason", async () => {
    const res = await fetch(srv.url + "/no-stack");
    expect(res.status).toBe(500);
    await srv.waitFor(
      /app error on GET http:\/\/[^ ]+\/no-stack: Error: failure without a stack\n/,
    );
  });

  test("a handler that returns no Response is a 500 and one log line", async () => {
    const res = await fetch(srv.url + "/undefined");
    expect(res.status).toBe(500);
    await srv.waitFor(
      /the app returned undefined instead of a Response for GET http:\/\/[^ ]+\/undefined/,
    );
  });

  test("the process survives and keeps serving", async () => {
    const res = await fetch(srv.url + "/ok");
    expect(await res.text()).toBe("fine");
    expect(srv.proc.exitCode).toBeNull();
  });
});

describe("request guards (SPEC §10) and HEAD", () => {
  let srv: CliProcess;
  beforeAll(async () => {
    srv = await startCli(["-p", "0", fixture("function-app.ts")]);
  });
  afterAll(async () => {
    await srv?.[Symbol.asyncDispose]();
  });

  test("two Host headers: 400, the app never runs", async () => {
    const raw = await rawRequest(
      srv.port,
      "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    );
    expect(statusLines(raw)).toEqual([400]);
    expect(raw).not.toContain("server=");
  });

  test("a Host that makes no valid URL: 400, not a 500", async () => {
    for (const host of ["a b", "exa mple.com", "a/b", "x@y", ""]) {
      const raw = await rawRequest(
        srv.port,
        `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      );
      expect(statusLines(raw)).toEqual([400]);
    }
  });

  test("an HTTP/1.0 request without Host reaches the app with an absolute URL", async () => {
    const raw = await rawRequest(srv.port, "GET /old?x=1 HTTP/1.0\r\n\r\n");
    expect(statusLines(raw)).toEqual([200]);
    expect(raw).toEndWith("GET /old?x=1 server=true");
  });

  test("a WebSocket handshake on HTTP/1.0 without Host: 400 before the app; with Host Bun shows no version and upgrades it (pinned; README)", async () => {
    await using ws = await startCli(["-p", "0", fixture("websocket-app.ts")]);
    const handshake =
      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    const hostless = await rawRequest(ws.port, `GET / HTTP/1.0\r\n${handshake}`);
    expect(statusLines(hostless)).toEqual([400]);
    expect(hostless).not.toContain("upgrade required"); // the app's own answer when server.upgrade fails
    // An HTTP/1.0 request with a Host looks like an HTTP/1.1 one to the app. If this starts failing
    // with a 400, Bun now refuses it itself (or shows the version): update README's limits.
    const withHost = await rawRequest(
      ws.port,
      `GET / HTTP/1.0\r\nHost: localhost\r\n${handshake}`,
      (r) => r.includes("welcome"),
    );
    expect(withHost).toStartWith("HTTP/1.1 101");
  });

  test("a request line that is not HTTP: 400 from Bun, the worker lives on", async () => {
    const raw = await rawRequest(srv.port, "GARBAGE\r\n\r\n");
    expect(raw.startsWith("HTTP/1.1 400")).toBe(true);
    expect((await fetch(srv.url + "/after")).status).toBe(200);
  });

  test("HEAD carries Date, Content-Type and Content-Length as GET would, and no body", async () => {
    const raw = await rawRequest(
      srv.port,
      "HEAD /h HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    const [head, body] = raw.split("\r\n\r\n");
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    expect(head).toMatch(/\r\ndate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT/i);
    expect(head).toMatch(/\r\ncontent-type: text\/plain;charset=utf-8/i);
    expect(head).toMatch(/\r\ncontent-length: 19$/im); // "HEAD /h server=true"
    expect(body).toBe("");
  });
});

describe("X-Sendfile", () => {
  test("the app names a file; iodine sends it with ranges, keeps the app's headers, drops X-Sendfile", async () => {
    using dir = tempDir();
    const data = crypto.getRandomValues(new Uint8Array(300 * 1024)); // above the in-memory size
    const file = join(dir.path, "blob.bin");
    writeFileSync(file, data);
    await using srv = await startCli(["-v", "-p", "0", fixture("sendfile-app.ts")]);
    const q = `/?file=${encodeURIComponent(file)}`;

    const full = await fetch(srv.url + q);
    expect(full.status).toBe(200);
    expect(full.headers.get("x-sendfile")).toBeNull();
    expect(full.headers.get("x-app")).toBe("kept");
    expect(full.headers.get("content-type")).toBe("application/x-test");
    expect(new Uint8Array(await full.arrayBuffer())).toEqual(data);

    const part = await fetch(srv.url + q, { headers: { range: "bytes=1000-1999" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 1000-1999/${data.length}`);
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(data.subarray(1000, 2000));

    const etag = full.headers.get("etag")!;
    expect((await fetch(srv.url + q, { headers: { "if-none-match": etag } })).status).toBe(304);

    const missing = await fetch(srv.url + "/?file=" + encodeURIComponent(join(dir.path, "nope")));
    expect(missing.status).toBe(404);
    await srv.waitFor(/X-Sendfile: no such file/);
    await srv.waitFor(new RegExp(`"GET /\\?file=[^ ]+ HTTP/1\\.1" 206 1000 `));
  });
});

describe("HEAD for every kind of body", () => {
  test("a typed stream is not drained; bytes and blobs get their length and type", async () => {
    await using srv = await startCli(["-p", "0", fixture("head-app.ts")]);
    const head = async (path: string) => {
      const raw = await rawRequest(
        srv.port,
        `HEAD ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
        (r) => r.includes("\r\n\r\n"),
        3_000,
      );
      return raw.split("\r\n\r\n")[0]!;
    };
    const stream = await head("/stream");
    expect(stream).toMatch(/^HTTP\/1\.1 200/);
    expect(stream).toMatch(/\r\ncontent-type: application\/x-ndjson/i);
    expect(stream).toMatch(/\r\ndate: /i);
    const bytes = await head("/bytes");
    expect(bytes).toMatch(/\r\ncontent-length: 1234$/im);
    expect(bytes).toMatch(/\r\ndate: /i);
    const blob = await head("/blob");
    expect(blob).toMatch(/\r\ncontent-type: text\/html;charset=utf-8/i);
    expect(blob).toMatch(/\r\ncontent-length: 9$/im);
    // GET still gets the same bytes and type.
    const get = await fetch(srv.url + "/blob");
    expect(get.headers.get("content-type")).toBe("text/html;charset=utf-8");
    expect(await get.text()).toBe("<p>hi</p>");
  });
});

describe("connections", () => {
  test("-k closes an idle keep-alive connection after that many seconds", async () => {
    await using srv = await startCli(["-k", "1", "-p", "0", fixture("function-app.ts")]);
    const t0 = performance.now();
    const raw = await rawRequest(
      srv.port,
      "GET /idle HTTP/1.1\r\nHost: localhost\r\n\r\n",
      () => false,
      6_000,
    );
    const elapsed = performance.now() - t0;
    expect(statusLines(raw)).toEqual([200]);
    expect(elapsed).toBeGreaterThan(900);
    expect(elapsed).toBeLessThan(5_000); // closed by the server, not by our own 6 s limit
  });

  test("--ping makes Bun ping an idle WebSocket (a raw client sees a ping frame, opcode 0x9)", async () => {
    await using srv = await startCli(["--ping", "1", "-p", "0", fixture("websocket-app.ts")]);
    const upgrade =
      "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    // Frames after the 101: the server's "welcome" text frame (0x81 …), then a ping (0x89 0x00).
    // uWS checks idle sockets on a 4 s tick, so the ping comes within a few seconds.
    const raw = await rawRequest(
      srv.port,
      upgrade,
      (r) => r.slice(r.indexOf("\r\n\r\n") + 4).includes("\x89\x00"),
      9_000,
    );
    expect(raw).toStartWith("HTTP/1.1 101");
    const frames = raw.slice(raw.indexOf("\r\n\r\n") + 4);
    expect(frames).toStartWith("\x81\x07welcome");
    expect(frames).toContain("\x89\x00");
  }, 15_000);

  test("16 pipelined GETs to a synchronous app are all answered, in order", async () => {
    await using srv = await startCli(["-p", "0", fixture("function-app.ts")]);
    let req = "";
    for (let i = 0; i < 16; i++)
      req += `GET /p?i=${i} HTTP/1.1\r\nHost: localhost\r\n${i === 15 ? "Connection: close\r\n" : ""}\r\n`;
    const raw = await rawRequest(srv.port, req);
    expect(statusLines(raw)).toEqual(Array(16).fill(200));
    expect([...raw.matchAll(/GET \/p\?i=(\d+)/g)].map((m) => Number(m[1]))).toEqual([
      ...Array(16).keys(),
    ]);
  });

  test("16 pipelined GETs to an app that awaits: Bun closes the connection unanswered (pinned; README, oven-sh/bun#38128)", async () => {
    // Today's Bun (1.4.x) closes a connection when a request is pipelined behind a response that is
    // still pending. If this starts failing because all 16 are answered, Bun fixed it: update README.
    await using srv = await startCli(["-p", "0", fixture("slow-app.ts")]);
    let req = "";
    for (let i = 0; i < 16; i++) req += `GET /?ms=5&i=${i} HTTP/1.1\r\nHost: localhost\r\n\r\n`;
    const raw = await rawRequest(srv.port, req, () => false, 3_000);
    expect(statusLines(raw)).toEqual([]);
    // The same requests one at a time on a keep-alive connection are all answered.
    const seq = await Promise.all(
      [...Array(16).keys()].map((i) => fetch(`${srv.url}/?ms=5&i=${i}`).then((r) => r.text())),
    );
    expect(seq).toEqual(Array(16).fill("done after 5 ms"));
  });
});

describe("TLS", () => {
  const insecure = { tls: { rejectUnauthorized: false } } as const;

  test("--tls serves HTTPS with a self-signed certificate made at start-up", async () => {
    await using srv = await startCli(["--tls", "-p", "0", fixture("function-app.ts")]);
    expect(srv.url).toMatch(/^https:\/\//);
    const res = await fetch(srv.url + "/secure", insecure);
    expect(await res.text()).toBe("GET /secure server=true");
  });

  test("--tls-cert/--tls-key serve HTTPS from PEM files; the certificate verifies for localhost", async () => {
    using dir = tempDir();
    const { cert, key } = await selfSigned();
    writeFileSync(join(dir.path, "cert.pem"), cert);
    writeFileSync(join(dir.path, "key.pem"), key);
    await using srv = await startCli([
      "-tls-cert",
      join(dir.path, "cert.pem"),
      "-tls-key",
      join(dir.path, "key.pem"),
      "-p",
      "0",
      fixture("function-app.ts"),
    ]);
    const res = await fetch(`https://localhost:${srv.port}/pem`, { tls: { ca: cert } });
    expect(await res.text()).toBe("GET /pem server=true");
  });

  test("--tls-pass decrypts an encrypted key", async () => {
    using dir = tempDir();
    const { cert, key } = await selfSigned();
    const encrypted = createPrivateKey(key).export({
      format: "pem",
      type: "pkcs8",
      cipher: "aes-256-cbc",
      passphrase: "s3cret",
    });
    writeFileSync(join(dir.path, "cert.pem"), cert);
    writeFileSync(join(dir.path, "key.pem"), encrypted);
    await using srv = await startCli([
      "--tls-cert",
      join(dir.path, "cert.pem"),
      "--tls-key",
      join(dir.path, "key.pem"),
      "--tls-pass",
      "s3cret",
      "-p",
      "0",
      fixture("function-app.ts"),
    ]);
    const res = await fetch(`https://localhost:${srv.port}/enc`, { tls: { ca: cert } });
    expect(await res.text()).toBe("GET /enc server=true");
  });
});
