// The Redis engine (SPEC §5) against a real redis-server started here on a free port: two clusters
// (`-w 2 -r URL` each) share one pub/sub space; exactly-once in-order delivery across them and inside
// each (Redis's echo of a cluster's own publish is dropped), patterns (and a channel plus a pattern
// matching it: Redis sends two copies, each subscriber gets one), raw payloads both ways, interest
// tracking, two connections per cluster, `cmd` from a worker, publish scopes, Redis killed and
// restarted, down at start-up, and paused (a Redis that stops answering).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import IORedis from "ioredis";
import { Iodine } from "../src/index.ts";
import { errorOf, fixture, freePort, runCommand, startCli, type CliProcess } from "./harness.ts";
import { skipRedis, startRedis, type RedisServer } from "./redis-server.ts";
import { clientSet, linked, oneOnEach, waitUntil, type Client } from "./ws-clients.ts";

const APP = fixture("cluster-app.ts");
const skip = skipRedis("test/redis.test.ts", "the Redis engine test");

const { clients, sub, closeClients } = clientSet();

/** POST /publish on a cluster (an HTTP request: whichever worker takes it publishes). */
async function post(srv: CliProcess, channel: string, body: string, scope?: "cluster" | "process"): Promise<void> {
  const q = `ch=${encodeURIComponent(channel)}${scope ? `&scope=${scope}` : ""}`;
  const res = await fetch(`${srv.url}/publish?${q}`, { method: "POST", body });
  expect(res.status).toBe(200);
}

/** `redis.cmd(...)` run by a worker of `srv` (relayed to its master). */
async function cmd(srv: CliProcess, ...args: string[]): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${srv.url}/cmd`, { method: "POST", body: JSON.stringify(args) });
  return { status: res.status, body: res.status === 200 ? await res.json() : await res.text() };
}

/** The names of Redis's clients, from CLIENT LIST. */
async function clientNames(admin: IORedis): Promise<string[]> {
  const list = (await admin.call("CLIENT", "LIST")) as string;
  return list
    .trim()
    .split("\n")
    .map((line) => /\bname=(\S*)/.exec(line)?.[1] ?? "");
}

const lines = (srv: CliProcess, pattern: RegExp) => srv.stderr().split("\n").filter((l) => pattern.test(l));
const numbered = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe.skipIf(skip)("two clusters (-w 2) on one Redis", () => {
  let redis: RedisServer;
  let admin: IORedis;
  let a: CliProcess;
  let b: CliProcess;
  const ws = (srv: CliProcess) => srv.url.replace("http", "ws");

  beforeAll(async () => {
    redis = await startRedis();
    admin = new IORedis(redis.port, "127.0.0.1", { connectionName: "test-admin", lazyConnect: true });
    admin.on("error", () => {});
    await admin.connect();
    const start = () => startCli(["-p", "0", "-w", "2", "-r", redis.url, APP], { timeout: 20_000 });
    [a, b] = await Promise.all([start(), start()]);
  });
  afterAll(async () => {
    closeClients();
    await Promise.all(
      [a, b].map(async (p) => {
        if (p === undefined) return;
        const timer = setTimeout(() => p.proc.kill("SIGKILL"), 5000);
        await p.stop("SIGTERM");
        clearTimeout(timer);
      }),
    );
    admin?.disconnect();
    await redis?.[Symbol.asyncDispose]();
  });

  test("5,000 messages published on cluster B reach subscribers on both clusters exactly once, in order", async () => {
    const [a1, a2] = await oneOnEach(`${ws(a)}/ws?ch=orders`);
    const [b1, b2] = await oneOnEach(`${ws(b)}/ws?ch=orders`);
    clients.push(a1.ws, a2.ws, b1.ws, b2.ws);
    // Subscriptions complete asynchronously (bus, then Redis): probe until each one is reached.
    for (const to of [a1, a2, b2]) await linked(b1, to);
    for (const c of [a1, a2, b1, b2]) c.got.length = 0;

    const expected = numbered("m", 5000);
    for (const m of expected) b1.ws.send(m);
    await Promise.all([a1, a2, b1, b2].map((c) => c.until(5000, 20_000)));
    await Bun.sleep(300); // a duplicate (an echo delivered twice) would be here by now
    for (const c of [a1, a2, b1, b2]) expect(c.got).toEqual(expected);
    closeClients();
  }, 30_000);

  test("a Bun-native socket's ws.publish reaches the other cluster through Redis: 2,000 exactly once, in order, never the sender", async () => {
    const [a1, a2] = await oneOnEach(`${ws(a)}/native`);
    const b1 = await sub(`${ws(b)}/native`);
    clients.push(a1.ws, a2.ws);
    for (let i = 0; i < 200 && (b1.got.length === 0 || a2.got.length === 0); i++) {
      a1.ws.send(`publish probe ${i}`);
      await Bun.sleep(20);
    }
    await waitUntil(() => b1.got.length > 0 && a2.got.length > 0, 5000, "a probe across clusters");
    await Bun.sleep(200);
    for (const c of [a1, a2, b1]) c.got.length = 0;
    const expected = numbered("w", 2000);
    for (const m of expected) a1.ws.send(`publish ${m}`);
    await Promise.all([a2.until(2000, 20_000), b1.until(2000, 20_000)]);
    await Bun.sleep(300); // a duplicate (an echo delivered twice) would be here by now
    expect(b1.got).toEqual(expected);
    expect(a2.got).toEqual(expected);
    expect(a1.got).toEqual([]);
    closeClients();
  }, 30_000);

  test("a subscription's promise resolves once Redis has it: 50 publishes from the other cluster sent right after each arrive", async () => {
    const x = await sub(`${ws(a)}/ws?ch=none&control=1`);
    const y = await sub(`${ws(b)}/ws?ch=none&control=1`);
    await subscribedThroughRedis(x, y, "viaredis");
    closeClients();
  }, 30_000);

  test("the same with two single processes on the Redis (nothing but Redis to wait for)", async () => {
    const start = () => startCli(["-p", "0", "-r", redis.url, APP]);
    await using one = await start();
    await using two = await start();
    // While Redis is away a subscription resolves at once (it is made when Redis is back): wait for it.
    for (const p of [one, two]) await p.waitFor(/redis: connected/);
    const x = await sub(`${ws(one)}/ws?ch=none&control=1`);
    const y = await sub(`${ws(two)}/ws?ch=none&control=1`);
    await subscribedThroughRedis(x, y, "single");
    closeClients();
  }, 30_000);

  /** x subscribes to a fresh channel; the moment it says "subscribed", y publishes once on it; x must get it. */
  async function subscribedThroughRedis(x: Client, y: Client, prefix: string): Promise<void> {
    for (let i = 0; i < 50; i++) {
      x.ws.send(`sub ${prefix}${i}`);
      await x.until(2 * i + 1);
      expect(x.got[2 * i]).toBe(`subscribed ${prefix}${i}`);
      y.ws.send(`pub ${prefix}${i} r${i}`);
      await x.until(2 * i + 2, 3000);
      expect(x.got[2 * i + 1]).toBe(`r${i}`);
    }
  }

  test("patterns across clusters; a channel and a pattern that both match get one copy each", async () => {
    const exact = await sub(`${ws(a)}/ws?ch=news.sport`);
    const pattern = await sub(`${ws(a)}/ws?ch=news.*&match=redis`);
    // A raw Redis client sees the payload as published: nothing wraps it.
    const raw = admin.duplicate({ connectionName: "test-raw" });
    raw.on("error", () => {});
    const rawGot: string[] = [];
    raw.on("pmessage", (_p, channel, message) => rawGot.push(`${channel} ${message}`));
    await raw.psubscribe("news.*");
    try {
      for (let i = 0; i < 200 && (exact.got.length === 0 || pattern.got.length === 0); i++) {
        await post(b, "news.sport", "probe");
        await Bun.sleep(20);
      }
      await Bun.sleep(100);
      exact.got.length = pattern.got.length = rawGot.length = 0;

      const sent: [string, string][] = [];
      for (let i = 0; i < 100; i++) {
        for (const ch of ["news.sport", "news.tech", "weather"]) sent.push([ch, `${ch}-${i}`]);
      }
      for (const [ch, m] of sent) await post(b, ch, m);
      const toPattern = sent.filter(([ch]) => ch.startsWith("news."));
      await pattern.until(toPattern.length);
      await exact.until(100);
      await Bun.sleep(200);
      expect(exact.got).toEqual(sent.filter(([ch]) => ch === "news.sport").map(([, m]) => m));
      expect(pattern.got).toEqual(toPattern.map(([, m]) => m));
      await waitUntil(() => rawGot.length >= toPattern.length, 2000, "the raw subscriber");
      expect(rawGot).toEqual(toPattern.map(([ch, m]) => `${ch} ${m}`));
    } finally {
      raw.disconnect();
      closeClients();
    }
  }, 20_000);

  test("any Redis client reaches iodine subscribers, text as text and other bytes as a binary frame", async () => {
    const text = await sub(`${ws(a)}/ws?ch=interop`);
    const binary = new WebSocket(`${ws(a)}/ws?ch=interop-bin`);
    binary.binaryType = "arraybuffer";
    clients.push(binary);
    const frames: (string | Uint8Array)[] = [];
    binary.onmessage = (e) => frames.push(typeof e.data === "string" ? e.data : new Uint8Array(e.data as ArrayBuffer));
    await waitUntil(() => frames.length > 0, 5000, "the binary client"); // "ready pid N"
    frames.length = 0;
    const bytes = Buffer.from([0xff, 0x00, 0x80, 0x61, 0xc3]); // not UTF-8
    for (let i = 0; i < 200 && (text.got.length === 0 || frames.length === 0); i++) {
      await admin.publish("interop", "héllo from redis-cli");
      await admin.publish("interop-bin", bytes);
      await Bun.sleep(20);
    }
    expect(text.got[0]).toBe("héllo from redis-cli");
    expect(frames[0]).toEqual(new Uint8Array(bytes));
    // And a message of 1 MiB of every byte value crosses intact.
    const big = Buffer.alloc(1 << 20, 0);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 255;
    frames.length = 0;
    await admin.publish("interop-bin", big);
    await waitUntil(() => frames.length > 0, 5000, "the 1 MiB message");
    expect(Buffer.from(frames[0] as Uint8Array).equals(big)).toBe(true);
    closeClients();
  }, 20_000);

  test("CLIENT LIST shows exactly two connections per cluster, held by each master", async () => {
    const names = (await clientNames(admin)).filter((n) => n.startsWith("iodine-"));
    expect(names.sort()).toEqual(
      [`iodine-pub-${a.proc.pid}`, `iodine-sub-${a.proc.pid}`, `iodine-pub-${b.proc.pid}`, `iodine-sub-${b.proc.pid}`].sort(),
    );
    // The same through `cmd` from a worker: the worker has no connection of its own.
    const { status, body } = await cmd(a, "CLIENT", "LIST");
    expect(status).toBe(200);
    expect((body as string).match(/name=iodine-/g)).toHaveLength(4);
  });

  test("cmd runs any command from a worker and resolves to the reply", async () => {
    expect(await cmd(a, "SET", "iodine-test-key", "v1")).toEqual({ status: 200, body: "OK" });
    expect(await cmd(b, "GET", "iodine-test-key")).toEqual({ status: 200, body: "v1" });
    expect(await admin.get("iodine-test-key")).toBe("v1");
    await admin.del("iodine-test-counter");
    expect(await cmd(b, "INCRBY", "iodine-test-counter", "5")).toEqual({ status: 200, body: 5 });
    await cmd(a, "RPUSH", "iodine-test-list", "x", "y");
    expect(await cmd(a, "LRANGE", "iodine-test-list", "0", "-1")).toEqual({ status: 200, body: ["x", "y"] });
    const bad = await cmd(a, "NOSUCHCOMMAND", "x");
    expect(bad.status).toBe(500);
    expect(bad.body).toMatch(/unknown command/i);
    await admin.del("iodine-test-key", "iodine-test-counter", "iodine-test-list");
  });

  test("Redis is subscribed to a channel or pattern exactly while some process of a cluster wants it", async () => {
    const numsub = async (ch: string) => ((await admin.pubsub("NUMSUB", ch)) as [string, number])[1];
    const numpat = async () => Number(await admin.pubsub("NUMPAT"));
    const patternsBefore = await numpat();
    expect(await numsub("only-a")).toBe(0);
    const [c1, c2] = await oneOnEach(`${ws(a)}/ws?ch=only-a`);
    const subscribed = async () => (await numsub("only-a")) === 1;
    for (let i = 0; i < 100 && !(await subscribed()); i++) await Bun.sleep(20);
    // One connection (cluster A's subscribing one), however many workers want it.
    expect(await numsub("only-a")).toBe(1);
    c1.ws.close();
    await Bun.sleep(300);
    expect(await numsub("only-a")).toBe(1); // the other worker still wants it
    c2.ws.close();
    for (let i = 0; i < 100 && (await numsub("only-a")) !== 0; i++) await Bun.sleep(20);
    expect(await numsub("only-a")).toBe(0);

    const p = await sub(`${ws(b)}/ws?ch=${encodeURIComponent("only-b.*")}&match=redis`);
    for (let i = 0; i < 100 && (await numpat()) !== patternsBefore + 1; i++) await Bun.sleep(20);
    expect(await numpat()).toBe(patternsBefore + 1);
    p.ws.close();
    for (let i = 0; i < 100 && (await numpat()) !== patternsBefore; i++) await Bun.sleep(20);
    expect(await numpat()).toBe(patternsBefore);
  }, 20_000);

  test("Iodine.PubSub.CLUSTER and PROCESS keep a publish out of Redis", async () => {
    const onA = await sub(`${ws(a)}/ws?ch=scoped`);
    const onB = await sub(`${ws(b)}/ws?ch=scoped`);
    for (let i = 0; i < 200 && onA.got.length === 0; i++) {
      await post(b, "scoped", "probe");
      await Bun.sleep(20);
    }
    await Bun.sleep(100);
    onA.got.length = onB.got.length = 0;
    await post(b, "scoped", "cluster only", "cluster");
    await post(b, "scoped", "everywhere");
    await onA.until(1);
    await onB.until(2);
    await Bun.sleep(200);
    expect(onA.got).toEqual(["everywhere"]);
    expect(onB.got).toEqual(["cluster only", "everywhere"]);
    closeClients();
  }, 20_000);

  test("Redis killed mid-stream and restarted: local delivery goes on, delivery across resumes within 5 s", async () => {
    const [b1, b2] = await oneOnEach(`${ws(b)}/ws?ch=live`);
    const a1 = await sub(`${ws(a)}/ws?ch=live`);
    clients.push(b1.ws, b2.ws);
    await linked(b1, a1);
    await linked(b1, b2);

    await redis.kill();
    await Promise.all([a, b].map((s) => s.waitFor(/redis: connection to redis:\/\/127\.0\.0\.1:\d+ lost/, 5000)));
    // Redis is away: the cluster still delivers its own publishes, to both of its workers.
    const local = numbered("local", 50);
    for (const m of local) b1.ws.send(m);
    await Promise.all([b1.until(50), b2.until(50)]);
    expect(b1.got).toEqual(local);
    expect(b2.got).toEqual(local);

    await redis.restart();
    const restarted = Date.now();
    a1.got.length = 0;
    for (let i = 0; a1.got.length === 0 && Date.now() - restarted < 8000; i++) {
      b1.ws.send(`again ${i}`);
      await Bun.sleep(50);
    }
    const resumed = Date.now() - restarted;
    expect(a1.got.length).toBeGreaterThan(0);
    expect(resumed).toBeLessThan(5000);
    await Promise.all([a, b].map((s) => s.waitFor(/redis: connected to redis:\/\/127\.0\.0\.1:\d+ again/, 5000)));
    // One line per change of state: lost once, back once (per cluster).
    for (const s of [a, b]) {
      expect(lines(s, /redis: connection to .* lost/)).toHaveLength(1);
      expect(lines(s, /redis: connected to .* again/)).toHaveLength(1);
    }

    await Bun.sleep(200);
    for (const c of [a1, b1, b2]) c.got.length = 0;
    const after = numbered("after", 500);
    for (const m of after) b1.ws.send(m);
    await Promise.all([a1, b1, b2].map((c) => c.until(500)));
    await Bun.sleep(200);
    for (const c of [a1, b1, b2]) expect(c.got).toEqual(after);
    // Still two connections per cluster after the reconnection.
    expect((await clientNames(admin)).filter((n) => n.startsWith("iodine-"))).toHaveLength(4);
    closeClients();
  }, 30_000);
});

describe.skipIf(skip)("one process on Redis: down at start-up, then slow", () => {
  let redis: RedisServer | undefined;
  let srv: CliProcess | undefined;
  let admin: IORedis | undefined;
  afterAll(async () => {
    closeClients();
    redis?.resume();
    admin?.disconnect();
    await srv?.stop("SIGKILL");
    await redis?.[Symbol.asyncDispose]();
  });

  test("starts and serves without Redis, connects when it comes, reconnects after a pause", async () => {
    const port = freePort();
    const url = `redis://:s3cret@127.0.0.1:${port}`;
    srv = await startCli(["-p", "0", "-r", url, "--redis-ping", "1", APP], { timeout: 20_000 });
    await srv.waitFor(/redis: cannot connect to redis:\/\/:\*\*\*@127\.0\.0\.1:\d+ \(.*\); publishing inside this cluster only, retrying/);
    expect(srv.stderr()).not.toContain("s3cret");
    // No Redis: HTTP and local pub/sub work.
    expect(await (await fetch(srv.url)).text()).toMatch(/^pid \d+$/);
    const c = await sub(`${srv.url.replace("http", "ws")}/ws?ch=solo`);
    await post(srv, "solo", "local 1");
    await c.until(1);
    expect(c.got).toEqual(["local 1"]);

    // Redis comes (with a password): connected within a few seconds, two connections of this process.
    redis = await startRedis(["--requirepass", "s3cret"], port);
    await srv.waitFor(/redis: connected to redis:\/\/:\*\*\*@127\.0\.0\.1:\d+ after [\d.]+ s/, 8000);
    admin = new IORedis(port, "127.0.0.1", { password: "s3cret", connectionName: "test-admin" });
    admin.on("error", () => {});
    expect((await clientNames(admin)).filter((n) => n.startsWith("iodine-")).sort()).toEqual(
      [`iodine-pub-${srv.proc.pid}`, `iodine-sub-${srv.proc.pid}`],
    );
    c.got.length = 0;
    for (let i = 0; i < 200 && c.got.length === 0; i++) {
      await admin.publish("solo", "from redis");
      await Bun.sleep(20);
    }
    expect(c.got[0]).toBe("from redis");
    // Its own publish comes back from Redis, and is not delivered twice.
    c.got.length = 0;
    await post(srv, "solo", "once");
    await Bun.sleep(300);
    expect(c.got).toEqual(["once"]);

    // Redis stops answering (SIGSTOP): local delivery goes on; the keep-alive notices within ~2 s.
    redis.pause();
    await post(srv, "solo", "while paused");
    await c.until(2);
    expect(c.got).toEqual(["once", "while paused"]);
    await srv.waitFor(/redis: no answer on the (publishing|subscribing) connection for 1 s; reconnecting/, 5000);
    redis.resume();
    const resumed = Date.now();
    c.got.length = 0;
    for (let i = 0; c.got.length === 0 && Date.now() - resumed < 8000; i++) {
      await admin.publish("solo", `back ${i}`);
      await Bun.sleep(50);
    }
    expect(c.got.length).toBeGreaterThan(0);
    expect(Date.now() - resumed).toBeLessThan(5000);
  }, 40_000);
});

describe.skipIf(skip)("publishing", () => {
  test("where Redis refuses scripts, publishes fall back to PUBLISH: one log line, nothing lost", async () => {
    await using redis = await startRedis(["--rename-command", "EVALSHA", "", "--rename-command", "EVAL", ""]);
    await using srv = await startCli(["-p", "0", "-r", redis.url, APP]);
    await srv.waitFor(/redis: connected/);
    const raw = new IORedis(redis.port, "127.0.0.1");
    raw.on("error", () => {});
    const got: string[] = [];
    raw.on("message", (_ch, m) => got.push(m));
    try {
      await raw.subscribe("plain");
      for (let i = 0; i < 20; i++) await post(srv, "plain", `p${i}`);
      await waitUntil(() => got.length >= 20, 5000, "20 messages at the raw subscriber");
      expect(got).toEqual(numbered("p", 20));
      expect(lines(srv, /cannot publish through a script/)).toHaveLength(1);
    } finally {
      raw.disconnect();
    }
  }, 20_000);
});

describe.skipIf(skip)("echoes", () => {
  test("a publish Redis never echoed is forgotten, a later equal one from elsewhere delivered; bursts of own publishes arrive once", async () => {
    await using redis = await startRedis();
    const r = await runCommand([process.execPath, fixture("redis-fence.ts")], { env: { REDIS_URL: redis.url } });
    expect(r.stdout).toContain("got 20 of 20");
    expect(r.stdout).toContain("burst 100000 of 100000");
    // ...and reaches this process once: back through the default engine's subscription, not directly.
    expect(r.stdout).toContain('direct ["through the second engine"] local 1');
    expect(r.code).toBe(0);
  }, 20_000);
});

describe("the engine API", () => {
  test("bad URLs, bad engines and bad scopes are refused with a TypeError", () => {
    expect(() => new Iodine.PubSub.Redis("http://localhost:6379")).toThrow(/must start with redis:\/\/ or rediss:\/\//);
    expect(() => new Iodine.PubSub.Redis("redis://localhost", { ping: 0 })).toThrow(TypeError);
    // Checked before ioredis sees them: it would throw "Invalid URL" from open(), or SELECT a database pub/sub ignores.
    expect(errorOf(() => new Iodine.PubSub.Redis("redis://localhost:notaport"))).toBe(
      'TypeError: Iodine.PubSub.Redis: the URL needs a port 1–65535, got "notaport" in "redis://localhost:notaport"',
    );
    expect(errorOf(() => new Iodine.PubSub.RedisSharded("redis://node-1:7000/2"))).toBe(
      'TypeError: ShardedRedisEngine: the URL names a database ("/2"), which Redis pub/sub ignores (a channel is the same in every database): leave it out of "redis://node-1:7000/2"',
    );
    for (const ok of ["redis://localhost", "redis://h:6379/", "redis://h:6379/0", "rediss://u:p@[::1]:6380"]) {
      expect(new Iodine.PubSub.Redis(ok).url).toBe(ok);
    }
    const before = Iodine.PubSub.default;
    expect(before).toBe(Iodine.PubSub.CLUSTER);
    expect(() => (Iodine.PubSub.default = {} as never)).toThrow(/subscribe, psubscribe, unsubscribe and publish/);
    expect(() => (Iodine.PubSub.default = Iodine.PubSub.PROCESS)).toThrow(TypeError);
    expect(Iodine.PubSub.default).toBe(Iodine.PubSub.CLUSTER);
    expect(() => Iodine.publish("x", "y", {} as never)).toThrow(/CLUSTER, PROCESS or an engine/);
  });
});
