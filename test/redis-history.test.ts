// History and presence kept in Redis (SPEC §5; src/pubsub/redis-history.ts), against a real
// redis-server on a free port: the history suite in one process on Redis and across two `-w 2`
// clusters on one Redis; what a raw Redis client sees of a history channel (the header, the lists,
// the hash) and of an ordinary one (raw); ttl while newer messages keep a history alive; a SIGKILLed
// cluster's share of presence expiring; and Redis killed while a cluster publishes on a history
// channel (kept by the master meanwhile, then in Redis again under a new epoch).
import { describe, expect, test } from "bun:test";
import IORedis from "ioredis";
import {
  fixture,
  sharedByFile,
  startCli,
  stderrLines,
  tempDir,
  waitUntil,
  ws,
  type CliProcess,
} from "./harness.ts";
import type { Position } from "../src/index.ts";
import { HISTORY_API, type EngineHost } from "../src/pubsub/engine-api.ts";
import { declareHistory } from "../src/pubsub/history.ts";
import { RedisEngine } from "../src/pubsub/redis.ts";
import { skipRedis, startRedis } from "./redis-server.ts";
import { historySuite } from "./suites/history.ts";
import { twoClustersOnRedis } from "./suites/pubsub.ts";
import { workerClient, type WorkerClient } from "./ws.ts";

const skip = skipRedis("test/redis-history.test.ts", "the Redis history test");
const redis = sharedByFile(() => startRedis(), { skip });
const APP = fixture("history-app.ts");
const NO_REDIS_ENV = { REDIS_URL: undefined, IODINE_REDIS_URL: undefined };

historySuite({
  name: "one process on Redis",
  workers: 1,
  start: async (app) => {
    const srv = await startCli(["-p", "0", "-r", redis().url, app], { env: NO_REDIS_ENV });
    await srv.waitFor(/redis: connected to /).catch(async (err) => {
      await srv[Symbol.asyncDispose]();
      throw err;
    });
    return [srv];
  },
  skip,
});

historySuite({
  name: "two -w 2 clusters on one Redis",
  workers: 2,
  start: (app) => twoClustersOnRedis(() => redis().url, { fanOut: [], stream: 0 }, skip).start(app),
  skip,
});

/** A `-w 2` cluster of test/fixtures/history-app.ts on `url` (a process group of its own: `group`). */
async function cluster(url: string, group = false): Promise<CliProcess> {
  const srv = await startCli(["-p", "0", "-w", "2", "-r", url, APP], {
    env: NO_REDIS_ENV,
    timeout: 20_000,
    group,
  });
  await srv.waitFor(/redis: connected to /).catch(async (err) => {
    await srv[Symbol.asyncDispose]();
    throw err;
  });
  return srv;
}

interface Ack {
  recovered?: boolean;
  position?: string | null;
  result?: unknown;
}

/** A WebSocket client of history-app.ts: commands answered by acks, deliveries queued. */
class Client {
  #next = 0;
  private constructor(readonly ws: WorkerClient) {}

  static async open(srv: CliProcess): Promise<Client> {
    return new Client(
      await workerClient(ws(srv), {
        ignore: (m) => typeof m === "string" && m.startsWith('{"ack"'),
      }),
    );
  }

  async do(op: string, ch: string, more: object = {}): Promise<Ack> {
    const id = ++this.#next;
    this.ws.send(JSON.stringify({ op, ch, id, ...more }));
    const text = await this.ws.waitFor(
      (m) => typeof m === "string" && m.startsWith('{"ack"') && JSON.parse(m).id === id,
      20_000,
    );
    return JSON.parse(text as string) as Ack;
  }

  /** The next `n` deliveries as `{m, p}`. */
  async deliveries(n: number): Promise<{ m: string; p: string | null }[]> {
    return (await this.ws.take(n, 20_000)).map((m) => JSON.parse(m as string));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.ws[Symbol.asyncDispose]();
  }
}

const epochOf = (p: string | null) => p!.slice(0, p!.lastIndexOf(":"));

describe.skipIf(skip)("history and presence in Redis", () => {
  test("what a raw Redis client sees: a history channel's header and message, its lists and hash; an ordinary channel stays raw", async () => {
    await using srv = await cluster(redis().url);
    await using c = await Client.open(srv);
    const hist = `h:raw:${process.pid}`;
    const plain = `plain:${process.pid}`;
    const raw = new IORedis(redis().port, "127.0.0.1", { connectionName: "test-raw" });
    raw.on("error", () => {});
    try {
      const heard: string[] = [];
      raw.on("messageBuffer", (ch: Buffer, m: Buffer) => heard.push(`${ch} ${m.toString()}`));
      await raw.subscribe(hist, plain);
      await c.do("sub", hist);
      await c.do("pub", hist, { text: "hello" });
      const [got] = await c.deliveries(1);
      expect(got!.m).toBe("hello");
      const epoch = epochOf(got!.p);
      expect(epoch).toMatch(/^\d{16}$/);
      expect(got!.p).toBe(`${epoch}:1`);
      await c.do("pub", plain, { text: "world" });
      await waitUntil(() => heard.length >= 2, 5000, "the raw subscriber to hear both");
      expect(heard).toEqual([`${hist} \0iodine-h ${epoch}:1\nhello`, `${plain} world`]);

      const admin = new IORedis(redis().port, "127.0.0.1");
      try {
        expect(await admin.hgetall(`iodine:hseq:${hist}`)).toEqual({
          epoch,
          seq: "1",
          size: "20000",
          exp: expect.stringMatching(/^\d{13}$/),
        });
        // The messages as published (oldest first), and their runs: last offset, Redis's ms, kind.
        expect(await admin.lrange(`iodine:hist:${hist}`, 0, -1)).toEqual(["hello"]);
        const runs = await admin.lrange(`iodine:hrun:${hist}`, 0, -1);
        expect(runs).toEqual([expect.stringMatching(/^1:\d{13}:t$/)]);
        // ttl 300 s (the fixture's default) and a quarter (expiries are pushed back every ttl / 4)
        // for the lists, a day more for the hash.
        for (const key of [`iodine:hist:${hist}`, `iodine:hrun:${hist}`]) {
          const pttl = await admin.pttl(key);
          expect(pttl).toBeGreaterThan(365_000);
          expect(pttl).toBeLessThanOrEqual(375_000);
        }
        expect(await admin.pttl(`iodine:hseq:${hist}`)).toBeGreaterThan(86_400_000);
        expect(await admin.exists(`iodine:hist:${plain}`, `iodine:hseq:${plain}`)).toBe(0);
        expect(await admin.exists(`iodine:hrun:${plain}`)).toBe(0);
        // Presence: this cluster's count, under its id, which has an alive key.
        const pres = await admin.hgetall(`iodine:pres:${hist}`);
        expect(Object.values(pres)).toEqual(["1"]);
        expect(await admin.exists(`iodine:alive:${Object.keys(pres)[0]}`)).toBe(1);

        // What a raw client publishes reaches iodine as it is: without a header, a history channel's
        // subscriber gets it with no position; a header on an ordinary channel is just bytes.
        await admin.publish(hist, "from redis-cli");
        expect(await c.deliveries(1)).toEqual([{ m: "from redis-cli", p: null }]);
        await c.do("sub", plain);
        await admin.publish(plain, "\0iodine-h 1:1\nfake");
        expect(await c.deliveries(1)).toEqual([{ m: "\0iodine-h 1:1\nfake", p: null }]);
      } finally {
        admin.disconnect();
      }
    } finally {
      raw.disconnect();
    }
  }, 30_000);

  test("a message older than ttl is not replayed while newer ones keep the channel's history alive", async () => {
    await using srv = await cluster(redis().url);
    await using c = await Client.open(srv);
    const ch = `brief:active:${process.pid}`; // ttl 1 s
    await c.do("sub", ch);
    await c.do("pub", ch, { text: "x", n: 2 });
    const [x1] = await c.deliveries(2);
    const admin = new IORedis(redis().port, "127.0.0.1");
    try {
      // One message every 200 ms keeps the lists alive; x2, older than 1 s, then no longer counts.
      let result: Ack | undefined;
      let last = x1!;
      for (let i = 0, deadline = Date.now() + 5000; Date.now() < deadline; i++) {
        await c.do("pub", ch, { text: `z${i}` });
        last = (await c.deliveries(1))[0]!;
        expect(await admin.exists(`iodine:hist:${ch}`)).toBe(1);
        result = await c.do("sub", ch, { since: x1!.p });
        if (result.recovered === false) break;
        await c.deliveries(i + 2); // the replay: x2 and every z so far
        await Bun.sleep(200);
      }
      expect(result!.recovered).toBe(false);
      // The newest is still there.
      const before = `${epochOf(last.p)}:${Number(last.p!.split(":")[1]) - 1}`;
      expect((await c.do("sub", ch, { since: before })).recovered).toBe(true);
      expect((await c.deliveries(1))[0]!.m).toBe(last.m);
    } finally {
      admin.disconnect();
    }
  }, 30_000);

  test("the engine itself: text and binary keep their kind live and in a read; trimmed by size; another cluster's presence", async () => {
    declareHistory("eng:*", { match: "redis", size: 3 });
    const ch = `eng:${process.pid}`;
    const live: { bytes: string; text: boolean; at: string }[] = [];
    let heard = () => {};
    const host: EngineHost = {
      deliver: () => {},
      deliverBytes: () => {},
      deliverAt: (_c, bytes, text, p: Position) => {
        live.push({
          bytes: Buffer.from(bytes).toString("hex"),
          text,
          at: `${p.epoch}:${p.offset}`,
        });
        heard();
      },
    };
    const one = new RedisEngine(redis().url);
    const two = new RedisEngine(redis().url);
    try {
      one.open(host);
      two.open(host);
      const h = one[HISTORY_API];
      await waitUntil(() => h.available && two[HISTORY_API].available, 5000, "both engines");
      await one.subscribe(ch);
      const arrived = new Promise<void>((r) => (heard = () => live.length === 4 && r()));
      const bin = new Uint8Array([0, 255, 10]);
      await Promise.all([
        h.append(ch, Buffer.from("a"), true, 3, 60_000),
        h.append(ch, bin, false, 3, 60_000),
        h.append(ch, Buffer.from("c"), true, 3, 60_000),
        h.append(ch, Buffer.from("d"), true, 3, 60_000),
      ]);
      await arrived;
      const epoch = epochOf(live[0]!.at);
      expect(live).toEqual([
        { bytes: "61", text: true, at: `${epoch}:1` },
        { bytes: "00ff0a", text: false, at: `${epoch}:2` },
        { bytes: "63", text: true, at: `${epoch}:3` },
        { bytes: "64", text: true, at: `${epoch}:4` },
      ]);
      // Size 3: offset 1 is gone; the binary one is still binary.
      const held = await two[HISTORY_API].read(ch, 0, 60_000);
      expect({ ...held, entries: undefined }).toEqual({
        epoch,
        top: 4,
        first: 2,
        entries: undefined,
      });
      expect(
        held.entries.map((e) => [e.offset, Buffer.from(e.bytes).toString("hex"), e.text]),
      ).toEqual([
        [2, "00ff0a", false],
        [3, "63", true],
        [4, "64", true],
      ]);
      // Presence: each engine is a cluster of its own. Another cluster's count travels on its own
      // connection, so this one's query can reach Redis first: it shows up, it is not there at once.
      h.counts(new Map([[ch, 2]]));
      two[HISTORY_API].counts(new Map([[ch, 3]]));
      let seen = 0;
      await waitUntil(async () => (seen = await h.presence(ch)) === 5, 2000, "5 present").catch(
        () => expect(seen).toBe(5),
      );
      two[HISTORY_API].counts(new Map([[ch, 0]]));
      expect(await two[HISTORY_API].presence(ch)).toBe(2);
    } finally {
      await one.close();
      await two.close();
    }
  });

  test("presence: a SIGKILLed cluster's subscriptions drop out within seconds", async () => {
    await using a = await cluster(redis().url);
    await using b = await cluster(redis().url, true);
    await using onA = await Client.open(a);
    await using onB = await Client.open(b);
    await using onB2 = await Client.open(b);
    const room = `room:kill:${process.pid}`;
    await onA.do("sub", room);
    await onB.do("sub", room);
    await onB2.do("sub", room);
    expect((await onA.do("presence", room)).result).toBe(3);
    b.signalGroup("SIGKILL");
    await b.proc.exited;
    const killed = Date.now();
    await waitUntil(
      async () => (await onA.do("presence", room)).result === 1,
      8000,
      "presence to drop the killed cluster",
      100,
    );
    // Its alive key lives 5 s after its last refresh.
    expect(Date.now() - killed).toBeLessThan(6000);
  }, 30_000);

  test("Redis killed while publishing on a history channel: the master keeps the publishes under its own epoch, then Redis takes them again under a new epoch, and a since from before the outage is not recovered", async () => {
    // Redis keeps its data across the kill (AOF, fsync always): only what the master kept is missing.
    using dir = tempDir();
    await using r = await startRedis([
      ...["--appendonly", "yes", "--appendfsync", "always", "--dir", dir.path],
    ]);
    await using srv = await cluster(r.url);
    await using c = await Client.open(srv);
    const ch = `h:outage:${process.pid}`;
    const quiet = `h:quiet:${process.pid}`;
    await c.do("sub", ch);
    await c.do("sub", quiet);
    await c.do("pub", ch, { text: "a", n: 3 });
    const before = await c.deliveries(3);
    const redisEpoch = epochOf(before[0]!.p);
    expect(before.map((d) => d.p)).toEqual([1, 2, 3].map((i) => `${redisEpoch}:${i}`));
    await c.do("pub", quiet, { text: "q", n: 1 });
    const [q1] = await c.deliveries(1);

    // 2,000 messages from the master, 20 every 2 ms; Redis is killed in the middle of them.
    await c.do("pub", "ctl:burst", { text: `${ch} 2000 20 2` });
    await c.ws.waitFor((m) => typeof m === "string" && m.includes('"m":"k300"'), 10_000);
    await r.kill();
    await srv.waitFor(/redis: connection to \S+ lost/);
    await c.ws.waitFor((m) => typeof m === "string" && m.includes('"m":"k2000"'), 10_000);
    const burst = await c.deliveries(c.ws.queued);
    const own = epochOf(burst.at(-1)!.p);
    expect(own).not.toBe(redisEpoch);
    // Through Redis k1 … kX, then kept by the master kY … k2000, each run in order with consecutive
    // offsets; none missing. An append in flight at the kill that Redis had run is delivered twice.
    const inRedis = burst.filter((d) => epochOf(d.p) === redisEpoch);
    const kept = burst.filter((d) => epochOf(d.p) === own);
    expect(inRedis.length + kept.length).toBe(burst.length);
    const n = (d: { m: string }) => Number(d.m.slice(1));
    const offset = (d: { p: string | null }) => Number(d.p!.slice(d.p!.lastIndexOf(":") + 1));
    expect(inRedis.map(n)).toEqual(inRedis.map((_, i) => i + 1));
    expect(inRedis.map(offset)).toEqual(inRedis.map((_, i) => i + 4));
    expect(kept.map(n)).toEqual(kept.map((_, i) => 2001 - kept.length + i));
    expect(kept.map(offset)).toEqual(kept.map((_, i) => i + 1));
    const twice = inRedis.length + kept.length - 2000;
    expect(twice).toBeGreaterThanOrEqual(0);
    expect(twice).toBeLessThan(100);
    expect(inRedis.length).toBeGreaterThanOrEqual(300);
    expect(stderrLines(srv, /cannot take history publishes now/)).toHaveLength(1);

    await r.restart();
    await srv.waitFor(/redis: connected to \S+ again/, 15_000);
    await c.do("pub", ch, { text: "c", n: 2 });
    const after = await c.deliveries(2).catch((err: Error) => {
      throw new Error(`${err.message}; the cluster's stderr:\n${srv.stderr()}`);
    });
    const newEpoch = epochOf(after[0]!.p);
    expect(newEpoch).toMatch(/^\d{16}$/);
    expect([redisEpoch, own]).not.toContain(newEpoch);
    expect(after).toEqual([
      { m: "c1", p: `${newEpoch}:1` },
      { m: "c2", p: `${newEpoch}:2` },
    ]);
    const admin = new IORedis(r.port, "127.0.0.1");
    try {
      expect(await admin.hget(`iodine:hseq:${ch}`, "epoch")).toBe(newEpoch);
      expect(await admin.lrange(`iodine:hist:${ch}`, 0, -1)).toEqual(["c1", "c2"]);
    } finally {
      admin.disconnect();
    }

    // The history in Redis lacks b1 … b3: resuming from before the outage is not recovered.
    await using other = await Client.open(srv);
    const ack = await other.do("sub", ch, { since: before[2]!.p });
    expect(ack).toMatchObject({ recovered: false, position: `${newEpoch}:2` });
    // A channel nothing was kept elsewhere for keeps its epoch, and resumes.
    await c.do("pub", quiet, { text: "r", n: 1 });
    expect(epochOf((await c.deliveries(1))[0]!.p)).toBe(epochOf(q1!.p));
    const resumed = await other.do("sub", quiet, { since: q1!.p });
    expect(resumed.recovered).toBe(true);
    expect((await other.deliveries(1))[0]!.m).toBe("r1");
  }, 40_000);
});
