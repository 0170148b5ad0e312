// The iodine app for bench/pubsub.ts, run through the CLI:
//   bun cli.ts -p 0 -b 127.0.0.1 bench/pubsub-server.ts
//
// Every WebSocket and every EventSource client subscribes to "bench" without a callback, so
// WebSockets ride Bun's native topics and SSE streams go through iodine's JS registry.
// Every other request: POST /burst, GET /stats, POST /gc (bench/pubsub-routes.ts).
import { Iodine, type Connection, type Handler } from "iodine";
import { control } from "./pubsub-routes.ts";

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

function burst(n: number, message: string): void {
  for (let i = 0; i < n; i++) Iodine.publish(CHANNEL, message);
}

export default {
  fetch(req: Request): Response {
    if (Iodine.upgradeKind(req)) return Iodine.upgrade(req, subscriber);
    return control(new URL(req.url), burst, () => ({ ws, sse }));
  },
};
