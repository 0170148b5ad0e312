// The chat example in a real browser (headless Debian Chromium driven by playwright-core): one tab
// sends over WebSocket, a second tab receives over EventSource (with no send form), the server
// prints the room.
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ROOT, skipWithout, startCli } from "./harness.ts";

const CHROMIUM = "/usr/bin/chromium";
const noChromium = skipWithout(
  CHROMIUM,
  existsSync(CHROMIUM),
  "test/browser.test.ts",
  "the browser test of examples/chat.ts",
);

describe.skipIf(noChromium)("examples/chat.ts in Chromium", () => {
  test("a WebSocket tab's message reaches an EventSource tab", async () => {
    const { chromium } = await import("playwright-core");
    await using srv = await startCli(["-p", "0", join(ROOT, "examples", "chat.ts")]);
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
    try {
      const base = srv.url.replace("0.0.0.0", "127.0.0.1");
      const follower = await browser.newPage();
      await follower.goto(`${base}/?name=bob#sse`);
      await follower.waitForSelector("#status:has-text('following over EventSource as bob')");
      // The EventSource view only listens: no send form (a visible one navigated away when used).
      expect(await follower.locator("#send").isVisible()).toBe(false);
      const talker = await browser.newPage();
      await talker.goto(`${base}/?name=ann`);
      await talker.waitForSelector("#status:has-text('chatting over WebSocket as ann')");
      expect(await talker.locator("#send").isVisible()).toBe(true);
      await follower.waitForSelector("#log li:has-text('ann joined (websocket)')");

      await talker.fill("#text", "hello from a browser ✓");
      await talker.click("button");
      await follower.waitForSelector("#log li:has-text('ann: hello from a browser ✓')", {
        timeout: 5000,
      });
      await talker.waitForSelector("#log li:has-text('ann: hello from a browser ✓')", {
        timeout: 5000,
      });
      expect(await follower.locator("#log li").allTextContents()).toEqual([
        "bob joined (sse)",
        "ann joined (websocket)",
        "ann: hello from a browser ✓",
      ]);
      await srv.waitFor(/\[chat\] ann: hello from a browser ✓/, 5000, "stdout");
    } finally {
      await browser.close();
    }
  }, 30_000);
});
