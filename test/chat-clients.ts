// Clients of examples/chat.ts's room, shared by the tests that run it (the executable, the README's
// tour): a WebSocket chatter that has joined, and probing until the room reaches another chatter.
import { expect } from "bun:test";

/** A chat WebSocket that collects what the room says, opened once its own "joined" line came. */
export interface Chatter extends Disposable {
  name: string;
  ws: WebSocket;
  got: string[];
  /** resolves with the close code */
  closed: Promise<number>;
}

/** Joins the room at `base`/chat as `name`, the way the chat page does; rejects after `ms`. */
export async function chatter(base: string, name: string, ms = 5000): Promise<Chatter> {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/chat?name=${name}`);
  const got: string[] = [];
  const joined = Promise.withResolvers<void>();
  ws.onmessage = (e) => {
    got.push(String(e.data));
    if (String(e.data) === `${name} joined (websocket)`) joined.resolve();
  };
  ws.onerror = () => joined.reject(new Error(`${name} could not connect to ${base}`));
  const closed = new Promise<number>((res) => ws.addEventListener("close", (e) => res(e.code)));
  const timer = setTimeout(() => joined.reject(new Error(`${name} did not join the room at ${base} within ${ms} ms`)), ms);
  try {
    await joined.promise;
  } catch (err) {
    ws.close();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { name, ws, got, closed, [Symbol.dispose]: () => ws.close() };
}

/**
 * `from` says "probe N" until `to` hears one: the room's subscription has crossed whatever lies
 * between them (the cluster bus, Redis). Fails after `ms`.
 */
export async function untilHeard(from: Chatter, to: Chatter, ms = 5000): Promise<void> {
  const heard = () => to.got.some((m) => m.startsWith(`${from.name}: probe `));
  const deadline = Date.now() + ms;
  for (let i = 0; !heard() && Date.now() < deadline; i++) {
    from.ws.send(`probe ${i}`);
    await Bun.sleep(20);
  }
  expect(heard(), `${to.name} never heard ${from.name} within ${ms} ms`).toBe(true);
}
