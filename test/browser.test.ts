// The chat example in a real browser (headless Debian Chromium driven by playwright-core): one tab
// sends over WebSocket, a second tab receives over EventSource (with no send form), the server
// prints the room. The room keeps its last lines: a tab that opens or reloads shows them, and tabs
// open across a hot restart of a -w 2 cluster end up with every line exactly once, in order.
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { ROOT, skipWithout, startCli, waitUntil, type CliProcess } from "./harness.ts";

const CHROMIUM = "/usr/bin/chromium";
const noChromium = skipWithout(
  CHROMIUM,
  existsSync(CHROMIUM),
  "test/browser.test.ts",
  "the browser test of examples/chat.ts",
);
const CHAT = join(ROOT, "examples", "chat.ts");
const NO_REDIS_ENV = { REDIS_URL: "", IODINE_REDIS_URL: "" };

/** Chromium, closed on dispose. */
async function launch(): Promise<Browser & AsyncDisposable> {
  const { chromium } = await import("playwright-core");
  // Flags: this machine has no network beyond loopback; background services would only fail.
  // (playwright gives every launch a fresh, temporary profile of its own.)
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return Object.assign(browser, { [Symbol.asyncDispose]: () => browser.close() });
}

const baseOf = (srv: CliProcess) => srv.url.replace("0.0.0.0", "127.0.0.1");

/** Opens the chat page as `name` (`#sse`: the EventSource view) once it says it is connected. */
async function tab(browser: Browser, srv: CliProcess, name: string, sse = false): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`${baseOf(srv)}/?name=${name}${sse ? "#sse" : ""}`);
  await connected(page, name, sse);
  return page;
}

const connected = (page: Page, name: string, sse: boolean) =>
  page.waitForSelector(
    sse
      ? `#status:text-is('following over EventSource as ${name}')`
      : `#status:text-is('chatting over WebSocket as ${name}')`,
  );

/** The lines a tab shows. */
const shown = (page: Page) => page.locator("#log li").allTextContents();

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Waits until a tab shows `text` as a line at least `times` times. */
const showsLine = (page: Page, text: string, times = 1, timeout = 5000) =>
  page
    .locator("#log li")
    .filter({ hasText: new RegExp(`^${escape(text)}$`) })
    .nth(times - 1)
    .waitFor({ timeout });

/** What the master printed of the room, in order: each line the room ever had, once. */
const printed = (srv: CliProcess) =>
  srv
    .stdout()
    .split("\n")
    .filter((l) => l.startsWith("[chat] "))
    .map((l) => l.slice("[chat] ".length));

/** Waits until the master has printed `line` at least `times` times. */
const wasPrinted = (srv: CliProcess, line: string, times = 1) => {
  const one = `\\[chat\\] ${escape(line)}\\n`;
  return srv.waitFor(new RegExp(Array(times).fill(one).join("[^]*")), 5000, "stdout");
};

async function say(page: Page, text: string): Promise<void> {
  await page.fill("#text", text);
  await page.click("button");
}

/**
 * A chatter outside the browser saying p1, p2, … every `every` ms, reconnecting when the server cuts
 * it (a hot restart closes its connection like the tabs').
 */
function steadyTalker(srv: CliProcess, name: string, every = 100) {
  let said = 0;
  let ws: WebSocket | undefined;
  let stopped = false;
  const opened = () => ws?.readyState === WebSocket.OPEN;
  const open = () => {
    if (stopped) return;
    ws = new WebSocket(`${baseOf(srv).replace("http", "ws")}/chat?name=${name}`);
    ws.onclose = () => void setTimeout(open, 20);
  };
  open();
  const timer = setInterval(() => opened() && ws!.send(`p${++said}`), every);
  return {
    said: () => said,
    /** Stops the p-lines and says `text` once connected. */
    async last(text: string) {
      clearInterval(timer);
      await waitUntil(opened, 5000, `${name} connected`);
      ws!.send(text);
    },
    [Symbol.dispose]() {
      stopped = true;
      clearInterval(timer);
      ws?.close();
    },
  };
}

describe.skipIf(noChromium)("examples/chat.ts in Chromium", () => {
  test("a WebSocket tab's message reaches an EventSource tab", async () => {
    await using srv = await startCli(["-p", "0", CHAT]);
    await using browser = await launch();
    const follower = await tab(browser, srv, "bob", true);
    // The EventSource view only listens: no send form (a visible one navigated away when used).
    expect(await follower.locator("#send").isVisible()).toBe(false);
    const talker = await tab(browser, srv, "ann");
    expect(await talker.locator("#send").isVisible()).toBe(true);
    await showsLine(follower, "ann joined (websocket)");

    await say(talker, "hello from a browser ✓");
    await showsLine(follower, "ann: hello from a browser ✓");
    await showsLine(talker, "ann: hello from a browser ✓");
    expect(await shown(follower)).toEqual([
      "bob joined (sse)",
      "ann joined (websocket)",
      "ann: hello from a browser ✓",
    ]);
    await srv.waitFor(/\[chat\] ann: hello from a browser ✓/, 5000, "stdout");
  }, 30_000);

  test("a tab that opens or reloads shows the lines said before, each once", async () => {
    await using srv = await startCli(["-p", "0", CHAT], { env: NO_REDIS_ENV });
    await using browser = await launch();
    const ann = await tab(browser, srv, "ann");
    for (const text of ["one", "two", "three"]) await say(ann, text);
    await showsLine(ann, "ann: three");
    const before = ["ann joined (websocket)", "ann: one", "ann: two", "ann: three"];

    const bob = await tab(browser, srv, "bob", true);
    await showsLine(bob, "bob joined (sse)");
    expect(await shown(bob)).toEqual([...before, "bob joined (sse)"]);
    const cat = await tab(browser, srv, "cat");
    await showsLine(cat, "cat joined (websocket)");
    expect(await shown(cat)).toEqual([...before, "bob joined (sse)", "cat joined (websocket)"]);

    // Reloads: the old connection leaves, the page starts empty and shows the room's lines again.
    for (const [page, name, sse] of [
      [cat, "cat", false],
      [bob, "bob", true],
    ] as const) {
      await page.reload();
      await connected(page, name, sse);
      const joined = `${name} joined (${sse ? "sse" : "websocket"})`;
      await showsLine(page, joined, 2);
      await showsLine(page, `${name} left`);
      await wasPrinted(srv, joined, 2);
      await wasPrinted(srv, `${name} left`);
      expect(await shown(page)).toEqual(printed(srv));
    }
    await showsLine(ann, "bob joined (sse)", 2);
    await showsLine(ann, "bob left");
    expect(await shown(ann)).toEqual(printed(srv));
  }, 30_000);

  test("-w 2, hot restart: a WebSocket tab and an EventSource tab resume and show every line once, in order", async () => {
    await using srv = await startCli(["-p", "0", "-w", "2", CHAT], {
      env: NO_REDIS_ENV,
      timeout: 20_000,
    });
    await using browser = await launch();
    const ann = await tab(browser, srv, "ann");
    const bob = await tab(browser, srv, "bob", true);
    // How the tabs come back: the page's WebSocket with ?since=, the EventSource with Last-Event-ID.
    const sockets: string[] = [];
    ann.on("websocket", (ws) => sockets.push(ws.url()));
    const resumes: Promise<string | undefined>[] = [];
    bob.on("request", (r) => {
      if (r.url().includes("/chat?")) resumes.push(r.allHeaders().then((h) => h["last-event-id"]));
    });
    await say(ann, "before the restart");
    await showsLine(bob, "ann: before the restart");

    // Lines go on during the restart (every 100 ms: well within the 100 the room keeps, even
    // across an EventSource's reconnection delay of a few seconds) and after it.
    using pub = steadyTalker(srv, "pub");
    await showsLine(bob, "pub: p3");
    srv.proc.kill("SIGUSR1");
    await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
    const done = pub.said();
    await waitUntil(() => pub.said() >= done + 5, 5000, "five lines after the restart");
    await pub.last("the end");
    await wasPrinted(srv, "pub: the end");

    for (const page of [ann, bob]) {
      await showsLine(page, "pub: the end", 1, 15_000);
      // Every line the master printed, once, in order (the master may have printed more since).
      const lines = await shown(page);
      await waitUntil(() => printed(srv).length >= lines.length, 5000, "stdout to catch up");
      expect(lines).toEqual(printed(srv).slice(0, lines.length));
    }
    // Each tab came back with the id of the last line it had shown, and lines were said between
    // that one and its joining again (positions count from 1: the Nth line printed is offset N).
    const lines = printed(srv);
    const missed = (id: string | null | undefined, rejoined: string) =>
      lines.indexOf(rejoined, lines.indexOf(rejoined) + 1) - Number(id?.split(":")[1]);
    const since = sockets.map((url) => new URL(url).searchParams.get("since")).find(Boolean);
    expect(missed(since, "ann joined (websocket)")).toBeGreaterThan(0);
    const lastEventId = (await Promise.all(resumes)).find(Boolean);
    expect(missed(lastEventId, "bob joined (sse)")).toBeGreaterThan(0);
  }, 60_000);
});
