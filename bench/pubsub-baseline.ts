// The raw Bun.serve baseline for bench/pubsub.ts: every WebSocket subscribes to "bench" in `open`,
// and a burst is `server.publish` in a tight loop. Same endpoints as bench/pubsub-server.ts:
//   POST /burst?n=N&size=S, GET /stats, POST /gc. Prints `listening on http://127.0.0.1:PORT`.
//
// Its WebSocket settings are iodine's defaults (idle ping 40 s, 16 MiB back-pressure limit that
// closes the socket, 250 KiB messages), so the comparison is of the publish path, not of limits.
const CHANNEL = "bench";
let ws = 0;

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  development: false,
  fetch(req, server) {
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return server.upgrade(req) ? undefined : new Response("upgrade failed", { status: 400 });
    }
    const url = new URL(req.url);
    switch (url.pathname) {
      case "/burst": {
        const n = Number(url.searchParams.get("n") ?? 1);
        const message = "x".repeat(Number(url.searchParams.get("size") ?? 64));
        const t0 = performance.now();
        for (let i = 0; i < n; i++) server.publish(CHANNEL, message);
        return Response.json({ n, ms: performance.now() - t0 });
      }
      case "/stats":
        return Response.json({ ws, sse: 0 });
      case "/gc":
        Bun.gc(true);
        return new Response("ok");
      default:
        return new Response("not found", { status: 404 });
    }
  },
  websocket: {
    maxPayloadLength: 250 * 1024,
    idleTimeout: 40,
    sendPings: true,
    backpressureLimit: 16 * 1024 * 1024,
    closeOnBackpressureLimit: true,
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
