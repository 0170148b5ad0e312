// A raw TCP client script, as iodine writes one: `Iodine.connect(...)` and `Iodine.start()`, with no
// listener. It connects to the echo server (examples/echo.ts), sends a line, prints every line that
// comes back, says "bye"; when the server has closed the connection, `Iodine.stop()` ends the script
// (exit code 0; 1 when it could not connect, with one log line saying why).
//
// Run:   bun examples/echo.ts                  (the server, in another terminal)
//        bun examples/echo-client.ts           (or: bun run iodine examples/echo-client.ts)
// Poke:  ECHO_URL=tcp://localhost:1 bun examples/echo-client.ts   (nothing listening there)
import { Iodine, type Connection, type Handler, type Message } from "iodine-bun";

const url = process.env.ECHO_URL ?? "tcp://localhost:3000";
const greeting = process.env.ECHO_GREETING ?? "Hello from an iodine client script";

class EchoClient implements Handler {
  #opened = false;
  #partial = "";
  readonly #decoder = new TextDecoder();

  onOpen(client: Connection) {
    this.#opened = true;
    client.write(`${greeting}\n`);
  }

  onMessage(client: Connection, data: Message) {
    // Bytes arrive as the network delivers them: print whole lines only.
    this.#partial += typeof data === "string" ? data : this.#decoder.decode(data, { stream: true });
    const lines = this.#partial.split("\n");
    this.#partial = lines.pop()!;
    for (const line of lines.map((l) => l.replace(/\r$/, ""))) {
      console.log(`server: ${line}`);
      if (line === greeting) client.write("bye\n"); // the echo server answers Goodbye and closes
    }
  }

  onClose() {
    console.log("closed");
    if (!this.#opened) process.exitCode = 1;
    void Iodine.stop();
  }
}

Iodine.connect({ url, handler: new EchoClient() });
await Iodine.start();
