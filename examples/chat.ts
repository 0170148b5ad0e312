// Chat: WebSocket and EventSource clients in one room, through iodine's pub/sub.
// A browser tab chats over WebSocket; another tab can follow the room over EventSource (SSE);
// the server itself subscribes and prints every message.
//
// Run:   bun run iodine examples/chat.ts                 (then open http://localhost:3000/)
// Poke:  http://localhost:3000/?name=ann                 chat over WebSocket
//        http://localhost:3000/?name=bob#sse             follow the room over EventSource
//        curl -N -H 'Accept: text/event-stream' localhost:3000/chat
//        new WebSocket("ws://localhost:3000/chat?name=cli").onmessage = (e) => console.log(e.data)
import { Iodine, type Connection, type Handler, type Message } from "iodine-bun";

const page = Bun.file(new URL("./chat/index.html", import.meta.url));

/** One chatter: WebSocket clients talk and listen, EventSource clients listen. */
class Chatter implements Handler {
  constructor(readonly name: string) {}

  onOpen(client: Connection) {
    client.subscribe("chat");
    client.publish("chat", `${this.name} joined (${client.protocol})`);
  }

  onMessage(client: Connection, data: Message) {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    client.publish("chat", `${this.name}: ${text}`);
  }

  onClose() {
    Iodine.publish("chat", `${this.name} left`);
  }
}

// The server follows the room too (iodine's server-side subscription). Every process of a cluster
// loads this module; the master alone prints, so each line shows once (one process is its own master).
if (Iodine.isMaster) {
  Iodine.subscribe("chat", (_channel, message) => {
    console.log(`[chat] ${typeof message === "string" ? message : `${message.length} bytes`}`);
  });
}

/** A display name from the query string: short, printable, never empty. */
function nameOf(url: URL): string {
  const raw = (url.searchParams.get("name") ?? "")
    .replace(/[^\p{L}\p{N} _.-]/gu, "")
    .trim()
    .slice(0, 24);
  return raw || "guest";
}

export default {
  fetch(req: Request): Response {
    const url = new URL(req.url);
    if (url.pathname === "/chat" && Iodine.upgradeKind(req))
      return Iodine.upgrade(req, new Chatter(nameOf(url)));
    if (url.pathname === "/")
      return new Response(page, { headers: { "content-type": "text/html;charset=utf-8" } });
    return new Response("Not found", { status: 404 });
  },
};
