// WebSocket client: iodine's EchoClient, ported. `Iodine.connect` opens a WebSocket to a server
// and gets the same callbacks as a server-side connection: it sends a greeting on open, prints
// every message it receives, and closes once the server has echoed the greeting. The process then
// exits by itself (exit code 1 when the connection could not be opened; the reason is logged).
//
// Run:   bun run iodine -p 3000 test/fixtures/ws-iodine-app.ts   (a server that echoes; any will do)
//        bun examples/ws-client.ts ws://localhost:3000/          (or URL=ws://… bun examples/ws-client.ts)
// Poke:  bun examples/ws-client.ts ws://localhost:3000/ "any greeting"
//        bun examples/ws-client.ts ws://localhost:1/             (nothing listening: onClose, one log line)
import { Iodine, type Connection, type Handler, type Message } from "iodine-bun";

const url = process.argv[2] ?? process.env.URL ?? "ws://localhost:3000/";
const greeting = process.argv[3] ?? "Hello, iodine!";

class EchoClient implements Handler {
  #opened = false;

  onOpen(client: Connection) {
    this.#opened = true;
    client.write(greeting);
  }

  onMessage(client: Connection, data: Message) {
    console.log(`received: ${typeof data === "string" ? data : `${data.length} bytes`}`);
    if (typeof data === "string" && data.includes(greeting)) client.close();
  }

  onClose() {
    console.log("closed");
    if (!this.#opened) process.exitCode = 1;
  }
}

Iodine.connect({ url, handler: new EchoClient() });
