// History's limits in one process (test/fixtures/history-limits.ts run under plain `bun`): what
// `Iodine.history` and `since` refuse, positions handed to a process callback, and the global cap
// ($IODINE_HISTORY_MB) dropping the oldest messages everywhere with one log line.
import { expect, test } from "bun:test";
import { fixture, runCommand } from "./harness.ts";

test("history refuses bad declarations and positions, numbers a channel's messages, and keeps within $IODINE_HISTORY_MB", async () => {
  const r = await runCommand([process.execPath, fixture("history-limits.ts")], {
    env: { IODINE_HISTORY_MB: "1" },
    timeout: 20_000,
  });
  expect(r.code).toBe(0);
  expect(r.stdout.trim().split("\n")).toEqual([
    'history {"size":0}: RangeError: Iodine.history: "size" must be an integer from 1 to 1000000, got 0',
    'history {"size":1.5}: RangeError: Iodine.history: "size" must be an integer from 1 to 1000000, got 1.5',
    'history {"ttl":0}: RangeError: Iodine.history: "ttl" must be a number of seconds > 0, got 0',
    'history {"ttl":null}: RangeError: Iodine.history: "ttl" must be a number of seconds > 0, got Infinity',
    'history {"match":"glob"}: TypeError: Iodine.history: "match" must be "redis" or absent',
    'history {}: TypeError: Iodine.history: "channel" must be a string, got number',
    'since on a pattern: TypeError: Iodine.subscribe: "since" needs an exact channel, not a pattern',
    'since not a position: TypeError: Iodine.subscribe: "since" must be a position { epoch, offset } or its "epoch:offset" text, got "nope"',
    'subscribe without since: {"recovered":true}',
    "positions: 1,2,3 one epoch: true",
    "rewind 2: s2@2,s3@3 recovered true at 3",
    'rewind 0: TypeError: Iodine.subscribe: "rewind" must be an integer ≥ 1, got 0',
    'rewind on a pattern: TypeError: Iodine.subscribe: "rewind" needs an exact channel, not a pattern',
    // 40 × 64 KiB into 1 MB: the first messages are gone (and "small"'s, older still), the last kept.
    "big since its first: false replayed 0",
    "big since its 35th: true replayed 5",
    "small since its first: false replayed 0",
  ]);
  const evictions = r.stderr.split("\n").filter((l) => l.includes("$IODINE_HISTORY_MB"));
  expect(evictions).toEqual([
    "iodine: pub/sub history: the retained messages reached 1 MB ($IODINE_HISTORY_MB); the oldest are dropped first (said once)",
  ]);
});
