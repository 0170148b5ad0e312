// Iodine.TLS (SPEC §9) over real sockets: client-certificate verification on raw TLS and HTTPS
// listeners, ALPN, wss:// through Iodine.connect with an Iodine.TLS, and the API's misuse errors.
// Listeners run as subprocesses (test/fixtures/tls-app.ts, or the CLI), because Iodine.listen/start
// are one runtime per process; the client cases that log run in test/fixtures/tls-client.ts.
// `--tls`, `--tls-cert/--tls-key` (verified with `ca`) and `--tls-pass` are covered by http.test.ts.
//
// The trust anchors here are our own self-signed leaf certificates (no basicConstraints CA:TRUE):
// Bun's BoringSSL accepts one as the anchor for exactly that certificate, on both sides.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { createPrivateKey } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  Iodine,
  type Connection,
  type Handler,
  type Message,
  type RawConnection,
} from "../src/index.ts";
import { selfSigned, TLS } from "../src/tls.ts";
import {
  errorOf,
  fixture,
  runCli,
  runCommand,
  startCli,
  startCommand,
  tempDir,
  type CliProcess,
} from "./harness.ts";

type Pair = { cert: string; key: string };
let server: Pair;
let clientA: Pair;
let clientB: Pair;
const dir = tempDir("iodine-tls-");
/** the PEM files written for the subprocesses */
const file = (name: string) => join(dir.path, name);
const decoder = new TextDecoder();

beforeAll(async () => {
  [server, clientA, clientB] = await Promise.all([
    selfSigned(),
    selfSigned("client-a"),
    selfSigned("client-b"),
  ]);
  const files = {
    "server.crt": server.cert,
    "server.key": server.key,
    "a.crt": clientA.cert,
    "a.key": clientA.key,
    "b.crt": clientB.cert,
    "b.key": clientB.key,
  };
  for (const [name, pem] of Object.entries(files)) writeFileSync(file(name), pem);
});

afterAll(() => dir[Symbol.dispose]());

/** Starts test/fixtures/tls-app.ts with the given environment; the caller disposes it. */
function startTlsApp(env: Record<string, string>): Promise<CliProcess> {
  return startCommand([process.execPath, fixture("tls-app.ts")], {
    env: { TLS_CERT: file("server.crt"), TLS_KEY: file("server.key"), ...env },
  });
}

/** `p`, or a rejection saying `what` after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>(
    (_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)),
  );
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** An Iodine.connect handler that keeps the text received and which callbacks ran. */
class Peer implements Handler {
  events: string[] = [];
  text = "";
  /** the connection's `alpnProtocol` as onOpen saw it */
  alpn: string | false | undefined;
  readonly closed = Promise.withResolvers<void>();
  #wakers = new Set<() => void>();

  onOpen(c: Connection) {
    this.events.push("open");
    this.alpn = (c as RawConnection).alpnProtocol;
  }
  onMessage(_c: Connection, data: Message) {
    this.text += typeof data === "string" ? data : decoder.decode(data);
    for (const w of this.#wakers) w();
  }
  onClose() {
    this.events.push("close");
    this.closed.resolve();
    for (const w of this.#wakers) w();
  }
  /** resolves once the text received includes `s`; rejects on close or after `ms` */
  waitFor(s: string, ms = 3000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.text.includes(s)) return finish(resolve);
        if (this.events.includes("close"))
          return finish(() =>
            reject(
              new Error(`closed before ${JSON.stringify(s)}; got ${JSON.stringify(this.text)}`),
            ),
          );
      };
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(
              new Error(
                `no ${JSON.stringify(s)} within ${ms} ms; got ${JSON.stringify(this.text)}`,
              ),
            ),
          ),
        ms,
      );
      const finish = (f: () => void) => {
        clearTimeout(timer);
        this.#wakers.delete(check);
        f();
      };
      this.#wakers.add(check);
      check();
    });
  }
  /** resolves once onClose ran; rejects after `ms` */
  waitClosed(ms = 3000): Promise<void> {
    return within(this.closed.promise, ms, "not closed");
  }
}

/** Iodine.connect to `url` with `tls`; disposing closes the connection and waits for onClose. */
function iodineClient(url: string, tls: TLS | undefined) {
  const peer = new Peer();
  const client = Iodine.connect({ url, handler: peer, ...(tls ? { tls } : {}) });
  return Object.assign(peer, {
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      await peer.waitClosed();
    },
  });
}

/** Bun.connect with TLS options: writes `send` on open and collects what comes back until the close. */
async function bunClient(
  port: number,
  tls: { cert?: string; key?: string; ca: string },
  send: string,
) {
  let text = "";
  let isClosed = false;
  const wakers = new Set<() => void>();
  const closed = Promise.withResolvers<void>();
  const socket: Socket<undefined> = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    tls,
    socket: {
      open: (s) => void s.write(send),
      data(_s, data) {
        text += decoder.decode(data);
        for (const w of wakers) w();
      },
      close() {
        isClosed = true;
        closed.resolve();
        for (const w of wakers) w();
      },
      error() {},
    },
  });
  return {
    text: () => text,
    closed: closed.promise,
    /** resolves with the text received once it includes `s`, or the socket closed, or `ms` passed */
    until(s: string, ms = 3000): Promise<string> {
      return new Promise((resolve) => {
        const check = () => {
          if (!text.includes(s) && !isClosed) return;
          finish();
        };
        const finish = () => {
          clearTimeout(timer);
          wakers.delete(check);
          resolve(text);
        };
        const timer = setTimeout(finish, ms);
        wakers.add(check);
        check();
      });
    },
    [Symbol.dispose]: () => socket.terminate(),
  };
}

// --- raw TLS: client certificates ---

describe("raw TLS listener that trusts client A's certificate", () => {
  let srv: CliProcess | undefined;
  let url = "";
  beforeAll(async () => {
    srv = await startTlsApp({ TLS_TRUST: file("a.crt") });
    url = srv.url;
  }, 10_000);
  afterAll(async () => {
    await srv?.[Symbol.asyncDispose]();
  });

  test("prints its tls:// address", () => {
    expect(srv!.stderr()).toMatch(
      /^iodine: listening on tls:\/\/127\.0\.0\.1:\d+ \(1 worker, 1 thread, raw\)\n/,
    );
  });

  test("client A through Bun.connect ({ cert, key, ca }) gets its echo", async () => {
    using c = await bunClient(
      srv!.port,
      { cert: clientA.cert, key: clientA.key, ca: server.cert },
      "one\ntwo\n",
    );
    expect(await c.until("echo two\n")).toBe("open alpn=false\necho one\necho two\n");
  });

  test("client A through Iodine.connect with new TLS().useCertificate(A).trust(server) gets its echo", async () => {
    await using c = iodineClient(url, new TLS().useCertificate(clientA).trust(server.cert));
    await c.waitFor("open alpn=false\n");
    c.client.write("ping\n");
    await c.waitFor("echo ping\n");
    expect(c.text).toBe("open alpn=false\necho ping\n");
    expect(c.events).toEqual(["open"]);
    expect(c.alpn).toBe(false);
  });

  test("client B (an untrusted self-signed certificate) and a client without one are refused; A still gets in", async () => {
    {
      using b = await bunClient(
        srv!.port,
        { cert: clientB.cert, key: clientB.key, ca: server.cert },
        "ping\n",
      );
      await b.closed;
      expect(b.text()).toBe("");
    }
    {
      using none = await bunClient(srv!.port, { ca: server.cert }, "ping\n");
      await none.closed;
      expect(none.text()).toBe("");
    }
    {
      // TLS 1.3: the client's side of the handshake completes before the server checks its
      // certificate, so the client may see onOpen; it gets no byte and is closed.
      await using b = iodineClient(url, new TLS().useCertificate(clientB).trust(server.cert));
      await b.waitClosed();
      expect(b.text).toBe("");
    }
    using a = await bunClient(
      srv!.port,
      { cert: clientA.cert, key: clientA.key, ca: server.cert },
      "again\n",
    );
    expect(await a.until("echo again\n")).toBe("open alpn=false\necho again\n");
  });

  // src/raw.ts listenRaw `open`: Bun calls the socket's open for a peer that failed verification
  // (socket.authorized === false) right before it closes it, and raw.ts runs onOpen for it.
  test("a refused client never reaches the listener's handler (no onOpen)", async () => {
    // Client A's lines mark the server's stdout before and after client B's attempt.
    const mark = async (line: string) => {
      using a = await bunClient(
        srv!.port,
        { cert: clientA.cert, key: clientA.key, ca: server.cert },
        `${line}\n`,
      );
      await srv!.waitFor(new RegExp(`^onMessage ${line}$`, "m"), 3000, "stdout");
    };
    await mark("before-b");
    {
      using b = await bunClient(
        srv!.port,
        { cert: clientB.cert, key: clientB.key, ca: server.cert },
        "ping\n",
      );
      await b.closed;
    }
    await mark("after-b");
    const out = srv!.stdout();
    const between = out.slice(
      out.indexOf("onMessage before-b\n"),
      out.indexOf("onMessage after-b\n"),
    );
    // only client A's second connection opened in between
    expect(between.split("\n").filter((l) => l === "onOpen")).toEqual(["onOpen"]);
  });
});

// --- HTTPS: client certificates ---

describe("HTTPS listener that trusts client A's certificate", () => {
  let srv: CliProcess | undefined;
  beforeAll(async () => {
    srv = await startTlsApp({ TLS_SERVICE: "http", TLS_TRUST: file("a.crt") });
  }, 10_000);
  afterAll(async () => {
    await srv?.[Symbol.asyncDispose]();
  });

  test("client A's certificate gets 200; client B's or none makes fetch reject; A still gets in", async () => {
    expect(srv!.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const get = (tls: { cert?: string; key?: string; ca: string }) =>
      fetch(srv!.url, { tls, keepalive: false });
    const a = await get({ cert: clientA.cert, key: clientA.key, ca: server.cert });
    expect([a.status, await a.text()]).toEqual([200, "ok"]);
    await expect(get({ cert: clientB.cert, key: clientB.key, ca: server.cert })).rejects.toThrow();
    await expect(get({ ca: server.cert })).rejects.toThrow();
    const again = await get({ cert: clientA.cert, key: clientA.key, ca: server.cert });
    expect([again.status, await again.text()]).toEqual([200, "ok"]);
  });
});

// --- ALPN ---

describe('ALPN: a raw TLS listener accepting "iodine-test/1", "x-other"', () => {
  let srv: CliProcess | undefined;
  let url = "";
  beforeAll(async () => {
    srv = await startTlsApp({ TLS_ALPN: "iodine-test/1,x-other" });
    url = srv.url;
  }, 10_000);
  afterAll(async () => {
    await srv?.[Symbol.asyncDispose]();
  });

  test('a client offering "iodine-test/1": both sides see it as alpnProtocol', async () => {
    await using c = iodineClient(url, new TLS().trust(server.cert).alpn("iodine-test/1"));
    await c.waitFor("\n");
    expect(c.text).toBe("open alpn=iodine-test/1\n");
    expect(c.alpn).toBe("iodine-test/1");
    expect((c.client as RawConnection).alpnProtocol).toBe("iodine-test/1");
  });

  test("the listener's order of preference wins over the client's", async () => {
    await using c = iodineClient(
      url,
      new TLS().trust(server.cert).alpn("x-other", "iodine-test/1"),
    );
    await c.waitFor("\n");
    expect([c.text, c.alpn]).toEqual(["open alpn=iodine-test/1\n", "iodine-test/1"]);
  });

  test("a client offering no ALPN: alpnProtocol is false on both sides, and it is served", async () => {
    await using c = iodineClient(url, new TLS().trust(server.cert));
    await c.waitFor("open alpn=false\n");
    c.client.write("ping\n");
    await c.waitFor("echo ping\n");
    expect([c.text, c.alpn]).toEqual(["open alpn=false\necho ping\n", false]);
  });

  test("a client offering only an unknown protocol: the handshake fails (no_application_protocol)", async () => {
    // BoringSSL's server ends the handshake with a fatal no_application_protocol alert
    // (RFC 7301 §3.2) instead of going on without ALPN: no byte is exchanged.
    await using c = iodineClient(url, new TLS().trust(server.cert).alpn("nope/9"));
    await c.waitClosed();
    expect(c.text).toBe("");
    expect(c.alpn ?? false).toBe(false);
    // and the listener goes on serving
    await using ok = iodineClient(url, new TLS().trust(server.cert).alpn("iodine-test/1"));
    await ok.waitFor("open alpn=iodine-test/1\n");
  });
});

// --- clients whose handshake fails (they log: run in a subprocess) ---

describe("Iodine.connect when the client's own handshake fails", () => {
  let raw: CliProcess | undefined;
  beforeAll(async () => {
    raw = await startTlsApp({});
  }, 10_000);
  afterAll(async () => {
    await raw?.[Symbol.asyncDispose]();
  });

  // src/raw.ts: Bun calls the client socket's open with socket.authorized === false when the
  // server's certificate did not verify (then closes it); connectRaw runs onOpen and logs nothing.
  test("tls:// to a self-signed server without trust(): no onOpen, onClose once, one log line", async () => {
    const r = await runCommand([process.execPath, fixture("tls-client.ts"), raw!.url], {
      env: { TLS_MODE: "none" },
    });
    expect(r.stdout).toBe("close\n");
    expect(r.stderr).toMatch(
      /^iodine: Iodine\.connect: tls:\/\/127\.0\.0\.1:\d+ failed to open: .*\n$/,
    );
  });
});

describe("Iodine.connect to tls:// speaks TLS", () => {
  /** A plain TCP listener that records the first bytes each connection sends, then closes it. */
  function plainListener() {
    const got = Promise.withResolvers<Uint8Array>();
    const listener = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s, data) {
          got.resolve(new Uint8Array(data));
          s.end();
        },
      },
    });
    return {
      port: listener.port,
      first: () => within(got.promise, 3000, "no bytes"),
      [Symbol.dispose]: () => listener.stop(true),
    };
  }
  // 22 = handshake record (RFC 8446 §5.1), 1 = ClientHello (RFC 8446 §4)
  const isClientHello = (b: Uint8Array) => b[0] === 22 && b[1] === 3 && b[5] === 1;

  test("without a tls option, the first bytes on the wire are a ClientHello", async () => {
    using plain = plainListener();
    await using c = iodineClient(`tls://127.0.0.1:${plain.port}`, undefined);
    expect(isClientHello(await plain.first())).toBe(true);
  });

  // src/raw.ts connectRaw: `{ tls: tls?.clientOptions() ?? true }` passes `tls: {}` for an Iodine.TLS
  // with nothing set, and Bun.connect treats an empty tls object as no TLS: "ping" goes in clear.
  test("with new TLS() (nothing set), the first bytes on the wire are a ClientHello, not the data", async () => {
    using plain = plainListener();
    // A TLS client sends its ClientHello at once; a plaintext one sends nothing until onOpen writes.
    const client = Iodine.connect({
      url: `tls://127.0.0.1:${plain.port}`,
      tls: new TLS(),
      handler: { onOpen: (c) => void c.write("ping\n") },
    });
    try {
      const first = await plain.first();
      expect(decoder.decode(first)).not.toBe("ping\n");
      expect(isClientHello(first)).toBe(true);
    } finally {
      client.close();
    }
  });
});

// --- wss:// through Iodine.connect with an Iodine.TLS ---

describe("wss:// to the CLI with --tls-cert/--tls-key", () => {
  let srv: CliProcess | undefined;
  let wss = "";
  beforeAll(async () => {
    srv = await startCli([
      "-p",
      "0",
      "-b",
      "127.0.0.1",
      "--tls-cert",
      file("server.crt"),
      "--tls-key",
      file("server.key"),
      fixture("ws-iodine-app.ts"),
    ]);
    wss = srv.url.replace(/^https:/, "wss:");
  }, 10_000);
  afterAll(async () => {
    await srv?.[Symbol.asyncDispose]();
  });

  test("new TLS().trust(serverCert): a message round trip", async () => {
    await using c = iodineClient(`${wss}/tls`, new TLS().trust(server.cert));
    await c.waitFor("open websocket /tls");
    c.client.write("secure");
    await c.waitFor("echo secure");
    expect(c.text).toBe("open websocket /tlsecho secure");
    expect(c.events).toEqual(["open"]);
  });

  test("new TLS() without trust (the system's CAs): never opens, onClose once, one log line", async () => {
    const url = `${wss}/`;
    const r = await runCommand([process.execPath, fixture("tls-client.ts"), url]);
    expect(r).toEqual({
      code: 0,
      stdout: "close\n",
      stderr: `iodine: Iodine.connect: ${url} failed to open: TLS handshake failed: self signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)\n`,
    });
  });

  test("a PEM file trusted as Bun.file works like PEM text", async () => {
    const r = await runCommand([process.execPath, fixture("tls-client.ts"), `${wss}/file`], {
      env: { TLS_TRUST: file("server.crt") },
    });
    expect(r).toEqual({
      code: 0,
      stdout: "open\nmessage open websocket /file\nclose\n",
      stderr: "",
    });
  });
});

// --- CLI key errors ---

// cli.ts: a key Bun cannot use (wrong --tls-pass) fails in Bun.serve, which the CLI reports as
// "failed to start: Error: …BAD_DECRYPT" plus a stack trace and exit 1 (SPEC §2 wants one line, exit 2).
test("a wrong --tls-pass exits 2 with one line naming the key file", async () => {
  const { key } = await selfSigned();
  const encrypted = createPrivateKey(key).export({
    format: "pem",
    type: "pkcs8",
    cipher: "aes-256-cbc",
    passphrase: "s3cret",
  });
  writeFileSync(file("enc.key"), encrypted);
  const r = await runCli([
    "-p",
    "0",
    "--tls-cert",
    file("server.crt"),
    "--tls-key",
    file("enc.key"),
    "--tls-pass",
    "wrong",
    fixture("function-app.ts"),
  ]);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/^iodine: [^\n]*enc\.key[^\n]*\n$/);
});

// --- misuse of the API ---

describe("API errors", () => {
  test("useCertificate, alpn and trust check what they are given", () => {
    expect(
      errorOf(() =>
        new TLS().useCertificate({ cert: "not pem", key: "-----BEGIN PRIVATE KEY-----" }),
      ),
    ).toBe(
      'TypeError: Iodine.TLS: cert must be PEM text or a Bun.file, got text without "-----BEGIN"',
    );
    expect(errorOf(() => new TLS().alpn(""))).toBe(
      'TypeError: Iodine.TLS.alpn: a protocol name must be 1–255 bytes, got ""',
    );
    expect(errorOf(() => new TLS().alpn("x".repeat(256)))).toMatch(
      /^TypeError: Iodine\.TLS\.alpn: a protocol name must be 1–255 bytes/,
    );
    expect(errorOf(() => new TLS().trust(42 as unknown as string))).toBe(
      "TypeError: Iodine.TLS: trust(ca) must be PEM text or a Bun.file, got number",
    );
    expect(errorOf(() => new TLS().serverOptions())).toBe(
      "IodineError: Iodine.TLS: a listener needs a certificate (useCertificate, or let start make a self-signed one)",
    );
  });

  test("Iodine.connect refuses TLS over a Unix socket, and a non-TLS object for tls://", () => {
    const handler = {};
    expect(errorOf(() => Iodine.connect({ url: "unix:/tmp/x", tls: new TLS(), handler }))).toBe(
      'TypeError: Iodine.connect: "tls" over a Unix socket is not supported ("unix:/tmp/x")',
    );
    expect(
      errorOf(() =>
        Iodine.connect({ url: "tls://127.0.0.1:1", tls: { ca: server.cert }, handler }),
      ),
    ).toBe('TypeError: Iodine.connect: "tls" for a raw connection must be an Iodine.TLS');
  });
});
