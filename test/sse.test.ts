// EventSource connections (SPEC §4): a streamed text/event-stream read by a real streaming fetch,
// data and named events, Last-Event-ID, pub/sub delivery, idle-timeout exemption, comment pings,
// and exactly-once onClose when the client goes away.
import { describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { fixture, openStream, startCli, waitUntil } from "./harness.ts";

describe("SSE connections", () => {
  test("events, named events, Last-Event-ID, CR/LF refused, headers, pub/sub", async () => {
    await using srv = await startCli(["-p", "0", fixture("sse-app.ts")]);
    const s = await openStream(srv.url + "/events", { "last-event-id": "41" });
    try {
      expect(s.res.status).toBe(200);
      expect(s.res.headers.get("content-type")).toBe("text/event-stream");
      expect(s.res.headers.get("cache-control")).toBe("no-cache");
      expect(s.res.headers.get("set-cookie")).toBe("sse=1");
      await s.until(/refused: /);
      expect(s.text()).toStartWith(
        "data: hello sse last=41\n\n" +
          "event: greet\nid: 7\nretry: 1500\ndata: two\ndata: lines\n\n" +
          'data: refused: client.writeEvent: "event" must not contain CR or LF\n\n',
      );
      await fetch(`${srv.url}/publish?channel=news&message=${encodeURIComponent("a\r\nb")}`);
      await s.until(/data: a\ndata: b\n\n$/);
    } finally {
      s.close();
    }
  });

  test("upgradeKind needs Accept: text/event-stream on a GET", async () => {
    await using srv = await startCli(["-p", "0", fixture("sse-app.ts")]);
    expect(
      await (await fetch(srv.url + "/", { headers: { accept: "text/event-stream" } })).text(),
    ).toBe("kind=sse");
    expect(
      await (
        await fetch(srv.url + "/", { method: "POST", headers: { accept: "text/event-stream" } })
      ).text(),
    ).toBe("kind=none");
    expect(await (await fetch(srv.url + "/")).text()).toBe("kind=none");
  });

  test("a stream outlives the keep-alive timeout and gets comment pings; onClose once when the client goes", async () => {
    await using srv = await startCli(["-k", "1", "--ping", "1", "-p", "0", fixture("sse-app.ts")]);
    const s = await openStream(srv.url + "/events");
    try {
      await s.until(/refused: /);
      const t0 = Date.now();
      await s.until(/: ping\n\n/, 4000);
      await s.until(/: ping\n\n[^]*: ping\n\n/, 4000);
      expect(Date.now() - t0).toBeGreaterThan(1000); // past -k 1, still open
      await fetch(`${srv.url}/publish?channel=news&message=still-here`);
      await s.until(/data: still-here\n\n/);
    } finally {
      s.close();
    }
    // The app counts closes; nothing announces one: polled.
    let closes = "0";
    await waitUntil(
      async () => (closes = await (await fetch(srv.url + "/closes")).text()) !== "0",
      1000,
      "the app to see the close",
    );
    expect(closes).toBe("1");
    await fetch(`${srv.url}/publish?channel=news&message=after-close`);
    expect(await (await fetch(srv.url + "/closes")).text()).toBe("1");
  });

  test("a reader that stops reading is closed past 16 MiB and logged; the others keep receiving", async () => {
    await using srv = await startCli(["-p", "0", fixture("sse-app.ts")]);
    const slow = connect(srv.port, "127.0.0.1");
    // The stream of the slow reader ends (the last chunk of the chunked body, or the socket closes).
    let slowTail = "";
    const slowEnded = new Promise<void>((r) => {
      slow.on("close", () => r());
      slow.on("data", (d) => {
        slowTail = (slowTail + d.toString("latin1")).slice(-16);
        if (slowTail.endsWith("\r\n0\r\n\r\n")) r();
      });
    });
    slow.on("error", () => {});
    let head = "";
    const headers = new Promise<void>((r) => {
      const onData = (d: Buffer) => {
        head += d.toString("latin1");
        if (head.includes("refused: ")) {
          slow.off("data", onData);
          slow.pause(); // stop reading: the server's queue for this client grows
          r();
        }
      };
      slow.on("data", onData);
    });
    slow.write("GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n");
    await headers;
    const fast = await openStream(srv.url + "/events");
    try {
      await fast.until(/refused: /);
      // Read the fast stream all along (as a browser would), keeping only counts and a tail.
      const reader = fast.reader;
      let events = 0;
      let tail = "";
      const sawSentinel = (async () => {
        while (true) {
          const { value, done } = await reader.read();
          if (done) return false;
          // Each flood event ends "x\n\n"; count the ends that finish in this chunk.
          const chunk = tail + new TextDecoder().decode(value);
          for (
            let i = chunk.indexOf("x\n\n", Math.max(0, tail.length - 2));
            i !== -1;
            i = chunk.indexOf("x\n\n", i + 3)
          )
            events++;
          if (chunk.includes("data: after-the-flood\n\n")) return true;
          tail = chunk.slice(-64);
        }
      })();
      // 40 MiB to every follower of "news", 1 MiB per request: the fast reader keeps up between
      // requests, the paused one falls behind. (One 40 MiB burst in a single turn would put every
      // reader past the limit: none can read while the publishing loop runs.)
      for (let i = 0; i < 40; i++) await fetch(`${srv.url}/flood?n=1`);
      await srv.waitFor(/sse: closing a client that is \d+ bytes behind \(limit 16777216\)/);
      await fetch(`${srv.url}/publish?channel=news&message=after-the-flood`);
      expect(await sawSentinel).toBe(true);
      expect(events).toBe(40);
      slow.resume();
      await slowEnded;
    } finally {
      fast.close();
      slow.destroy();
    }
  }, 30_000);
});
