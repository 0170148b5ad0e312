// The raw Bun.serve baseline for bench/pubsub.ts: every WebSocket subscribes to "bench" in `open`,
// and a burst is `server.publish` in a tight loop. Same endpoints as bench/pubsub-server.ts:
//   POST /burst?n=N&size=S, GET /stats, POST /gc (bench/pubsub-routes.ts), GET /sse with
//   `Accept: text/event-stream` (an event stream subscribed to the same messages). Prints
//   `listening on http://127.0.0.1:PORT`.
//
// Its WebSocket settings are iodine's defaults (idle ping 40 s, 16 MiB back-pressure limit that
// closes the socket, 250 KiB messages), so the comparison is of the publish path, not of limits.
// `--deflate`: perMessageDeflate on, and server.publish left to its default, which then compresses
// every message for every subscriber that took the extension.
//
// SSE is what a competent hand-written Bun fan-out does, without iodine's API, ping, history or
// pending limit: a `type: "direct"` stream per client; a published message becomes its
// `data: …\n\n` bytes once, queued on every stream, and when the turn ends each stream's queue goes
// out in one `ctl.write` and one `ctl.flush()` (a direct-stream write costs ~1.25 µs a call even
// unflushed: one a turn, not one an event).
import { control } from "./pubsub-routes.ts";

const deflate = process.argv.includes("--deflate");

const CHANNEL = "bench";
let ws = 0;

// --- SSE ---

interface Stream {
  ctl: ReadableStreamDirectController;
  /** this turn's events, written together by flushStreams */
  queue: Uint8Array[];
  queued: number;
}

const streams = new Set<Stream>();
/** the streams with queued events, written once the current task is done */
let dirty: Stream[] = [];
const encoder = new TextEncoder();

function publishSse(message: string): void {
  if (streams.size === 0) return;
  const event = encoder.encode(`data: ${message}\n\n`);
  for (const s of streams) {
    if (s.queue.length === 0) {
      if (dirty.length === 0) queueMicrotask(flushStreams);
      dirty.push(s);
    }
    s.queue.push(event);
    s.queued += event.length;
  }
}

function flushStreams(): void {
  const list = dirty;
  dirty = [];
  for (const s of list) {
    const { queue, queued } = s;
    s.queue = [];
    s.queued = 0;
    if (!streams.has(s)) continue;
    try {
      s.ctl.write(queue.length === 1 ? queue[0]! : Buffer.concat(queue, queued));
      s.ctl.flush();
    } catch {
      streams.delete(s); // the client is gone
    }
  }
}

/** An event stream that lives until the client goes. */
function eventStream(req: Request): Response {
  let stream: Stream | undefined;
  const gone = () => {
    if (stream !== undefined) streams.delete(stream);
  };
  const source: Bun.DirectUnderlyingSource & { cancel: () => void } = {
    type: "direct",
    pull(ctl: ReadableStreamDirectController) {
      stream = { ctl, queue: [], queued: 0 };
      streams.add(stream);
      // the response head goes out with the first bytes; the load client waits for it
      ctl.write("event: ready\n\n");
      ctl.flush();
      return new Promise<void>((resolve) => req.signal.addEventListener("abort", () => resolve()));
    },
    cancel: gone,
  };
  req.signal.addEventListener("abort", gone, { once: true });
  return new Response(new ReadableStream(source), {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
  });
}

// --- the server ---

function burst(n: number, message: string): void {
  for (let i = 0; i < n; i++) {
    server.publish(CHANNEL, message);
    publishSse(message);
  }
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  development: false,
  fetch(req, server) {
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return server.upgrade(req) ? undefined : new Response("upgrade failed", { status: 400 });
    }
    if (req.headers.get("accept")?.includes("text/event-stream")) {
      server.timeout(req, 0); // outlives the idle timeout
      return eventStream(req);
    }
    return control(new URL(req.url), burst, () => ({ ws, sse: streams.size }));
  },
  websocket: {
    maxPayloadLength: 250 * 1024,
    idleTimeout: 40,
    sendPings: true,
    backpressureLimit: 16 * 1024 * 1024,
    closeOnBackpressureLimit: true,
    perMessageDeflate: deflate,
    open(socket) {
      socket.subscribe(CHANNEL);
      ws++;
    },
    message() {},
    close() {
      ws--;
    },
  },
});
console.log(`listening on http://127.0.0.1:${server.port}`);
