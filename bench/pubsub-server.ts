// The iodine app for bench/pubsub.ts, run through the CLI:
//   bun --max-http-header-size=32768 cli.ts -p 0 -b 127.0.0.1 bench/pubsub-server.ts
//
// Every WebSocket and every EventSource client subscribes to "bench" without a callback, so
// WebSockets ride Bun's native topics and SSE streams go through iodine's JS registry.
//   POST /burst?n=N&size=S   publishes N messages of S bytes in a tight loop, answers when done
//   GET  /stats              {"ws": open WebSockets, "sse": open SSE streams}
//   POST /gc                 a full garbage collection, before reading the process's RSS
import { Iodine, type Connection, type Handler } from "iodine";

const CHANNEL = "bench";
let ws = 0;
let sse = 0;

const subscriber: Handler = {
  onOpen(client: Connection) {
    client.subscribe(CHANNEL);
    if (client.protocol === "sse") {
      sse++;
      // a field the load client can see arrive (no `data:`, so it is not counted as a message)
      client.writeEvent?.({ event: "ready" });
    } else ws++;
  },
  onClose(client: Connection) {
    if (client.protocol === "sse") sse--;
    else ws--;
  },
};

export default {
  fetch(req: Request): Response {
    if (Iodine.upgradeKind(req)) return Iodine.upgrade(req, subscriber);
    const url = new URL(req.url);
    switch (url.pathname) {
      case "/burst": {
        const n = Number(url.searchParams.get("n") ?? 1);
        const message = "x".repeat(Number(url.searchParams.get("size") ?? 64));
        const t0 = performance.now();
        for (let i = 0; i < n; i++) Iodine.publish(CHANNEL, message);
        return Response.json({ n, ms: performance.now() - t0 });
      }
      case "/stats":
        return Response.json({ ws, sse });
      case "/gc":
        Bun.gc(true);
        return new Response("ok");
      default:
        return new Response("not found", { status: 404 });
    }
  },
};
