// WebSocket clients of test/fixtures/cluster-app.ts (its first message is `ready pid N`), shared by
// the cluster and Redis tests.
import { expect } from "bun:test";

/** A WebSocket whose first message is `ready pid N`; later messages are collected. */
export interface Client {
  ws: WebSocket;
  /** the event loop that holds it: "pid", or "pid.thread" */
  pid: string;
  got: string[];
  /** resolves once `got` holds at least n messages (rejects after ms) */
  until(n: number, ms?: number): Promise<void>;
}

export function client(url: string): Promise<Client> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const got: string[] = [];
    let wake = () => {};
    const c: Client = {
      ws,
      pid: "",
      got,
      until: (n, ms = 10_000) =>
        new Promise((res, rej) => {
          const timer = setTimeout(() => rej(new Error(`got ${got.length} of ${n} messages`)), ms);
          wake = () => {
            if (got.length < n) return;
            clearTimeout(timer);
            res();
          };
          wake();
        }),
    };
    ws.onmessage = (e) => {
      const text = String(e.data);
      if (c.pid === "") {
        c.pid = /^ready pid ([\d.]+)$/.exec(text)?.[1] ?? "?";
        return resolve(c);
      }
      got.push(text);
      wake();
    };
    ws.onerror = () => reject(new Error(`cannot open ${url}`));
  });
}

/** Connects until two clients are held by two different workers (the kernel picks the worker). */
export async function oneOnEach(url: string): Promise<[Client, Client]> {
  const byPid = new Map<string, Client>();
  for (let i = 0; i < 100 && byPid.size < 2; i++) {
    const c = await client(url);
    if (byPid.has(c.pid)) c.ws.close();
    else byPid.set(c.pid, c);
  }
  expect(byPid.size).toBe(2);
  return [...byPid.values()] as [Client, Client];
}

/** Sends probes from `from` until `to` receives one: the cluster now routes the channel to `to`. */
export async function linked(from: Client, to: Client): Promise<void> {
  for (let i = 0; i < 200; i++) {
    from.ws.send(`probe ${i}`);
    await Bun.sleep(10);
    if (to.got.some((m) => m.startsWith("probe"))) break;
  }
  await Bun.sleep(50);
  expect(to.got.some((m) => m.startsWith("probe"))).toBe(true);
  from.got.length = 0;
  to.got.length = 0;
}

export const waitUntil = async (ok: () => boolean, ms: number, what: string) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
};

/** Clients opened by a test file, closed together (`closeClients` in a test's end or in afterAll). */
export function clientSet() {
  const clients: WebSocket[] = [];
  return {
    /** sockets to close with the others (also those opened by `oneOnEach`, pushed by the caller) */
    clients,
    async sub(url: string): Promise<Client> {
      const c = await client(url);
      clients.push(c.ws);
      return c;
    },
    closeClients(): void {
      for (const ws of clients.splice(0)) ws.close();
    },
  };
}
