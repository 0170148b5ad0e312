// History kept in Redis (src/pubsub/redis-history.ts) against ordinary Redis publishes, through the
// same engine, on this machine; and what Redis spends per retained message.
//
// Run:   bun bench/redis-history.ts                       (~40 s on 2 cores)
//        bun bench/redis-history.ts --rounds 7 --messages 200000 --size 64
//        bun bench/redis-history.ts --only engine            (or --only clusters)
// Out:   a table on stdout, and every round in bench/results/redis-history.json (its `ratios`: history
//        msg/s ÷ ordinary msg/s; its `absolutes`: Redis bytes per retained message, 16 B and 64 B).
//
// The rig: a redis-server the bench starts on a free port (`--save '' --appendonly no`), and in this
// process two Redis engines as two clusters' masters hold them: A publishes, B is subscribed to the
// channels and counts what it is handed (`deliverBytes` for the ordinary channel, `deliverAt` with a
// position for the history ones). A round publishes N messages of --size bytes, 1,000 per turn of the
// event loop, as a master's hub hands them over: ordinary ones with the engine's byte path (what the
// hub calls for a worker's publish), history ones through a Keeper (keeper.ts, what the hub calls for
// a history channel: it appends them to Redis). msg/s = N ÷ (first publish → B's N-th delivery). The
// sides alternate, the order rotating round by round; medians, and their ratio (target ≥ 0.5). A
// third side, spread, publishes history round-robin over 1,000 channels: each message is a run of
// its own in the script, the worst case (no target).
// Clusters (bench/redis-history-clusters.ts): the same comparison end to end, as an app sees it,
// between two `-w 2` clusters on the bench's Redis.
// Memory: INFO's used_memory before and after appending N messages of 16 and then 64 bytes to a
// channel that keeps N, ÷ N (its lists and hash; Redis's allocator included); then 64 bytes as text
// and binary in turn, so each message is a run of its own (the worst case of the run list).
import IORedis from "ioredis";
import { HISTORY_API, PUBLISH_BYTES, type EngineHost } from "../src/pubsub/engine-api.ts";
import { declareHistory } from "../src/pubsub/history.ts";
import { Keeper } from "../src/pubsub/keeper.ts";
import { RedisEngine } from "../src/pubsub/redis.ts";
import { requireTool, versionLine } from "./lib/tools.ts";
import { freePort, startServer, stopServer, type Server } from "./lib/processes.ts";
import { machineFacts, printMachine } from "./lib/machine.ts";
import {
  absoluteEntry,
  fmtRatio,
  fmtRps,
  inRounds,
  median,
  ratioEntry,
  type Ratio,
} from "./lib/stats.ts";
import { clustersPhase } from "./redis-history-clusters.ts";
import { parseFlags, positive, runBench, writeResults } from "./lib/run.ts";

const USAGE = `bun bench/redis-history.ts [--rounds 5] [--messages 100000] [--size 64] [--memory-messages 100000] [--only engine|clusters]`;
const flags = parseFlags(USAGE, ["rounds", "messages", "size", "memory-messages", "only"]);
const ONLY = flags.only;
if (ONLY !== undefined && ONLY !== "engine" && ONLY !== "clusters") {
  console.error(`bench: --only must be engine or clusters, got ${JSON.stringify(ONLY)}`);
  process.exit(2);
}
const ROUNDS = positive(flags.rounds ?? "5", "rounds", true);
const N = positive(flags.messages ?? "100000", "messages", true);
const SIZE = positive(flags.size ?? "64", "size", true);
const MEMORY_N = positive(flags["memory-messages"] ?? "100000", "memory-messages", true);
const PER_TURN = 1000;
const TARGET = 0.5;
const CHANNEL = { plain: "bench:plain", history: "bench:h:1", spread: "bench:h:s" } as const;
type Side = keyof typeof CHANNEL;
/** spread: history publishes round-robin over SPREAD channels, so each is a run of its own */
const SIDES: readonly Side[] = ["plain", "history", "spread"];
const SPREAD = 1000;
const spreadChannels = Array.from({ length: SPREAD }, (_, i) => `${CHANNEL.spread}${i}`);

let redis: Server | undefined;
let admin: IORedis | undefined;
const engines: RedisEngine[] = [];
let keeper: Keeper | undefined;
let memoryEngine: RedisEngine | undefined;
const servers: Server[] = [];

/** What B was handed, by side; `wake` runs on every delivery while a round waits. */
const got = { plain: 0, history: 0, spread: 0, positions: 0, lastOffset: 0 };
let wake: (() => void) | undefined;

const host: EngineHost = {
  deliver: () => {},
  deliverBytes: () => {
    got.plain++;
    wake?.();
  },
  deliverAt: (channel, _bytes, _text, position) => {
    if (channel.startsWith(CHANNEL.spread)) {
      got.spread++;
      return wake?.();
    }
    got.history++;
    if (position.offset === got.lastOffset + 1) got.positions++;
    got.lastOffset = position.offset;
    wake?.();
  },
};

async function main(): Promise<void> {
  const redisServer = requireTool("redis-server", "redis-server");
  const facts = machineFacts();
  printMachine(facts, `redis-server: ${await versionLine([redisServer, "--version"])}`);
  const port = freePort();
  redis = await startServer(
    "redis-server",
    [redisServer, "--port", String(port), "--bind", "127.0.0.1", "--save", ""],
    { port },
  );
  admin = new IORedis(port, "127.0.0.1", { retryStrategy: () => 50 });
  admin.on("error", () => {});
  await admin.ping();
  const url = `redis://127.0.0.1:${port}`;
  console.log(
    `\n${N.toLocaleString("en-US")} messages of ${SIZE} B per round, ${PER_TURN} per turn, ${ROUNDS} rounds`,
  );
  const results: Record<string, unknown> = {
    machine: facts,
    settings: { rounds: ROUNDS, messages: N, size: SIZE, perTurn: PER_TURN, spread: SPREAD },
  };
  const ratios: Ratio[] = [];
  if (ONLY !== "clusters") {
    console.log(`\nengine: appends through a Keeper vs the engine's byte path, A → Redis → B\n`);
    const runs = await enginePhase(url);
    console.log("");
    ratios.push(ratioOf("engine", runs), ratioOf("engine", runs, "spread"));
    const memory = [];
    for (const bytes of [16, 64]) memory.push(await memoryPer(bytes));
    memory.push(await memoryPer(64, true));
    for (const m of memory)
      console.log(
        `Redis memory per retained message, ${m.payload} B payload${m.runPerMessage ? ", a run per message" : ""}: ${m.perMessage.toFixed(1)} B ` +
          `(used_memory +${m.delta.toLocaleString("en-US")} B for ${MEMORY_N.toLocaleString("en-US")}; MEMORY USAGE of the lists ${m.listBytes.toLocaleString("en-US")} B)`,
      );
    results.engine = runs;
    results.memory = memory;
    results.absolutes = memory.map((m) =>
      absoluteEntry(
        "redis-history",
        `Redis bytes per retained message (${m.payload} B${m.runPerMessage ? ", a run each" : ""})`,
        [m.perMessage],
        "B",
        { better: "lower", detail: `used_memory delta ÷ ${MEMORY_N} messages` },
      ),
    );
  }
  if (ONLY !== "engine") {
    console.log(`\nclusters: two -w 2 clusters, B's worker publishes, a WebSocket on A counts\n`);
    const runs = await clustersPhase(url, redis.proc.pid, {
      rounds: ROUNDS,
      messages: N,
      size: SIZE,
      servers,
    });
    console.log("");
    ratios.push(ratioOf("clusters", runs));
    results.clusters = runs;
  }
  results.ratios = ratios;
  console.log(`\nresults: ${writeResults("redis-history", results)}`);
}

/** The ratio of medians of a phase's rounds (history, or spread, ÷ plain), printed. */
function ratioOf(
  phase: string,
  runs: { side: string; rate: number }[],
  side: "history" | "spread" = "history",
): Ratio {
  const rates = (s: string) => runs.filter((x) => x.side === s).map((x) => x.rate);
  const [ours, plain] = [rates(side), rates("plain")];
  const what = side === "spread" ? `history over ${SPREAD} channels` : "history";
  const ratio = ratioEntry(
    "redis-history",
    `${what} ÷ ordinary publishes through Redis (${phase})`,
    ours,
    plain,
    {
      // the headline is one busy channel; spread is the worst case, a script run per message
      ...(side === "history" ? { target: TARGET } : {}),
      detail: `${fmtRps(median(ours))} vs ${fmtRps(median(plain))} msg/s, ${SIZE} B`,
    },
  );
  console.log(
    `${phase}: median msg/s   ordinary ${fmtRps(median(plain))}   ${what} ${fmtRps(median(ours))}   ` +
      `ratio ${fmtRatio(ratio.ratio)} (rounds ${fmtRatio(ratio.min)} … ${fmtRatio(ratio.max)}` +
      `${side === "history" ? `; target ≥ ${TARGET}` : ""})`,
  );
  return ratio;
}

/** Engines A and B in this process; the rounds. */
async function enginePhase(url: string) {
  declareHistory("bench:h:*", { match: "redis", size: 1000 });
  const a = new RedisEngine(url);
  const b = new RedisEngine(url);
  engines.push(a, b);
  a.open({ deliver: () => {}, deliverBytes: () => {}, deliverAt: () => {} } as EngineHost);
  b.open(host);
  const history = a[HISTORY_API];
  while (!history.available || !b[HISTORY_API].available) await Bun.sleep(20);
  await b.subscribe(CHANNEL.plain);
  await b.subscribe(CHANNEL.history);
  await b.psubscribe(`${CHANNEL.spread}*`);
  let keptHere = 0;
  keeper = new Keeper(() => void keptHere++);
  keeper.useEngine(history);
  const payload = new Uint8Array(SIZE).fill(120);
  // A warm-up round of each side (scripts loaded, JIT warm) that does not count.
  for (const side of SIDES) await round(a, side, payload, Math.min(N, 20_000));
  const runs = await inRounds(ROUNDS, SIDES, async (side, r) => {
    const rate = await round(a, side, payload, N);
    console.log(
      `round ${r + 1}  ${side.padEnd(8)} ${fmtRps(rate).padStart(10)} msg/s   CPU per message: redis-server ${cpu.redisUs.toFixed(2)} µs, engines ${cpu.benchUs.toFixed(2)} µs`,
    );
    return { side, rate, ...cpu };
  });
  if (keptHere > 0) console.log(`!! ${keptHere} history publishes were kept outside Redis`);
  memoryEngine = a;
  return runs;
}

/** One round: N messages from A, 1,000 a turn; resolves to msg/s once B has them all. */
async function round(a: RedisEngine, side: Side, payload: Uint8Array, n: number): Promise<number> {
  got.plain = got.history = got.spread = got.positions = 0;
  got.lastOffset = -1;
  const channel = CHANNEL[side];
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${side}: ${got[side]} of ${n} delivered after 60 s`)),
      60_000,
    );
    wake = () => {
      if (got[side] < n) return;
      clearTimeout(timer);
      resolve();
    };
  });
  const redisCpu = await cpuOfRedis();
  const ownCpu = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < n;) {
    const end = Math.min(n, i + PER_TURN);
    if (side === "plain") for (; i < end; i++) a[PUBLISH_BYTES](channel, payload);
    else if (side === "history")
      for (; i < end; i++) keeper!.publish(channel, payload, true, false);
    else for (; i < end; i++) keeper!.publish(spreadChannels[i % SPREAD]!, payload, true, false);
    await new Promise((r) => setImmediate(r));
  }
  await done;
  const seconds = (performance.now() - started) / 1000;
  wake = undefined;
  const own = process.cpuUsage(ownCpu);
  cpu = {
    redisUs: ((await cpuOfRedis()) - redisCpu) / n,
    benchUs: (own.user + own.system) / n,
  };
  // Positions of a history round follow each other (the first one starts where the last round ended).
  if (side === "history" && got.positions < n - 1)
    throw new Error(`history: only ${got.positions} of ${n} positions in sequence`);
  if (got[side] !== n) throw new Error(`${side}: ${got[side]} delivered, not ${n}`);
  return n / seconds;
}

/** CPU per message of the last round, µs: redis-server's, this process's (both engines). */
let cpu = { redisUs: 0, benchUs: 0 };

/** redis-server's CPU so far, µs (INFO cpu). */
async function cpuOfRedis(): Promise<number> {
  const info = await admin!.info("cpu");
  const f = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)![1]);
  return (f("used_cpu_user") + f("used_cpu_sys")) * 1e6;
}

/**
 * Redis's used_memory per message retained by a channel that keeps MEMORY_N of `bytes` each: runs
 * of up to 256 messages per script call, or (`alternate`: text and binary in turn) a run per message.
 */
async function memoryPer(bytes: number, alternate = false) {
  const channels = [`bench:mem:${bytes}`];
  const keys = channels.flatMap((c) => [
    `iodine:hist:${c}`,
    `iodine:hrun:${c}`,
    `iodine:hseq:${c}`,
  ]);
  const history = memoryEngine![HISTORY_API];
  const payload = new Uint8Array(bytes).fill(121);
  const used = async () => Number(/used_memory:(\d+)/.exec(await admin!.info("memory"))![1]);
  await admin!.del(...keys);
  const before = await used();
  for (let i = 0; i < MEMORY_N; i += PER_TURN) {
    const batch = [];
    for (let k = i; k < Math.min(MEMORY_N, i + PER_TURN); k++)
      batch.push(
        history.append(channels[0]!, payload, !alternate || k % 2 === 0, MEMORY_N, 3_600_000),
      );
    await Promise.all(batch);
  }
  const delta = (await used()) - before;
  let listBytes = 0;
  for (const key of keys.filter((k) => !k.includes(":hseq:")))
    listBytes += Number(await admin!.call("MEMORY", "USAGE", key, "SAMPLES", "0"));
  await admin!.del(...keys);
  return {
    payload: bytes,
    runPerMessage: alternate,
    delta,
    perMessage: delta / MEMORY_N,
    listBytes,
  };
}

await runBench(main, {
  stopping: "redis-server, the clusters and the engines",
  deadlineMs: 300_000,
  cleanup: async () => {
    keeper?.stop();
    for (const e of engines) await e.close();
    admin?.disconnect();
    for (const s of servers) await stopServer(s);
    if (redis) await stopServer(redis);
  },
});
