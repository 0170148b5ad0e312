// Chat: WebSocket and EventSource clients in one room, through iodine's pub/sub, with history.
// A browser tab chats over WebSocket; another tab can follow the room over EventSource (SSE);
// the server itself subscribes and prints every message.
//
// The room keeps its last lines (`Iodine.history`): a new or reloaded tab shows the last 100, and a
// tab whose connection drops misses nothing: the WebSocket page reconnects with `?since=` the id of
// the last line it showed; an EventSource reconnects by itself and sends that id as Last-Event-ID.
// The history lives in the master: with `-w 2`, `kill -USR1` (a hot restart) replaces the workers
// and the tabs resume where they were; stopping the server (one process included) empties the room.
//
// Run:   bun run iodine examples/chat.ts                 (then open http://localhost:3000/)
// Poke:  http://localhost:3000/?name=ann                 chat over WebSocket
//        http://localhost:3000/?name=bob#sse             follow the room over EventSource
//        curl -N -H 'Accept: text/event-stream' localhost:3000/chat
//        new WebSocket("ws://localhost:3000/chat?name=cli").onmessage = (e) => console.log(e.data)
import {
  Iodine,
  type Connection,
  type Handler,
  type Message,
  type Position,
  type SubscribeCallback,
} from "iodine-bun";

const page = Bun.file(new URL("./chat/index.html", import.meta.url));

/** What a new tab shows. */
const LAST_LINES = 100;
// A day, not the default 5 minutes: a quiet room still shows its last lines.
Iodine.history("chat", { size: LAST_LINES, ttl: 24 * 60 * 60 });

const textOf = (m: Message) => (typeof m === "string" ? m : new TextDecoder().decode(m));
const idOf = (p: Position | undefined) => (p ? `${p.epoch}:${p.offset}` : undefined);

/** A WebSocket has no event ids: each line goes to the page as `{"id":"epoch:offset","text":…}`. */
const toPage: SubscribeCallback = (_channel, message, client, position) =>
  client!.write(JSON.stringify({ id: idOf(position), text: textOf(message) }));

/**
 * Subscribes `client` to the room. A tab that has shown lines names the last one (`since`; an
 * EventSource's Last-Event-ID does it by itself) and gets what it missed, then live lines; a new tab
 * gets the last lines the room keeps (`rewind`), then live ones.
 */
function join(client: Connection, since: string | undefined, write?: SubscribeCallback) {
  return client.subscribe("chat", since ? { since } : { rewind: LAST_LINES }, write);
}

/** One chatter: WebSocket clients talk and listen, EventSource clients listen. */
class Chatter implements Handler {
  constructor(
    readonly name: string,
    readonly since: string | undefined,
  ) {}

  async onOpen(client: Connection) {
    // An EventSource gets no callback: iodine writes each line as an event with `id: epoch:offset`.
    await join(client, this.since, client.protocol === "websocket" ? toPage : undefined);
    if (client.isOpen) client.publish("chat", `${this.name} joined (${client.protocol})`);
  }

  onMessage(client: Connection, data: Message) {
    client.publish("chat", `${this.name}: ${textOf(data)}`);
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

/** Where a tab resumes: `?since=` (the WebSocket page) or Last-Event-ID (a reconnecting EventSource). */
function sinceOf(req: Request, url: URL): string | undefined {
  const id = url.searchParams.get("since") ?? req.headers.get("last-event-id") ?? "";
  return /^[^:\s]+:\d+$/.test(id) ? id : undefined;
}

export default {
  fetch(req: Request): Response {
    const url = new URL(req.url);
    if (url.pathname === "/chat" && Iodine.upgradeKind(req))
      return Iodine.upgrade(req, new Chatter(nameOf(url), sinceOf(req, url)));
    if (url.pathname === "/")
      return new Response(page, { headers: { "content-type": "text/html;charset=utf-8" } });
    return new Response("Not found", { status: 404 });
  },
};
