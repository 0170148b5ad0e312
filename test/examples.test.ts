// Every example in examples/ runs through the real CLI and shows the behaviour its header promises.
import { describe, expect, test } from "bun:test";
import { brotliDecompressSync } from "node:zlib";
import { join } from "node:path";
import { freePort, startCli, startCommand, ROOT } from "./harness.ts";

const example = (name: string) => join(ROOT, "examples", name);

describe("examples", () => {
  test("hello.ts answers Hello World!", async () => {
    await using srv = await startCli(["-p", "0", example("hello.ts")]);
    const res = await fetch(srv.url + "/");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("Hello World!");
  });

  test("static/: the public folder with a pre-compressed asset, the app for the rest", async () => {
    await using srv = await startCli(["-p", "0", "--www", example("static/public"), example("static/app.ts")]);
    const css = await Bun.file(example("static/public/style.css")).text();
    const br = await fetch(srv.url + "/style.css", { headers: { "accept-encoding": "br" }, decompress: false });
    expect(br.headers.get("content-encoding")).toBe("br");
    expect(br.headers.get("vary")).toContain("Accept-Encoding");
    expect(new TextDecoder().decode(brotliDecompressSync(new Uint8Array(await br.arrayBuffer())))).toBe(css);
    const gz = await fetch(srv.url + "/style.css", { headers: { "accept-encoding": "gzip" }, decompress: false });
    expect(gz.headers.get("content-encoding")).toBe("gzip");
    expect(new TextDecoder().decode(Bun.gunzipSync(new Uint8Array(await gz.arrayBuffer())))).toBe(css);
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

    const ac = new AbortController();
    const sse = await fetch(srv.url + "/chat?name=bob", { headers: { accept: "text/event-stream" }, signal: ac.signal });
    const reader = sse.body!.getReader();
    let events = "";
    const until = async (needle: string) => {
      while (!events.includes(needle)) {
        const { value, done } = await reader.read();
        if (done) throw new Error("stream ended: " + events);
        events += new TextDecoder().decode(value);
      }
    };
    await until("data: bob joined (sse)\n\n");
    const ws = new WebSocket(srv.url.replace("http", "ws") + "/chat?name=ann");
    const got: string[] = [];
    const echoed = Promise.withResolvers<void>();
    ws.onmessage = (e) => {
      got.push(String(e.data));
      if (got.length === 1) ws.send("hi all");
      if (String(e.data) === "ann: hi all") echoed.resolve();
    };
    try {
      await echoed.promise;
      await until("data: ann: hi all\n\n");
    } finally {
      ws.close();
      ac.abort();
    }
    expect(got).toEqual(["ann joined (websocket)", "ann: hi all"]);
    await srv.waitFor(/\[chat\] bob joined \(sse\)\n\[chat\] ann joined \(websocket\)\n\[chat\] ann: hi all\n/, 5000, "stdout");
    await srv.waitFor(/\[chat\] ann left\n/, 5000, "stdout");
  });

  test("chat.ts through `bun run iodine` (the README's quick start)", async () => {
    await using srv = await startCommand(["bun", "run", "iodine", "-p", "0", "examples/chat.ts"]);
    expect(await (await fetch(srv.url + "/")).text()).toContain("<title>iodine chat</title>");
    expect(await srv.stop("SIGTERM")).toBe(0);
  });

  test("custom-engine.ts: two servers (one a -w 2 cluster) share rooms through the example engine", async () => {
    const [p1, p2] = [freePort(), freePort()];
    const peer = (p: number) => ({ env: { PEERS: `http://127.0.0.1:${p}` } });
    await using one = await startCli(["-p", String(p1), "-w", "2", example("custom-engine.ts")], { ...peer(p2), timeout: 20_000 });
    await using two = await startCli(["-p", String(p2), example("custom-engine.ts")], peer(p1));
    const got: string[] = [];
    const ws = new WebSocket(`ws://127.0.0.1:${p1}/room/lobby`);
    ws.onmessage = (e) => got.push(String(e.data));
    await new Promise((r) => (ws.onopen = r));
    try {
      // The engine hears the cluster's interest (in the master)...
      await one.waitFor(/engine: the cluster wants lobby\n/, 5000, "stdout");
      // ...and carries publishes between the servers, once each, in both directions.
      const say = (port: number, text: string) => fetch(`http://127.0.0.1:${port}/room/lobby`, { method: "POST", body: text });
      await say(p2, "from two");
      await say(p1, "from one");
      const end = Date.now() + 5000;
      while (got.length < 2 && Date.now() < end) await Bun.sleep(20);
      await Bun.sleep(200);
      expect(got.sort()).toEqual(["from one", "from two"]);
    } finally {
      ws.close();
    }
    await one.waitFor(/engine: the cluster no longer wants lobby\n/, 5000, "stdout");
    expect(await two.stop("SIGTERM")).toBe(0);
  }, 30_000);
});
