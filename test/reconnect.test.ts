// Iodine.connect({ reconnect }) (issue 19): one connection object across reconnects. Real servers:
// the CLI with test/fixtures/reconnect-server.ts, SIGKILLed and started again on the same port, or
// hot-restarted with SIGUSR1; Bun.listen in this process where only accepting matters. The client
// is test/fixtures/client-reconnect.ts under the CLI (its stdout says which callbacks ran, its
// stderr what was logged), or connect() in this process where the test must see its state.
import { describe, expect, test } from "bun:test";
import { connect } from "../src/connections/client.ts";
import { parseReconnect } from "../src/connections/reconnect.ts";
import { publish } from "../src/pubsub/registry.ts";
import type { Connection, Message } from "../src/types.ts";
import { fixture, freePort, startCli, waitUntil, Waiters, type CliProcess } from "./harness.ts";

const serve = (port: number, raw: boolean, extra: string[] = []) =>
  startCli([...extra, "-p", String(port), fixture("reconnect-server.ts")], {
    env: raw ? { RAW: "1" } : {},
  });

/** The client fixture at debug verbosity (each attempt is a debug line). */
const client = (url: string, mode: string, min = "0.05", max = "0.2", size = "10000") =>
  startCli(["-V", "5", fixture("client-reconnect.ts")], {
    noListener: true,
    env: { URL: url, MIN: min, MAX: max, MODE: mode, SIZE: size },
  });

/** The lines of the client's stderr about the client, but for the debug lines of each attempt. */
const said = (c: CliProcess) =>
  c
    .stderr()
    .split("\n")
    .filter((l) => l.includes("Iodine.connect:") && !/ attempt \d+: /.test(l));

/** `got m7:down EPOCH:7` lines: the message number, whether the client was up, the position. */
function deliveries(lines: string[]) {
  return lines
    .filter((l) => l.startsWith("got "))
    .map((l) => {
      const [, message, position] = l.split(" ") as [string, string, string];
      const [n, state] = message.slice(1).split(":");
      const colon = position.lastIndexOf(":");
      return {
        n: Number(n),
        state,
        epoch: position.slice(0, colon),
        offset: Number(position.slice(colon + 1)),
      };
    });
}

const numbers = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);
const received = (s: CliProcess) =>
  [...s.stdout().matchAll(/^got m(\d+):/gm)].map((m) => Number(m[1]));

describe("a server killed and started again on the same port", () => {
  // ws: the handler subscribes in every onOpen (it resumes where the one it replaces stood);
  // tcp: only in the first (the client makes it again by itself).
  for (const [scheme, mode] of [
    ["ws", "each"],
    ["tcp", "once"],
  ] as const) {
    test(`${scheme}:// (subscribing ${mode === "each" ? "in every onOpen" : "once"}): onOpen twice, the missed history messages exactly once and in order, then live ones; onClose once at the stop; one log line a state`, async () => {
      const port = freePort();
      const raw = scheme === "tcp";
      await using first = await serve(port, raw);
      const url = raw ? `tcp://127.0.0.1:${port}` : `ws://127.0.0.1:${port}/`;
      await using c = await client(url, mode);
      await first.waitFor(/^got m5:up$/m, 10_000, "stdout");
      first.proc.kill("SIGKILL");
      await first.proc.exited;
      await c.waitFor(/lost: /);
      // Several attempts while it is down, each a debug line only.
      await c.waitFor(/attempt 3: failed to open/);
      await using second = await serve(port, raw);
      await c.waitFor(/connected again after/);
      // After the second open: what was published while down, then a live one.
      const [, live] = (await c.waitFor(
        /^open\n[^]*^open\n(?:got m\d+:down .*\n)+got (m\d+):up /m,
        10_000,
        "stdout",
      )) as RegExpMatchArray;
      expect(await c.stop()).toBe(0);

      const out = c.stdout().trimEnd().split("\n");
      expect(out.filter((l) => l === "open")).toHaveLength(2);
      expect(out.filter((l) => l === "close")).toHaveLength(1);
      expect(out.slice(-2)).toEqual(["shutdown", "close"]);
      // Every message exactly once, in publish order, at consecutive positions of one epoch.
      const got = deliveries(out);
      expect(got.map((g) => g.n)).toEqual(numbers(1, got.length));
      expect(got.map((g) => g.offset)).toEqual(numbers(1, got.length));
      expect(new Set(got.map((g) => g.epoch)).size).toBe(1);
      // Those published while it was away came after it was back, before the live ones.
      const reopened = out.lastIndexOf("open");
      const after = deliveries(out.slice(reopened));
      const missed = after.filter((g) => g.state === "down");
      expect(missed.length).toBeGreaterThanOrEqual(3);
      expect(deliveries(out.slice(0, reopened)).every((g) => g.state === "up")).toBe(true);
      expect(after.findIndex((g) => g.state === "up")).toBe(missed.length);
      // The restarted server got exactly that: the missed messages in order, then the live ones.
      const last = got.at(-1)!.n;
      await second.waitFor(new RegExp(`^got m${last}:`, "m"), 5000, "stdout");
      expect(received(second)).toEqual(after.map((g) => g.n));
      expect(received(second)).toContain(Number(live!.slice(1)));
      expect(received(first)).toEqual(numbers(1, received(first).length));
      // One line when it was lost, one when it was back; the failed attempts between at debug only.
      const lines = said(c);
      expect(lines).toHaveLength(2);
      expect(lines[0]).toContain(`Iodine.connect: ${url} lost: `);
      expect(lines[1]).toMatch(/connected again after \d+\.\d s \(attempt \d+\)$/);
    }, 30_000);
  }
});

test("a -w 2 cluster of clients (the history in its master): each worker's client resumes without a gap or a duplicate", async () => {
  const port = freePort();
  await using first = await serve(port, false);
  const url = `ws://127.0.0.1:${port}/`;
  await using c = await startCli(["-V", "5", "-w", "2", fixture("client-reconnect.ts")], {
    env: { URL: url, MIN: "0.05", MAX: "0.2", MODE: "each", CLUSTER: "1" },
  });
  await c.waitFor(/^open$[^]*^open$/m, 10_000, "stdout");
  await first.waitFor(/^got m20:x$[^]*^got m20:x$/m, 10_000, "stdout");
  first.proc.kill("SIGKILL");
  await first.proc.exited;
  await c.waitFor(/lost: [^]*lost: /);
  await c.waitFor(/attempt 3: failed to open/);
  await using second = await serve(port, false);
  await c.waitFor(/connected again after [^]*connected again after /);
  // Caught up and live again: both workers deliver a message published after they were back.
  const latest = Math.max(...deliveries(c.stdout().split("\n")).map((g) => g.n));
  await c.waitFor(
    new RegExp(`^got m${latest + 10}:x [^]*^got m${latest + 10}:x `, "m"),
    10_000,
    "stdout",
  );
  expect(await c.stop()).toBe(0);
  const out = c.stdout().trimEnd().split("\n");
  expect(out.filter((l) => l === "open")).toHaveLength(4);
  expect(out.filter((l) => l === "close")).toHaveLength(2);
  const pids = new Set(out.filter((l) => l.startsWith("got ")).map((l) => l.split(" ")[3]));
  expect(pids.size).toBe(2);
  for (const pid of pids) {
    const got = deliveries(out.filter((l) => l.endsWith(` ${pid}`)));
    expect(got.map((g) => g.n)).toEqual(numbers(got[0]!.n, got.length));
    expect(got.map((g) => g.offset)).toEqual(numbers(got[0]!.offset, got.length));
    expect(got.at(-1)!.n).toBeGreaterThanOrEqual(latest + 10);
  }
}, 30_000);

test("a history trimmed while it was away (size 2): it resumes live, and a warning says from where it could not", async () => {
  const port = freePort();
  await using first = await serve(port, false);
  await using c = await client(`ws://127.0.0.1:${port}/`, "once", "0.05", "0.2", "2");
  await first.waitFor(/^got m3:up$/m, 10_000, "stdout");
  first.proc.kill("SIGKILL");
  await first.proc.exited;
  await c.waitFor(/attempt 3: failed to open/); // ≥ 0.17 s down: more than 2 messages published
  await using second = await serve(port, false);
  await c.waitFor(
    /"feed" resumed without what was published while it was down \(its history no longer reaches back to \S+:\d+\)/,
  );
  await c.waitFor(/^open\n[^]*^open\n(?:got .*\n)*got m\d+:up /m, 10_000, "stdout");
  expect(await c.stop()).toBe(0);
  const out = c.stdout().trimEnd().split("\n");
  const after = deliveries(out.slice(out.lastIndexOf("open")));
  expect(after.length).toBeGreaterThan(0);
  expect(after.every((g) => g.state === "up")).toBe(true);
});

test("a hot restart (SIGUSR1) of a -w 2 server: the WebSocket client is told to go, comes back to a new worker and resumes", async () => {
  const port = freePort();
  await using server = await serve(port, false, ["-w", "2"]);
  await using c = await client(`ws://127.0.0.1:${port}/`, "each");
  await server.waitFor(/^got m3:up$/m, 10_000, "stdout");
  server.proc.kill("SIGUSR1");
  await c.waitFor(/^open\n[^]*^open\n(?:got .*\n)*got m\d+:up /m, 20_000, "stdout");
  expect(await c.stop()).toBe(0);
  const out = c.stdout().trimEnd().split("\n");
  expect(out.filter((l) => l === "open")).toHaveLength(2);
  expect(out.filter((l) => l === "close")).toHaveLength(1);
  const got = deliveries(out);
  expect(got.map((g) => g.n)).toEqual(numbers(1, got.length));
  expect(said(c)[0]).toMatch(/lost: closed by the server \(close code 1001\); reconnecting$/);
}, 30_000);

test("back-off: against a server that accepts and closes at once, attempts come at growing intervals, not in a loop, and it logs once", async () => {
  const accepted: number[] = [];
  const seventh = Promise.withResolvers<void>();
  using listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        if (accepted.push(performance.now()) === 7) seventh.resolve();
        s.end();
      },
      data() {},
    },
  });
  const url = `tcp://127.0.0.1:${listener.port}`;
  await using c = await client(url, "none", "0.1", "0.4");
  await seventh.promise;
  expect(await c.stop()).toBe(0);
  // Waits are 50–100 % of a step doubling from 0.1 s to 0.4 s; a connection that lasted less than
  // 0.4 s does not start it over.
  const gaps = accepted.slice(1, 7).map((t, i) => t - accepted[i]!);
  const floor = [50, 100, 200, 200, 200, 200];
  for (const [i, gap] of gaps.entries()) expect(gap).toBeGreaterThanOrEqual(floor[i]! - 5);
  // Each attempt opened (a raw server that accepts is an open), and closed at once; the seventh
  // may have been stopped before its onOpen ran.
  expect(
    c
      .stdout()
      .split("\n")
      .filter((l) => l === "open").length,
  ).toBeGreaterThanOrEqual(6);
  expect(c.stdout().match(/^close$/gm)).toHaveLength(1);
  // A flapping server is one state: lost, then back; not a line for each flap.
  expect(said(c)).toHaveLength(2);
}, 20_000);

test("nothing listening: one line for the failure, not one per attempt; Iodine.stop() while it waits ends it at once with onClose", async () => {
  const port = freePort();
  await using c = await client(`ws://127.0.0.1:${port}/`, "none", "0.02", "0.05");
  await c.waitFor(/attempt 4: failed to open/);
  expect(await c.stop()).toBe(0);
  expect(c.stdout()).toBe("close\n");
  const lines = said(c);
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(
    /Iodine\.connect: ws:\/\/127\.0\.0\.1:\d+\/ failed to open: .*ECONNREFUSED.*; retrying every 0\.02–0\.05 s until it opens$/,
  );
});

test("close() while it waits to reconnect: onClose once, no more attempts", async () => {
  let accepts = 0;
  using listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        accepts++;
        s.end();
      },
      data() {},
    },
  });
  const events: string[] = [];
  const opened = Promise.withResolvers<void>();
  const closed = Promise.withResolvers<void>();
  const c: Connection = connect({
    url: `tcp://127.0.0.1:${listener.port}`,
    reconnect: { min: 0.5, max: 0.5 },
    handler: {
      onOpen: () => void (events.push("open"), opened.resolve()),
      onClose: () => void (events.push("close"), closed.resolve()),
    },
  });
  await opened.promise;
  // The server closed it: the client is down, waiting 0.25–0.5 s before its next attempt.
  await waitUntil(() => !c.isOpen, 2000, "the client to notice the close");
  expect(c.write("while down")).toBe(false);
  c.close();
  await closed.promise;
  const seen = accepts;
  await Bun.sleep(700); // longer than the longest wait: an attempt would have come by now
  expect(accepts).toBe(seen);
  expect(events).toEqual(["open", "close"]);
  c.close();
  await Bun.sleep(0);
  expect(events).toEqual(["open", "close"]);
});

test("the back-off starts over once a connection stayed up for max seconds", async () => {
  // min 0.05 s, max 0.2 s: four flaps grow the step to 0.2 s; the fifth connection is held 0.25 s.
  const accepted: number[] = [];
  let heldEnded = 0;
  const sixth = Promise.withResolvers<void>();
  using listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        const n = accepted.push(performance.now());
        if (n === 6) sixth.resolve();
        if (n !== 5) return void s.end();
        setTimeout(() => {
          heldEnded = performance.now();
          s.end();
        }, 250);
      },
      data() {},
    },
  });
  const c = connect({
    url: `tcp://127.0.0.1:${listener.port}`,
    reconnect: { min: 0.05, max: 0.2 },
    handler: {},
  });
  try {
    await sixth.promise;
  } finally {
    c.close();
  }
  // Before: the fifth attempt waited 0.1–0.2 s (the step had grown to 0.2 s). After a connection
  // that lasted max, the wait is 25–50 ms again.
  expect(accepted[4]! - accepted[3]!).toBeGreaterThanOrEqual(95);
  expect(accepted[5]! - heldEnded).toBeLessThan(95);
});

test("while down: write returns false, subscribe is held and settles once it is back, unsubscribe drops a held one", async () => {
  let lines = "";
  const wrote = new Waiters();
  const listen = (port: number) =>
    Bun.listen({
      hostname: "127.0.0.1",
      port,
      socket: {
        data(_s, d) {
          lines += new TextDecoder().decode(d);
          wrote.wake();
        },
      },
    });
  let server = listen(0);
  const port = server.port;
  let opened = Promise.withResolvers<void>();
  const closed = Promise.withResolvers<void>();
  const c = connect({
    url: `tcp://127.0.0.1:${port}`,
    reconnect: { min: 0.05, max: 0.1 },
    handler: { onOpen: () => opened.resolve(), onClose: () => closed.resolve() },
  });
  try {
    await opened.promise;
    opened = Promise.withResolvers<void>();
    const write = (_ch: string, m: Message, conn?: Connection) => void conn!.write(`${m}\n`);
    await c.subscribe("rc:a", (ch, m, conn) => write(ch, `a:${m}`, conn));
    server.stop(true);
    await waitUntil(() => !c.isOpen, 2000, "the client to notice the server is gone");
    expect(c.write("while down")).toBe(false);
    const held = c.subscribe("rc:b", (ch, m, conn) => write(ch, `b:${m}`, conn));
    expect(c.unsubscribe("rc:a")).toBe(true);
    expect(c.unsubscribe("rc:a")).toBe(false);
    server = listen(port);
    await opened.promise;
    expect(await held).toEqual({ recovered: true, position: undefined });
    publish("rc:a", "1");
    publish("rc:b", "2");
    await wrote.until(() => (lines.includes("b:2\n") ? true : undefined), {
      ms: 3000,
      ended: () => false,
      fail: () => new Error(`no b:2 in ${JSON.stringify(lines)}`),
    });
    expect(lines).toBe("b:2\n");
  } finally {
    c.close();
    server.stop(true);
  }
  await closed.promise;
});

describe("the reconnect option", () => {
  test("true, {}, and { min, max } in seconds; each missing bound takes its default or the other", () => {
    expect(parseReconnect(undefined)).toBeUndefined();
    expect(parseReconnect(false)).toBeUndefined();
    expect(parseReconnect(true)).toEqual({ minMs: 100, maxMs: 5000 });
    expect(parseReconnect({})).toEqual({ minMs: 100, maxMs: 5000 });
    expect(parseReconnect({ min: 1 })).toEqual({ minMs: 1000, maxMs: 5000 });
    expect(parseReconnect({ min: 10 })).toEqual({ minMs: 10_000, maxMs: 10_000 });
    expect(parseReconnect({ max: 0.05 })).toEqual({ minMs: 50, maxMs: 50 });
    expect(parseReconnect({ min: 0.5, max: 2 })).toEqual({ minMs: 500, maxMs: 2000 });
  });

  test("anything else is a TypeError at the call, naming the option, before any connection", () => {
    const bad: [unknown, RegExp][] = [
      [1, /"reconnect" must be true, false or \{ min, max \} \(seconds\), got number 1/],
      ["yes", /"reconnect" must be .* got "yes"/],
      [null, /"reconnect" must be .* got null/],
      [[], /"reconnect" must be .* got object/],
      [{ mn: 1 }, /"reconnect" takes min and max \(seconds\), got "mn"/],
      [{ min: 0 }, /"reconnect.min" must be a number of seconds > 0 and ≤ 2147483, got number 0/],
      [{ min: -1 }, /"reconnect.min" must be/],
      [{ min: "1" }, /"reconnect.min" must be .* got "1"/],
      [{ max: Number.NaN }, /"reconnect.max" must be .* got number NaN/],
      [{ max: Number.POSITIVE_INFINITY }, /"reconnect.max" must be/],
      [{ min: 2, max: 1 }, /"reconnect.max" \(1 s\) must not be less than "reconnect.min" \(2 s\)/],
    ];
    for (const [reconnect, message] of bad) {
      for (const url of ["ws://127.0.0.1:1/", "tcp://127.0.0.1:1"]) {
        const call = () => connect({ url, handler: {}, reconnect: reconnect as boolean });
        expect(call).toThrow(TypeError);
        expect(call).toThrow(message);
      }
    }
  });
});
