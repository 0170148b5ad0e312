// History, recovery and presence (SPEC §5) in one process and in a `-w 2` cluster: the suite in
// test/suites/history.ts (two clusters on one Redis run it in test/redis.test.ts).
import { describe, expect, test } from "bun:test";
import { historySuite, parseEvents } from "./suites/history.ts";
import { fixture, openStream, startCli, waitUntil, Waiters, ws } from "./harness.ts";
import { Clients, WsClient } from "./ws.ts";

/** acknowledgements of test/fixtures/history-app.ts are read by `waitFor`, never queued */
const ACKS = {
  ignore: (m: string | Uint8Array) => typeof m === "string" && m.startsWith('{"ack"'),
};

const NO_REDIS_ENV = { REDIS_URL: "", IODINE_REDIS_URL: "" };

historySuite({
  name: "one process",
  workers: 1,
  start: async (app) => [await startCli(["-p", "0", app], { env: NO_REDIS_ENV })],
});

historySuite({
  name: "-w 2 (cluster pub/sub)",
  workers: 2,
  start: async (app) => [
    await startCli(["-p", "0", "-w", "2", app], { env: NO_REDIS_ENV, timeout: 20_000 }),
  ],
});

describe("history across a hot restart, and presence when a worker dies (-w 2)", () => {
  test("10,000 messages published from the master across a hot restart reach a resuming EventSource exactly once, in order", async () => {
    await using srv = await startCli(["-p", "0", "-w", "2", fixture("history-app.ts")], {
      env: NO_REDIS_ENV,
      timeout: 20_000,
    });
    const ch = `h:restart:${process.pid}`;
    const reader = resumingStream(`${srv.url}/sse?ch=${encodeURIComponent(ch)}`);
    try {
      await reader.subscribed;
      await using control = await WsClient.open(ws(srv));
      // 10,000 from the master, 25 every 10 ms: about four seconds, across the restart below (each
      // worker slot is replaced in turn; the stream sits on one of them).
      control.send(JSON.stringify({ op: "pub", ch: "ctl:burst", text: `${ch} 10000 25 10` }));
      await reader.reached(1000);
      srv.proc.kill("SIGUSR1");
      await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
      await reader.reached(10_000, 30_000);
      // The restart cut the stream while the burst went on: it resumed from Last-Event-ID.
      expect(reader.cuts().some((n) => n > 0 && n < 10_000)).toBe(true);
      const got = reader.data();
      expect(got.length).toBe(10_000);
      const wrong = got.findIndex((d, i) => d !== `k${i + 1}`);
      expect(wrong).toBe(-1);
    } finally {
      reader.stop();
    }
  }, 60_000);

  test("presence forgets the subscriptions of a SIGKILLed worker at once", async () => {
    await using srv = await startCli(["-p", "0", "-w", "2", fixture("history-app.ts")], {
      env: NO_REDIS_ENV,
      timeout: 20_000,
    });
    await using clients = new Clients();
    const [a, b] = await clients.oneOnEach(ws(srv), ACKS);
    const ch = `room:${process.pid}`;
    const ask = async (c: WsClient, op: object) => {
      const id = Math.random();
      c.send(JSON.stringify({ ...op, id }));
      const text = await c.waitFor((m) => typeof m === "string" && m.includes(`"id":${id}`));
      return JSON.parse(text as string) as { result?: unknown };
    };
    await ask(a, { op: "sub", ch });
    await ask(b, { op: "sub", ch });
    expect((await ask(a, { op: "presence", ch })).result).toBe(2);
    process.kill(Number(b.pid), "SIGKILL");
    await waitUntil(
      async () => (await ask(a, { op: "presence", ch })).result === 1,
      5000,
      "presence to drop the killed worker's subscription",
    );
  }, 30_000);
});

test("a Bun-native app's server.publish on a history channel is kept; a socket's ws.publish is delivered, not kept, with one line", async () => {
  await using srv = await startCli(["-p", "0", fixture("history-bun-app.ts")], {
    env: NO_REDIS_ENV,
  });
  await using native = await WsClient.open(ws(srv));
  expect(await native.next()).toBe("open");
  const sse = await openStream(`${srv.url}/sse`);
  try {
    await sse.until("event: subscribed");
    for (const m of ["p1", "p2", "p3"]) await fetch(`${srv.url}/pub?m=${m}`);
    const text = await sse.until("data: p3");
    const ids = parseEvents(text)
      .filter((e) => e.event === "message")
      .map((e) => e.id);
    expect(ids.map((id) => Number(id.split(":").pop()))).toEqual([1, 2, 3]);
    expect([await native.next(), await native.next(), await native.next()]).toEqual([
      "p1",
      "p2",
      "p3",
    ]);
    // A resuming stream gets what followed its Last-Event-ID: the history kept server.publish.
    const resumed = await openStream(`${srv.url}/sse`, { "last-event-id": ids[0]! });
    try {
      const again = await resumed.until("data: p3");
      expect(
        parseEvents(again)
          .filter((e) => e.event === "message")
          .map((e) => e.data),
      ).toEqual(["p2", "p3"]);
    } finally {
      resumed.close();
    }
    native.send("from a socket");
    const live = await sse.until("data: from a socket");
    expect(parseEvents(live).at(-1)?.id ?? "").toBe("");
    await srv.waitFor(/ws\.publish\("feed"\) from a Bun-native socket is delivered but not kept/);
  } finally {
    sse.close();
  }
});

/** An EventSource as a browser runs it: reconnects with Last-Event-ID whenever the stream ends. */
function resumingStream(url: string) {
  const data: string[] = [];
  let lastId: string | undefined;
  const cuts: number[] = [];
  let stopped = false;
  let ac = new AbortController();
  const waiters = new Waiters();
  let resolveSubscribed!: () => void;
  const subscribed = new Promise<void>((r) => (resolveSubscribed = r));
  const run = async () => {
    while (!stopped) {
      ac = new AbortController();
      try {
        const headers: Record<string, string> = { accept: "text/event-stream" };
        if (lastId !== undefined) headers["last-event-id"] = lastId;
        const res = await fetch(url, { headers, signal: ac.signal });
        let buffered = "";
        const decoder = new TextDecoder();
        for await (const chunk of res.body!) {
          buffered += decoder.decode(chunk, { stream: true });
          const end = buffered.lastIndexOf("\n\n");
          if (end < 0) continue;
          for (const e of parseEvents(buffered.slice(0, end + 2))) {
            if (e.event === "subscribed") resolveSubscribed();
            if (e.event !== "message") continue;
            data.push(e.data);
            if (e.id !== "") lastId = e.id;
          }
          buffered = buffered.slice(end + 2);
          waiters.wake();
        }
      } catch {
        // the worker went away mid-read, or stop() aborted it
      }
      cuts.push(data.length);
      if (!stopped) await Bun.sleep(20);
    }
  };
  void run();
  return {
    subscribed,
    data: () => data,
    /** how many events had arrived each time the stream ended */
    cuts: () => cuts,
    reached: (n: number, ms = 10_000) =>
      waiters.until(() => (data.length >= n ? true : undefined), {
        ms,
        ended: () => stopped,
        fail: (why) => new Error(`resuming stream: ${data.length} of ${n} events (${why})`),
      }),
    stop: () => {
      stopped = true;
      ac.abort();
    },
  };
}
