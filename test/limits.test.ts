// Every limit of SPEC §2/§10 crossed by one byte: --max-body (413), --max-header (431, the
// request line and every header line counted), --max-msg (WebSocket close 1009); the request body
// deadline (--body-timeout) against the keep-alive, and a client that goes away mid-body.
import { describe, expect, test } from "bun:test";
import { fixture, rawRequest, startCli, statusLines } from "./harness.ts";
import { rawClient } from "./raw-client.ts";
import { WsClient } from "./ws.ts";

/** A request whose header block (request line … final CRLF CRLF) is exactly `size` bytes. */
function headerBlockOf(size: number): string {
  const head = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
  const filler = size - head.length - "X-Pad: \r\n".length - 2;
  const block = `${head}X-Pad: ${"a".repeat(filler)}\r\n\r\n`;
  if (block.length !== size) throw new Error("bad arithmetic");
  return block;
}

const lastStatus = (raw: string) => statusLines(raw).at(-1);

describe("--max-header: 431 above the header block limit", () => {
  test("default 16 KiB (Bun's own, no re-launch): 16384 bytes pass, 16385 get 431", async () => {
    await using srv = await startCli(["-p", "0", fixture("function-app.ts")]);
    expect(lastStatus(await rawRequest(srv.port, headerBlockOf(16 * 1024)))).toBe(200);
    expect(lastStatus(await rawRequest(srv.port, headerBlockOf(16 * 1024 + 1)))).toBe(431);
    expect((await fetch(srv.url)).status).toBe(200);
  });

  test("--max-header 8: 8192 bytes pass, 8193 get 431 (the CLI re-launches Bun with the flag)", async () => {
    await using srv = await startCli(["--max-header", "8", "-p", "0", fixture("function-app.ts")]);
    expect(lastStatus(await rawRequest(srv.port, headerBlockOf(8 * 1024)))).toBe(200);
    expect(lastStatus(await rawRequest(srv.port, headerBlockOf(8 * 1024 + 1)))).toBe(431);
  });
});

describe("--max-body: 413 above the body limit", () => {
  test("--max-body 1: 1 MiB passes, 1 MiB + 1 gets 413, the server lives on", async () => {
    await using srv = await startCli(["--max-body", "1", "-p", "0", fixture("echo-body-app.ts")]);
    const limit = 1024 * 1024;
    const at = await fetch(srv.url, { method: "POST", body: new Uint8Array(limit) });
    expect(await at.text()).toBe(`body=${limit}`);
    const over = await rawRequest(
      srv.port,
      `POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${limit + 1}\r\nConnection: close\r\n\r\n`,
      (r) => r.includes("\r\n\r\n"),
    );
    expect(lastStatus(over)).toBe(413);
    // A chunked body that grows past the limit is cut off too.
    const chunked = await fetch(srv.url, {
      method: "POST",
      body: new ReadableStream({
        pull(c) {
          c.enqueue(new Uint8Array(64 * 1024));
        },
      }),
    }).then(
      (r) => r.status,
      () => "reset",
    );
    expect([413, "reset"]).toContain(chunked);
    expect(await (await fetch(srv.url, { method: "POST", body: "ok" })).text()).toBe("body=2");
  });
});

describe("request bodies (SPEC §10)", () => {
  test("a body trickled for longer than the request deadline is cut while the keep-alive stays 40 s", async () => {
    await using srv = await startCli([
      "-k",
      "40",
      "--body-timeout",
      "1",
      "-p",
      "0",
      fixture("body-reader-app.ts"),
    ]);
    // Two keep-alive connections left idle: one after a GET, one after a POST whose body was read.
    await using idle = await rawClient({ port: srv.port });
    idle.write("GET /idle HTTP/1.1\r\nHost: localhost\r\n\r\n");
    await idle.waitFor("body=0");
    await using posted = await rawClient({ port: srv.port });
    posted.write("POST /posted HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi");
    await posted.waitFor("body=2");
    // A body that trickles in, a byte every 100 ms, while the app awaits it.
    await using trickle = await rawClient({ port: srv.port });
    trickle.write("POST /trickle HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n");
    await srv.waitFor(/reading the body of POST \/trickle/);
    const t0 = performance.now();
    const drip = setInterval(() => trickle.write("x"), 100);
    try {
      // Bun checks timeouts on a 4 s tick: a 1 s deadline cuts within 8 s; the keep-alive would take 40 s.
      await trickle.waitForClose(10_000);
    } finally {
      clearInterval(drip);
    }
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(statusLines(trickle.text())).toEqual([]);
    // Both idle connections outlived the deadline and answer their next request.
    idle.write("GET /again HTTP/1.1\r\nHost: localhost\r\n\r\n");
    await idle.waitFor(/body=0[\s\S]*body=0/);
    posted.write("GET /again HTTP/1.1\r\nHost: localhost\r\n\r\n");
    await posted.waitFor(/body=2[\s\S]*body=0/);
    expect(statusLines(idle.text() + posted.text())).toEqual([200, 200, 200, 200]);
  }, 20_000);

  test("a client that goes away while the app awaits its body is no app error: one debug line with the reason", async () => {
    await using srv = await startCli(["-V", "5", "-p", "0", fixture("body-reader-app.ts")]);
    await using client = await rawClient({ port: srv.port });
    client.write("POST /gone HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nabc");
    await srv.waitFor(/reading the body of POST \/gone/);
    client.socket.terminate();
    const m = await srv.waitFor(
      /iodine: the client went away during POST http:\/\/\S+\/gone: (.*)\n/,
    );
    expect(m[1]).toBe("AbortError: The connection was closed.");
    expect(srv.stderr()).not.toContain("app error");
    // The server goes on.
    expect(await (await fetch(srv.url, { method: "POST", body: "ok" })).text()).toBe("body=2");
  });
});

describe("--max-msg: WebSocket close 1009 above the message limit", () => {
  test("--max-msg 1: 1024 bytes echo, 1025 close the socket with 1009", async () => {
    await using srv = await startCli(["--max-msg", "1", "-p", "0", fixture("websocket-app.ts")]);
    await using ws = await WsClient.open(srv.url.replace("http", "ws"));
    expect(await ws.next()).toBe("welcome");
    ws.send("x".repeat(1024));
    expect(await ws.next()).toBe(`echo:${"x".repeat(1024)}`);
    ws.send("y".repeat(1025));
    expect((await ws.closed).code).toBe(1009);
    expect(ws.received).toEqual(["welcome", `echo:${"x".repeat(1024)}`]);
  });
});
