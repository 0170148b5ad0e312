// The multi-process cluster (`iodine -w 2`) on this machine, in one run: pub/sub across workers and
// HTTP across workers, each next to what it is measured against.
//
// Run:   bun bench/cluster.ts                         (~2 minutes on 2 cores)
//        bun bench/cluster.ts --only throughput,latency --rounds 3
//        bun bench/cluster.ts --only http --duration 5 --http-rounds 3
// Out:   a table on stdout, and every round in bench/results/cluster.json (its `ratios` and, for the two
//        targets that are not ratios, `absolutes`, for bench/report.ts).
//
// Pub/sub: a cluster, `iodine -w 2 bench/cluster-app.ts`, and a load client process
// (bench/cluster-client.ts) that connects until it holds a WebSocket on each of the two workers.
// Socket i subscribes to "to-i" (native topics, no callback). A command on a socket makes the
// worker that serves it publish, so:
//   cross   worker A publishes on "to-B": every message goes A → master's hub → B → B's socket
//   local   worker A publishes on "to-A": delivered inside A (the frame still goes to the master)
//   single  the same as local in `iodine -w 1` (no cluster, no bus), with a load client of its own:
//           the floor the two cluster modes are read against
// The direction alternates from round to round (A→B, B→A); the order of the modes rotates.
//   1. throughput  a burst of N 64-byte messages, published 1,000 per turn of A's event loop;
//                  msg/s = N ÷ (command sent → last delivery at the client).
//   2. latency     A publishes 10,000 msg/s for 2.5 s from a 1 ms timer, each message stamped with
//                  A's wall clock (timeOrigin + now, which agrees across processes to a few µs; the
//                  client checks by NTP-style ping); the client takes arrival − stamp per message.
// HTTP: `iodine -w 2` vs `iodine -w 1` vs two raw Bun.serve({reusePort}) processes on one port
// (bench/cluster-baseline.ts), all on examples/hello.ts's "Hello World!", driven by the same wrk
// command in rotating order; the score is the median round, ratios compare medians.
// CPU: from /proc (user + system ticks) per process, because steal time on a shared VM moves
// msg/s and req/s far more than it moves the CPU spent per message or request.
import { join } from "node:path";
import type { Subprocess } from "bun";
import { ROOT, wrkVersion } from "./lib/tools.ts";
import {
  assertAlive,
  iodineCmd,
  LoadClient,
  startServer,
  stopServer,
  type Server,
} from "./lib/processes.ts";
import { runWrk, wrkNote, type WrkResult } from "./lib/wrk.ts";
import {
  childPids,
  cpuMicros,
  cpuSeconds,
  cpuTicks,
  machineFacts,
  printMachine,
} from "./lib/machine.ts";
import {
  absoluteEntry,
  fmtRatio,
  fmtRps,
  inRounds,
  median,
  notesText,
  ratioEntry,
  spread,
  type Absolute,
  type Ratio,
} from "./lib/stats.ts";
import { parseFlags, positive, runBench, writeResults } from "./lib/run.ts";

const THREADS = 2;
const CONNECTIONS = 200;
const LATENCY_RATE = 10_000;
const BATCH = 1_000;
const TARGET = { crossMsgPerSecond: 500_000, crossP99Us: 1_000, w2OverRaw: 0.95 };
/** the whole run is cut off here, whatever it is doing */
const DEADLINE_MS = 240_000;
const SECTIONS = ["throughput", "latency", "http"] as const;
type Section = (typeof SECTIONS)[number];

// --- options ---

const flags = parseFlags(
  "usage: bun bench/cluster.ts [--only throughput,latency,http] [--rounds N (5)] [--seconds PER_BURST (1.5)]\n" +
    "       [--latency-rounds N (3)] [--latency-seconds S (2.5)] [--http-rounds N (5)] [--duration WRK_SECONDS (3)] [--size BYTES (64)]",
  [
    "rounds",
    "seconds",
    "latency-rounds",
    "latency-seconds",
    "http-rounds",
    "duration",
    "size",
    "only",
  ],
);
const rounds = positive(flags.rounds ?? process.env.BENCH_ROUNDS ?? "5", "rounds", true);
const burstSeconds = positive(flags.seconds ?? "1.5", "seconds", false);
const latencyRounds = positive(flags["latency-rounds"] ?? "3", "latency-rounds", true);
const latencySeconds = positive(flags["latency-seconds"] ?? "2.5", "latency-seconds", false);
const httpRounds = positive(
  flags["http-rounds"] ?? process.env.BENCH_ROUNDS ?? "5",
  "http-rounds",
  true,
);
const duration = positive(flags.duration ?? process.env.BENCH_DURATION ?? "3", "duration", true);
const size = positive(flags.size ?? "64", "size", true);
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
const warmupSeconds = Math.min(2, duration);

// --- cleanup, also on Ctrl-C and at the deadline ---

const servers: Server[] = [];
const clients: LoadClient[] = [];
let wrk: Subprocess | undefined;
let signalled = false;

async function cleanup(): Promise<void> {
  wrk?.kill("SIGKILL");
  await Promise.all(clients.map((c) => c.stop()));
  // Ctrl-C reaches the whole process group: the servers are stopping already, and a second
  // signal would make an iodine master exit at once, leaving its bus socket file behind.
  if (signalled)
    await Promise.race([Promise.all(servers.map((s) => s.proc.exited)), Bun.sleep(3000)]);
  await Promise.all(servers.map((s) => stopServer(s)));
}

// --- pub/sub: types ---

type Mode = "cross" | "local" | "single";
const MODES: readonly Mode[] = ["cross", "local", "single"];
const MODE_LABEL: Record<Mode, string> = {
  cross: "cross-worker",
  local: "same worker",
  single: "-w 1, no bus",
};

interface Connected {
  pids: [number, number];
  attempts: number;
  clock: { offsetUs: number; rttUs: number }[];
}

interface BurstAnswer {
  expected: number;
  received: number;
  complete: boolean;
  closed: boolean;
  seconds: number;
  steadySeconds: number;
  firstSeconds: number;
  publishMs: number;
  clientCpuSeconds: number;
}

/** ns of CPU per delivered message, per process (null: no master, or the subscriber is the publisher) */
interface CpuSplit {
  publisher: number;
  master: number | null;
  subscriber: number | null;
  client: number;
}

type BurstRun = BurstAnswer & {
  mode: Mode;
  from: number;
  to: number;
  rate: number;
  cpuNsPerMessage: CpuSplit;
};

interface RateAnswer {
  expected: number;
  received: number;
  complete: boolean;
  closed: boolean;
  seconds: number;
  minUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  meanUs: number;
  /** the most a message went out behind its schedule in the publisher (a stalled loop there is not in the delays) */
  publisherLagMs: number;
  clientCpuSeconds: number;
}

type RateRun = RateAnswer & {
  mode: Mode;
  from: number;
  to: number;
  cpuSeconds: { publisher: number; master: number | null; subscriber: number | null };
};

/** A server under test, its load client, and the pids that matter. */
interface Rig {
  server: Server;
  client: LoadClient;
  /** the master of `-w 2` (its own CPU is the hub's); undefined for `-w 1` */
  master: number | undefined;
  /** the process behind socket 0 and socket 1 (the same one for `-w 1`) */
  pids: [number, number];
  connected: Connected;
}

// --- HTTP: types ---

type Role = "w2" | "w1" | "raw";
const ROLE_LABEL: Record<Role, string> = {
  w2: "iodine -w 2",
  w1: "iodine -w 1",
  raw: "2× raw reusePort",
};

interface Target {
  role: Role;
  url: string;
  /** roots whose CPU (with descendants) is the target's */
  roots: Server[];
  /** the processes that serve, for the spread of the work between them */
  servingPids: () => number[];
}

type HttpRun = WrkResult & { cpuMicrosPerRequest: number; cpuShares: number[] };

async function main(): Promise<void> {
  const facts = { ...machineFacts(), wrk: "" };
  if (wants("http")) facts.wrk = await wrkVersion();
  printMachine(
    facts,
    `bun ${facts.bun}${facts.wrk ? `, ${facts.wrk}` : ""}, date: ${facts.date}, load average ${facts.loadAvg1m.toFixed(2)}`,
  );
  console.log("");

  let rigs: Record<"w2" | "w1", Rig> | undefined;
  let throughput: ReturnType<typeof summarizeBursts> | undefined;
  let latency: ReturnType<typeof summarizeRates> | undefined;
  if (wants("throughput") || wants("latency")) {
    rigs = { w2: await startRig(2), w1: await startRig(1) };
    const c = rigs.w2.connected;
    const clock = c.clock
      .map((x, i) => `pid ${c.pids[i]} ${x.offsetUs.toFixed(0)} µs (rtt ${x.rttUs.toFixed(0)} µs)`)
      .join(", ");
    console.log(
      `pub/sub: -w 2: master pid ${rigs.w2.master}, workers ${c.pids.join(" and ")} (a socket on each after ${c.attempts} connection(s)); -w 1: pid ${rigs.w1.pids[0]}`,
    );
    console.log(`         worker clock − client clock: ${clock}`);
    for (const x of c.clock) {
      if (Math.abs(x.offsetUs) > Math.max(50, x.rttUs))
        console.log(
          `!! a worker's clock is ${x.offsetUs.toFixed(0)} µs off: latencies are off by as much`,
        );
    }
    console.log(
      `         ${size}-byte messages; burst: ${fmtRps(BATCH)} publishes per event-loop turn; latency: ${fmtRps(LATENCY_RATE)} msg/s for ${latencySeconds} s\n`,
    );
    if (wants("throughput")) throughput = summarizeBursts(await measureThroughput(rigs));
    if (wants("latency")) latency = summarizeRates(await measureLatency(rigs));
    for (const rig of Object.values(rigs)) {
      await rig.client.stop();
      await stopServer(rig.server);
    }
  }

  let http: ReturnType<typeof summarizeHttp> | undefined;
  if (wants("http")) http = summarizeHttp(await measureHttp());

  // --- report ---
  console.log("");
  if (throughput) {
    console.log(
      `${"pub/sub throughput".padEnd(20)}${"median msg/s".padStart(13)}   ${"min–max".padEnd(23)}${"ns CPU per message: publisher  master  subscriber  client".padStart(56)}`,
    );
    console.log("-".repeat(112));
    for (const r of throughput.rows) {
      const c = r.cpuNsPerMessage;
      console.log(
        `${MODE_LABEL[r.mode].padEnd(20)}${fmtRps(r.median).padStart(13)}   ${`${fmtRps(r.min)}–${fmtRps(r.max)}`.padEnd(23)}${"".padStart(18)}${ns(c.publisher).padStart(9)}${ns(c.master).padStart(8)}${ns(c.subscriber).padStart(12)}${ns(c.client).padStart(8)}${r.incomplete ? `   !! ${r.incomplete} round(s) incomplete` : ""}`,
      );
    }
    const t = throughput.ratios;
    console.log(
      `${"".padEnd(20)}cross ÷ same worker ${fmtRatio(t.crossOverLocal)}   same worker ÷ -w 1 ${fmtRatio(t.localOverSingle)}   cross ÷ -w 1 ${fmtRatio(t.crossOverSingle)}`,
    );
    console.log(
      `${"".padEnd(20)}target cross-worker ≥ ${fmtRps(TARGET.crossMsgPerSecond)} msg/s to one subscriber: ${throughput.verdict}`,
    );
    console.log("");
  }
  if (latency) {
    console.log(
      `${`latency @ ${fmtRps(LATENCY_RATE)}/s`.padEnd(20)}${"p50 µs".padStart(9)}${"p90 µs".padStart(9)}${"p99 µs".padStart(9)}${"p99.9 µs".padStart(10)}${"max µs".padStart(9)}   (medians of ${latencyRounds} rounds; max is the worst round)`,
    );
    console.log("-".repeat(112));
    for (const r of latency.rows) {
      console.log(
        `${MODE_LABEL[r.mode].padEnd(20)}${us(r.p50Us).padStart(9)}${us(r.p90Us).padStart(9)}${us(r.p99Us).padStart(9)}${us(r.p999Us).padStart(10)}${us(r.maxUs).padStart(9)}   p99 by round: ${r.rounds.map((x) => us(x.p99Us)).join(", ")}${r.incomplete ? `   !! ${r.incomplete} round(s) incomplete` : ""}`,
      );
    }
    console.log(
      `${"".padEnd(20)}target cross-worker p99 ≤ ${TARGET.crossP99Us} µs: ${latency.verdict}`,
    );
    console.log("");
  }
  if (http) {
    console.log(
      `${"HTTP hello".padEnd(20)}${"median req/s".padStart(13)}   ${"min–max".padEnd(21)}${"µs CPU/req".padStart(11)}   work split between processes`,
    );
    console.log("-".repeat(112));
    for (const r of http.rows) {
      console.log(
        `${ROLE_LABEL[r.role].padEnd(20)}${fmtRps(r.median).padStart(13)}   ${`${fmtRps(r.min)}–${fmtRps(r.max)}`.padEnd(21)}${r.cpu.toFixed(1).padStart(11)}   ${r.shares.map((s) => `${(s * 100).toFixed(0)} %`).join(" / ")}`,
      );
    }
    const h = http.ratios;
    console.log(
      `${"".padEnd(20)}-w 2 ÷ 2× raw reusePort ${fmtRatio(h.w2OverRaw)} (target ≥ ${TARGET.w2OverRaw}: ${http.verdict})   -w 2 ÷ -w 1 ${fmtRatio(h.w2OverW1)}`,
    );
    console.log(
      `${"".padEnd(20)}CPU per request (> 1: -w 2 cheaper): raw ÷ -w 2 ${fmtRatio(h.cpuRawOverW2)}   -w 1 ÷ -w 2 ${fmtRatio(h.cpuW1OverW2)}`,
    );
    console.log("");
  }
  console.log(
    "msg/s: N deliveries ÷ (command → last delivery at the client). ns CPU per message: each process's CPU",
  );
  console.log(
    "(/proc, 10 ms ticks) ÷ messages delivered. work split: each serving process's share of the CPU.",
  );

  const settings = {
    messageBytes: size,
    burst: { rounds, targetSeconds: burstSeconds, publishesPerTurn: BATCH },
    latency: { rounds: latencyRounds, seconds: latencySeconds, messagesPerSecond: LATENCY_RATE },
    http: {
      threads: THREADS,
      connections: CONNECTIONS,
      durationSeconds: duration,
      rounds: httpRounds,
      warmupSeconds,
    },
  };
  const processes = rigs && {
    w2: { master: rigs.w2.master, ...rigs.w2.connected },
    w1: rigs.w1.connected,
  };
  const entries = reportEntries(throughput, latency, http);
  console.log(
    `\nresults: ${writeResults("cluster", { machine: facts, settings, targets: TARGET, processes, throughput, latency, http, ...entries })}`,
  );
}

// --- pub/sub ---

/** `iodine -w N bench/cluster-app.ts` and a load client holding two sockets on it. */
async function startRig(workers: 1 | 2): Promise<Rig> {
  const cmd = iodineCmd("-w", String(workers), "bench/cluster-app.ts");
  const server = await startServer(`iodine -w ${workers} (bench/cluster-app.ts)`, cmd, {
    cwd: ROOT,
  });
  servers.push(server);
  const client = new LoadClient("cluster-client.ts");
  clients.push(client);
  const connected = await client.send<Connected>({ op: "connect", port: server.port, workers });
  const kids = childPids(server.proc.pid);
  // -w 1 serves in its own process (or, had it relaunched itself, in its only child)
  const serving = workers === 2 ? kids : [kids[0] ?? server.proc.pid];
  for (const pid of connected.pids) {
    if (!serving.includes(pid))
      throw new Error(
        `pid ${pid} answered on the WebSocket but ${server.name} serves from ${serving.join(", ")}`,
      );
  }
  return {
    server,
    client,
    master: workers === 2 ? server.proc.pid : undefined,
    pids: connected.pids,
    connected,
  };
}

/** The rig of a mode, and which socket publishes and which one receives in round `round` (the direction alternates). */
function route(
  rigs: Record<"w2" | "w1", Rig>,
  mode: Mode,
  round: number,
): { rig: Rig; from: 0 | 1; to: 0 | 1 } {
  const a = (round % 2) as 0 | 1;
  if (mode === "single") return { rig: rigs.w1, from: 0, to: 0 };
  return { rig: rigs.w2, from: a, to: mode === "cross" ? ((1 - a) as 0 | 1) : a };
}

/** CPU ticks of one process without its children. */
function ownTicks(pid: number): number {
  return cpuTicks(pid) - childPids(pid).reduce((sum, kid) => sum + cpuTicks(kid), 0);
}

/** Ticks of the processes of one run: master (own), the process behind each socket, the load client. */
function snapshot(r: Rig): number[] {
  return [
    r.master === undefined ? 0 : ownTicks(r.master),
    cpuTicks(r.pids[0]),
    cpuTicks(r.pids[1]),
    cpuTicks(r.client.proc.pid),
  ];
}

async function burst(
  rigs: Record<"w2" | "w1", Rig>,
  mode: Mode,
  round: number,
  n: number,
): Promise<BurstRun> {
  const { rig, from, to } = route(rigs, mode, round);
  assertAlive(rig.server);
  const before = snapshot(rig);
  const r = await rig.client.send<BurstAnswer>({
    op: "burst",
    from,
    to,
    total: n,
    batch: BATCH,
    size,
  });
  const after = snapshot(rig);
  const nsOf = (i: number) => (cpuSeconds(after[i]! - before[i]!) * 1e9) / Math.max(1, r.received);
  return {
    ...r,
    mode,
    from: rig.pids[from],
    to: rig.pids[to],
    // what arrived, in the time it took: a burst with drops scores only its deliveries
    rate: r.received / r.seconds,
    cpuNsPerMessage: {
      publisher: nsOf(1 + from),
      master: rig.master === undefined ? null : nsOf(0),
      subscriber: mode === "cross" ? nsOf(1 + to) : null,
      client: nsOf(3),
    },
  };
}

async function measureThroughput(rigs: Record<"w2" | "w1", Rig>): Promise<BurstRun[]> {
  // Warm-up: JIT in every process, and the burst size: ~burstSeconds of the slowest mode.
  let slowest = Infinity;
  for (const mode of MODES) {
    const r = await burst(rigs, mode, 0, 200_000);
    slowest = Math.min(slowest, r.rate);
    console.log(
      `  throughput   warm-up  ${MODE_LABEL[mode].padEnd(13)} ${fmtRps(r.rate).padStart(11)} msg/s${deliveryNote(r)}`,
    );
  }
  const n = Math.min(
    3_000_000,
    Math.max(100_000, Math.round((slowest * burstSeconds) / 10_000) * 10_000),
  );
  return inRounds(rounds, MODES, async (mode, round) => {
    const r = await burst(rigs, mode, round, n);
    const cpu = r.cpuNsPerMessage;
    const parts = [
      `pub ${ns(cpu.publisher)}`,
      ...(cpu.master === null ? [] : [`master ${ns(cpu.master)}`]),
      ...(cpu.subscriber === null ? [] : [`sub ${ns(cpu.subscriber)}`]),
      `client ${ns(cpu.client)}`,
    ];
    console.log(
      `  throughput   round ${round + 1}  ${MODE_LABEL[mode].padEnd(13)} ${fmtRps(r.rate).padStart(11)} msg/s  ${fmtRps(n)} in ${r.seconds.toFixed(2)} s (publishing ${(r.publishMs / 1000).toFixed(2)} s)  ns CPU/msg: ${parts.join(", ")}${deliveryNote(r)}`,
    );
    return r;
  });
}

function summarizeBursts(runs: BurstRun[]) {
  const rows = MODES.map((mode) => {
    const rs = runs.filter((r) => r.mode === mode);
    const med = (f: (s: CpuSplit) => number | null) => {
      const xs = rs.map((r) => f(r.cpuNsPerMessage)).filter((x): x is number => x !== null);
      return xs.length ? median(xs) : null;
    };
    return {
      mode,
      messagesPerBurst: rs[0]?.expected ?? 0,
      ...spread(rs.map((r) => r.rate)),
      cpuNsPerMessage: {
        publisher: med((s) => s.publisher)!,
        master: med((s) => s.master),
        subscriber: med((s) => s.subscriber),
        client: med((s) => s.client)!,
      },
      incomplete: rs.filter((r) => !r.complete).length,
      rounds: rs,
    };
  });
  const of = (mode: Mode) => rows.find((r) => r.mode === mode)!;
  const cross = of("cross");
  return {
    rows,
    ratios: {
      crossOverLocal: cross.median / of("local").median,
      localOverSingle: of("local").median / of("single").median,
      crossOverSingle: cross.median / of("single").median,
    },
    target: TARGET.crossMsgPerSecond,
    verdict: cross.median >= TARGET.crossMsgPerSecond && cross.incomplete === 0 ? "PASS" : "MISS",
  };
}

async function rateRun(
  rigs: Record<"w2" | "w1", Rig>,
  mode: Mode,
  round: number,
  seconds: number,
): Promise<RateRun> {
  const { rig, from, to } = route(rigs, mode, round);
  assertAlive(rig.server);
  const before = snapshot(rig);
  const r = await rig.client.send<RateAnswer>({
    op: "rate",
    from,
    to,
    perSecond: LATENCY_RATE,
    ms: Math.round(seconds * 1000),
    size,
  });
  const after = snapshot(rig);
  const s = (i: number) => cpuSeconds(after[i]! - before[i]!);
  return {
    ...r,
    mode,
    from: rig.pids[from],
    to: rig.pids[to],
    cpuSeconds: {
      publisher: s(1 + from),
      master: rig.master === undefined ? null : s(0),
      subscriber: mode === "cross" ? s(1 + to) : null,
    },
  };
}

async function measureLatency(rigs: Record<"w2" | "w1", Rig>): Promise<RateRun[]> {
  for (const mode of MODES) {
    const r = await rateRun(rigs, mode, 0, 1);
    console.log(
      `  latency      warm-up  ${MODE_LABEL[mode].padEnd(13)} p50 ${us(r.p50Us)} µs, p99 ${us(r.p99Us)} µs${deliveryNote(r)}`,
    );
  }
  return inRounds(latencyRounds, MODES, async (mode, round) => {
    const r = await rateRun(rigs, mode, round, latencySeconds);
    const cpu = r.cpuSeconds;
    const share = (s: number) => `${((s / r.seconds) * 100).toFixed(0)} %`;
    const parts = [
      `pub ${share(cpu.publisher)}`,
      ...(cpu.master === null ? [] : [`master ${share(cpu.master)}`]),
      ...(cpu.subscriber === null ? [] : [`sub ${share(cpu.subscriber)}`]),
    ];
    console.log(
      `  latency      round ${round + 1}  ${MODE_LABEL[mode].padEnd(13)} p50 ${us(r.p50Us).padStart(5)}  p90 ${us(r.p90Us).padStart(5)}  p99 ${us(r.p99Us).padStart(5)}  p99.9 ${us(r.p999Us).padStart(6)}  max ${us(r.maxUs).padStart(6)} µs  ` +
        `(publisher ≤ ${r.publisherLagMs.toFixed(1)} ms behind schedule; CPU ${parts.join(", ")})${deliveryNote(r)}`,
    );
    return r;
  });
}

function summarizeRates(runs: RateRun[]) {
  const rows = MODES.map((mode) => {
    const rs = runs.filter((r) => r.mode === mode);
    const med = (f: (r: RateRun) => number) => median(rs.map(f));
    return {
      mode,
      p50Us: med((r) => r.p50Us),
      p90Us: med((r) => r.p90Us),
      p99Us: med((r) => r.p99Us),
      p999Us: med((r) => r.p999Us),
      maxUs: Math.max(...rs.map((r) => r.maxUs)),
      incomplete: rs.filter((r) => !r.complete).length,
      rounds: rs,
    };
  });
  const cross = rows[0]!;
  return {
    rows,
    target: TARGET.crossP99Us,
    verdict: cross.p99Us <= TARGET.crossP99Us && cross.incomplete === 0 ? "PASS" : "MISS",
  };
}

// --- HTTP ---

async function measureHttp(): Promise<Map<Role, HttpRun[]>> {
  const iodine = async (workers: number): Promise<Target> => {
    const s = await startServer(
      `iodine -w ${workers}`,
      iodineCmd("-w", String(workers), "examples/hello.ts"),
      { cwd: ROOT },
    );
    servers.push(s);
    return {
      role: workers === 1 ? "w1" : "w2",
      url: s.url + "/",
      roots: [s],
      // -w 1 serves in its own process (or a relaunched child); -w 2 in the master's workers
      servingPids: () =>
        workers === 1 ? [childPids(s.proc.pid)[0] ?? s.proc.pid] : childPids(s.proc.pid),
    };
  };
  const targets: Target[] = [await iodine(2), await iodine(1)];
  const first = await startServer(
    "raw reusePort #1",
    [process.execPath, join(import.meta.dir, "cluster-baseline.ts")],
    { cwd: ROOT },
  );
  servers.push(first);
  const second = await startServer(
    "raw reusePort #2",
    [process.execPath, join(import.meta.dir, "cluster-baseline.ts"), String(first.port)],
    { cwd: ROOT },
  );
  servers.push(second);
  if (second.port !== first.port)
    throw new Error(`the second raw server listens on ${second.port}, not ${first.port}`);
  targets.push({
    role: "raw",
    url: first.url + "/",
    roots: [first, second],
    servingPids: () => [first.proc.pid, second.proc.pid],
  });

  for (const t of targets) {
    const res = await fetch(t.url);
    const body = await res.text();
    if (res.status !== 200 || body !== "Hello World!")
      throw new Error(
        `${ROLE_LABEL[t.role]}: GET / gave ${res.status} ${JSON.stringify(body.slice(0, 80))}`,
      );
  }
  console.log(
    `\nHTTP: wrk -t${THREADS} -c${CONNECTIONS} -d${duration}s, ${httpRounds} rounds, ${warmupSeconds} s warm-up per server`,
  );
  const runs = new Map<Role, HttpRun[]>(targets.map((t) => [t.role, []]));
  for (const t of targets) await drive(t, warmupSeconds);
  await inRounds(httpRounds, targets, async (t, round) => {
    const r = await drive(t, duration);
    runs.get(t.role)!.push(r);
    console.log(
      `  http         round ${round + 1}  ${ROLE_LABEL[t.role].padEnd(17)} ${fmtRps(r.rps).padStart(9)} req/s  ${r.cpuMicrosPerRequest.toFixed(1).padStart(6)} µs CPU/req  split ${r.cpuShares.map((s) => `${(s * 100).toFixed(0)} %`).join(" / ")}${wrkNote(r)}`,
    );
  });
  return runs;
}

async function drive(t: Target, seconds: number): Promise<HttpRun> {
  for (const s of t.roots) assertAlive(s);
  const pids = t.servingPids();
  const total = () => t.roots.reduce((sum, s) => sum + cpuTicks(s.proc.pid), 0);
  const before = total();
  const each = pids.map((pid) => cpuTicks(pid));
  const r = await runWrk(
    t.url,
    { threads: THREADS, connections: CONNECTIONS, seconds },
    (p) => (wrk = p),
  );
  wrk = undefined;
  const spent = pids.map((pid, i) => cpuTicks(pid) - each[i]!);
  const sum = spent.reduce((a, b) => a + b, 0);
  return {
    ...r,
    cpuMicrosPerRequest: cpuMicros(total() - before, r.requests),
    cpuShares: spent.map((x) => (sum > 0 ? x / sum : 0)),
  };
}

function summarizeHttp(runs: Map<Role, HttpRun[]>) {
  const rows = [...runs].map(([role, rs]) => {
    const shares = rs[0]?.cpuShares.map((_, i) => median(rs.map((r) => r.cpuShares[i] ?? 0))) ?? [];
    return {
      role,
      ...spread(rs.map((r) => r.rps)),
      cpu: median(rs.map((r) => r.cpuMicrosPerRequest)),
      shares,
      rounds: rs,
    };
  });
  const of = (role: Role) => rows.find((r) => r.role === role);
  const ratio = (a: number | undefined, b: number | undefined) =>
    a !== undefined && b !== undefined && b > 0 ? a / b : null;
  const ratios = {
    w2OverRaw: ratio(of("w2")?.median, of("raw")?.median),
    w2OverW1: ratio(of("w2")?.median, of("w1")?.median),
    cpuRawOverW2: ratio(of("raw")?.cpu, of("w2")?.cpu),
    cpuW1OverW2: ratio(of("w1")?.cpu, of("w2")?.cpu),
  };
  return {
    rows,
    ratios,
    target: TARGET.w2OverRaw,
    verdict: ratios.w2OverRaw !== null && ratios.w2OverRaw >= TARGET.w2OverRaw ? "PASS" : "MISS",
  };
}

// --- entries for bench/report.ts ---

/**
 * The ratios (both pub/sub modes of -w 2 against -w 1, the floor; HTTP -w 2 against raw and -w 1) and,
 * as absolutes, the two targets that are figures: cross-worker msg/s and cross-worker p99.
 */
function reportEntries(
  throughput: ReturnType<typeof summarizeBursts> | undefined,
  latency: ReturnType<typeof summarizeRates> | undefined,
  http: ReturnType<typeof summarizeHttp> | undefined,
): { ratios: Ratio[]; absolutes: Absolute[] } {
  const ratios: Ratio[] = [];
  const absolutes: Absolute[] = [];
  if (throughput) {
    const row = (mode: Mode) => throughput.rows.find((r) => r.mode === mode)!;
    const rates = (mode: Mode) => row(mode).rounds.map((r) => r.rate);
    const n = fmtRps(row("cross").messagesPerBurst);
    for (const mode of ["cross", "local"] as const) {
      ratios.push(
        ratioEntry(
          "cluster",
          `pub/sub ${MODE_LABEL[mode]} ÷ -w 1 (no bus)`,
          rates(mode),
          rates("single"),
          {
            detail: `bursts of ${n} × ${size} B to one subscriber: ${fmtRps(row(mode).median)} vs ${fmtRps(row("single").median)} msg/s`,
          },
        ),
      );
    }
    const cross = row("cross");
    absolutes.push(
      absoluteEntry("cluster", "pub/sub cross-worker", rates("cross"), "msg/s", {
        target: TARGET.crossMsgPerSecond,
        detail: `-w 2, bursts of ${n} × ${size} B from worker A to one subscriber on B${cross.incomplete ? `; !! ${cross.incomplete} round(s) incomplete` : ""}`,
      }),
    );
  }
  if (latency) {
    const cross = latency.rows.find((r) => r.mode === "cross")!;
    absolutes.push(
      absoluteEntry(
        "cluster",
        `cross-worker p99 latency at ${fmtRps(LATENCY_RATE)} msg/s`,
        cross.rounds.map((r) => r.p99Us),
        "µs",
        {
          target: TARGET.crossP99Us,
          better: "lower",
          detail: `-w 2, ${latencySeconds} s per round; p50 ${us(cross.p50Us)} µs, p99.9 ${us(cross.p999Us)} µs${cross.incomplete ? `; !! ${cross.incomplete} round(s) incomplete` : ""}`,
        },
      ),
    );
  }
  if (http) {
    const row = (role: Role) => http.rows.find((r) => r.role === role)!;
    const rps = (role: Role) => row(role).rounds.map((r) => r.rps);
    const detail = (base: Role) =>
      `hello world, ${CONNECTIONS} connections: ${fmtRps(row("w2").median)} vs ${fmtRps(row(base).median)} req/s`;
    ratios.push(
      ratioEntry("cluster", `HTTP: iodine -w 2 ÷ ${ROLE_LABEL.raw}`, rps("w2"), rps("raw"), {
        target: TARGET.w2OverRaw,
        detail: detail("raw"),
      }),
    );
    ratios.push(
      ratioEntry("cluster", "HTTP: iodine -w 2 ÷ iodine -w 1", rps("w2"), rps("w1"), {
        detail: detail("w1"),
      }),
    );
  }
  return { ratios, absolutes };
}

// --- helpers ---

const us = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "—");
const ns = (x: number | null) => (x === null ? "—" : x.toFixed(0));

/** Messages that never arrived, a closed subscriber: what to say after a burst's or a latency run's line. */
function deliveryNote(r: BurstAnswer | RateAnswer): string {
  const notes: string[] = [];
  if (!r.complete)
    notes.push(`${fmtRps(r.expected - r.received)} of ${fmtRps(r.expected)} never arrived`);
  if (r.closed) notes.push("the subscriber's socket was closed");
  return notesText(notes);
}

await runBench(main, {
  cleanup,
  stopping: "servers and clients",
  deadlineMs: DEADLINE_MS,
  onSignal: () => (signalled = true),
});
