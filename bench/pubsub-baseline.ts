// The raw Bun.serve baseline for bench/pubsub.ts: every WebSocket subscribes to "bench" in `open`,
// and a burst is `server.publish` in a tight loop. Same endpoints as bench/pubsub-server.ts:
//   POST /burst?n=N&size=S, GET /stats, POST /gc (bench/pubsub-routes.ts). Prints
//   `listening on http://127.0.0.1:PORT`.
//
// Its WebSocket settings are iodine's defaults (idle ping 40 s, 16 MiB back-pressure limit that
// closes the socket, 250 KiB messages), so the comparison is of the publish path, not of limits.
// `--deflate`: perMessageDeflate on, and server.publish left to its default, which then compresses
// every message for every subscriber that took the extension.
import { control } from "./pubsub-routes.ts";

const deflate = process.argv.includes("--deflate");

const CHANNEL = "bench";
let ws = 0;

function burst(n: number, message: string): void {
  for (let i = 0; i < n; i++) server.publish(CHANNEL, message);
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  development: false,
  fetch(req, server) {
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return server.upgrade(req) ? undefined : new Response("upgrade failed", { status: 400 });
    }
    return control(new URL(req.url), burst, () => ({ ws, sse: 0 }));
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
