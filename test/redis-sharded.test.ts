// The sharded Redis engine (SPEC §5) against a real 3-master Redis Cluster started here: two iodine
// clusters (`-w 2 -r URL?sharded` each, test/fixtures/cluster-app.ts) share one pub/sub space
// through SSUBSCRIBE / SPUBLISH. Exactly-once in-order delivery across them and inside each (Redis's echo of a cluster's
// own publish is dropped) on channels that live on three different masters, one shard subscriber per
// cluster and channel, subscriptions following interest, patterns refused with one line and kept
// inside the cluster, at most two connections per node per cluster, `cmd` from a worker, raw payloads
// from any Redis client, a master killed and restarted mid-stream, and then the whole Redis Cluster.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  fixture,
  numbered,
  sharedByFile,
  startCli,
  stderrLines,
  waitUntil,
  ws,
  type CliProcess,
} from "./harness.ts";
import { skipRedisCluster, startRedisCluster } from "./redis-cluster.ts";
import { pubsubSuite, twoClustersSharded } from "./suites/pubsub.ts";
import { Clients, fenced, isProbe, linked, untilHeard, type WorkerClient } from "./ws.ts";

const APP = fixture("cluster-app.ts");
const skip = skipRedisCluster("test/redis-sharded.test.ts", "the sharded Redis engine test");

async function post(srv: CliProcess, channel: string, body: string): Promise<void> {
  const res = await fetch(`${srv.url}/publish?ch=${encodeURIComponent(channel)}`, {
    method: "POST",
    body,
  });
  expect(res.status).toBe(200);
}

/** Fences from each client (cluster-app publishes what a socket sends on its channel). */
const fencesFrom = (...clients: WorkerClient[]) =>
  clients.map((c) => ({ client: c, send: (t: string) => c.send(t) }));

const redis = sharedByFile(() => startRedisCluster(), { skip, timeout: 30_000 });

pubsubSuite(
  twoClustersSharded(
    () => redis().url,
    { fanOut: [{ subscribers: 4, messages: 2000 }], stream: 1000 },
    skip,
  ),
);

describe.skipIf(skip)("two clusters (-w 2) on a Redis Cluster (sharded pub/sub)", () => {
  let a: CliProcess;
  let b: CliProcess;
  /** channels[i] lives on master i */
  const channels: string[] = [];

  /** PUBSUB SHARDNUMSUB on node i */
  const shardSubs = async (i: number, channel: string) =>
    Number(
      ((await redis().admin[i]!.call("PUBSUB", "SHARDNUMSUB", channel)) as [string, number])[1],
    );
  /** Redis's counters change with no event to await: polled until node i's SHARDNUMSUB is n. */
  const settled = (i: number, channel: string, n: number) =>
    waitUntil(
      async () => (await shardSubs(i, channel)) === n,
      2000,
      `SHARDNUMSUB ${channel} = ${n} on node ${i}`,
    );

  /**
   * Every iodine connection on every node belongs to a master; per node and cluster, at most two of
   * them, one a shard subscriber where the cluster ever wanted a channel (`everywhere`: each did).
   */
  const expectBoundedConnections = async (everywhere: boolean) => {
    const pids = [a.proc.pid, b.proc.pid].map(String).sort();
    for (const node of redis().admin) {
      const names =
        ((await node.call("CLIENT", "LIST")) as string).match(/\bname=\S*iodine-sharded-\d+/g) ??
        [];
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
    for (let i = 0; channels.filter(Boolean).length < 3; i++)
      channels[await redis().ownerOf(`room-${i}`)] ??= `room-${i}`;
    const env = { REDIS_URL: undefined, IODINE_REDIS_URL: undefined };
    const start = () =>
      startCli(["-p", "0", "-w", "2", "-r", `${redis().url}?sharded`, APP], {
        env,
        timeout: 20_000,
      });
    [a, b] = await Promise.all([start(), start()]);
    await Promise.all(
      [a, b].map((s) =>
        s.waitFor(
          /redis \(sharded\): connected to the Redis Cluster at redis:\/\/127\.0\.0\.1:\d+ \(3 masters/,
        ),
      ),
    );
  }, 30_000);
  afterAll(async () => {
    await Promise.all([a, b].map((p) => p?.[Symbol.asyncDispose]()));
  });

  test("2,000 messages on each of 3 channels on 3 masters, published on B, reach A and B exactly once, in order", async () => {
    await using clients = new Clients();
    const groups: { a1: WorkerClient; b1: WorkerClient; b2: WorkerClient }[] = [];
    for (const ch of channels) {
      const [b1, b2] = await clients.oneOnEach(`${ws(b)}/ws?ch=${ch}`);
      const a1 = await clients.worker(`${ws(a)}/ws?ch=${ch}`);
      await linked(b1, [b2, a1]);
      groups.push({ a1, b1, b2 });
    }
    const expected = numbered("m", 2000);
    for (const m of expected) for (const g of groups) g.b1.send(m);
    for (const g of groups) {
      for (const c of [g.a1, g.b1, g.b2]) expect(await c.take(2000, 20_000)).toEqual(expected);
      expect(await fenced(fencesFrom(g.a1, g.b1, g.b2), [g.a1, g.b1, g.b2])).toEqual([[], [], []]);
    }
  }, 30_000);

  test("Redis holds one shard subscription per cluster on the owning master, exactly while the cluster wants it", async () => {
    const ch = channels[1]!;
    await settled(1, ch, 0); // the last test's clients are gone
    await using clients = new Clients();
    const [a1, a2] = await clients.oneOnEach(`${ws(a)}/ws?ch=${ch}`);
    const b1 = await clients.worker(`${ws(b)}/ws?ch=${ch}`);
    // Two clusters, two subscriptions, however many workers; the other masters have none.
    await settled(1, ch, 2);
    expect([await shardSubs(0, ch), await shardSubs(2, ch)]).toEqual([0, 0]);
    a1.close();
    await a1.closed;
    // A later channel in the same slot from a1's worker: once Redis has it, A's master has handled
    // the loss of interest that worker sent before it, and node 1 the commands before this one.
    const later = `{${ch}}later`;
    const next = await clients.onWorker(`${ws(a)}/ws?ch=${encodeURIComponent(later)}`, a1.pid);
    await settled(1, later, 1);
    expect(await shardSubs(1, ch)).toBe(2); // A's other worker still wants it
    next.close();
    a2.close();
    await settled(1, ch, 1);
    b1.close();
    await settled(1, ch, 0);
  }, 20_000);

  test("a pattern is refused with one clear line and still gets what its own cluster publishes", async () => {
    await using clients = new Clients();
    const pattern = await clients.worker(`${ws(a)}/ws?ch=news.*&match=redis`);
    const line =
      /redis \(sharded\): the pattern "news\.\*" is delivered inside this cluster only: Redis has no sharded pattern subscription/;
    await a.waitFor(line, 5000);
    await untilHeard((probe) => post(a, "news.sport", probe), [pattern]);
    await post(a, "news.sport", "inside");
    expect(await pattern.next()).toBe("inside");
    // Published on B: Redis cannot route it to a pattern (no shard subscription exists for it).
    await post(b, "news.sport", "from B");
    expect(await shardSubs(await redis().ownerOf("news.sport"), "news.sport")).toBe(0);
    await post(a, "news.tech", "inside again");
    expect(await pattern.next()).toBe("inside again");
    expect(await fenced([{ send: (t: string) => post(a, "news.sport", t) }], [pattern])).toEqual([
      [],
    ]);
    // Subscribed again: no second line. The master handles a worker's frames in order, so once a
    // channel subscribed after the pattern, from the same worker, reaches Redis, it has seen the pattern.
    const first = pattern.pid;
    pattern.close();
    await pattern.closed;
    await clients.onWorker(`${ws(a)}/ws?ch=news.*&match=redis`, first);
    // (A channel no test subscribed before: re-subscribing one soon after its last unsubscribe can
    // take the engine's 5 s retry.)
    const fresh = "after-the-pattern";
    await clients.onWorker(`${ws(a)}/ws?ch=${fresh}`, first);
    await settled(await redis().ownerOf(fresh), fresh, 1);
    expect(stderrLines(a, line)).toHaveLength(1);
    expect(stderrLines(b, line)).toHaveLength(0);
  }, 20_000);

  test("CLIENT LIST: at most two connections per node per cluster, all held by the masters", async () => {
    await expectBoundedConnections(true);
  });

  test("cmd runs a command from a worker through the master's cluster connection", async () => {
    const res = await fetch(`${a.url}/cmd`, {
      method: "POST",
      body: JSON.stringify(["CLUSTER", "INFO"]),
    });
    expect(res.status).toBe(200);
    expect(String(await res.json())).toContain("cluster_state:ok");
  });

  test("any Redis client's SPUBLISH reaches iodine subscribers, text as text and other bytes as a binary frame", async () => {
    const [ch, bin] = [channels[2]!, channels[0]!];
    await using clients = new Clients();
    const text = await clients.worker(`${ws(a)}/ws?ch=${ch}`);
    const binary = await clients.worker(`${ws(a)}/ws?ch=${bin}`);
    const admin = redis().admin;
    await untilHeard((probe) => admin[2]!.call("SPUBLISH", ch, probe), [text]);
    await untilHeard((probe) => admin[0]!.call("SPUBLISH", bin, probe), [binary]);
    await admin[2]!.call("SPUBLISH", ch, "héllo from redis-cli");
    const bytes = Buffer.from([0xff, 0x00, 0x80, 0x61, 0xc3]); // not UTF-8
    await admin[0]!.call("SPUBLISH", bin, bytes);
    expect(await text.next()).toBe("héllo from redis-cli");
    expect(await binary.next()).toEqual(new Uint8Array(bytes));
    const big = Buffer.alloc(1 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 255;
    await admin[0]!.call("SPUBLISH", bin, big);
    expect(Buffer.from((await binary.next()) as Uint8Array).equals(big)).toBe(true);
  }, 20_000);

  test("a master killed mid-stream: its channel stays inside each cluster, the others flow; back after a restart", async () => {
    const victim = 0;
    const [down, healthy] = [channels[victim]!, channels[1]!];
    await using clients = new Clients();
    const [b1, b2] = await clients.oneOnEach(`${ws(b)}/ws?ch=${down}`);
    const a1 = await clients.worker(`${ws(a)}/ws?ch=${down}`);
    const [h1, h2] = [
      await clients.worker(`${ws(b)}/ws?ch=${healthy}`),
      await clients.worker(`${ws(a)}/ws?ch=${healthy}`),
    ];
    await linked(b1, [b2, a1]);
    await linked(h1, [h2]);

    await redis().kill(victim);
    const unreachable = /redis \(sharded\): node 127\.0\.0\.1:\d+ is unreachable/;
    await Promise.all([a, b].map((s) => s.waitFor(unreachable, 5000)));
    // The master is away: B still delivers its own publishes on that channel to both its workers,
    // and the channels on the other masters still cross.
    const local = numbered("local", 50);
    for (const m of local) {
      b1.send(m);
      h1.send(m);
    }
    for (const c of [b1, b2, h1, h2]) expect(await c.take(50)).toEqual(local);

    await redis().restart(victim);
    const restarted = Date.now();
    await linked(b1, [a1]);
    expect(Date.now() - restarted).toBeLessThan(5000);
    // Nothing from the outage arrived late (probes sent before the first was heard may still be here).
    expect(a1.drain().filter((m) => !isProbe(m))).toEqual([]);
    await Promise.all(
      [a, b].map((s) =>
        s.waitFor(/redis \(sharded\): node 127\.0\.0\.1:\d+ is back after [\d.]+ s/, 5000),
      ),
    );
    for (const s of [a, b]) {
      expect(stderrLines(s, unreachable)).toHaveLength(1);
      expect(stderrLines(s, /is back after/)).toHaveLength(1);
      expect(stderrLines(s, /redis \(sharded\): connection to .* lost/)).toHaveLength(0);
    }

    const after = numbered("after", 500);
    for (const m of after) b1.send(m);
    for (const c of [a1, b1, b2]) expect(await c.take(500)).toEqual(after);
    expect(await fenced(fencesFrom(a1, b1, b2), [a1, b1, b2])).toEqual([[], [], []]);
  }, 30_000);

  test("the whole Redis Cluster killed and restarted: one line each way, every channel subscribed again", async () => {
    const ch = channels[2]!;
    await using clients = new Clients();
    const [b1, b2] = await clients.oneOnEach(`${ws(b)}/ws?ch=${ch}`);
    const a1 = await clients.worker(`${ws(a)}/ws?ch=${ch}`);
    await linked(b1, [b2, a1]);

    await Promise.all([0, 1, 2].map((i) => redis().kill(i)));
    const lost = /redis \(sharded\): connection to redis:\/\/127\.0\.0\.1:\d+ lost/;
    await Promise.all([a, b].map((s) => s.waitFor(lost, 5000)));
    const local = numbered("local", 50);
    for (const m of local) b1.send(m);
    for (const c of [b1, b2]) expect(await c.take(50)).toEqual(local);

    await Promise.all([0, 1, 2].map((i) => redis().restart(i)));
    await redis().waitOk();
    const again =
      /redis \(sharded\): connected to redis:\/\/127\.0\.0\.1:\d+ again after [\d.]+ s; \d+ channels? subscribed again/;
    await Promise.all([a, b].map((s) => s.waitFor(again, 8000)));
    await linked(b1, [b2, a1]);
    // Nothing from the outage arrived late (probes sent before the first was heard may still be here).
    expect(a1.drain().filter((m) => !isProbe(m))).toEqual([]);
    for (const s of [a, b]) {
      expect(stderrLines(s, lost)).toHaveLength(1);
      expect(stderrLines(s, again)).toHaveLength(1);
    }
    const after = numbered("after", 500);
    for (const m of after) b1.send(m);
    for (const c of [a1, b1, b2]) expect(await c.take(500)).toEqual(after);
    expect(await fenced(fencesFrom(a1, b1, b2), [a1, b1, b2])).toEqual([[], [], []]);
    // The Clusters that ended hold nothing: still at most two connections per node per cluster.
    await expectBoundedConnections(false);
  }, 30_000);
});
