// The access log's byte field for every kind of body, and `--log-format json` (SPEC §7): every line a
// cluster writes to stderr parses as JSON, odd paths and app errors included.
import { describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { fixture, rawRequest, runCli, startCli, statusLines } from "./harness.ts";

const APP = fixture("body-kinds-app.ts");
const LINE = /"(GET|HEAD) (\S+) HTTP\/1\.1" (\d{3}) (\d+|-) \d+\.\d{2}ms$/;

/** path → the byte field its text access line shows */
const EXPECTED: Record<string, string> = {
  "/string": "12", // SPEC §7's own example: new Response("hello world!")
  "/utf8": String(Buffer.byteLength("héllo wörld ✓ 🎉")), // bytes, not characters
  "/empty": "0",
  "/null": "0",
  "/none": "0",
  "/arraybuffer": "7",
  "/uint8": "5",
  "/uint16": "6",
  "/dataview": "4",
  "/blob": "5",
  "/file": String(statSync(APP).size),
  "/params": String("q=a+b&r=%C3%A9".length),
  "/json": String(Buffer.byteLength(JSON.stringify({ a: "é", n: [1, 2] }))),
  "/json-init": String('{"ok":true}'.length),
  "/json-typed": "3",
  "/json-status": String('{"missing":true}'.length),
  "/redirect": "0",
  "/subclass": "5", // an app's own subclass of Response
  "/clone": String("made at load".length),
  "/hono-style": "4",
  "/wrong-length": "11", // Bun sends the real length, whatever Content-Length says
  "/stream": "-",
  "/stream-length": "5", // a stream's declared Content-Length is what Bun sends
  "/generator": "-",
  "/not-modified": "0",
  "/no-content": "0",
};

/** What /checks answers, with or without -v: the swapped Response behaves as Bun's own. */
const CHECKS = {
  instance: true,
  errorInstance: true,
  redirectInstance: true,
  cloneInstance: true,
  name: "Response",
  subclass: [true, false],
  mineCounted: true,
  jsonType: "application/json;charset=utf-8",
};

describe("the byte field (-v)", () => {
  test("every kind of body logs its length; streams log -", async () => {
    await using srv = await startCli(["-v", "-p", "0", APP]);
    const received: Record<string, number> = {};
    for (const path of Object.keys(EXPECTED)) {
      const res = await fetch(srv.url + path, { redirect: "manual" });
      received[path] = (await res.arrayBuffer()).byteLength;
    }
    const head = await fetch(srv.url + "/string", { method: "HEAD" });
    expect(head.headers.get("content-length")).toBe("12");
    await srv.waitFor(/"HEAD \/string HTTP\/1\.1" 200 \S+ /);
    const logged: Record<string, string> = {};
    for (const l of srv.stderr().split("\n")) {
      const m = LINE.exec(l);
      if (m) logged[m[1] === "HEAD" ? "HEAD " + m[2] : m[2]!] = m[4]!;
    }
    expect(logged).toEqual({ ...EXPECTED, "HEAD /string": "0" });
    // What the log says is what went out, for every body whose length is known.
    for (const [path, bytes] of Object.entries(EXPECTED))
      if (bytes !== "-") expect([path, received[path]]).toEqual([path, Number(bytes)]);
  });

  test("the swapped Response behaves as Bun's", async () => {
    await using srv = await startCli(["-v", "-p", "0", APP]);
    expect(await (await fetch(srv.url + "/patched")).json()).toEqual({ atLoad: true, now: true });
    expect(await (await fetch(srv.url + "/checks")).json()).toEqual(CHECKS);
    const typed = await fetch(srv.url + "/json-typed");
    expect(typed.headers.get("content-type")).toBe("application/x-mine");
    const init = await fetch(srv.url + "/json-init");
    expect([init.status, init.headers.get("x-a"), init.headers.get("content-type")]).toEqual([
      201,
      "1",
      "application/json;charset=utf-8",
    ]);
  });

  test("a Hono app's responses are counted (new Response(body, init) with Headers)", async () => {
    await using srv = await startCli(["-v", "-p", "0", fixture("hono-app.ts")]);
    expect(await (await fetch(srv.url + "/")).text()).toBe("hono root");
    expect(await (await fetch(srv.url + "/users/é")).text()).toBe('{"id":"é"}');
    await srv.waitFor(/"GET \/users\/%C3%A9 HTTP\/1\.1" 200 11 /);
    expect(srv.stderr()).toMatch(/"GET \/ HTTP\/1\.1" 200 9 /);
  });

  test("without -v the global Response is untouched", async () => {
    await using srv = await startCli(["-p", "0", APP]);
    expect(await (await fetch(srv.url + "/patched")).json()).toEqual({
      atLoad: false,
      now: false,
    });
    expect(await (await fetch(srv.url + "/checks")).json()).toEqual(CHECKS);
  });
});

describe("--log-format json", () => {
  test("a cluster writes one JSON object a line: access lines, app errors, start and stop", async () => {
    await using srv = await startCli(["-v", "--log-format", "json", "-w", "2", "-p", "0", APP]);
    for (const path of ["/string", "/utf8", "/stream", "/throw"])
      await (await fetch(srv.url + path)).text();
    // Quotes, a backslash, UTF-8 and DEL in the target, as raw bytes; a control character, which
    // Bun refuses itself (no app call, no line); and a Host the guard refuses (400, logged).
    const odd = '/odd"q\\?x="1"&y=\\&z=é&d=\x7f';
    const echoed = await rawRequest(
      srv.port,
      Buffer.from(`GET ${odd} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    );
    const control = await rawRequest(
      srv.port,
      `GET /c\x01c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    );
    const badHost = await rawRequest(
      srv.port,
      `GET /h HTTP/1.1\r\nHost: a"b\\c\r\nConnection: close\r\n\r\n`,
    );
    expect([statusLines(echoed), statusLines(control)[0] !== 200, statusLines(badHost)]).toEqual([
      [200],
      true,
      [400],
    ]);
    const appTarget = echoed.slice(echoed.indexOf("\r\n\r\n") + 4);
    expect(await srv.stop("SIGTERM")).toBe(0);

    const lines = srv.stderr().trimEnd().split("\n");
    const parsed = lines.map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`not a JSON line: ${JSON.stringify(l)}`);
      }
    });
    const access = parsed.filter((o) => "path" in o);
    const byPath = new Map(access.map((o) => [o.path, o]));
    const time = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(byPath.get("/string")).toEqual({
      time,
      ip: "127.0.0.1",
      method: "GET",
      path: "/string",
      status: 200,
      bytes: 12,
      ms: expect.any(Number),
    });
    expect(byPath.get("/utf8")?.bytes).toBe(Number(EXPECTED["/utf8"]));
    expect(byPath.get("/stream")?.bytes).toBeNull();
    expect(byPath.get("/throw")).toMatchObject({ status: 500, bytes: 21 });
    expect(byPath.get(appTarget)).toMatchObject({
      status: 200,
      bytes: Buffer.byteLength(appTarget),
    });
    expect(appTarget).toContain("\\"); // the escape was needed
    expect(access.filter((o) => o.status === 400)).toHaveLength(1);
    expect(access).toHaveLength(6);

    const others = parsed.filter((o) => !("path" in o));
    for (const o of others) {
      expect(Object.keys(o)).toEqual(["time", "level", "pid", "msg"]);
      expect(o.time).toEqual(time);
      expect(typeof o.pid).toBe("number");
    }
    const error = others.find((o) => o.level === "error")!;
    // The stack stays inside msg, and the worker's pid is not the master's.
    expect(error.msg).toContain('Error: boom "quoted"\nsecond line\n    at ');
    const master = others.find((o) => /^listening on /.test(String(o.msg)))!;
    expect(master.level).toBe("info");
    expect(error.pid).not.toBe(master.pid);
    expect(srv.proc.pid).toBe(master.pid as number);
  });

  test("a value other than text or json is one line and exit code 2", async () => {
    const r = await runCli(["--log-format", "xml", "-p", "0", APP]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('iodine: --log-format must be text or json, got "xml"\n');
  });
});
