// An echo server over raw TCP: iodine's first example, in script mode (no CLI needed), written as
// iodine writes it: a listener without `service` is raw, its handler makes each connection's protocol.
// Every byte a client sends comes back unchanged; a line "bye" says goodbye and closes; a client
// quiet for 10 s is asked whether it is still there and, if it stays quiet 5 s more, let go.
//
// Run:   bun examples/echo.ts                    ($PORT, else 3000; or under the CLI:
//        bun run iodine -p 3000 examples/echo.ts, -w 2 for a cluster)
// Poke:  nc localhost 3000   (or telnet)
import { Iodine, type Connection, type Handler, type TimerHandle } from "iodine-bun";

const IDLE = Number(process.env.ECHO_IDLE ?? 10); // seconds of silence before the question
const GRACE_MS = Number(process.env.ECHO_GRACE_MS ?? 5000); // then this long to answer

const BYE = /^bye\r?\n/;

class Echo implements Handler {
  /** the pending "let go" of a quiet client, cancelled when it speaks */
  #letGo: TimerHandle | undefined;

  onOpen(client: Connection) {
    client.timeout = IDLE;
    client.write(`Echo server running on iodine for Bun ${Iodine.version}.\r\n`);
  }

  onMessage(client: Connection, data: Uint8Array | string) {
    this.#letGo?.stop();
    // Only the start of a message can be "bye": no need to scan a large chunk.
    if (
      typeof data !== "string" &&
      data.byteLength <= 5 &&
      BYE.test(new TextDecoder().decode(data))
    ) {
      client.write("Goodbye.\r\n");
      client.close();
      return;
    }
    client.write(data);
  }

  onTimeout(client: Connection) {
    client.write("Are you still there?\r\n");
    this.#letGo = Iodine.runAfter(GRACE_MS, () => {
      client.write("Closing an idle connection.\r\n");
      client.close();
    });
  }

  onShutdown(client: Connection) {
    client.write("Server going away.\r\n");
  }

  onClose() {
    this.#letGo?.stop();
  }
}

Iodine.listen({ handler: () => new Echo() });
await Iodine.start();
