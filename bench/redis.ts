// iodine's Redis engine on this machine, in one run: two clusters on one Redis next to raw ioredis on
// the same Redis.
//
// Run:   bun bench/redis.ts                                  (~40 s on 2 cores)
//        bun bench/redis.ts --rounds 3 --latency-rounds 3     (the least the medians are read from)
//        bun bench/redis.ts --only throughput --subscribers 1 (one subscriber, on one worker of A)
//        bun bench/redis.ts --only throughput --profile /tmp/prof   (a .cpuprofile per cluster process)
// Out:   a table on stdout, and every round in bench/results/redis.json (its `ratios`: iodine ÷ raw
//        msg/s, for bench/report.ts).
//
// The rig: a redis-server the bench starts on a free port (`--save '' --appendonly no`), and on it
//   cluster A   `iodine -w 2 -r redis://… bench/cluster-app.ts`: a WebSocket subscriber on each of its
//               two workers, both on "bench-iodine" (so A's master subscribes once, in Redis, and
//               fans each message out to both workers over the bus);
//   cluster B   the same command: one WebSocket on one of its workers commands that worker to publish
//               on "bench-iodine" (bench/cluster-app.ts's burst and rate);
//   raw         one ioredis connection publishing on "bench-raw", one ioredis connection subscribed to
//               it (`messageBuffer`), each in its own process.
// The load clients are two bench/redis-client.ts processes: the receiver (A's WebSockets and the raw
// subscriber) and the publisher (the socket on B and the raw publisher), so on both sides publishing
// and receiving run in different processes. The sides alternate in rotating order, round by round.
//   1. throughput  a burst of N 64-byte messages, 1,000 per turn of the publisher's event loop;
//                  msg/s = N ÷ (burst command sent → last delivery at the last subscriber); a round
//                  counts only when each subscriber got exactly N (no drops, no duplicates).
//   2. latency     5,000 msg/s for 2.5 s from a 1 ms timer, each message stamped with the publisher's
//                  wall clock at its publish (timeOrigin + now agrees across processes to a few µs);
//                  the receiver takes arrival − stamp per delivery (A's subscribers pooled).
// What bounds it: the load is injected where an app would publish, Iodine.publish in B's worker
// (1,000 per turn); the worker then frames each message onto the bus to B's master, whose Redis
// engine sends what a turn collected as one ioredis pipeline. The worker is never the bottleneck:
// it finishes publishing in a fraction of the burst (the "publishing" figure on each round's line).
// The raw publisher runs the same loop straight into pipelines. Both sides are then CPU-bound: on
// 2 cores shared by seven processes (raw: three), msg/s follows the CPU a message costs summed over
// every process, which the report prints next to the ratio; the columns say where it goes (B's
// master: ioredis encoding, most of it; A's workers: the WebSocket frames).
import { resolve } from "node:path";
import type IORedis from "ioredis";
import { requireTool, ROOT, versionLine } from "./lib/tools.ts";
import {
  assertAlive,
  iodineCmd,
  LoadClient,
  startServer,
  stopServer,
  type Server,
} from "./lib/processes.ts";
import { childPids, cpuSeconds, cpuTicks, machineFacts, printMachine } from "./lib/machine.ts";
import {
  fmtRatio,
  fmtRps,
  inRounds,
  median,
  notesText,
  ratioEntry,
  spread,
  type Ratio,
} from "./lib/stats.ts";
import { parseFlags, positive, runBench, writeResults } from "./lib/run.ts";
import { startRedis } from "./lib/redis-server.ts";

const BATCH = 1_000;
const LATENCY_RATE = 5_000;
const CHANNEL = { iodine: "bench-iodine", raw: "bench-raw" } as const;
const TARGET = { iodineOverRaw: 0.8 };
/** the whole run is cut off here, whatever it is doing */
const DEADLINE_MS = 180_000;
const SECTIONS = ["throughput", "latency"] as const;
type Section = (typeof SECTIONS)[number];
type Side = "iodine" | "raw";
const SIDES: readonly Side[] = ["iodine", "raw"];
const SIDE_LABEL: Record<Side, string> = { iodine: "iodine B → A", raw: "raw ioredis" };

// --- options ---

const flags = parseFlags(
  "usage: bun bench/redis.ts [--only throughput,latency] [--rounds N (5)] [--seconds PER_BURST (2)]\n" +
    "       [--latency-rounds N (3)] [--latency-seconds S (2.5)] [--size BYTES (64)] [--subscribers 1|2 (2)] [--profile DIR]\n" +
    "--subscribers 1: one WebSocket subscriber on one of A's workers (the other worker gets nothing)\n" +
    "--profile DIR: the clusters run with `bun --cpu-prof`, one .cpuprofile per process in DIR (open in Chrome DevTools)",
  [
    "rounds",
    "seconds",
    "latency-rounds",
    "latency-seconds",
    "size",
    "subscribers",
    "only",
    "profile",
  ],
);
const rounds = positive(flags.rounds ?? process.env.BENCH_ROUNDS ?? "5", "rounds", true);
const burstSeconds = positive(flags.seconds ?? "2", "seconds", false);
const latencyRounds = positive(flags["latency-rounds"] ?? "3", "latency-rounds", true);
const latencySeconds = positive(flags["latency-seconds"] ?? "2.5", "latency-seconds", false);
const size = positive(flags.size ?? "64", "size", true);
const subscriberCount = positive(flags.subscribers ?? "2", "subscribers", true);
if (subscriberCount > 2) {
  console.error("bench: --subscribers is 1 or 2 (A has two workers)");
  process.exit(2);
}
const only = flags.only?.split(",").map((s) => s.trim()) ?? [...SECTIONS];
for (const s of only) {
  if (!(SECTIONS as readonly string[]).includes(s)) {
    console.error(
      `bench: --only ${flags.only}: no section ${JSON.stringify(s)} (${SECTIONS.join(", ")})`,
    );
    process.exit(2);
  }
}
const wants = (s: Section) => only.includes(s);
const profileDir = flags.profile === undefined ? undefined : resolve(flags.profile);
if (size < 24) {
  console.error("bench: --size must be at least 24 bytes (the latency stamp)");
  process.exit(2);
}

// --- cleanup, also on Ctrl-C and at the deadline ---

let redis: Server | undefined;
const clusters: Server[] = [];
const clients: LoadClient[] = [];
let admin: IORedis | undefined;
let signalled = false;

async function cleanup(): Promise<void> {
  admin?.disconnect();
  await Promise.all(clients.map((c) => c.stop()));
  // Ctrl-C reaches the whole process group: the servers are stopping already (see bench/cluster.ts).
  const all = [...clusters, ...(redis ? [redis] : [])];
  if (signalled) await Promise.race([Promise.all(all.map((s) => s.proc.exited)), Bun.sleep(3000)]);
  await Promise.all(clusters.map((s) => stopServer(s)));
  // Redis last, so the clusters do not log its going away.
  if (redis) await stopServer(redis);
}

// --- types ---

interface WaitAnswer {
  complete: boolean;
  received: number[];
  firstAt: number;
  lastAt: number;
  delays: {
    n: number;
    minUs: number;
    p50Us: number;
    p90Us: number;
    p99Us: number;
    p999Us: number;
    maxUs: number;
    meanUs: number;
  } | null;
  clientCpuSeconds: number;
}

/** Who is where: the processes whose CPU is measured. */
interface Rig {
  redis: Server;
  a: Server;
  b: Server;
  receiver: LoadClient;
  publisher: LoadClient;
  aWorkers: number[];
  /** the workers of A that hold a subscriber */
  aSubscribers: number[];
  bWorkers: number[];
  /** the worker of B that publishes */
  bPublisher: number;
}

const PARTS = ["redis", "bMaster", "bWorkers", "aMaster", "aWorkers", "clients"] as const;
type Part = (typeof PARTS)[number];
type Cpu = Record<Part, number>;

type BurstRun = {
  side: Side;
  expected: number;
  received: number[];
  complete: boolean;
  seconds: number;
  publishSeconds: number;
  rate: number;
  /** ns of CPU per message, per part of the rig (the clusters' parts are 0 on the raw side) */
  cpuNsPerMessage: Cpu;
};

type RateRun = NonNullable<WaitAnswer["delays"]> & {
  side: Side;
  expected: number;
  received: number[];
  complete: boolean;
  sent: number;
  publisherLagMs: number;
  /** CPU share of each part over the run, of one core */
  cpuShare: Cpu;
};

async function main(): Promise<void> {
  const redisServer = requireTool("redis-server", "redis-server");
  const facts = { ...machineFacts(), redis: await versionLine([redisServer, "--version"]) };
  printMachine(
    facts,
    `bun ${facts.bun}, ${facts.redis}, date: ${facts.date}, load average ${facts.loadAvg1m.toFixed(2)}`,
  );
  console.log("");

  const rig = await startRig(redisServer);
  const connections = await checkConnections(rig);
  console.log(
    `rig: redis-server pid ${rig.redis.proc.pid} on port ${rig.redis.port}; cluster A master ${rig.a.proc.pid} (workers ${rig.aWorkers.join(" and ")}, subscribers on ${rig.aSubscribers.join(" and ")}), ` +
      `cluster B master ${rig.b.proc.pid} (publishing from worker ${rig.bPublisher})`,
  );
  console.log(
    `     Redis connections: ${connections.map((c) => `${c.owner} ${c.names.length} (${c.names.join(", ")})`).join("; ")}`,
  );
  console.log(
    `     ${size}-byte messages; burst: ${fmtRps(BATCH)} publishes per event-loop turn; latency: ${fmtRps(LATENCY_RATE)} msg/s for ${latencySeconds} s\n`,
  );

  const throughput = wants("throughput")
    ? summarizeBursts(await measureThroughput(rig))
    : undefined;
  const latency = wants("latency") ? summarizeRates(await measureLatency(rig)) : undefined;
  const dropped = droppedNotes(rig);

  // --- report ---
  console.log("");
  const cpuHead = "ns CPU/msg: redis  B master  B workers  A master  A workers  clients";
  if (throughput) {
    console.log(
      `${"throughput".padEnd(16)}${"median msg/s".padStart(13)}   ${"min–max".padEnd(19)}${cpuHead}`,
    );
    console.log("-".repeat(115));
    for (const r of throughput.rows) {
      const c = r.cpuNsPerMessage;
      console.log(
        `${SIDE_LABEL[r.side].padEnd(16)}${fmtRps(r.median).padStart(13)}   ${`${fmtRps(r.min)}–${fmtRps(r.max)}`.padEnd(19)}${"".padStart(11)}` +
          `${ns(c.redis).padStart(6)}${ns(c.bMaster).padStart(10)}${ns(c.bWorkers).padStart(11)}${ns(c.aMaster).padStart(10)}${ns(c.aWorkers).padStart(11)}${ns(c.clients).padStart(9)}` +
          `${r.incomplete ? `   !! ${r.incomplete} round(s) with drops or duplicates` : ""}`,
      );
    }
    console.log(
      `${"".padEnd(16)}iodine ÷ raw ${fmtRatio(throughput.ratio)} (by round: ${throughput.roundRatios.map((x) => x.toFixed(2)).join(", ")}); target ≥ ${TARGET.iodineOverRaw}: ${throughput.verdict}`,
    );
    const [ci, cr] = throughput.rows.map((r) => total(r.cpuNsPerMessage)) as [number, number];
    // Every process shares the same 2 cores: the CPU a message costs in all of them bounds msg/s.
    console.log(
      `${"".padEnd(16)}CPU per message, all processes: iodine ${ns(ci)} ns, raw ${ns(cr)} ns (raw ÷ iodine ${fmtRatio(cr / ci)}: the ratio a CPU-bound machine allows)`,
    );
    console.log("");
  }
  if (latency) {
    console.log(
      `${`latency @ ${fmtRps(LATENCY_RATE)}/s`.padEnd(16)}${"p50 µs".padStart(9)}${"p90 µs".padStart(9)}${"p99 µs".padStart(9)}${"p99.9 µs".padStart(10)}${"max µs".padStart(9)}   (medians of ${latencyRounds} rounds; max is the worst round)`,
    );
    console.log("-".repeat(115));
    for (const r of latency.rows) {
      console.log(
        `${SIDE_LABEL[r.side].padEnd(16)}${us(r.p50Us).padStart(9)}${us(r.p90Us).padStart(9)}${us(r.p99Us).padStart(9)}${us(r.p999Us).padStart(10)}${us(r.maxUs).padStart(9)}` +
          `   p50 by round: ${r.rounds.map((x) => us(x.p50Us)).join(", ")}; p99: ${r.rounds.map((x) => us(x.p99Us)).join(", ")}${r.incomplete ? `   !! ${r.incomplete} round(s) with drops or duplicates` : ""}`,
      );
    }
    const d = latency.difference;
    console.log(
      `${"".padEnd(16)}iodine − raw: p50 +${us(d.p50Us)} µs, p99 +${us(d.p99Us)} µs (two more hops: B's bus, A's bus)`,
    );
    console.log("");
  }
  for (const note of dropped) console.log(`!! ${note}`);
  console.log(
    "msg/s: N deliveries to each subscriber ÷ (burst command → last delivery). ns CPU per message: each part's CPU",
  );
  console.log(
    "(/proc, 10 ms ticks) ÷ messages published; clients: both load clients. Latency: arrival − publish stamp, every delivery.",
  );

  const settings = {
    messageBytes: size,
    subscribersOnA: subscriberCount,
    burst: { rounds, targetSeconds: burstSeconds, publishesPerTurn: BATCH },
    latency: { rounds: latencyRounds, seconds: latencySeconds, messagesPerSecond: LATENCY_RATE },
  };
  const processes = {
    redis: rig.redis.proc.pid,
    aMaster: rig.a.proc.pid,
    aWorkers: rig.aWorkers,
    aSubscribers: rig.aSubscribers,
    bMaster: rig.b.proc.pid,
    bWorkers: rig.bWorkers,
    bPublisher: rig.bPublisher,
    connections,
  };
  const ratios = throughput ? [throughputRatio(throughput)] : [];
  console.log(
    `\nresults: ${writeResults("redis", { machine: facts, settings, targets: TARGET, processes, throughput, latency, notes: dropped, ratios })}`,
  );
}

// --- the rig ---

async function startRig(redisServer: string): Promise<Rig> {
  const started = await startRedis(redisServer, (server) => (redis = server));
  admin = started.admin;
  const { port, url } = started;
  const cluster = async (name: string) => {
    const cmd = iodineCmd("-w", "2", "-r", url, "bench/cluster-app.ts");
    // runtime flags reach the workers too (the master spawns them with its own)
    if (profileDir !== undefined) cmd.splice(1, 0, "--cpu-prof", `--cpu-prof-dir=${profileDir}`);
    const s = await startServer(`cluster ${name}`, cmd, { cwd: ROOT });
    clusters.push(s);
    return s;
  };
  const a = await cluster("A");
  const b = await cluster("B");
  const receiver = new LoadClient("redis-client.ts", "receiver");
  clients.push(receiver);
  const publisher = new LoadClient("redis-client.ts", "publisher");
  clients.push(publisher);

  const subs = await receiver.send<{ pids: number[] }>({
    op: "subscribers",
    port: a.port,
    channel: CHANNEL.iodine,
    count: subscriberCount,
  });
  await receiver.send({ op: "rawSub", redis: port, channel: CHANNEL.raw });
  const pub = await publisher.send<{ pid: number; clock: { offsetUs: number; rttUs: number } }>({
    op: "publisher",
    port: b.port,
  });
  await publisher.send({ op: "rawPub", redis: port });
  const aWorkers = childPids(a.proc.pid);
  const bWorkers = childPids(b.proc.pid);
  for (const pid of subs.pids)
    if (!aWorkers.includes(pid))
      throw new Error(`pid ${pid} answered on cluster A but A serves from ${aWorkers.join(", ")}`);
  if (!bWorkers.includes(pub.pid))
    throw new Error(
      `pid ${pub.pid} answered on cluster B but B serves from ${bWorkers.join(", ")}`,
    );
  if (Math.abs(pub.clock.offsetUs) > Math.max(50, pub.clock.rttUs)) {
    console.log(
      `!! B's worker clock is ${pub.clock.offsetUs.toFixed(0)} µs off the load client's: latencies are off by as much`,
    );
  }
  const rig: Rig = {
    redis: started.server,
    a,
    b,
    receiver,
    publisher,
    aWorkers,
    aSubscribers: subs.pids,
    bWorkers,
    bPublisher: pub.pid,
  };
  // End to end before measuring: A's master has subscribed in Redis, B's master publishes to it.
  for (const side of SIDES) await probe(rig, side);
  return rig;
}

/** Publishes `#probe` until every subscriber of the side got one, then lets the stragglers arrive. */
async function probe(rig: Rig, side: Side): Promise<void> {
  const deadline = Date.now() + 10_000;
  await rig.receiver.send({ op: "arm", side, stamped: 0 });
  for (;;) {
    const counts = await rig.receiver.send<Record<Side, number[]>>({ op: "counts" });
    if (counts[side].every((n) => n > 0)) break;
    if (Date.now() > deadline)
      throw new Error(
        `${SIDE_LABEL[side]}: a publish never reached the subscribers (${counts[side].join(", ")} arrived)`,
      );
    for (const s of [rig.a, rig.b]) assertAlive(s);
    await rig.publisher.send({ op: "pub", side, channel: CHANNEL[side], text: "#probe" });
    await Bun.sleep(20);
  }
  await Bun.sleep(100);
}

/** Which process holds which Redis connections (iodine names its own `iodine-ROLE-PID`). */
async function checkConnections(rig: Rig) {
  const list = String(await admin!.call("CLIENT", "LIST"));
  const names = [...list.matchAll(/ name=(\S*)/g)].map((m) => m[1]!);
  const of = (pid: number) => names.filter((n) => n.endsWith(`-${pid}`)).sort();
  const rows = [
    { owner: "A master", names: of(rig.a.proc.pid) },
    { owner: "B master", names: of(rig.b.proc.pid) },
    { owner: "A/B workers", names: [...rig.aWorkers, ...rig.bWorkers].flatMap(of) },
  ];
  for (const r of rows.slice(0, 2)) {
    if (r.names.length !== 2)
      console.log(
        `!! ${r.owner} holds ${r.names.length} Redis connection(s), not 2: ${r.names.join(", ")}`,
      );
  }
  if (rows[2]!.names.length > 0)
    console.log(`!! workers hold Redis connections: ${rows[2]!.names.join(", ")}`);
  return rows;
}

// --- CPU ---

/** CPU ticks of one process without its children. */
function ownTicks(pid: number): number {
  return cpuTicks(pid) - childPids(pid).reduce((sum, kid) => sum + cpuTicks(kid), 0);
}

function snapshot(r: Rig): Cpu {
  const sum = (pids: number[]) => pids.reduce((s, pid) => s + cpuTicks(pid), 0);
  return {
    redis: cpuTicks(r.redis.proc.pid),
    bMaster: ownTicks(r.b.proc.pid),
    bWorkers: sum(r.bWorkers),
    aMaster: ownTicks(r.a.proc.pid),
    aWorkers: sum(r.aWorkers),
    clients: cpuTicks(r.receiver.proc.pid) + cpuTicks(r.publisher.proc.pid),
  };
}

function cpuDelta(before: Cpu, after: Cpu, f: (seconds: number) => number): Cpu {
  return Object.fromEntries(PARTS.map((p) => [p, f(cpuSeconds(after[p] - before[p]))])) as Cpu;
}

// --- throughput ---

async function burst(rig: Rig, side: Side, n: number): Promise<BurstRun> {
  for (const s of [rig.redis, rig.a, rig.b]) assertAlive(s);
  await rig.receiver.send({ op: "arm", side, stamped: 0 });
  const before = snapshot(rig);
  const since = (performance.timeOrigin + performance.now()) * 1000;
  const [p, w] = await Promise.all([
    rig.publisher.send<{ t0: number; publishMs: number }>({
      op: "burst",
      side,
      channel: CHANNEL[side],
      total: n,
      batch: BATCH,
      size,
    }),
    rig.receiver.send<WaitAnswer>({ op: "wait", side, expected: n, since }),
  ]);
  const after = snapshot(rig);
  const received = Math.min(...w.received);
  const seconds = (w.lastAt - p.t0) / 1e6;
  return {
    side,
    expected: n,
    received: w.received,
    complete: w.complete,
    seconds,
    publishSeconds: p.publishMs / 1000,
    // what arrived, in the time it took: a burst with drops scores only its deliveries
    rate: received / seconds,
    cpuNsPerMessage: cpuDelta(before, after, (s) => (s * 1e9) / n),
  };
}

async function measureThroughput(rig: Rig): Promise<BurstRun[]> {
  // Warm-up: JIT in every process (a first burst runs cold), then the burst size: ~burstSeconds
  // of the slower side's second burst.
  let slowest = Infinity;
  for (const side of SIDES) {
    for (const warm of [false, true]) {
      const r = await burst(rig, side, 100_000);
      if (warm) slowest = Math.min(slowest, r.rate);
      console.log(
        `  throughput   warm-up  ${SIDE_LABEL[side].padEnd(13)} ${fmtRps(r.rate).padStart(9)} msg/s${burstNote(r)}`,
      );
    }
  }
  const n = Math.min(
    1_000_000,
    Math.max(50_000, Math.round((slowest * burstSeconds) / 10_000) * 10_000),
  );
  return inRounds(rounds, SIDES, async (side, round) => {
    const r = await burst(rig, side, n);
    const c = r.cpuNsPerMessage;
    const parts =
      side === "raw"
        ? [`redis ${ns(c.redis)}`, `clients ${ns(c.clients)}`]
        : PARTS.map((p) => `${PART_LABEL[p]} ${ns(c[p])}`);
    console.log(
      `  throughput   round ${round + 1}  ${SIDE_LABEL[side].padEnd(13)} ${fmtRps(r.rate).padStart(9)} msg/s  ${fmtRps(n)} in ${r.seconds.toFixed(2)} s ` +
        `(publishing ${r.publishSeconds.toFixed(2)} s)  ns CPU/msg: ${parts.join(", ")}${burstNote(r)}`,
    );
    return r;
  });
}

function summarizeBursts(runs: BurstRun[]) {
  const rows = SIDES.map((side) => {
    const rs = runs.filter((r) => r.side === side);
    const cpu = Object.fromEntries(
      PARTS.map((p) => [p, median(rs.map((r) => r.cpuNsPerMessage[p]))]),
    ) as Cpu;
    return {
      side,
      messagesPerBurst: rs[0]?.expected ?? 0,
      ...spread(rs.map((r) => r.rate)),
      cpuNsPerMessage: cpu,
      incomplete: rs.filter((r) => !exact(r)).length,
      rounds: rs,
    };
  });
  const [iodine, raw] = rows as [(typeof rows)[0], (typeof rows)[0]];
  const ratio = raw.median > 0 ? iodine.median / raw.median : null;
  // each round's iodine ÷ raw: how far the ratio itself moves
  const roundRatios = iodine.rounds.map((r, i) => r.rate / (raw.rounds[i]?.rate ?? NaN));
  const verdict =
    ratio !== null && ratio >= TARGET.iodineOverRaw && iodine.incomplete === 0 ? "PASS" : "MISS";
  return { rows, ratio, roundRatios, target: TARGET.iodineOverRaw, verdict };
}

/** iodine ÷ raw msg/s; its per-round ratios are the `roundRatios` the table prints. */
function throughputRatio(t: ReturnType<typeof summarizeBursts>): Ratio {
  const [iodine, raw] = t.rows as [(typeof t.rows)[0], (typeof t.rows)[0]];
  const drops = iodine.incomplete
    ? `; !! ${iodine.incomplete} round(s) with drops or duplicates`
    : "";
  const detail = `bursts of ${fmtRps(iodine.messagesPerBurst)} × ${size} B, B → Redis → A (${subscriberCount} subscriber(s)): ${fmtRps(iodine.median)} vs ${fmtRps(raw.median)} msg/s${drops}`;
  return ratioEntry(
    "redis",
    `pub/sub: iodine B → A ÷ ${SIDE_LABEL.raw}`,
    iodine.rounds.map((r) => r.rate),
    raw.rounds.map((r) => r.rate),
    { target: TARGET.iodineOverRaw, detail },
  );
}

// --- latency ---

async function rateRun(rig: Rig, side: Side, seconds: number): Promise<RateRun> {
  for (const s of [rig.redis, rig.a, rig.b]) assertAlive(s);
  const ms = Math.round(seconds * 1000);
  const expected = Math.round((LATENCY_RATE * ms) / 1000);
  await rig.receiver.send({ op: "arm", side, stamped: expected });
  const before = snapshot(rig);
  const since = (performance.timeOrigin + performance.now()) * 1000;
  const [p, w] = await Promise.all([
    rig.publisher.send<{ t0: number; sent: number; lagMs: number }>({
      op: "rate",
      side,
      channel: CHANNEL[side],
      perSecond: LATENCY_RATE,
      ms,
      size,
    }),
    rig.receiver.send<WaitAnswer>({ op: "wait", side, expected, since }),
  ]);
  const after = snapshot(rig);
  const runSeconds = Math.max(seconds, (w.lastAt - p.t0) / 1e6);
  const d = w.delays ?? {
    n: 0,
    minUs: NaN,
    p50Us: NaN,
    p90Us: NaN,
    p99Us: NaN,
    p999Us: NaN,
    maxUs: NaN,
    meanUs: NaN,
  };
  return {
    ...d,
    side,
    expected,
    received: w.received,
    complete: w.complete,
    sent: p.sent,
    publisherLagMs: p.lagMs,
    cpuShare: cpuDelta(before, after, (s) => s / runSeconds),
  };
}

async function measureLatency(rig: Rig): Promise<RateRun[]> {
  for (const side of SIDES) {
    const r = await rateRun(rig, side, 1);
    console.log(
      `  latency      warm-up  ${SIDE_LABEL[side].padEnd(13)} p50 ${us(r.p50Us)} µs, p99 ${us(r.p99Us)} µs${rateNote(r)}`,
    );
  }
  return inRounds(latencyRounds, SIDES, async (side, round) => {
    const r = await rateRun(rig, side, latencySeconds);
    const c = r.cpuShare;
    const share = (x: number) => `${(x * 100).toFixed(0)} %`;
    const parts =
      side === "raw"
        ? [`redis ${share(c.redis)}`, `clients ${share(c.clients)}`]
        : PARTS.map((p) => `${PART_LABEL[p]} ${share(c[p])}`);
    console.log(
      `  latency      round ${round + 1}  ${SIDE_LABEL[side].padEnd(13)} p50 ${us(r.p50Us).padStart(5)}  p90 ${us(r.p90Us).padStart(5)}  p99 ${us(r.p99Us).padStart(5)}  p99.9 ${us(r.p999Us).padStart(6)}  max ${us(r.maxUs).padStart(6)} µs  ` +
        `(publisher ≤ ${r.publisherLagMs.toFixed(1)} ms behind schedule; CPU ${parts.join(", ")})${rateNote(r)}`,
    );
    return r;
  });
}

function summarizeRates(runs: RateRun[]) {
  const rows = SIDES.map((side) => {
    const rs = runs.filter((r) => r.side === side);
    const med = (f: (r: RateRun) => number) => median(rs.map(f));
    return {
      side,
      p50Us: med((r) => r.p50Us),
      p90Us: med((r) => r.p90Us),
      p99Us: med((r) => r.p99Us),
      p999Us: med((r) => r.p999Us),
      maxUs: Math.max(...rs.map((r) => r.maxUs)),
      incomplete: rs.filter((r) => !exact(r)).length,
      rounds: rs,
    };
  });
  const [iodine, raw] = rows as [(typeof rows)[0], (typeof rows)[0]];
  return { rows, difference: { p50Us: iodine.p50Us - raw.p50Us, p99Us: iodine.p99Us - raw.p99Us } };
}

// --- helpers ---

const PART_LABEL: Record<Part, string> = {
  redis: "redis",
  bMaster: "B master",
  bWorkers: "B workers",
  aMaster: "A master",
  aWorkers: "A workers",
  clients: "clients",
};
const total = (c: Cpu) => PARTS.reduce((sum, p) => sum + c[p], 0);
const us = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "—");
const ns = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "—");

function deliveryNotes(r: { complete: boolean; expected: number; received: number[] }): string[] {
  if (r.complete && r.received.every((n) => n === r.expected)) return [];
  const what = r.complete ? "duplicates: " : "";
  return [
    `${what}of ${fmtRps(r.expected)} per subscriber, ${r.received.map((n) => fmtRps(n)).join(" and ")} arrived`,
  ];
}

/** Every subscriber got each message once: no drops, no duplicates. */
const exact = (r: { complete: boolean; expected: number; received: number[] }) =>
  r.complete && r.received.every((n) => n === r.expected);

function burstNote(r: BurstRun): string {
  return notesText(deliveryNotes(r));
}

function rateNote(r: RateRun): string {
  const notes = deliveryNotes(r);
  if (r.sent !== r.expected) notes.push(`${fmtRps(r.sent)} of ${fmtRps(r.expected)} published`);
  return notesText(notes);
}

/** Lines in the servers' logs that say messages were dropped: iodine's back-pressure, Redis's output-buffer limit. */
function droppedNotes(rig: Rig): string[] {
  const notes: string[] = [];
  for (const [name, s] of [
    ["cluster A", rig.a],
    ["cluster B", rig.b],
  ] as const) {
    for (const line of (s.stderr.tail + s.stdout.tail).split("\n")) {
      if (/redis: .*(wait for Redis|lost|cannot connect|no answer)/.test(line))
        notes.push(`${name}: ${line.trim()}`);
    }
  }
  for (const line of rig.redis.stdout.tail.split("\n")) {
    if (/output buffer limits/.test(line)) notes.push(`redis-server: ${line.trim()}`);
  }
  return notes;
}

await runBench(main, {
  cleanup,
  stopping: "redis-server, clusters and clients",
  deadlineMs: DEADLINE_MS,
  onSignal: () => (signalled = true),
});
