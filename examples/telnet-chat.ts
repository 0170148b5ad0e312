// A chat room for telnet: iodine's raw-protocol example, written as iodine writes it (a listener
// without `service` is raw). A new connection talks to the login protocol; a good nickname swaps
// its handler for the chat protocol (`client.handler = …`), which subscribes to the room. Lines go
// to everyone in the room — across every worker with -w N, and across machines with -r redis://…
//
// Run:   bun run iodine -p 3000 examples/telnet-chat.ts      (or: bun examples/telnet-chat.ts)
// Poke:  telnet localhost 3000   (two of them; type a nickname, then chat; "bye" leaves)
import { Iodine, type Connection, type Handler } from "iodine-bun";

const LOGIN_TIMEOUT = Number(process.env.LOGIN_TIMEOUT ?? 10); // seconds to type a nickname
const CHAT_TIMEOUT = Number(process.env.CHAT_TIMEOUT ?? 40); // quiet seconds before a ping
const ROOM = "telnet-chat";

/** Raw TCP delivers bytes as they arrive: a line may come in pieces, or several in one. */
class Lines {
  #partial = "";
  readonly #decoder = new TextDecoder();

  /** The complete lines in `data`, without their line ends. */
  push(data: Uint8Array | string): string[] {
    this.#partial += typeof data === "string" ? data : this.#decoder.decode(data, { stream: true });
    const lines = this.#partial.split("\n");
    this.#partial = lines.pop()!;
    return lines.map((l) => l.replace(/\r$/, ""));
  }

  /** What is left of an unfinished line (handed on when the protocol changes). */
  take(): string {
    const rest = this.#partial;
    this.#partial = "";
    return rest;
  }
}

class Chat implements Handler {
  readonly #lines = new Lines();
  constructor(readonly nickname: string) {}

  onOpen(client: Connection) {
    client.timeout = CHAT_TIMEOUT;
    client.subscribe(ROOM); // no callback: each message is written to the connection
    client.publish(ROOM, `${this.nickname} joined the chat.\n`);
  }

  onMessage(client: Connection, data: Uint8Array | string) {
    for (const line of this.#lines.push(data)) {
      if (/^bye$/i.test(line.trim())) {
        client.write("Goodbye.\n");
        client.close();
        return;
      }
      if (line.length > 0) client.publish(ROOM, `${this.nickname}: ${line}\n`);
    }
  }

  onTimeout(client: Connection) {
    client.write("System: ping\n");
  }

  onShutdown(client: Connection) {
    client.write("Server is shutting down... try reconnecting later.\n");
  }

  onClose(client: Connection) {
    Iodine.publish(ROOM, `${this.nickname} left the chat.\n`);
  }
}

class Login implements Handler {
  readonly #lines = new Lines();

  onOpen(client: Connection) {
    client.write("Enter nickname to log in to chat room:\n");
    client.timeout = LOGIN_TIMEOUT;
  }

  onMessage(client: Connection, data: Uint8Array | string) {
    const [line, ...more] = this.#lines.push(data);
    if (line === undefined) return; // wait for the end of the line
    const nickname = line.trim();
    if (nickname.length === 0 || nickname.length > 32 || /\s/.test(nickname)) {
      client.write("Nickname error, try again.\n");
      this.onOpen(client);
      return;
    }
    client.write(`Welcome ${nickname}\n`);
    const chat = new Chat(nickname);
    client.handler = chat; // from now on the chat protocol gets this connection's events
    chat.onOpen(client);
    // Lines typed ahead of the welcome belong to the chat.
    const ahead = more.map((l) => l + "\n").join("") + this.#lines.take();
    if (ahead.length > 0) chat.onMessage(client, ahead);
  }

  onTimeout(client: Connection) {
    client.write("Time's up... goodbye.\n");
    client.close();
  }

  onShutdown(client: Connection) {
    client.write("Server is shutting down... try reconnecting later.\n");
  }
}

Iodine.listen({ handler: () => new Login() });
await Iodine.start();
