// History, recovery and presence (SPEC §5), written once and run in every mode: one process
// (test/history.test.ts), `-w 2` (same file) and two `-w 2` clusters on one Redis
// (test/redis.test.ts). Places are the deployment's event loops (one per worker of each server); a
// client that resumes lands on another place than the one it left, and messages are published from
// a third where there is one. The fixture acknowledges a subscription once its promise resolved,
// which is after the replay: no probes, no sleeps.
import { describe, expect, test } from "bun:test";
import { fixture, openStream, type CliProcess, type StreamReader } from "../harness.ts";
import { workerClient, type WorkerClient } from "../ws.ts";

export interface HistoryMode {
  name: string;
  /** workers per server */
  workers: number;
  /** starts the servers of one deployment of `app` */
  start(app: string): Promise<CliProcess[]>;
  skip?: boolean;
}

interface Ack {
  ack: string;
  recovered?: boolean;
  position?: string | null;
  result?: unknown;
}
interface Delivery {
  m: string;
  p: string | null;
}

export function historySuite(mode: HistoryMode): void {
  describe.skipIf(mode.skip === true)(`history, recovery and presence: ${mode.name}`, () => {
    test("a WebSocket subscriber misses N messages published elsewhere, resumes with since on another place: exactly the N in order, then live ones", async () => {
      await using d = await Deployment.start(mode);
      const ch = unique("h:ws");
      const pub = await d.client(d.last);
      const first = await d.client(0);
      await first.sub(ch);
      await pub.pub(ch, "a", 3);
      const before = await first.deliveries(3);
      expect(before.map((x) => x.m)).toEqual(["a1", "a2", "a3"]);
      const last = before[2]!.p!;
      await first.close();
      await pub.pub(ch, "b", 5);
      const again = await d.client(d.places > 1 ? 1 : 0);
      const ack = await again.sub(ch, last);
      const missed = await again.deliveries(5);
      expect(missed.map((x) => x.m)).toEqual(["b1", "b2", "b3", "b4", "b5"]);
      expect(missed.map((x) => offsetOf(x.p!))).toEqual(
        [1, 2, 3, 4, 5].map((i) => offsetOf(last) + i),
      );
      expect(ack).toMatchObject({ recovered: true, position: missed[4]!.p });
      await pub.pub(ch, "c", 1);
      expect((await again.deliveries(1))[0]!.m).toBe("c1");
      // Nothing else arrived: a fence publish is the next thing it hears.
      await pub.pub(ch, "fence", 1);
      expect((await again.deliveries(1))[0]!.m).toBe("fence1");
    }, 30_000);

    test("an EventSource misses N messages, reconnects with Last-Event-ID onto another place and gets exactly the N, then live ones", async () => {
      await using d = await Deployment.start(mode);
      const ch = unique("h:sse");
      const pub = await d.client(d.last);
      const first = await d.stream(0, ch);
      await first.subscribed();
      await pub.pub(ch, "a", 3);
      const seen = await first.events(3);
      expect(seen.map((e) => e.data)).toEqual(["a1", "a2", "a3"]);
      first.close();
      await pub.pub(ch, "b", 4);
      const again = await d.stream(d.places > 1 ? 1 : 0, ch, seen[2]!.id);
      const missed = await again.events(4);
      expect(missed.map((e) => e.data)).toEqual(["b1", "b2", "b3", "b4"]);
      expect(missed.map((e) => offsetOf(e.id))).toEqual([4, 5, 6, 7]);
      expect(await again.subscribed()).toEqual({ recovered: true, position: missed[3]!.id });
      await pub.pub(ch, "c", 1);
      expect((await again.events(1))[0]!.data).toBe("c1");
      again.close();
    }, 30_000);

    test("resuming while messages keep coming from two places: no gap, no duplicate, in order", async () => {
      await using d = await Deployment.start(mode);
      const ch = unique("h:busy");
      const pub = await d.client(d.last);
      const watcher = await d.client(0);
      await watcher.sub(ch);
      await pub.pub(ch, "m", 200);
      const mid = (await watcher.deliveries(200))[99]!.p!;
      // 2,000 more in bursts of 50 a turn, while a new subscriber resumes from the 100th.
      const publishing = pub.pub(ch, "n", 2000, 50);
      const resumer = await d.client(d.places > 1 ? 1 : 0);
      const acked = resumer.sub(ch, mid);
      await publishing;
      const got = await resumer.deliveries(100 + 2000);
      expect(got.map((x) => offsetOf(x.p!))).toEqual(
        Array.from({ length: 2100 }, (_, i) => offsetOf(mid) + 1 + i),
      );
      expect(got.slice(0, 100).map((x) => x.m)).toEqual(
        Array.from({ length: 100 }, (_, i) => `m${101 + i}`),
      );
      expect((await acked).recovered).toBe(true);
    }, 60_000);

    test("trimmed, expired or of another epoch: recovered is false, nothing replayed, live from then on", async () => {
      await using d = await Deployment.start(mode);
      const pub = await d.client(d.last);
      const c = await d.client(0);
      const short = unique("short");
      await c.sub(short);
      await pub.pub(short, "s", 1);
      const old = (await c.deliveries(1))[0]!.p!;
      await pub.pub(short, "t", 5);
      await c.deliveries(5);
      await c.unsub(short);
      // The channel keeps 3: "s1" and "t1", "t2" are gone.
      const trimmed = await c.sub(short, old);
      expect(trimmed.recovered).toBe(false);
      await pub.pub(short, "live", 1);
      expect(await c.deliveries(1)).toEqual([{ m: "live1", p: expect.any(String) }]);
      await c.unsub(short);

      const other = await c.sub(short, `not-an-epoch:${offsetOf(old)}`);
      expect(other.recovered).toBe(false);
      await c.unsub(short);

      const brief = unique("brief");
      await c.sub(brief);
      await pub.pub(brief, "x", 1);
      const at = (await c.deliveries(1))[0]!.p!;
      await pub.pub(brief, "y", 1);
      await c.deliveries(1);
      await c.unsub(brief);
      // Kept for 1 s: "y1" is replayed until it expires, then the history no longer reaches back.
      let result: Ack | undefined;
      for (const deadline = Date.now() + 5000; Date.now() < deadline;) {
        result = await c.sub(brief, at);
        await c.unsub(brief);
        if (result.recovered === false) break;
        expect((await c.deliveries(1))[0]!.m).toBe("y1");
        await Bun.sleep(200);
      }
      expect(result!.recovered).toBe(false);
    }, 30_000);

    test("presence counts subscriptions to exactly the channel on every place, and follows leaves", async () => {
      await using d = await Deployment.start(mode);
      const ch = unique("room");
      const asker = await d.client(d.last);
      expect(await asker.presence(ch)).toBe(0);
      // One member on every place, and a second one on place 0.
      const members: Client[] = [];
      for (const p of [0, ...Array.from({ length: d.places }, (_, i) => i)]) {
        const c = await d.client(p);
        await c.sub(ch);
        members.push(c);
      }
      const other = await d.client(0);
      await other.sub(`${ch}:other`);
      expect(await asker.presence(ch)).toBe(d.places + 1);
      await members[0]!.unsub(ch);
      // `unsubscribe` returns at once; its count reaches the master (and Redis) a moment later.
      await d.until(asker, ch, d.places);
      await members.at(-1)!.close();
      await d.until(asker, ch, d.places - 1);
    }, 30_000);
  });
}

// --- the deployment and its clients ---

let channels = 0;
const unique = (prefix: string) => `${prefix}:${process.pid}:${++channels}`;
const offsetOf = (p: string) => Number(p.slice(p.lastIndexOf(":") + 1));

/** A WebSocket client of test/fixtures/history-app.ts. */
class Client {
  #next = 0;
  constructor(readonly ws: WorkerClient) {}

  async #command(c: object): Promise<Ack> {
    const id = ++this.#next;
    this.ws.send(JSON.stringify({ ...c, id }));
    const text = await this.ws.waitFor(
      (m) => typeof m === "string" && m.startsWith('{"ack"') && JSON.parse(m).id === id,
      20_000,
    );
    return JSON.parse(text as string) as Ack;
  }

  sub(ch: string, since?: string): Promise<Ack> {
    return this.#command({ op: "sub", ch, since });
  }
  unsub(ch: string): Promise<Ack> {
    return this.#command({ op: "unsub", ch });
  }
  async pub(ch: string, text: string, n: number, per?: number): Promise<void> {
    await this.#command({ op: "pub", ch, text, n, per });
  }
  async presence(ch: string): Promise<number> {
    return (await this.#command({ op: "presence", ch })).result as number;
  }
  /** The next `n` deliveries (acks are skipped: they are not queued). */
  async deliveries(n: number): Promise<Delivery[]> {
    const out = await this.ws.take(n, 30_000);
    return out.map((m) => JSON.parse(m as string) as Delivery);
  }
  close(): Promise<void> {
    return this.ws[Symbol.asyncDispose]();
  }
}

interface SseEvent {
  event: string;
  id: string;
  data: string;
}

/** An event stream of the fixture, parsed into events. */
class Stream {
  #at = 0;
  constructor(readonly reader: StreamReader & { close(): void }) {}

  #all(): SseEvent[] {
    return parseEvents(this.reader.text());
  }

  /** The next `n` message events (not `hello`/`subscribed`). */
  async events(n: number): Promise<SseEvent[]> {
    const want = () => this.#all().filter((e) => e.event === "message");
    await this.reader.until(() => want().length >= this.#at + n, 20_000);
    const out = want().slice(this.#at, this.#at + n);
    this.#at += n;
    return out;
  }

  async subscribed(): Promise<{ recovered: boolean; position: string | null }> {
    await this.reader.until("event: subscribed", 20_000);
    const e = this.#all().find((x) => x.event === "subscribed")!;
    return JSON.parse(e.data) as { recovered: boolean; position: string | null };
  }

  close(): void {
    this.reader.close();
  }
}

/** Splits event-stream text into its complete events (comments skipped, `data` lines joined). */
export function parseEvents(text: string): SseEvent[] {
  const out: SseEvent[] = [];
  for (const block of text.split("\n\n").slice(0, -1)) {
    const e: SseEvent = { event: "message", id: "", data: "" };
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":") || line === "") continue;
      const colon = line.indexOf(":");
      const field = line.slice(0, colon);
      const value = line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") data.push(value);
      else if (field === "event") e.event = value;
      else if (field === "id") e.id = value;
    }
    if (data.length === 0 && e.event === "message") continue;
    e.data = data.join("\n");
    out.push(e);
  }
  return out;
}

class Deployment implements AsyncDisposable {
  #closing: (Client | Stream)[] = [];
  private constructor(
    readonly servers: CliProcess[],
    readonly pids: { server: number; pid: string }[],
  ) {}

  static async start(mode: HistoryMode): Promise<Deployment> {
    const servers = await mode.start(fixture("history-app.ts"));
    const pids: { server: number; pid: string }[] = [];
    for (let s = 0; s < servers.length; s++) {
      const seen = new Set<string>();
      for (let i = 0; i < 100 && seen.size < mode.workers; i++) {
        const c = await workerClient(ws(servers[s]!));
        seen.add(c.pid);
        await c[Symbol.asyncDispose]();
      }
      for (const pid of seen) pids.push({ server: s, pid });
    }
    return new Deployment(servers, pids);
  }

  get places(): number {
    return this.pids.length;
  }
  get last(): number {
    return this.pids.length - 1;
  }

  /** A WebSocket client held by place `p`. */
  async client(p: number): Promise<Client> {
    const { server, pid } = this.pids[p]!;
    for (let i = 0; i < 100; i++) {
      const c = await workerClient(ws(this.servers[server]!), ACKS);
      if (c.pid === pid) {
        const client = new Client(c);
        this.#closing.push(client);
        return client;
      }
      await c[Symbol.asyncDispose]();
    }
    throw new Error(`no WebSocket reached place ${p}`);
  }

  /** An event stream of `ch` held by place `p`, sent `Last-Event-ID: lastId` when given. */
  async stream(p: number, ch: string, lastId?: string): Promise<Stream> {
    const { server, pid } = this.pids[p]!;
    const url = `${this.servers[server]!.url}/sse?ch=${encodeURIComponent(ch)}`;
    const headers: Record<string, string> = lastId === undefined ? {} : { "last-event-id": lastId };
    for (let i = 0; i < 100; i++) {
      const s = new Stream(await openStream(url, headers));
      const text = await s.reader.until(/event: hello\ndata: \d+\n\n/, 10_000);
      if (text.includes(`data: ${pid}\n`)) {
        this.#closing.push(s);
        return s;
      }
      s.close();
    }
    throw new Error(`no event stream reached place ${p}`);
  }

  /** Asks until presence of `ch` is `n` (a closed connection is counted out a moment later). */
  async until(asker: Client, ch: string, n: number, ms = 10_000): Promise<void> {
    let last = -1;
    for (const deadline = Date.now() + ms; Date.now() < deadline; await Bun.sleep(50)) {
      last = await asker.presence(ch);
      if (last === n) return;
    }
    throw new Error(`presence of ${ch} stayed ${last}, not ${n}`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const c of this.#closing) await c.close();
    await Promise.all(this.servers.map((s) => s[Symbol.asyncDispose]()));
  }
}

const ws = (srv: CliProcess) => srv.url.replace("http", "ws");
/** acknowledgements are read by `waitFor`, never queued */
const ACKS = {
  ignore: (m: string | Uint8Array) => typeof m === "string" && m.startsWith('{"ack"'),
};
