// The chat example in a real browser (headless Debian Chromium driven by playwright-core): one tab
// sends over WebSocket, a second tab receives over EventSource (with no send form), the server
// prints the room. The room keeps its last lines: a tab that opens or reloads shows them, and tabs
// open across a hot restart of a -w 2 cluster end up with every line exactly once, in order.
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { ROOT, skipWithout, startCli, type CliProcess } from "./harness.ts";

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
});
