// EventSource connections (SPEC §4): a streamed text/event-stream read by a real streaming fetch,
// data and named events, Last-Event-ID, pub/sub delivery, idle-timeout exemption, comment pings,
// and exactly-once onClose when the client goes away.
import { describe, expect, test } from "bun:test";
import { fixture, startCli } from "./harness.ts";

/** Reads an event stream: raw text chunks, and a helper that waits for a pattern. */
async function openStream(url: string, headers: Record<string, string> = {}) {
  const ac = new AbortController();
  const res = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: ac.signal });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const until = async (pattern: RegExp, ms = 5000) => {
    const deadline = Date.now() + ms;
    while (!pattern.test(text)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${pattern} in stream:\n${text}`);
      const chunk = await Promise.race([reader.read(), Bun.sleep(left).then(() => null)]);
      if (chunk === null) continue;
      if (chunk.done) throw new Error(`stream ended before ${pattern}:\n${text}`);
      text += decoder.decode(chunk.value, { stream: true });
    }
    return text;
  };
  return { res, until, text: () => text, close: () => ac.abort() };
}

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
    expect(await (await fetch(srv.url + "/", { headers: { accept: "text/event-stream" } })).text()).toBe("kind=sse");
    expect(await (await fetch(srv.url + "/", { method: "POST", headers: { accept: "text/event-stream" } })).text()).toBe("kind=none");
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
    let closes = "0";
    for (let i = 0; i < 50 && closes === "0"; i++) {
      closes = await (await fetch(srv.url + "/closes")).text();
      if (closes === "0") await Bun.sleep(20);
    }
    expect(closes).toBe("1");
    await fetch(`${srv.url}/publish?channel=news&message=after-close`);
    expect(await (await fetch(srv.url + "/closes")).text()).toBe("1");
  });
});
