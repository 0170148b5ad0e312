// The sharded Redis engine (SPEC §5) against a real 3-master Redis Cluster started here: two iodine
// clusters (`-w 2 -r URL?sharded` each, test/fixtures/cluster-app.ts) share one pub/sub space
// through SSUBSCRIBE / SPUBLISH. Exactly-once in-order delivery across them and inside each (Redis's echo of a cluster's
// own publish is dropped) on channels that live on three different masters, one shard subscriber per
// cluster and channel, subscriptions following interest, patterns refused with one line and kept
// inside the cluster, at most two connections per node per cluster, `cmd` from a worker, raw payloads
// from any Redis client, a master killed and restarted mid-stream, and then the whole Redis Cluster.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { fixture, startCli, type CliProcess } from "./harness.ts";
import { skipRedisCluster, startRedisCluster, type RedisCluster } from "./redis-cluster.ts";
import { clientSet, linked, oneOnEach, waitUntil, type Client } from "./ws-clients.ts";

const APP = fixture("cluster-app.ts");
const skip = skipRedisCluster("test/redis-sharded.test.ts", "the sharded Redis engine test");

const { clients, sub, closeClients } = clientSet();

async function post(srv: CliProcess, channel: string, body: string): Promise<void> {
  const res = await fetch(`${srv.url}/publish?ch=${encodeURIComponent(channel)}`, { method: "POST", body });
  expect(res.status).toBe(200);
}

const lines = (srv: CliProcess, pattern: RegExp) => srv.stderr().split("\n").filter((l) => pattern.test(l));
const numbered = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const ws = (srv: CliProcess) => srv.url.replace("http", "ws");

describe.skipIf(skip)("two clusters (-w 2) on a Redis Cluster (sharded pub/sub)", () => {
  let redis: RedisCluster;
  let a: CliProcess;
  let b: CliProcess;
  /** channels[i] lives on master i */
  const channels: string[] = [];

  /** PUBSUB SHARDNUMSUB on node i */
  const shardSubs = async (i: number, channel: string) =>
    Number(((await redis.admin[i]!.call("PUBSUB", "SHARDNUMSUB", channel)) as [string, number])[1]);
  /** SHARDNUMSUB on node i once it is n (or after 2 s) */
  const settled = async (i: number, channel: string, n: number) => {
    for (let k = 0; k < 100 && (await shardSubs(i, channel)) !== n; k++) await Bun.sleep(20);
    return shardSubs(i, channel);
  };
  /** Probes from b1 until each of `others` receives (Redis subscribed), then every message collected is cleared */
  const link = async (b1: Client, others: Client[]) => {
    for (const to of others) await linked(b1, to);
    await Bun.sleep(100);
    for (const c of [b1, ...others]) c.got.length = 0;
  };

  /**
   * Every iodine connection on every node belongs to a master; per node and cluster, at most two of
   * them, one a shard subscriber where the cluster ever wanted a channel (`everywhere`: each did).
   */
  const expectBoundedConnections = async (everywhere: boolean) => {
    const pids = [a.proc.pid, b.proc.pid].map(String).sort();
    for (const node of redis.admin) {
      const names = ((await node.call("CLIENT", "LIST")) as string).match(/\bname=\S*iodine-sharded-\d+/g) ?? [];
      const all = new Map<string, number>();
      const subscribers = new Map<string, number>();
      for (const name of names) {
        const pid = /(\d+)$/.exec(name)![1]!;
        all.set(pid, (all.get(pid) ?? 0) + 1);
        if (name.includes("(ssubscriber)")) subscribers.set(pid, (subscribers.get(pid) ?? 0) + 1);
      }
      if (everywhere) expect([...all.keys()].sort()).toEqual(pids);
      else for (const pid of all.keys()) expect(pids).toContain(pid);
      for (const count of all.values()) expect(count).toBeLessThanOrEqual(2);
      for (const count of subscribers.values()) expect(count).toBe(1);
      if (everywhere) expect(subscribers.size).toBe(2);
    }
  };

  beforeAll(async () => {
    redis = await startRedisCluster();
    for (let i = 0; channels.filter(Boolean).length < 3; i++) channels[await redis.ownerOf(`room-${i}`)] ??= `room-${i}`;
    const env = { REDIS_URL: undefined, IODINE_REDIS_URL: undefined };
    const start = () => startCli(["-p", "0", "-w", "2", "-r", `${redis.url}?sharded`, APP], { env, timeout: 20_000 });
    [a, b] = await Promise.all([start(), start()]);
    await Promise.all([a, b].map((s) => s.waitFor(/redis \(sharded\): connected to the Redis Cluster at redis:\/\/127\.0\.0\.1:\d+ \(3 masters/)));
  }, 30_000);
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
    await redis?.[Symbol.asyncDispose]();
  });

  test("2,000 messages on each of 3 channels on 3 masters, published on B, reach A and B exactly once, in order", async () => {
    const groups: { a1: Client; b1: Client; b2: Client }[] = [];
    for (const ch of channels) {
      const [b1, b2] = await oneOnEach(`${ws(b)}/ws?ch=${ch}`);
      clients.push(b1.ws, b2.ws);
      const a1 = await sub(`${ws(a)}/ws?ch=${ch}`);
      await link(b1, [b2, a1]);
      groups.push({ a1, b1, b2 });
    }
    const expected = numbered("m", 2000);
    for (const m of expected) for (const g of groups) g.b1.ws.send(m);
    const all = groups.flatMap((g) => [g.a1, g.b1, g.b2]);
    await Promise.all(all.map((c) => c.until(2000, 20_000)));
    await Bun.sleep(300); // a duplicate (an echo delivered twice) would be here by now
    for (const c of all) expect(c.got).toEqual(expected);
    closeClients();
  }, 30_000);

  test("Redis holds one shard subscription per cluster on the owning master, exactly while the cluster wants it", async () => {
    const ch = channels[1]!;
    expect(await settled(1, ch, 0)).toBe(0); // the last test's clients are gone
    const [a1, a2] = await oneOnEach(`${ws(a)}/ws?ch=${ch}`);
    const b1 = await sub(`${ws(b)}/ws?ch=${ch}`);
    // Two clusters, two subscriptions, however many workers; the other masters have none.
    expect(await settled(1, ch, 2)).toBe(2);
    expect([await shardSubs(0, ch), await shardSubs(2, ch)]).toEqual([0, 0]);
    a1.ws.close();
    await Bun.sleep(300);
    expect(await shardSubs(1, ch)).toBe(2); // A's other worker still wants it
    a2.ws.close();
    expect(await settled(1, ch, 1)).toBe(1);
    b1.ws.close();
    expect(await settled(1, ch, 0)).toBe(0);
    closeClients();
  }, 20_000);

  test("a pattern is refused with one clear line and still gets what its own cluster publishes", async () => {
    const pattern = await sub(`${ws(a)}/ws?ch=news.*&match=redis`);
    const line = /redis \(sharded\): the pattern "news\.\*" is delivered inside this cluster only: Redis has no sharded pattern subscription/;
    await a.waitFor(line, 5000);
    await post(a, "news.sport", "inside");
    await pattern.until(1);
    // Published on B: Redis cannot route it to a pattern.
    await post(b, "news.sport", "from B");
    await post(a, "news.tech", "inside again");
    await pattern.until(2);
    await Bun.sleep(200);
    expect(pattern.got).toEqual(["inside", "inside again"]);
    // Subscribed again: no second line.
    pattern.ws.close();
    await sub(`${ws(a)}/ws?ch=news.*&match=redis`);
    await Bun.sleep(200);
    expect(lines(a, line)).toHaveLength(1);
    expect(lines(b, line)).toHaveLength(0);
    closeClients();
  }, 20_000);

  test("CLIENT LIST: at most two connections per node per cluster, all held by the masters", async () => {
    await expectBoundedConnections(true);
  });

  test("cmd runs a command from a worker through the master's cluster connection", async () => {
    const res = await fetch(`${a.url}/cmd`, { method: "POST", body: JSON.stringify(["CLUSTER", "INFO"]) });
    expect(res.status).toBe(200);
    expect(String(await res.json())).toContain("cluster_state:ok");
  });

  test("any Redis client's SPUBLISH reaches iodine subscribers, text as text and other bytes as a binary frame", async () => {
    const [ch, bin] = [channels[2]!, channels[0]!];
    const text = await sub(`${ws(a)}/ws?ch=${ch}`);
    const binary = new WebSocket(`${ws(a)}/ws?ch=${bin}`);
    binary.binaryType = "arraybuffer";
    clients.push(binary);
    const frames: (string | Uint8Array)[] = [];
    binary.onmessage = (e) => frames.push(typeof e.data === "string" ? e.data : new Uint8Array(e.data as ArrayBuffer));
    await waitUntil(() => frames.length > 0, 5000, "the binary client"); // "ready pid N"
    frames.length = 0;
    const bytes = Buffer.from([0xff, 0x00, 0x80, 0x61, 0xc3]); // not UTF-8
    for (let i = 0; i < 200 && (text.got.length === 0 || frames.length === 0); i++) {
      await redis.admin[2]!.call("SPUBLISH", ch, "héllo from redis-cli");
      await redis.admin[0]!.call("SPUBLISH", bin, bytes);
      await Bun.sleep(20);
    }
    expect(text.got[0]).toBe("héllo from redis-cli");
    expect(frames[0]).toEqual(new Uint8Array(bytes));
    const big = Buffer.alloc(1 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 255;
    frames.length = 0;
    await redis.admin[0]!.call("SPUBLISH", bin, big);
    await waitUntil(() => frames.length > 0, 5000, "the 1 MiB message");
    expect(Buffer.from(frames[0] as Uint8Array).equals(big)).toBe(true);
    closeClients();
  }, 20_000);

  test("a master killed mid-stream: its channel stays inside each cluster, the others flow; back after a restart", async () => {
    const victim = 0;
    const [down, healthy] = [channels[victim]!, channels[1]!];
    const [b1, b2] = await oneOnEach(`${ws(b)}/ws?ch=${down}`);
    clients.push(b1.ws, b2.ws);
    const a1 = await sub(`${ws(a)}/ws?ch=${down}`);
    const [h1, h2] = [await sub(`${ws(b)}/ws?ch=${healthy}`), await sub(`${ws(a)}/ws?ch=${healthy}`)];
    await link(b1, [b2, a1]);
    await link(h1, [h2]);

    await redis.kill(victim);
    const unreachable = /redis \(sharded\): node 127\.0\.0\.1:\d+ is unreachable/;
    await Promise.all([a, b].map((s) => s.waitFor(unreachable, 5000)));
    // The master is away: B still delivers its own publishes on that channel to both its workers,
    // and the channels on the other masters still cross.
    const local = numbered("local", 50);
    for (const m of local) {
      b1.ws.send(m);
      h1.ws.send(m);
    }
    await Promise.all([b1, b2, h1, h2].map((c) => c.until(50)));
    for (const c of [b1, b2, h1, h2]) expect(c.got).toEqual(local);
    expect(a1.got).toEqual([]);

    await redis.restart(victim);
    const restarted = Date.now();
    for (const c of [a1, b1, b2]) c.got.length = 0;
    for (let i = 0; a1.got.length === 0 && Date.now() - restarted < 8000; i++) {
      b1.ws.send(`again ${i}`);
      await Bun.sleep(50);
    }
    expect(a1.got.length).toBeGreaterThan(0);
    expect(Date.now() - restarted).toBeLessThan(5000);
    await Promise.all([a, b].map((s) => s.waitFor(/redis \(sharded\): node 127\.0\.0\.1:\d+ is back after [\d.]+ s/, 5000)));
    for (const s of [a, b]) {
      expect(lines(s, unreachable)).toHaveLength(1);
      expect(lines(s, /is back after/)).toHaveLength(1);
      expect(lines(s, /redis \(sharded\): connection to .* lost/)).toHaveLength(0);
    }

    await Bun.sleep(200);
    for (const c of [a1, b1, b2]) c.got.length = 0;
    const after = numbered("after", 500);
    for (const m of after) b1.ws.send(m);
    await Promise.all([a1, b1, b2].map((c) => c.until(500)));
    await Bun.sleep(200);
    for (const c of [a1, b1, b2]) expect(c.got).toEqual(after);
    closeClients();
  }, 30_000);

  test("the whole Redis Cluster killed and restarted: one line each way, every channel subscribed again", async () => {
    const ch = channels[2]!;
    const [b1, b2] = await oneOnEach(`${ws(b)}/ws?ch=${ch}`);
    clients.push(b1.ws, b2.ws);
    const a1 = await sub(`${ws(a)}/ws?ch=${ch}`);
    await link(b1, [b2, a1]);

    await Promise.all([0, 1, 2].map((i) => redis.kill(i)));
    const lost = /redis \(sharded\): connection to redis:\/\/127\.0\.0\.1:\d+ lost/;
    await Promise.all([a, b].map((s) => s.waitFor(lost, 5000)));
    const local = numbered("local", 50);
    for (const m of local) b1.ws.send(m);
    await Promise.all([b1, b2].map((c) => c.until(50)));
    for (const c of [b1, b2]) expect(c.got).toEqual(local);

    await Promise.all([0, 1, 2].map((i) => redis.restart(i)));
    await redis.waitOk();
    const again = /redis \(sharded\): connected to redis:\/\/127\.0\.0\.1:\d+ again after [\d.]+ s; \d+ channels? subscribed again/;
    await Promise.all([a, b].map((s) => s.waitFor(again, 8000)));
    for (const c of [a1, b1, b2]) c.got.length = 0;
    await link(b1, [b2, a1]);
    for (const s of [a, b]) {
      expect(lines(s, lost)).toHaveLength(1);
      expect(lines(s, again)).toHaveLength(1);
    }
    const after = numbered("after", 500);
    for (const m of after) b1.ws.send(m);
    await Promise.all([a1, b1, b2].map((c) => c.until(500)));
    await Bun.sleep(200);
    for (const c of [a1, b1, b2]) expect(c.got).toEqual(after);
    // The Clusters that ended hold nothing: still at most two connections per node per cluster.
    await expectBoundedConnections(false);
    closeClients();
  }, 30_000);
});
