// The iodine app of bench/pubsub-history.ts (the history phase of bench/pubsub.ts), run as a cluster:
//   bun cli.ts -p 0 -b 127.0.0.1 -w 2 [-r redis://…] bench/history-app.ts
//
// Channels: "bench" is ordinary; "h:bench" keeps history (`h:*`, the last HISTORY_SIZE messages,
// the default ttl); `m:*` keep MEMORY_SIZE messages each, for the memory figures. Every WebSocket
// subscribes to both "bench" and "h:bench" without a callback (as pubsub-server.ts does), so one set
// of sockets serves both sides of the comparison and a burst on one channel reaches each socket once.
//   POST /burst?n=N&size=S&channel=C   N publishes of S bytes on C in a tight loop → {n, ms}
//   POST /fill?prefix=P&channels=C&per=M&size=S
//        M publishes of S bytes on each of the C channels P0 … P(C-1), then waits until the last of them
//        came back to this worker through the store (a history message on this worker's own `m:sync:`
//        channel, published after them), then a full GC in the master → {ms, heap}
//   POST /gc                           a full GC in the master (and here) → {heap}
//   GET  /stats                        {plain, history}: subscriptions to "bench" and "h:bench" across the
//                                      cluster (Iodine.presence); {size, memorySize}: what is declared
// The master follows "ctl:gc" (a full GC, then "ctl:gc-done" with the request's id and the master's
// JS heap: live objects and the bytes they own, bun:jsc heapSize), so the bench reads the master's
// RSS with its garbage gone; `heap` in the answers is that figure.
import { fullGC, heapSize } from "bun:jsc";
import { Iodine, type Connection, type Handler } from "iodine";
import { text } from "./pubsub-routes.ts";

const PLAIN = "bench";
const HISTORY = "h:bench";
const HISTORY_SIZE = 1_000;
const MEMORY_SIZE = 1_000;

Iodine.history("h:*", { match: "redis", size: HISTORY_SIZE });
Iodine.history("m:*", { match: "redis", size: MEMORY_SIZE });

if (Iodine.isMaster) {
  void Iodine.subscribe("ctl:gc", (_channel, id) => {
    fullGC();
    Iodine.publish("ctl:gc-done", `${String(id)} ${heapSize()}`);
  });
}

// --- waiting for a message this worker sent to come back ---

const waiters = new Map<string, (rest: string) => void>();
let seq = 0;
const SYNC = `m:sync:${process.pid}`;

/**
 * Publishes a fresh id on `channel` and resolves, with what followed the id, once this worker heard
 * it back (it subscribes to the answer).
 */
function roundTrip(channel: string): Promise<string> {
  const id = `${process.pid}-${++seq}`;
  const done = new Promise<string>((resolve) => waiters.set(id, resolve));
  Iodine.publish(channel, id);
  return done;
}

/** `ID` or `ID REST`: the waiter of ID gets REST. */
const arrived = (_channel: string, message: string | Uint8Array) => {
  const [id = "", rest = ""] = String(message).split(" ");
  waiters.get(id)?.(rest);
  waiters.delete(id);
};

const ready = Iodine.isWorker
  ? Promise.all([Iodine.subscribe("ctl:gc-done", arrived), Iodine.subscribe(SYNC, arrived)])
  : Promise.resolve();

/** A full GC in the master, once every message this worker published before it reached the master; its JS heap then. */
async function masterGc(): Promise<number> {
  await ready;
  return Number(await roundTrip("ctl:gc"));
}

// --- the endpoints ---

const subscriber: Handler = {
  onOpen(client: Connection) {
    void client.subscribe(PLAIN);
    void client.subscribe(HISTORY);
  },
};

function burst(q: URLSearchParams): Response {
  const n = Number(q.get("n") ?? 1);
  const channel = q.get("channel") ?? PLAIN;
  const message = text(Number(q.get("size") ?? 64));
  const t0 = performance.now();
  for (let i = 0; i < n; i++) Iodine.publish(channel, message);
  return Response.json({ n, ms: performance.now() - t0 });
}

async function fill(q: URLSearchParams): Promise<Response> {
  const prefix = q.get("prefix") ?? "m:";
  const channels = Number(q.get("channels") ?? 1);
  const per = Number(q.get("per") ?? MEMORY_SIZE);
  const message = text(Number(q.get("size") ?? 16));
  const t0 = performance.now();
  await ready;
  for (let c = 0; c < channels; c++) {
    const channel = `${prefix}${c}`;
    for (let i = 0; i < per; i++) Iodine.publish(channel, message);
  }
  // history publishes are sequenced in order, wherever the store is: this one comes back last
  await roundTrip(SYNC);
  const heap = await masterGc();
  return Response.json({ ms: performance.now() - t0, heap });
}

export default {
  async fetch(req: Request): Promise<Response> {
    if (Iodine.upgradeKind(req)) return Iodine.upgrade(req, subscriber);
    const url = new URL(req.url);
    switch (url.pathname) {
      case "/burst":
        return burst(url.searchParams);
      case "/fill":
        return fill(url.searchParams);
      case "/gc": {
        const heap = await masterGc();
        Bun.gc(true);
        return Response.json({ heap });
      }
      case "/stats": {
        const [plain, history] = await Promise.all([
          Iodine.presence(PLAIN),
          Iodine.presence(HISTORY),
        ]);
        return Response.json({ plain, history, size: HISTORY_SIZE, memorySize: MEMORY_SIZE });
      }
      default:
        return new Response("not found", { status: 404 });
    }
  },
};
