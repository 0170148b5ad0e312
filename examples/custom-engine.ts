// A custom pub/sub engine: servers that share pub/sub by POSTing each other their publishes.
// Run two (any with -w N too), each naming the other:
//   PEERS=http://127.0.0.1:3001 bun run iodine -p 3000 examples/custom-engine.ts
//   PEERS=http://127.0.0.1:3000 bun run iodine -p 3001 examples/custom-engine.ts
// then follow a room on one and post to it on the other:
//   curl -N -H 'Accept: text/event-stream' localhost:3000/room/lobby
//   curl -d hi localhost:3001/room/lobby
//
// An engine has four methods (SPEC §5): iodine calls them in the process that holds the cluster's
// interest (the master, or the only process). `subscribe`/`psubscribe` when the first process of the
// cluster starts wanting a channel or pattern, `unsubscribe` when the last one stops, `publish` with
// every message published in the cluster. What the engine receives from elsewhere goes back with
// `Iodine.publish(channel, message, Iodine.PubSub.CLUSTER)`: to this cluster, not to the engine again.
import { Iodine, type Message, type PubSubEngine } from "iodine-bun";

class HttpPeers implements PubSubEngine {
  constructor(private peers: string[]) {}

  subscribe(channel: string) {
    console.log(`engine: the cluster wants ${channel}`);
  }
  psubscribe(pattern: string) {
    console.log(`engine: the cluster wants the pattern ${pattern}`);
  }
  unsubscribe(channel: string, pattern: boolean) {
    console.log(`engine: the cluster no longer wants ${pattern ? "the pattern " : ""}${channel}`);
  }
  publish(channel: string, message: Message) {
    // A real engine would batch, retry and only send what the peers want; this one just forwards.
    for (const peer of this.peers) {
      fetch(`${peer}/engine?ch=${encodeURIComponent(channel)}`, {
        method: "POST",
        body: message,
      }).catch((err: Error) => console.error(`engine: ${peer} unreachable (${err.message})`));
    }
  }
}

const peers = (process.env.PEERS ?? "").split(",").filter(Boolean);
Iodine.PubSub.default = new HttpPeers(peers);

export default {
  async fetch(req: Request) {
    const url = new URL(req.url);
    // A message from a peer: to this cluster only.
    if (url.pathname === "/engine" && req.method === "POST") {
      Iodine.publish(url.searchParams.get("ch") ?? "", await req.text(), Iodine.PubSub.CLUSTER);
      return new Response("ok");
    }
    const room = /^\/room\/([\w-]+)$/.exec(url.pathname)?.[1];
    if (room === undefined) return new Response("try /room/lobby", { status: 404 });
    if (req.method === "POST") {
      Iodine.publish(room, await req.text());
      return new Response("sent\n");
    }
    if (Iodine.upgradeKind(req)) return Iodine.upgrade(req, { onOpen: (c) => c.subscribe(room) });
    return new Response("follow the room with an EventSource or a WebSocket\n", { status: 400 });
  },
};
