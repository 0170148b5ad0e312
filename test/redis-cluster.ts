// A throw-away Redis Cluster for the tests: 3 masters, no replicas, on 127.0.0.1. Each node is a
// redis-server child of this process; dispose it (`await using` or afterAll) and they are killed and
// their directory removed. Without redis-server 7+ (sharded pub/sub) the tests that need it say so
// loudly and skip; under CI=true they run, so a missing server fails there.
import type { Subprocess } from "bun";
import IORedis from "ioredis";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { portIsFree, skipWithout } from "./harness.ts";
import { hasRedis } from "./redis-server.ts";

const HOST = "127.0.0.1";
/** The slot ranges `redis-cli --cluster create` gives three masters. */
const RANGES = [
  [0, 5460],
  [5461, 10922],
  [10923, 16383],
] as const;

/** redis-server 7 or later (SSUBSCRIBE, SPUBLISH, ADDSLOTSRANGE). */
export const hasRedisCluster =
  hasRedis &&
  Number(
    /v=(\d+)/.exec(Bun.spawnSync(["redis-server", "--version"]).stdout.toString())?.[1] ?? 0,
  ) >= 7;

/** describe.skipIf(skipRedisCluster(...)) */
export const skipRedisCluster = (file: string, what: string): boolean =>
  skipWithout("redis-server 7+", hasRedisCluster, file, what);

export interface RedisClusterOptions {
  /**
   * "manual" (the default) forms the cluster with SET-CONFIG-EPOCH, ADDSLOTSRANGE and MEET, then polls
   * every 25 ms: ~2.0 s, the floor, since a master reports cluster_state:ok only 2 s after it started.
   * "redis-cli" runs `redis-cli --cluster create`, which polls once a second (2–5 s here).
   */
  create?: "manual" | "redis-cli";
  /** cluster-node-timeout, ms (Redis's default is 15000) */
  nodeTimeout?: number;
}

export interface RedisCluster extends AsyncDisposable {
  /** the masters' ports; node i serves RANGES[i] */
  readonly ports: number[];
  /** `redis://127.0.0.1:<ports[0]>`: one node, as a user would give it */
  readonly url: string;
  /** a plain (non-cluster) connection to each node, named "test-admin", reconnecting by itself */
  readonly admin: IORedis[];
  readonly startupMs: number;
  /** the index of the node that owns the channel's (or key's) slot */
  ownerOf(channel: string): Promise<number>;
  /** SIGKILL node i; its nodes.conf stays, so `restart(i)` rejoins with the same id and slots */
  kill(i: number): Promise<void>;
  restart(i: number): Promise<void>;
  /** resolves once every running node reports cluster_state:ok and knows 3 nodes */
  waitOk(ms?: number): Promise<void>;
}

/** Starts a 3-master cluster on free ports (P and P + 10000, the cluster bus, both free). */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const started = performance.now();
  const dir = mkdtempSync(join(tmpdir(), "iodine-redis-cluster-"));
  const ports = pickPorts(3);
  const procs: (Subprocess | undefined)[] = [];
  // Commands wait (offline queue) while a node is starting or restarting; poll() bounds the wait.
  const admin = ports.map((port) => {
    const c = new IORedis(port, HOST, {
      connectionName: "test-admin",
      lazyConnect: true,
      retryStrategy: () => 25,
      maxRetriesPerRequest: null,
    });
    c.on("error", () => {});
    return c;
  });
  const spawn = (i: number) => {
    const port = String(ports[i]);
    procs[i] = Bun.spawn(
      [
        "redis-server",
        "--port",
        port,
        "--bind",
        HOST,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        `nodes-${port}.conf`,
        "--dir",
        dir,
        "--logfile",
        `redis-${port}.log`,
        "--save",
        "",
        "--appendonly",
        "no",
        ...(options.nodeTimeout ? ["--cluster-node-timeout", String(options.nodeTimeout)] : []),
      ],
      { cwd: dir, stdin: "ignore", stdout: "ignore", stderr: "ignore" },
    );
  };
  const kill = async (i: number) => {
    const p = procs[i];
    procs[i] = undefined;
    p?.kill("SIGKILL");
    await p?.exited;
  };
  const dispose = async () => {
    for (const c of admin) c.disconnect();
    await Promise.all(procs.map((_, i) => kill(i)));
    rmSync(dir, { recursive: true, force: true });
  };
  const logs = () =>
    ports.map((p) => `--- redis-${p}.log\n${readLog(join(dir, `redis-${p}.log`))}`).join("\n");
  const clusterOk = async (i: number) => {
    const info = String(await admin[i]!.cluster("INFO"));
    return info.includes("cluster_state:ok") && /cluster_known_nodes:3\b/.test(info);
  };
  const waitOk = async (ms = 15_000) => {
    await poll(`cluster_state:ok on every node`, ms, async () =>
      (await Promise.all(ports.map((_, i) => procs[i] === undefined || clusterOk(i)))).every(
        Boolean,
      ),
    );
  };

  try {
    ports.forEach((_, i) => spawn(i));
    for (const c of admin) c.connect().catch(() => {});
    await poll("PING on every node", 5000, async () =>
      (await Promise.all(admin.map((c) => c.ping()))).every((r) => r === "PONG"),
    );
    if ((options.create ?? "manual") === "manual") {
      // The epochs while each node knows only itself, then a full mesh of MEETs (with a star the two
      // others find each other through gossip, 1–2 s later in one run out of three).
      await Promise.all(admin.map((c, i) => c.cluster("SET-CONFIG-EPOCH", i + 1)));
      await Promise.all(
        admin.map((c, i) => c.call("CLUSTER", "ADDSLOTSRANGE", RANGES[i]![0], RANGES[i]![1])),
      );
      for (let i = 0; i < 3; i++)
        for (let j = i + 1; j < 3; j++) await admin[i]!.cluster("MEET", HOST, ports[j]!);
    } else {
      const cli = Bun.spawn(
        [
          "redis-cli",
          "--cluster",
          "create",
          ...ports.map((p) => `${HOST}:${p}`),
          "--cluster-replicas",
          "0",
          "--cluster-yes",
        ],
        {
          stdin: "ignore",
          stdout: "pipe",
          stderr: "pipe",
        },
      );
      const [out, err] = await Promise.all([
        new Response(cli.stdout).text(),
        new Response(cli.stderr).text(),
      ]);
      if (!out.includes("All 16384 slots covered"))
        throw new Error(`redis-cli --cluster create failed:\n${out}${err}`);
    }
    await waitOk();
  } catch (err) {
    const detail = logs();
    await dispose();
    throw new Error(`the Redis Cluster did not start: ${(err as Error).message}\n${detail}`);
  }

  return {
    ports,
    url: `redis://${HOST}:${ports[0]}`,
    admin,
    startupMs: performance.now() - started,
    async ownerOf(channel) {
      const running = admin[procs.findIndex((p) => p !== undefined)];
      if (running === undefined) throw new Error("no node is running");
      const slot = Number(await running.cluster("KEYSLOT", channel));
      return RANGES.findIndex(([lo, hi]) => slot >= lo && slot <= hi);
    },
    kill,
    async restart(i) {
      if (procs[i] !== undefined) throw new Error(`node ${i} is running`);
      spawn(i);
      await poll(`PING on node ${i}`, 5000, async () => (await admin[i]!.ping()) === "PONG");
    },
    waitOk,
    [Symbol.asyncDispose]: dispose,
  };
}

// --- internal ---

/**
 * n ports P with P + 10000 (the cluster bus) free too, from 12000–21999: the bus ports then sit below
 * Linux's ephemeral range (32768+), so no outgoing socket can take one meanwhile.
 */
function pickPorts(n: number): number[] {
  const out: number[] = [];
  for (let attempt = 0; attempt < 1000 && out.length < n; attempt++) {
    const port = 12_000 + Math.floor(Math.random() * 10_000);
    if (!out.includes(port) && portIsFree(port) && portIsFree(port + 10_000)) out.push(port);
  }
  if (out.length < n) throw new Error("no free ports for a Redis Cluster");
  return out;
}

async function poll(what: string, ms: number, ok: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  let last = "";
  for (;;) {
    let timer: Timer | undefined;
    try {
      const timeout = new Promise<never>(
        (_, reject) =>
          (timer = setTimeout(() => reject(new Error("no answer")), Math.max(end - Date.now(), 0))),
      );
      if (await Promise.race([ok(), timeout])) return;
    } catch (err) {
      last = `: ${(err as Error).message}`;
    } finally {
      clearTimeout(timer);
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last}`);
    await Bun.sleep(25);
  }
}

function readLog(path: string): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-20).join("\n");
  } catch {
    return "(none)";
  }
}
