// The pub/sub behaviour suite (SPEC §5), written once and run in every mode, as crossws's `wsTests`
// and the redis-adapter's `testSuite` are: one process (test/pubsub.test.ts), `-w 2`
// (test/cluster.test.ts), two `-w 2` clusters on one Redis (test/redis.test.ts) and on a Redis
// Cluster, sharded (test/redis-sharded.test.ts). A mode says how to start a deployment; a test
// places its clients on the deployment's event loops ("places": one per worker of each server) and
// publishes from another place, so in a cluster a message crosses the bus, and on Redis it crosses
// to the other cluster. No test sleeps: routes are awaited by probes, and "exactly once" by fences.
import { describe, expect, test } from "bun:test";
import { fixture, startCli, type CliProcess } from "../harness.ts";
import { Clients, FENCE, fenced, PROBE, untilHeard, WsClient, type Msg } from "../ws.ts";

export interface PubSubMode {
  /** what the describe says: "one process", "-w 2", … */
  name: string;
  /** workers per server (1: one process) */
  workers: number;
  /** starts the servers of one deployment of `app` (each server: its CLI process) */
  start(app: string): Promise<CliProcess[]>;
  /**
   * The place pattern tests publish from: one whose publishes reach place 0's patterns (the sharded
   * engine keeps patterns inside a cluster). Default: the last place.
   */
  patternFrom?: number;
  /**
   * How a message's type arrives from another server: "kept" (the bus carries it), or "utf8" (Redis
   * carries bytes: valid UTF-8 arrives as text, anything else as binary). Default "kept".
   */
  across?: "kept" | "utf8";
  /** the name a channel gets (sharded: one hash slot for all, so a fence is ordered after them) */
  channel?: (name: string) => string;
  /**
   * Subscribe one channel at a time, each heard from the last place before the next (sharded: see
   * `twoClustersSharded`). Default false: a client's subscriptions go out back to back.
   */
  oneAtATime?: boolean;
  /** fan-out shapes (subscribers × messages), and how many messages a Bun-native socket streams */
  scale: { fanOut: { subscribers: number; messages: number }[]; stream: number };
  skip?: boolean;
}

/** The suite for one mode. */
export function pubsubSuite(mode: PubSubMode): void {
  const ch = mode.channel ?? ((name: string) => name);
  const FENCES = ch("fence");
  const deploy = async (app: string) =>
    new Deployment(await mode.start(fixture(app)), mode.workers, FENCES, mode.oneAtATime === true);

  describe.skipIf(mode.skip === true)(`pub/sub behaviour: ${mode.name}`, () => {
    for (const { subscribers, messages } of mode.scale.fanOut) {
      test(`${subscribers.toLocaleString("en-US")} subscribers on every place and the publisher each get every one of ${messages.toLocaleString("en-US")} messages exactly once, in order`, async () => {
        await using d = await deploy("pubsub-app.ts");
        const channel = ch("fan-out");
        const pub = await d.subscriber(d.places - 1, [{ op: "sub", ch: channel }]);
        const subs: Peer[] = [];
        if (subscribers <= d.places) {
          for (let p = 0; p < subscribers; p++)
            subs.push(await d.subscriber(p, [{ op: "sub", ch: channel }]));
        } else {
          for (let batch = 0; batch < subscribers; batch += 100) {
            const some = Array.from({ length: Math.min(100, subscribers - batch) }, (_, i) =>
              d.anywhere(batch + i, [{ op: "sub", ch: channel }]),
            );
            subs.push(...(await Promise.all(some)));
          }
        }
        await d.ready(pub, [[channel, [...subs, pub]]]);
        const sent = Array.from({ length: messages }, (_, i) => `m${i}`);
        for (const text of sent) pub.send(JSON.stringify({ op: "pub", ch: channel, text }));
        const got = await d.settle(pub, [...subs, pub], 30_000);
        const wrong = got.filter(
          (list) => list.length !== sent.length || list.some((m, i) => m !== sent[i]),
        );
        expect(wrong.length).toBe(0);
        expect(got[0]).toEqual(sent);
        expect(got.length).toBe(subs.length + 1);
      }, 60_000);
    }

    test("exact and pattern channels through connections (native topic, JS delivery, callbacks); other channels do not reach", async () => {
      await using d = await deploy("pubsub-app.ts");
      const pub = await d.peer(mode.patternFrom ?? d.places - 1);
      const [room1, lobby, roomA, other, star] = [
        "chat.room1",
        "chat.lobby",
        "chat.roomA",
        "other",
        "chat.*",
      ].map(ch) as [string, string, string, string, string];
      const exact = await d.subscriber(0, [{ op: "sub", ch: room1 }]);
      const starred = await d.subscriber(0, [{ op: "sub", ch: star, match: "redis" }]);
      const range = await d.subscriber(0, [
        { op: "sub", ch: ch("chat.room[0-9]"), match: "redis" },
      ]);
      const literal = await d.subscriber(0, [{ op: "sub", ch: star }]);
      const callback = await d.subscriber(0, [
        { op: "csub", ch: ch("chat.?obby"), match: "redis" },
      ]);
      await d.ready(pub, [
        [room1, [exact, starred, range]],
        [lobby, [callback]],
        [star, [literal]],
      ]);

      for (const [channel, text] of [
        [room1, "hello"],
        [lobby, "lobby"],
        [roomA, "letter"],
        [other, "nobody"],
        [star, "star"],
      ] as const) {
        await command(pub, { op: "pub", ch: channel, text, via: "iodine" });
      }
      const [e, s, r, l, c] = await d.settle(pub, [exact, starred, range, literal, callback]);
      expect(e).toEqual(["hello"]);
      expect(s).toEqual(["hello", "lobby", "letter", "star"]);
      expect(r).toEqual(["hello"]);
      expect(l).toEqual(["star"]);
      expect(c).toEqual([JSON.stringify({ cb: lobby, text: "lobby" })]);
    }, 30_000);

    test("exact and pattern channels through Iodine.subscribe in the server; Iodine.unsubscribe ends them", async () => {
      await using d = await deploy("pubsub-app.ts");
      const pub = await d.peer(mode.patternFrom ?? d.places - 1);
      const [sport, tech, weather, pattern] = [
        "news.sport",
        "news.tech",
        "news.weather",
        "news.[st]*",
      ].map(ch) as [string, string, string, string];
      // Connections on the same channel and pattern in the same process show when the routes are there.
      const exact = await d.subscriber(0, [
        { op: "sub", ch: sport },
        { op: "ssub", ch: sport },
      ]);
      const globbed = await d.subscriber(0, [
        { op: "sub", ch: pattern, match: "redis" },
        { op: "ssub", ch: pattern, match: "redis" },
      ]);
      await d.ready(pub, [[sport, [exact, globbed]]]);
      await command(exact, { op: "slog" }); // the probes

      await command(pub, { op: "pub", ch: sport, text: "goal" }); // a connection publishes
      await command(pub, { op: "pub", ch: tech, text: "chips", via: "iodine" }); // and Iodine.publish does
      await command(pub, { op: "pub", ch: weather, text: "rain", via: "iodine" });
      expect(await d.settle(pub, [exact, globbed])).toEqual([["goal"], ["goal", "chips"]]);
      expect(await command(exact, { op: "slog" })).toEqual([
        { key: sport, channel: sport, text: "goal" },
        { key: `pattern ${pattern}`, channel: sport, text: "goal" },
        { key: `pattern ${pattern}`, channel: tech, text: "chips" },
      ]);
      expect(await command(exact, { op: "sunsub", ch: sport })).toBe(true);
      expect(await command(exact, { op: "sunsub", ch: pattern, match: "redis" })).toBe(true);
      expect(await command(exact, { op: "sunsub", ch: sport })).toBe(false);
      await command(pub, { op: "pub", ch: sport, text: "after", via: "iodine" });
      expect(await d.settle(pub, [exact, globbed])).toEqual([["after"], ["after"]]);
      expect(await command(exact, { op: "slog" })).toEqual([]);
    }, 30_000);

    test("any bytes, any size, empty messages, Unicode channels and messages", async () => {
      await using d = await deploy("pubsub-app.ts");
      const from = mode.patternFrom ?? d.places - 1;
      const pub = await d.peer(from);
      const [raw, unicode] = [ch("raw"), ch("チャット/😀")];
      const both = (op: Record<string, unknown>) => [raw, unicode].map((c) => ({ ...op, ch: c }));
      const native = await d.subscriber(0, [...both({ op: "sub" }), { op: "ssub", ch: raw }]); // no callback: Bun's topic fan-out
      const binary = await d.subscriber(0, both({ op: "sub", as: "binary" })); // the JS registry
      const callback = await d.subscriber(0, both({ op: "csub" }));
      const pattern = await d.subscriber(0, [{ op: "sub", ch: ch("チャット/*"), match: "redis" }]);
      await d.ready(pub, [
        [raw, [native, binary, callback]],
        [unicode, [native, binary, callback, pattern]],
      ]);
      await command(native, { op: "slog" }); // the probes

      const all = new Uint8Array(256).map((_, i) => i);
      const big = noise(1024 * 1024);
      const text = "こんにちは 😀 — ünïcödé, tab\t, NUL \u0000, end";
      const b64 = (u: Uint8Array) => Buffer.from(u).toString("base64");
      for (const m of [{ base64: b64(all) }, { base64: b64(big) }, { text: "" }, { base64: "" }]) {
        await command(pub, { op: "pub", ch: raw, via: "iodine", ...m });
      }
      await command(pub, { op: "pub", ch: unicode, via: "iodine", text });

      // Redis carries bytes: from another server, valid UTF-8 arrives as text.
      const crosses = mode.across === "utf8" && d.serverOf(from) !== d.serverOf(0);
      const arrived = (m: Msg): Msg =>
        crosses && typeof m !== "string" && isUtf8(m) ? new TextDecoder().decode(m) : m;
      const [n, b, c, p] = await d.settle(pub, [native, binary, callback, pattern]);
      const sent: Msg[] = [all, big, "", new Uint8Array(0), text];
      expect(n!.length).toBe(5);
      sent.forEach((m, i) => {
        const want = arrived(m);
        expect(typeof n![i]).toBe(typeof want);
        if (m === big) expect(sha256(n![i] as Uint8Array)).toBe(sha256(big));
        else expect(n![i]).toEqual(want);
      });
      expect(b!.length).toBe(5);
      expect(b![0]).toEqual(all);
      expect(sha256(b![1] as Uint8Array)).toBe(sha256(big));
      expect(b!.slice(2)).toEqual([new Uint8Array(0), new Uint8Array(0), bytes(text)]); // "" as binary, then bytes
      const described = (cb: string, m: Msg): Record<string, string> =>
        typeof m === "string" ? { cb, text: m } : { cb, base64: b64(m) };
      const expected = sent.map((m, i) => described(i < 4 ? raw : unicode, arrived(m)));
      expect((c as string[]).map((m) => JSON.parse(m))).toEqual(expected);
      expect(p).toEqual([text]);
      const log = (await command(native, { op: "slog" })) as Record<string, string>[];
      const logged = expected
        .slice(0, 4)
        .map(({ cb, ...r }): Record<string, string> => ({ channel: cb!, ...r }));
      expect(log.map(({ key: _, ...rest }) => rest)).toEqual(logged);
    }, 30_000);

    test("unsubscribe stops delivery (a later message still arrives, the unsubscribed one never does)", async () => {
      await using d = await deploy("pubsub-app.ts");
      const pub = await d.peer(mode.patternFrom ?? d.places - 1);
      const [a, px, pattern, cb, sentinel] = ["a", "p.x", "p.*", "cb", "sentinel"].map(ch) as [
        string,
        string,
        string,
        string,
        string,
      ];
      const c = await d.subscriber(0, [
        { op: "sub", ch: a },
        { op: "sub", ch: pattern, match: "redis" },
        { op: "csub", ch: cb },
        { op: "sub", ch: sentinel },
      ]);
      await d.ready(pub, [
        [a, [c]],
        [px, [c]],
        [cb, [c]],
        [sentinel, [c]],
      ]);
      for (const [channel, text] of [
        [a, "a1"],
        [px, "p1"],
        [cb, "c1"],
      ] as const)
        await command(pub, { op: "pub", ch: channel, text, via: "iodine" });
      expect(await d.settle(pub, [c])).toEqual([["a1", "p1", JSON.stringify({ cb, text: "c1" })]]);

      expect(await command(c, { op: "unsub", ch: a })).toBe(true);
      expect(await command(c, { op: "unsub", ch: pattern, match: "redis" })).toBe(true);
      expect(await command(c, { op: "unsub", ch: cb })).toBe(true);
      expect(await command(c, { op: "unsub", ch: a })).toBe(false);
      for (const [channel, text] of [
        [a, "a2"],
        [px, "p2"],
        [cb, "c2"],
        [sentinel, "after"],
      ] as const) {
        await command(pub, { op: "pub", ch: channel, text, via: "iodine" });
      }
      expect(await d.settle(pub, [c])).toEqual([["after"]]);
    }, 30_000);

    test("a Bun-native app's server.publish (from fetch and from a socket) and Iodine.publish reach its ws.subscribe sockets, iodine connections and Iodine.subscribe on every place, once each", async () => {
      await using d = await deploy("pubsub-native-app.ts");
      const topic = ch("mix");
      const own: WsClient[] = [];
      const iodine: WsClient[] = [];
      for (let p = 0; p < d.places; p++) {
        own.push(await d.native(p, `/native?topic=${encodeURIComponent(topic)}`));
        iodine.push(await d.native(p, `/iodine?topic=${encodeURIComponent(topic)}`));
      }
      const sender = own.at(-1)!;
      const everyone = [...own, ...iodine];
      await untilHeard((probe) => sender.send(`server ${probe}`), everyone);
      const post = async (path: string, body: string) => {
        const res = await fetch(`${d.servers[0]!.url}${path}?topic=${encodeURIComponent(topic)}`, {
          method: "POST",
          body,
        });
        expect(await res.text()).toBe("published");
      };
      // One at a time: two HTTP requests may land on two workers, and then race.
      const expected = [
        "server.publish from fetch",
        "Iodine.publish",
        "server.publish from a websocket handler",
      ];
      await post("/publish", expected[0]!);
      expect(await Promise.all(everyone.map((c) => c.next()))).toEqual(
        everyone.map(() => expected[0]!),
      );
      await post("/iodine-publish", expected[1]!);
      expect(await Promise.all(everyone.map((c) => c.next()))).toEqual(
        everyone.map(() => expected[1]!),
      );
      sender.send(`server ${expected[2]}`);
      expect(await Promise.all(everyone.map((c) => c.next()))).toEqual(
        everyone.map(() => expected[2]!),
      );
      const fences = own.map((client) => ({
        client,
        send: (t: string) => client.send(`server ${t}`),
      }));
      expect(await fenced(fences, everyone)).toEqual(everyone.map(() => []));
      for (const c of iodine) {
        c.send("log");
        const reply = String(await c.waitFor((m) => String(m).startsWith("log ")));
        const log = JSON.parse(reply.slice(4)) as string[];
        expect(log.filter((m) => !m.includes(PROBE) && !m.includes(FENCE))).toEqual(
          expected.map((m) => `${topic}:${m}`),
        );
      }

      // A topic only the app's own sockets subscribe to (no iodine connection on it).
      const lone = ch("alone");
      const alone: WsClient[] = [];
      for (let p = 0; p < d.places; p++)
        alone.push(await d.native(p, `/native?topic=${encodeURIComponent(lone)}`));
      await untilHeard((probe) => alone.at(-1)!.send(`server ${probe}`), alone);
      for (const [path, body] of [
        ["/publish", "server.publish, no iodine connection"],
        ["/iodine-publish", "Iodine.publish, no iodine connection"],
      ] as const) {
        const res = await fetch(`${d.servers[0]!.url}${path}?topic=${encodeURIComponent(lone)}`, {
          method: "POST",
          body,
        });
        expect(await res.text()).toBe("published");
        expect(await Promise.all(alone.map((c) => c.next()))).toEqual(alone.map(() => body));
      }
    }, 30_000);

    test(`a Bun-native socket's ws.publish, publishText and publishBinary reach the sockets on every place: ${mode.scale.stream.toLocaleString("en-US")} exactly once, in order, never the sender`, async () => {
      await using d = await deploy("pubsub-native-app.ts");
      const path = `/native?topic=${encodeURIComponent(ch("stream"))}`;
      const sockets: WsClient[] = [];
      const placeOf = new Map<WsClient, number>();
      for (const p of [...Array(d.places).keys(), d.places - 1]) {
        // the last one: a neighbour in the sender's own process
        const s = await d.native(p, path);
        sockets.push(s);
        placeOf.set(s, p);
      }
      const sender = sockets[d.places - 1]!;
      const others = sockets.filter((s) => s !== sender);
      await untilHeard((probe) => sender.send(`publish ${probe}`), others);
      const N = mode.scale.stream;
      const calls = ["publish", "publishText", "publishBinary"];
      for (let i = 0; i < N; i++) sender.send(`${calls[i % 3]} m${i}`);
      // publishBinary's bytes stay binary, except across Redis, where valid UTF-8 arrives as text.
      for (const c of others) {
        const crosses =
          mode.across === "utf8" && d.serverOf(placeOf.get(c)!) !== d.serverOf(d.places - 1);
        const expected = Array.from({ length: N }, (_, i) =>
          i % 3 === 2 && !crosses ? bytes(`m${i}`) : `m${i}`,
        );
        const got = await c.take(N, 30_000);
        expect(got.filter((m, i) => !Bun.deepEquals(m, expected[i])).length).toBe(0);
        expect(got).toEqual(expected);
      }
      const fences = sockets.map((client) => ({
        client,
        send: (t: string) => client.send(`publish ${t}`),
      }));
      expect(await fenced(fences, sockets, { skipOwn: true })).toEqual(sockets.map(() => []));
    }, 60_000);
  });
}

// --- modes ---

const NO_REDIS_ENV = { REDIS_URL: undefined, IODINE_REDIS_URL: undefined };
/** Publishers send 1 MiB (as base64 in a command) over their WebSocket: past the 250 KiB default. */
const BIG_MESSAGES = ["--max-msg", "2048"];

/** Starts every command's server; if one fails, the others are stopped before the error is thrown. */
async function startAll(starts: (() => Promise<CliProcess>)[]): Promise<CliProcess[]> {
  const settled = await Promise.allSettled(starts.map((s) => s()));
  const failed = settled.find((r) => r.status === "rejected");
  if (failed === undefined)
    return settled.map((r) => (r as PromiseFulfilledResult<CliProcess>).value);
  await Promise.all(
    settled.map((r) => (r.status === "fulfilled" ? r.value[Symbol.asyncDispose]() : undefined)),
  );
  throw (failed as PromiseRejectedResult).reason;
}

/** One process: publisher and subscribers share it. */
export const oneProcess = (scale: PubSubMode["scale"]): PubSubMode => ({
  name: "one process",
  workers: 1,
  start: (app) =>
    startAll([() => startCli(["-p", "0", ...BIG_MESSAGES, app], { env: NO_REDIS_ENV })]),
  scale,
});

/** `-w 2`: places are the two workers; messages cross the master's bus. */
export const twoWorkers = (scale: PubSubMode["scale"]): PubSubMode => ({
  name: "-w 2 (cluster pub/sub)",
  workers: 2,
  start: (app) =>
    startAll([
      () =>
        startCli(["-p", "0", "-w", "2", ...BIG_MESSAGES, app], {
          env: NO_REDIS_ENV,
          timeout: 20_000,
        }),
    ]),
  scale,
});

/**
 * Two `-w 2` clusters on `url()` (read when a test starts), each started once its engine says
 * `connected` (as test/redis-sharded.test.ts always waited): places 0–1 are cluster A's workers, 2–3 B's.
 */
function twoClusters(url: () => string, connected: RegExp) {
  return (app: string) => {
    const one = async () => {
      const srv = await startCli(["-p", "0", "-w", "2", ...BIG_MESSAGES, "-r", url(), app], {
        env: NO_REDIS_ENV,
        timeout: 20_000,
      });
      await srv.waitFor(connected).catch(async (err) => {
        await srv[Symbol.asyncDispose]();
        throw err;
      });
      return srv;
    };
    return startAll([one, one]);
  };
}

/** Two `-w 2` clusters on one Redis. */
export const twoClustersOnRedis = (
  url: () => string,
  scale: PubSubMode["scale"],
  skip: boolean,
): PubSubMode => ({
  name: "two -w 2 clusters on one Redis",
  workers: 2,
  start: twoClusters(url, /redis: connected to /),
  across: "utf8",
  scale,
  skip,
});

/**
 * Two `-w 2` clusters on a Redis Cluster through the sharded engine. Patterns stay inside a cluster
 * there, so pattern tests publish from place 1 (cluster A's other worker); every channel carries the
 * hash tag `{s}`, so all live in one slot and a fence is ordered after them (channels on three
 * masters are test/redis-sharded.test.ts's own test).
 */
export const twoClustersSharded = (
  url: () => string,
  scale: PubSubMode["scale"],
  skip: boolean,
): PubSubMode => ({
  name: "two -w 2 clusters on a Redis Cluster (sharded)",
  workers: 2,
  start: twoClusters(() => `${url()}?sharded`, /redis \(sharded\): connected to the Redis Cluster/),
  patternFrom: 1,
  across: "utf8",
  channel: (name) => `{s}${name}`,
  // An SSUBSCRIBE was seen lost for good now and then (the node's ssubscriber connection lacked the
  // channel; nothing arrived for 30 s): the suite subscribes one channel at a time and checks that
  // each is heard from the other cluster, saying so loudly and subscribing again when it is not.
  oneAtATime: true,
  scale,
  skip,
});

// --- deployments and their clients ---

/** A client of test/fixtures/pubsub-app.ts, held by a known place. */
type Peer = WsClient & { place: number };

const isAck = (m: Msg) => typeof m === "string" && m.startsWith('{"ack":');
let commands = 0;

/** Sends a pubsub-app command and resolves with its ack's `result` (acks never reach the queue). */
async function command(c: WsClient, cmd: Record<string, unknown>): Promise<unknown> {
  const id = ++commands;
  c.send(JSON.stringify({ ch: "", ...cmd, id }));
  const ack = await c.waitFor(
    (m) => isAck(m) && (JSON.parse(m as string) as { id?: number }).id === id,
    10_000,
  );
  return (JSON.parse(ack as string) as { result?: unknown }).result;
}

/** The servers of one test, the places on them, and the clients opened there; disposed together. */
class Deployment implements AsyncDisposable {
  readonly servers: CliProcess[];
  readonly #workers: number;
  readonly #fences: string;
  readonly #clients = new Clients();
  /** per server, the event loops seen so far: place (server × workers + k) is #pids[server][k] */
  readonly #pids: string[][];
  readonly #control = new Map<number, Peer>();

  readonly #oneAtATime: boolean;

  constructor(servers: CliProcess[], workers: number, fences: string, oneAtATime: boolean) {
    this.servers = servers;
    this.#workers = workers;
    this.#fences = fences;
    this.#oneAtATime = oneAtATime;
    this.#pids = servers.map(() => []);
  }

  get places(): number {
    return this.servers.length * this.#workers;
  }

  serverOf(place: number): number {
    return Math.floor(place / this.#workers);
  }

  /** Connects (to the server of `place`) until the kernel gives the connection to that place's worker. */
  async #at<T extends WsClient>(
    place: number,
    connect: (base: string) => Promise<[T, string]>,
  ): Promise<T> {
    const s = this.serverOf(place);
    const known = this.#pids[s]!;
    const k = place % this.#workers;
    for (let i = 0; i < 200; i++) {
      const [c, pid] = await connect(this.servers[s]!.url.replace("http", "ws"));
      if (!known.includes(pid) && known.length < this.#workers) known.push(pid);
      if (known[k] === pid) return this.#clients.add(c);
      await c[Symbol.asyncDispose]();
    }
    throw new Error(`no connection reached place ${place} in 200 tries`);
  }

  /** A pubsub-app client: opened, its event loop asked. */
  async #open(base: string): Promise<[Peer, string]> {
    const c = await WsClient.open(`${base}/ws`, { ignore: isAck });
    const pid = String(await command(c, { op: "pid" }));
    return [Object.assign(c, { place: -1 }), pid];
  }

  /** A pubsub-app client on `place` that has run `subs` (each acknowledged) and subscribed to the fences. */
  async subscriber(place: number, subs: Record<string, unknown>[]): Promise<Peer> {
    const c = await this.#at(place, (base) => this.#open(base));
    c.place = place;
    await this.#subscribe(c, subs);
    return c;
  }

  /** Like `subscriber`, on server i % servers, on whichever worker the kernel picks (place unknown). */
  async anywhere(i: number, subs: Record<string, unknown>[]): Promise<Peer> {
    const [c] = await this.#open(this.servers[i % this.servers.length]!.url.replace("http", "ws"));
    this.#clients.add(c);
    await this.#subscribe(c, subs);
    return c;
  }

  async #subscribe(c: Peer, subs: Record<string, unknown>[]): Promise<void> {
    for (const s of [...subs, { op: "sub", ch: this.#fences }]) {
      await command(c, s);
      // One at a time: a channel subscription this client hears (not a pattern, not the server's),
      // heard from a place on another server before the next.
      if (!this.#oneAtATime || s.match !== undefined || (s.op !== "sub" && s.op !== "csub"))
        continue;
      const from = await this.peer(this.serverOf(Math.max(c.place, 0)) === 0 ? this.places - 1 : 0);
      const heard = () =>
        untilHeard((probe) => command(from, { op: "pub", ch: s.ch, text: probe }), [c], {
          what: `a probe on ${String(s.ch)}`,
          ms: 3000,
        });
      for (let attempt = 1; ; attempt++) {
        try {
          await heard();
          break;
        } catch (err) {
          if (attempt === 3) throw err;
          // Seen now and then with the sharded engine: the SSUBSCRIBE never takes effect, for good.
          // Said loudly each time; subscribing again (a SUNSUBSCRIBE, then an SSUBSCRIBE) mends it.
          console.warn(
            `\n*** ${String(s.ch)}: the subscription of place ${c.place} never reached Redis; subscribing again ***\n`,
          );
          await command(c, { ...s, op: "unsub" });
          await command(c, s);
        }
      }
    }
  }

  /** The place's own publisher of fences (and of anything a test publishes from there). */
  async peer(place: number): Promise<Peer> {
    let c = this.#control.get(place);
    if (c === undefined) {
      c = await this.#at(place, (base) => this.#open(base));
      c.place = place;
      this.#control.set(place, c); // before it subscribes: checking its fence subscription asks the other places' peers
      await this.#subscribe(c, []);
    }
    return c;
  }

  /** A pubsub-native-app socket on `place` (its first message, `subscribed T pid N`, read). */
  native(place: number, path: string): Promise<WsClient> {
    return this.#at(place, async (base) => {
      const c = await WsClient.open(`${base}${path}`);
      const first = String(await c.next());
      return [c, /pid (\d+)$/.exec(first)?.[1] ?? "?"];
    });
  }

  /**
   * Routes are there: `from` publishes probes on each channel until its subscribers heard one, and
   * every place's fence publisher probes the fence channel until every subscriber heard it.
   */
  async ready(from: Peer, routes: [string, Peer[]][]): Promise<void> {
    for (const [channel, subs] of routes) {
      await untilHeard((probe) => command(from, { op: "pub", ch: channel, text: probe }), subs, {
        what: `a probe on ${channel}`,
      });
    }
    const everyone = [...new Set(routes.flatMap(([, subs]) => subs))];
    for (let p = 0; p < this.places; p++) {
      const fencer = await this.peer(p);
      await untilHeard(
        (probe) => command(fencer, { op: "pub", ch: this.#fences, text: probe }),
        everyone,
        { what: `place ${p}'s fence probe` },
      );
    }
  }

  /**
   * What each reader got from `publisher` up to its fence; then fences from every other place, before
   * which nothing else may come (a duplicate, a late echo), asserted here.
   */
  async settle(publisher: Peer, readers: Peer[], ms = 10_000): Promise<Msg[][]> {
    const fence = (c: Peer) => ({
      client: c as WsClient,
      send: (t: string) => command(c, { op: "pub", ch: this.#fences, text: t }),
    });
    const got = await fenced([fence(publisher)], readers, { ms });
    const others: Peer[] = [];
    for (let p = 0; p < this.places; p++)
      if (p !== publisher.place) others.push(await this.peer(p));
    if (others.length > 0)
      expect(await fenced(others.map(fence), readers, { ms })).toEqual(readers.map(() => []));
    return got;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#clients[Symbol.asyncDispose]();
    await Promise.all(this.servers.map((s) => s[Symbol.asyncDispose]()));
  }
}

// --- payloads ---

const sha256 = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");
const bytes = (text: string) => new TextEncoder().encode(text);

function isUtf8(b: Uint8Array): boolean {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
}

/** Bytes that are not a pattern: xorshift32, seeded. */
export function noise(size: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed;
  for (let k = 0; k < size; k++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[k] = x & 255;
  }
  return out;
}
