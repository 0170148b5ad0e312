// The history phase of bench/pubsub.ts (SPEC §5, issue 19): what publishing on a history channel
// costs next to an ordinary channel, in one `-w 2` cluster and in one `-w 2` cluster on Redis, and
// what a retained message costs in memory.
//
// Run:   bun bench/pubsub.ts --only history               (this phase alone, ~45 s on 2 cores)
//        bun bench/pubsub.ts --only history --rounds 3 --size 256
//
// The rigs, one after the other:
//   cluster   `iodine -w 2 bench/history-app.ts`
//   redis     `iodine -w 2 -r redis://127.0.0.1:PORT bench/history-app.ts`, on a redis-server the bench
//             starts (no persistence); without redis-server its rows are skipped, and said so.
// In each, one bench/pubsub-client.ts process holds SUBSCRIBERS WebSockets (raw sockets counting
// frames), which the kernel spreads over the two workers; each subscribes without a callback to
// "bench" (ordinary) and "h:bench" (a history channel keeping the last 1,000 messages), so one set
// of sockets serves both sides.
//   throughput  POST /burst?n=N&size=S&channel=C: N publishes of S bytes in a tight loop in the
//               handler of the worker that took the request. A round is timed from the request to the
//               last of the K × N deliveries at the client: delivery throughput, what subscribers feel
//               (the worker's publish loop, printed, is not what limits it). Rounds alternate the
//               channels, the order rotating; the ratio is history ÷ ordinary of the median rounds;
//               bursts are sized for --seconds on the faster channel. Targets: ≥ 0.7 in the cluster,
//               ≥ 0.5 on Redis. The two paths differ in where the work runs:
//                 ordinary  the publishing worker writes to its own sockets inside the loop, then its
//                           bus frames reach the master and the other worker (and Redis, with -r);
//                 history   the loop only frames each message to the master, which sequences it (its
//                           own store, or Redis once the Redis engine keeps history) and sends it with
//                           its position to both workers, which then write to their sockets at once.
//               So on 2 cores a history burst can finish sooner than an ordinary one; the cluster's CPU
//               per publish (master and workers, from /proc) is printed next to it and says what it costs.
//   memory      on channels keeping M messages each (`m:*`), POST /fill publishes C × M messages of
//               16 B, then of 64 B, on channels not used before, three times; the master's RSS (and on
//               Redis INFO memory's used_memory) is read after a full GC in the master before and
//               after each fill: growth ÷ messages retained, median and range over the fills. The master's
//               JS heap (bun:jsc heapSize after its full GC) is given too: RSS moves in the allocator's
//               steps, the heap by what is live.
//   churn       then, with all that held, 200,000 more publishes on one channel that keeps 1,000: the
//               master's JS heap should not grow (the history is bounded by size × channels).
// The results' shapes, the printed lines and the entries for bench/report.ts: pubsub-history-report.ts.
import { findTool, missingTool, ROOT } from "./lib/tools.ts";
import {
  assertAlive,
  iodineCmd,
  LoadClient,
  startServer,
  stopServer,
  type Server,
} from "./lib/processes.ts";
import { cpuSeconds, cpuTicks, rssBytes } from "./lib/machine.ts";
import { fmtRps, inRounds, median, spread } from "./lib/stats.ts";
import { startRedis, usedMemory, type RedisRig } from "./lib/redis-server.ts";
import {
  absolutesOf,
  mb,
  perMessage,
  ratioOf,
  runNote,
  signedMb,
  type AppStats,
  type BurstAnswer,
  type Churn,
  type Fill,
  type HistoryResults,
  type Kind,
  type MemoryRow,
  type Part,
  type RigName,
  type Row,
  type Run,
} from "./pubsub-history-report.ts";

const SUBSCRIBERS = 100;
const MEMORY_CHANNELS = 200;
const MEMORY_BYTES = [16, 64] as const;
/** fills of each message size (each MEMORY_CHANNELS × the app's MEMORY_SIZE messages more) */
const MEMORY_ROUNDS = 3;
/** publishes on one more history channel (h:*, keeping 1,000) once the fills are held */
const CHURN = 200_000;
const CHANNEL: Record<Kind, string> = { ordinary: "bench", history: "h:bench" };
const KINDS: readonly Kind[] = ["ordinary", "history"];

export interface HistoryPhaseOptions {
  rounds: number;
  /** message size of the throughput bursts, bytes */
  size: number;
  /** a burst is sized for this many seconds on the faster channel */
  seconds: number;
  /** what the bench's cleanup stops (also on Ctrl-C) */
  servers: Server[];
  clients: LoadClient[];
}

/** Both rigs in turn; the report's lines, and everything measured for bench/results/pubsub.json. */
export async function historyPhase(o: HistoryPhaseOptions): Promise<HistoryResults> {
  const parts: Part[] = [await measureRig(o, "cluster")];
  const notes: string[] = [];
  const redisServer = findTool("redis-server");
  if (redisServer === null) {
    notes.push(`${missingTool("redis-server", "redis-server")}: the Redis rows are skipped`);
    console.log(`  !! ${notes[0]}`);
  } else {
    const redis = await startRedis(redisServer, (s) => o.servers.push(s));
    try {
      parts.push(await measureRig(o, "redis", redis));
    } finally {
      redis.admin.disconnect();
      await stopServer(redis.server);
    }
  }
  return {
    parts,
    notes,
    ratios: parts.map((p) => ratioOf(p, o.size)),
    absolutes: parts.flatMap(absolutesOf),
  };
}

async function measureRig(o: HistoryPhaseOptions, rig: RigName, redis?: RedisRig): Promise<Part> {
  const args = ["-w", "2", ...(redis ? ["-r", redis.url] : []), "bench/history-app.ts"];
  const server = await startServer(`iodine ${args.join(" ")}`, iodineCmd(...args), { cwd: ROOT });
  o.servers.push(server);
  const client = new LoadClient("pubsub-client.ts", `history ${rig} client`);
  o.clients.push(client);
  try {
    const stats = await subscribeAll(server, client);
    const command = `iodine ${args.join(" ")}`.replace(/redis:\/\/\S+/, "redis://127.0.0.1:PORT");
    console.log(
      `  history ${rig}: ${command}, master pid ${server.proc.pid}; ${SUBSCRIBERS} WebSockets on "${CHANNEL.ordinary}" and "${CHANNEL.history}" (history size ${stats.size})`,
    );
    const { n, rows } = await throughput(o, rig, server, client, redis);
    const memory = await memoryOf(rig, server, stats.memorySize, redis);
    const churn = await churnOf(rig, server);
    const keptIn = redis && (await redis.admin.dbsize()) > 0 ? "Redis" : "the master";
    console.log(`  history ${rig}: the history was kept in ${keptIn}`);
    return {
      rig,
      command,
      keptIn,
      subscribers: SUBSCRIBERS,
      historySize: stats.size,
      messagesPerBurst: n,
      rows,
      memory,
      churn,
    };
  } finally {
    await client.stop();
    await stopServer(server);
  }
}

/** Opens the WebSockets and waits until the cluster counts each on both channels (Iodine.presence). */
async function subscribeAll(server: Server, client: LoadClient): Promise<AppStats> {
  const r = await client.send<{ live: number; failed: number }>({
    op: "ws",
    n: SUBSCRIBERS,
    port: server.port,
  });
  if (r.live !== SUBSCRIBERS)
    throw new Error(
      `${server.name}: only ${r.live} of ${SUBSCRIBERS} WebSockets opened (${r.failed} failed)`,
    );
  const deadline = Date.now() + 15_000;
  for (;;) {
    assertAlive(server);
    const stats = (await (await fetch(`${server.url}/stats`)).json()) as AppStats;
    if (stats.plain === SUBSCRIBERS && stats.history === SUBSCRIBERS) return stats;
    if (Date.now() > deadline)
      throw new Error(
        `${server.name}: the cluster counts ${stats.plain} and ${stats.history} subscriptions, the client ${SUBSCRIBERS}`,
      );
    await Bun.sleep(50);
  }
}

/** A warm-up burst per channel sizes N; then alternating rounds. */
async function throughput(
  o: HistoryPhaseOptions,
  rig: RigName,
  server: Server,
  client: LoadClient,
  redis: RedisRig | undefined,
): Promise<{ n: number; rows: Row[] }> {
  const tag = `history ${rig}`.padEnd(15);
  let fastest = 0;
  for (const kind of KINDS) {
    const r = await burst(server, client, redis, kind, Math.round(200_000 / SUBSCRIBERS), o.size);
    fastest = Math.max(fastest, r.rate);
    console.log(
      `  ${tag} warm-up  ${kind.padEnd(9)}${fmtRps(r.rate).padStart(11)} deliveries/s${runNote(r)}`,
    );
  }
  const n = Math.min(100_000, Math.max(1, Math.round((fastest * o.seconds) / SUBSCRIBERS)));
  const runs: Record<Kind, Run[]> = { ordinary: [], history: [] };
  await inRounds(o.rounds, KINDS, async (kind, round) => {
    const r = await burst(server, client, redis, kind, n, o.size);
    runs[kind].push(r);
    console.log(
      `  ${tag} round ${round + 1}  ${kind.padEnd(9)}${fmtRps(r.rate).padStart(11)} deliveries/s  ${r.seconds.toFixed(2)} s  ` +
        `publish loop ${r.publishMs.toFixed(0)} ms  ${r.clusterCpuUs.toFixed(1)} µs cluster CPU/publish${redis ? `, redis ${r.redisCpuUs.toFixed(1)}` : ""}${runNote(r)}`,
    );
  });
  const rows = KINDS.map((kind): Row => ({
    kind,
    rounds: runs[kind],
    ...spread(runs[kind].map((r) => r.rate)),
    clusterCpuUs: median(runs[kind].map((r) => r.clusterCpuUs)),
    redisCpuUs: median(runs[kind].map((r) => r.redisCpuUs)),
  }));
  return { n, rows };
}

async function burst(
  server: Server,
  client: LoadClient,
  redis: RedisRig | undefined,
  kind: Kind,
  n: number,
  size: number,
): Promise<Run> {
  assertAlive(server);
  // the master's ticks with its workers'
  const cluster0 = cpuTicks(server.proc.pid);
  const redis0 = redis ? cpuTicks(redis.server.proc.pid) : 0;
  const r = await client.send<BurstAnswer>({
    op: "burst",
    n,
    size,
    port: server.port,
    channel: CHANNEL[kind],
  });
  const perPublish = (ticks: number) => (cpuSeconds(ticks) * 1e6) / n;
  return {
    ...r,
    rate: r.received / r.seconds,
    clusterCpuUs: perPublish(cpuTicks(server.proc.pid) - cluster0),
    redisCpuUs: redis ? perPublish(cpuTicks(redis.server.proc.pid) - redis0) : 0,
  };
}

/**
 * The master's RSS (and Redis's used_memory) before and after each fill, each read after a full GC in
 * the master; MEMORY_ROUNDS fills of each size, the sizes alternating.
 */
async function memoryOf(
  rig: RigName,
  server: Server,
  perChannel: number,
  redis: RedisRig | undefined,
): Promise<MemoryRow[]> {
  const messages = MEMORY_CHANNELS * perChannel;
  const read = async (heap: number) => ({
    heap,
    rss: await settledRss(server),
    used: redis ? await usedMemory(redis.admin) : undefined,
  });
  let before = await read((await post(server, "/gc")).heap);
  const fills: Fill[] = [];
  for (let round = 0; round < MEMORY_ROUNDS; round++) {
    for (const bytes of MEMORY_BYTES) {
      const t0 = performance.now();
      const prefix = `m:${bytes}:${round}:`;
      const { heap } = await post(
        server,
        `/fill?prefix=${prefix}&channels=${MEMORY_CHANNELS}&per=${perChannel}&size=${bytes}`,
      );
      const seconds = (performance.now() - t0) / 1000;
      const after = await read(heap);
      const f: Fill = {
        messageBytes: bytes,
        messages,
        seconds,
        rssBefore: before.rss,
        rssAfter: after.rss,
        rssPerMessage: (after.rss - before.rss) / messages,
        heapPerMessage: (after.heap - before.heap) / messages,
      };
      if (before.used !== undefined && after.used !== undefined) {
        f.usedBefore = before.used;
        f.usedAfter = after.used;
        f.usedPerMessage = (after.used - before.used) / messages;
      }
      fills.push(f);
      before = after;
      console.log(
        `  history ${rig.padEnd(7)} memory ${round + 1}  ${fmtRps(messages)} × ${bytes} B more kept (${MEMORY_CHANNELS} channels × ${fmtRps(perChannel)}, ${seconds.toFixed(1)} s): ` +
          `master RSS ${mb(f.rssBefore)} → ${mb(f.rssAfter)}, ${perMessage(f.rssPerMessage)} B/message (JS heap ${perMessage(f.heapPerMessage)})` +
          (f.usedPerMessage === undefined
            ? ""
            : `; Redis used_memory ${mb(f.usedBefore!)} → ${mb(f.usedAfter!)}, ${perMessage(f.usedPerMessage)} B/message`),
      );
    }
  }
  return MEMORY_BYTES.map((bytes): MemoryRow => {
    const of = fills.filter((f) => f.messageBytes === bytes);
    return {
      messageBytes: bytes,
      channels: MEMORY_CHANNELS,
      messagesPerFill: messages,
      rss: spread(of.map((f) => f.rssPerMessage)),
      heap: spread(of.map((f) => f.heapPerMessage)),
      ...(redis ? { used: spread(of.map((f) => f.usedPerMessage!)) } : {}),
      fills: of,
    };
  });
}

/** CHURN publishes of 16 B on "h:churn:0" in a worker's handler, the master's JS heap before and after. */
async function churnOf(rig: RigName, server: Server): Promise<Churn> {
  const before = (await post(server, "/gc")).heap;
  const after = (await post(server, `/fill?prefix=h:churn:&channels=1&per=${CHURN}&size=16`)).heap;
  const churn = {
    publishes: CHURN,
    heapBefore: before,
    heapAfter: after,
    perPublish: (after - before) / CHURN,
  };
  console.log(
    `  history ${rig.padEnd(7)} churn     ${fmtRps(CHURN)} × 16 B on one channel keeping 1,000, the fills held: ` +
      `master JS heap ${signedMb(after - before)} (${perMessage(churn.perPublish)} B/publish)`,
  );
  return churn;
}

/**
 * The master's RSS once it stops falling: after a full GC the allocator hands pages back over the next
 * few hundred ms, so a reading too soon counts garbage. Every 100 ms until two agree within 64 KiB.
 */
async function settledRss(server: Server): Promise<number> {
  const deadline = Date.now() + 3000;
  let last = rssBytes(server.proc.pid);
  for (;;) {
    assertAlive(server);
    await Bun.sleep(100);
    const now = rssBytes(server.proc.pid);
    if (Math.abs(now - last) <= 65536 || Date.now() > deadline) return now;
    last = now;
  }
}

/** POST /gc or /fill: the master's JS heap after its full GC. */
async function post(server: Server, path: string): Promise<{ heap: number }> {
  const res = await fetch(server.url + path, { method: "POST" });
  const body = await res.text();
  if (!res.ok) throw new Error(`${server.name}: POST ${path}: ${res.status} ${body}`);
  return JSON.parse(body) as { heap: number };
}
