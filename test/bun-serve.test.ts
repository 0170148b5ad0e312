// A drop-in for Bun.serve (SPEC §3), with Bun itself as the oracle: the same app runs under plain
// `bun app.ts` and under `iodine -w 2`, the same requests go to both, and every answer is compared
// (status, the headers that matter, the body). Then what only a cluster can show: WebSocket publish
// calls whose subscribers sit on the other worker.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { join } from "node:path";
import { selfSigned } from "../src/tls.ts";
import {
  childrenOf,
  connectionsHeld,
  fixture,
  freePort,
  rawRequest,
  ROOT,
  runCli,
  startCli,
  startCommand,
  tempDir,
  ws,
  type CliProcess,
} from "./harness.ts";
import { Clients, FENCE, fenced, untilHeard, WsClient, type Msg } from "./ws.ts";

const ROUTES_APP = fixture("bun-serve/routes-app.ts");

/** Plain Bun serving the app's default export (its auto-serve), or a script's own Bun.serve, on a free port. */
function underBun(
  app: string,
  listening = /Started (?:development )?server: (http:\/\/\S+)/,
): Promise<CliProcess> {
  return startCommand([process.execPath, app], { env: { PORT: String(freePort()) }, listening });
}

interface Answer {
  status: number;
  type: string | null;
  headers: Record<string, string | null>;
  body: string;
}

async function ask(
  base: string,
  path: string,
  init: RequestInit = {},
  headers: string[] = [],
): Promise<Answer> {
  const res = await fetch(base + path, { ...init, redirect: "manual" });
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    headers: Object.fromEntries(headers.map((h) => [h, res.headers.get(h)])),
    body: await res.text(),
  };
}

/** [what, path, init?, headers to compare] */
const REQUESTS: [string, string, RequestInit?, string[]?][] = [
  ["a static Response route", "/static", undefined, ["x-kind", "content-length"]],
  ["HEAD of a static Response route", "/static", { method: "HEAD" }, ["x-kind", "content-length"]],
  ["a Bun.file route", "/file", undefined, ["content-length"]],
  ["an HTML import", "/"],
  ["a :param", "/users/42"],
  ["two :params", "/users/7/posts/x-y"],
  ["a wildcard, GET", "/api/deep/path"],
  ["a wildcard, POST with a body", "/api/x", { method: "POST", body: "x".repeat(900) }],
  ["a per-method object without the method asked", "/only-post"],
  ["a per-method object with it", "/only-post", { method: "POST", body: "" }],
  ["no route: fetch answers", "/nothing/here"],
  ["a route that throws: error() answers", "/boom", undefined, ["x-handled"]],
  ["a route that rejects: error() answers", "/async-boom", undefined, ["x-handled"]],
  ["fetch that throws: error() answers", "/fetch-boom", undefined, ["x-handled"]],
  ["a body over maxRequestBodySize: 413", "/api/x", { method: "POST", body: "x".repeat(4096) }],
  ["a WebSocket route without an upgrade", "/ws"],
];

describe("the same Bun.serve options object under plain Bun and under iodine -w 2", () => {
  let bun: CliProcess;
  let iodine: CliProcess;
  beforeAll(async () => {
    [bun, iodine] = await Promise.all([
      underBun(ROUTES_APP),
      startCli(["-p", "0", "-w", "2", ROUTES_APP], { timeout: 20_000 }),
    ]);
  });
  afterAll(async () => {
    await bun?.[Symbol.asyncDispose]();
    await iodine?.[Symbol.asyncDispose]();
  });

  for (const [what, path, init, headers] of REQUESTS) {
    test(what, async () => {
      // Twice under iodine: the two answers may come from the two workers.
      const [oracle, ours, again] = await Promise.all([
        ask(bun.url, path, init, headers),
        ask(iodine.url, path, init, headers),
        ask(iodine.url, path, { ...init, headers: { connection: "close" } }, headers),
      ]);
      expect(ours).toEqual(oracle);
      expect(again).toEqual(oracle);
    });
  }

  test("ws.publish, publishText, publishBinary with no other subscriber: both return 0", async () => {
    await using clients = new Clients();
    const [a, b] = await Promise.all([
      clients.worker(`${ws(bun)}/ws?topic=alone-${Math.random()}`),
      clients.worker(`${ws(iodine)}/ws?topic=alone-${Math.random()}`),
    ]);
    for (const how of ["publish", "publishText", "publishBinary"]) {
      a.send(`${how} hi`);
      b.send(`${how} hi`);
    }
    const [ga, gb] = await Promise.all([a.take(3), b.take(3)]);
    expect(gb).toEqual(ga);
    expect(ga).toEqual([
      "publish returned 0 for hi",
      "publishText returned 0 for hi",
      "publishBinary returned 0 for hi",
    ]);
  });

  test("with a subscriber elsewhere (under iodine: on the other worker) they return the bytes, and it gets each once", async () => {
    const topic = `pair-${Math.random()}`;
    await using clients = new Clients();
    const [x, y] = await Promise.all([
      clients.worker(`${ws(bun)}/ws?topic=${topic}`),
      clients.worker(`${ws(bun)}/ws?topic=${topic}`),
    ]);
    const [p, q] = await clients.oneOnEach(`${ws(iodine)}/ws?topic=${topic}`);
    // Under iodine, q's worker hears of the topic through the bus: probe until a publish arrives.
    await untilHeard((probe) => p.send(`publish ${probe}`), [q]);
    for (const how of ["publish", "publishText", "publishBinary"]) {
      x.send(`${how} héllo`);
      p.send(`${how} héllo`);
    }
    const [gx, gy, gp, gq] = await Promise.all([x, y, p, q].map((c) => c.take(3)));
    expect(gp).toEqual(gx!);
    expect(gq).toEqual(gy!);
    expect(gx).toEqual([
      "publish returned 6 for héllo",
      "publishText returned 6 for héllo",
      "publishBinary returned 6 for héllo",
    ]);
    expect(gy).toEqual(["héllo", "héllo", new TextEncoder().encode("héllo")]);
    // A second copy would come before a fence published after it the same way.
    const fence = (c: WsClient) => ({ client: c, send: (t: string) => c.send(`publish ${t}`) });
    expect(await fenced([fence(x)], [y])).toEqual([[]]);
    expect(await fenced([fence(p)], [q])).toEqual([[]]);
  }, 15_000);

  test("a body over the limit with Expect: 100-continue: both refuse it", async () => {
    const head = (port: number) =>
      rawRequest(
        port,
        `POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n`,
        (r) => /HTTP\/1\.1 4\d\d/.test(r),
        3000,
      );
    const status = (raw: string) => /HTTP\/1\.1 (4\d\d)/.exec(raw)?.[1];
    expect(status(await head(iodine.port))).toBe(status(await head(bun.port)));
  });
});

test("-v logs route requests too, static answers included, and they still answer as Bun's", async () => {
  await using srv = await startCli(["-p", "0", "-v", ROUTES_APP]);
  expect(await ask(srv.url, "/static", undefined, ["x-kind"])).toEqual({
    status: 200,
    type: "text/plain;charset=utf-8",
    headers: { "x-kind": "static" },
    body: "a static answer",
  });
  expect((await ask(srv.url, "/file")).body).toBe("hello from a file\n");
  expect((await ask(srv.url, "/users/9")).body).toBe("user 9");
  for (const path of ["/static", "/file", "/users/9"])
    await srv.waitFor(new RegExp(`"GET ${path} HTTP/1.1" 200 `));
});

/** The common name of the certificate a TLS server on 127.0.0.1:port presents. */
function certificateName(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ port, host: "127.0.0.1", rejectUnauthorized: false }, () => {
      resolve(String(socket.getPeerCertificate().subject?.CN));
      socket.destroy();
    });
    socket.on("error", reject);
  });
}

describe("the export's own options, and the command line over them", () => {
  const OPTIONS_APP = fixture("bun-serve/options-app.ts");
  const withOptions = (options: Record<string, unknown>, args: string[] = []) =>
    startCli(["-p", "0", ...args, OPTIONS_APP], { env: { APP_OPTIONS: JSON.stringify(options) } });

  test("hostname and unix: where it listens, unless -b says otherwise", async () => {
    await using onHost = await withOptions({ hostname: "127.0.0.1" });
    expect(onHost.stderr()).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+ /);
    using dir = tempDir();
    const path = join(dir.path, "app.sock");
    await using onSocket = await startCli([OPTIONS_APP], {
      env: { APP_OPTIONS: JSON.stringify({ unix: path }) },
    });
    expect(onSocket.url).toBe(`unix:${path}`);
    expect(await (await fetch("http://localhost/over-unix", { unix: path })).text()).toBe(
      "options app: /over-unix",
    );
    // -p wins over the export's socket.
    await using onPort = await withOptions({ unix: join(dir.path, "unused.sock") });
    expect(onPort.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  test("tls: the export's certificate serves https, unless --tls-cert/--tls says otherwise", async () => {
    const { cert, key } = await selfSigned("export.test");
    await using srv = await withOptions({ tls: { cert, key } });
    expect(srv.url).toMatch(/^https:/);
    const res = await fetch(`${srv.url}/secure`, { tls: { rejectUnauthorized: false } });
    expect(await res.text()).toBe("options app: /secure");
    expect(await certificateName(srv.port)).toBe("export.test");
    // --tls makes its own certificate (for localhost) and wins.
    await using flagged = await withOptions({ tls: { cert, key } }, ["--tls"]);
    expect(await certificateName(flagged.port)).toBe("localhost");
  });

  test("idleTimeout closes an idle keep-alive connection; -k wins over it", async () => {
    await using own = await withOptions({ idleTimeout: 1 });
    await using flagged = await withOptions({ idleTimeout: 1 }, ["-k", "60"]);
    const idle = (port: number) => {
      const socket = connect(port, "127.0.0.1");
      const closed = new Promise<number>((resolve) =>
        socket.on("close", () => resolve(performance.now())),
      );
      socket.resume(); // read the answer, so the server's close shows
      socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      return { socket, closed };
    };
    const [a, b] = [idle(own.port), idle(flagged.port)];
    const t0 = performance.now();
    try {
      const closedAt = await a.closed; // Bun checks idle sockets every few seconds
      expect(closedAt - t0).toBeLessThan(9000);
      expect(b.socket.destroyed).toBe(false);
    } finally {
      a.socket.destroy();
      b.socket.destroy();
    }
  }, 15_000);

  test("a bad option value ends the start with one line and exit 2", async () => {
    for (const [options, line] of [
      [
        { idleTimeout: 300 },
        /^iodine: the app's exported idleTimeout must be seconds, an integer 0–255, got 300\n$/,
      ],
      [
        { maxRequestBodySize: "big" },
        /^iodine: the app's exported maxRequestBodySize must be a number of bytes ≥ 1, got "big"\n$/,
      ],
      [
        { routes: [] },
        /^iodine: the app's exported routes must be an object of path → route, got \[\]\n$/,
      ],
    ] as const) {
      const r = await runCli([OPTIONS_APP], { env: { APP_OPTIONS: JSON.stringify(options) } });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(line);
    }
  });
});

/**
 * ann and bob in the room of examples/bun-serve.ts (under iodine: on different workers, told apart by
 * which worker's count of connections went up); each speaks, the server announces, bob leaves. Returns
 * what ann and bob heard, in order of arrival sorted (two workers may interleave the room's lines).
 */
async function roomTranscript(
  srv: CliProcess,
  workers: number[] | undefined,
): Promise<{ ann: Msg[]; bob: Msg[] }> {
  await using clients = new Clients();
  // Join lines depend on who is there when, and candidates that sat on the wrong worker leave again:
  // their lines are left out.
  const gone = new Set<string>();
  const ignore = (m: Msg) =>
    typeof m === "string" && (/ joined$/.test(m) || gone.has(m.split(/[ :]/)[0]!));
  // Which worker took a new connection: the one whose count of connections on the port went up.
  const join = async (name: string) => {
    const before = connectionsHeld(workers ?? [], srv.port);
    const c = clients.add(await WsClient.open(`${ws(srv)}/room?name=${name}`, { ignore }));
    const after = connectionsHeld(workers ?? [], srv.port);
    return Object.assign(c, { name, on: workers?.find((w) => after.get(w)! > before.get(w)!) });
  };
  /** `prefix`0, `prefix`1 … join until one sits on a worker other than `not`'s (under plain Bun: the first). */
  const joinElsewhere = async (prefix: string, not: number | undefined) => {
    for (let i = 0; i < 40; i++) {
      const c = await join(`${prefix}${i}`);
      if (workers === undefined || (c.on !== undefined && c.on !== not)) return c;
      gone.add(c.name);
      c.close();
      await c.closed;
    }
    throw new Error(`no ${prefix}N joined on the other worker`);
  };
  const ann = await join("ann");
  if (workers !== undefined) expect(ann.on).toBeDefined();
  const bob = await joinElsewhere("b", ann.on);
  // f0 (or f1 …) on bob's side only sends a fence at the end.
  const fence = await joinElsewhere("f", ann.on);
  // Interest in the room crosses to the other worker with each subscription: probes until heard.
  await untilHeard((probe) => ann.send(probe), [bob]);
  await untilHeard((probe) => fence.send(probe), [ann]);
  ann.send("hi");
  bob.send("yo");
  await fetch(`${srv.url}/say`, { method: "POST", body: "all hands" });
  const heard = { ann: await ann.take(2), bob: await bob.take(2) };
  bob.close();
  heard.ann.push(...(await ann.until(`${bob.name} left`)), `${bob.name} left`);
  // Anything else (a second copy) would come before the fence from bob's side.
  fence.send(`${FENCE} room`);
  heard.ann.push(...(await ann.until((m) => String(m).endsWith(`${FENCE} room`))));
  const transcript = (lines: Msg[]) =>
    lines.map((m) => String(m).replace(new RegExp(`^${bob.name}\\b`), "bob")).sort();
  return { ann: transcript(heard.ann), bob: transcript(heard.bob) };
}

describe("a script that calls Bun.serve itself (examples/bun-serve.ts) under plain Bun and under iodine -w 2", () => {
  const script = join(ROOT, "examples", "bun-serve.ts");
  let bun: CliProcess;
  let iodine: CliProcess;
  beforeAll(async () => {
    [bun, iodine] = await Promise.all([
      underBun(script, /Listening on (http:\/\/\S+)/),
      startCli(["-p", "0", "-w", "2", script], { timeout: 20_000 }),
    ]);
  });
  afterAll(async () => {
    await bun?.[Symbol.asyncDispose]();
    await iodine?.[Symbol.asyncDispose]();
  });

  for (const [what, path, init] of [
    ["a static route", "/"],
    ["a :param route", "/api/hello/ann"],
    ["no route: its fetch", "/nothing"],
    ["a POST route", "/say", { method: "POST", body: "nobody listens" }],
    ["a WebSocket route without an upgrade", "/room"],
  ] as [string, string, RequestInit?][]) {
    test(what, async () => {
      expect(await ask(iodine.url, path, init)).toEqual(await ask(bun.url, path, init));
    });
  }

  test("one listener per worker, no second server of the script's own", () => {
    expect(iodine.stderr().match(/listening on/g)).toHaveLength(1);
    expect(iodine.stdout().match(/Listening on http:\/\/localhost:\d+\//g)).toHaveLength(3); // the master and each worker ran the script
  });

  test("the room: ws.publish and server.publish reach the other worker, once each, never the sender", async () => {
    const expected = await roomTranscript(bun, undefined);
    expect(expected).toEqual({
      ann: ["(announcement) all hands", "bob left", "bob: yo"],
      bob: ["(announcement) all hands", "ann: hi"],
    });
    expect(await roomTranscript(iodine, childrenOf(iodine.proc.pid))).toEqual(expected);
  }, 20_000);
});
