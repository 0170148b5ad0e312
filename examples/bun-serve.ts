// A plain Bun server script — it calls Bun.serve itself and exports nothing — run unchanged on
// every core: iodine takes the Bun.serve call as its listener in each worker, and the room's
// publishes (ws.publish, server.publish) reach every worker (and, with -r, every machine).
//
// Run:   bun examples/bun-serve.ts                          (plain Bun: one process)
//        bun run iodine -w 2 examples/bun-serve.ts          (iodine: two workers, one room)
// Poke:  curl http://localhost:3000/api/hello/ann
//        curl -d 'hi all' http://localhost:3000/say
//        a browser console: new WebSocket("ws://localhost:3000/room?name=ann").onmessage = (e) => console.log(e.data)
const server = Bun.serve({
  routes: {
    "/": new Response("A room at /room?name=NAME (WebSocket); POST /say speaks to it\n"),
    "/api/hello/:name": (req) => Response.json({ hello: req.params.name }),
    "/room": (req, server) => {
      const name = new URL(req.url).searchParams.get("name") ?? "guest";
      return server.upgrade(req, { data: { name } })
        ? undefined
        : new Response("a WebSocket request, please", { status: 400 });
    },
    "/say": {
      POST: async (req, server) => {
        server.publish("room", `(announcement) ${await req.text()}`);
        return new Response("said\n");
      },
    },
  },
  fetch() {
    return new Response("Not Found\n", { status: 404 });
  },
  websocket: {
    data: {} as { name: string },
    open(ws) {
      ws.subscribe("room");
      ws.publish("room", `${ws.data.name} joined`); // to everyone else in the room
    },
    message(ws, message) {
      ws.publish("room", `${ws.data.name}: ${message}`);
    },
    close(ws) {
      server.publish("room", `${ws.data.name} left`);
    },
  },
});

console.log(`Listening on ${server.url}`);
