// The master's history store (src/pubsub/history-store.ts) on its own: its global order of entries
// (for the $IODINE_HISTORY_MB eviction) must not keep the messages a busy channel dropped while a
// quiet channel's old message sits at its front (bench/pubsub.ts --only history found 65 B a publish).
import { expect, test } from "bun:test";
import { HistoryStore } from "../src/pubsub/history-store.ts";

test("a full busy channel's dropped messages are let go while a quiet channel's old one is held", () => {
  const store = new HistoryStore(1 << 30);
  try {
    const quiet = store.append("quiet", new Uint8Array([1]), false, 10, 300_000);
    const bytes = new Uint8Array(16);
    for (let i = 0; i < 200_000; i++) store.append("busy", bytes, false, 10, 300_000);
    // 11 messages are retained; the order may lag behind by a bounded amount, not by 200,000.
    expect(store.tracked).toBeLessThanOrEqual(2 * 11 + 1024 + 1024);
    expect(store.read("quiet", 0, 300_000).entries.map((e) => e.offset)).toEqual([quiet.offset]);
    const busy = store.read("busy", 0, 300_000);
    expect(busy.entries.map((e) => e.offset)).toEqual(
      Array.from({ length: 10 }, (_, i) => 200_000 - 9 + i),
    );
  } finally {
    store.stop();
  }
});
