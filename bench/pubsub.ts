// Pub/sub fan-out of iodine against a raw Bun.serve, both on this machine, in one run.
//
// Run:   bun bench/pubsub.ts                      (5 rounds, 64-byte messages, ~2 s per burst)
//        bun bench/pubsub.ts --rounds 3 --size 256 --seconds 1
//        bun bench/pubsub.ts --rounds 3 --only deflate   (the permessage-deflate phase alone)
//        bun bench/pubsub.ts --rounds 3 --only history   (the history phase alone, bench/pubsub-history.ts)
// Out:   a table on stdout, and every round in bench/results/pubsub.json (its `ratios`: iodine ÷ raw
//        msg/s per WebSocket and SSE scenario, `iodine -deflate` ÷ `perMessageDeflate` in the deflate
//        ones, iodine's SSE ÷ its WebSocket fan-out at 1,000 (target ≥ 0.8, issue 21) and 10,000
//        subscribers (no target), history channel ÷ ordinary channel in a cluster and on Redis; its
//        `absolutes`: the memory a retained history message costs; for bench/report.ts).
//
// Servers (each its own process): iodine through the CLI with bench/pubsub-server.ts, whose
// WebSockets subscribe to "bench" without a callback (Bun's native topics) and whose SSE streams
// subscribe the same way (iodine's registry), and the raw bench/pubsub-baseline.ts, whose `open` does
// ws.subscribe("bench") and whose SSE is a hand-written batching fan-out on direct streams (each
// event encoded once, a stream's events of a turn in one write + flush). A burst is
// `POST /burst?n=N&size=S`: N publishes in a tight loop (Iodine.publish / server.publish and the
// SSE fan-out).
//
// Load: one bench/pubsub-client.ts process per server (one process cannot hold 2 × 10,000
// sockets under this machine's hard limit of open files), raw TCP sockets, counting frames or
// `data:` lines; it closes its WebSockets before it opens 10,000 SSE streams, for the same reason.
// A round's time runs from the burst request to the last of the K × N deliveries; the score is
// delivered messages/s = K × N / seconds. Rounds alternate the servers, and the order rotates.
//
// Phases: memory (RSS with 0, then 10,000 idle subscribed WebSockets, fresh servers) → WebSocket
// fan-out to 10,000, then 1,000 subscribers → SSE fan-out to 10,000, then 1,000 streams →
// permessage-deflate: 1,000 subscribers at 4 KiB plain, then two more servers (`iodine -deflate`,
// the baseline with `--deflate`) to 1,000 subscribers that offer the extension, at --size and 4 KiB →
// history (bench/pubsub-history.ts, the servers above stopped): a history channel against an ordinary
// one in `iodine -w 2`, then in `iodine -w 2 -r` on a redis-server of the bench's, 100 subscribers at
// --size; the master's RSS (and Redis's used_memory) per retained message of 16 and 64 bytes.
// Messages are words (bench/pubsub-routes.ts `text`), which deflate shrinks as it would chat or JSON;
// the load client counts compressed frames and never inflates them.
import { join } from "node:path";
import { ROOT } from "./lib/tools.ts";
import {
  assertAlive,
  iodineCmd,
  LoadClient,
  startServer,
  stopServer,
  type Server,
} from "./lib/processes.ts";
import {
  childPids,
  cpuSeconds,
  cpuTicks,
  machineFacts,
  openFilesLimit,
  printMachine,
  rssBytes,
} from "./lib/machine.ts";
import {
  fmtRatio,
  fmtRps,
  inRounds,
  median,
  notesText,
  ratioEntry,
  spread,
  type Ratio,
  type Spread,
} from "./lib/stats.ts";
import { parseFlags, positive, runBench, writeResults } from "./lib/run.ts";
import { historyPhase } from "./pubsub-history.ts";
import { printHistory, type HistoryResults } from "./pubsub-history-report.ts";

const WS_COUNTS = [1_000, 10_000] as const;
/** subscribers and the larger message size of the permessage-deflate phase */
const DEFLATE_COUNT = 1_000;
const LARGE = 4096;
/** SSE streams; at the first, SSE ÷ WebSocket fan-out has a target (issue 21) */
const SSE_COUNTS = [1_000, 10_000] as const;
const SSE_OVER_WS_TARGET: Partial<Record<number, number>> = { 1_000: 0.8 };
/** what the raw baseline's SSE does, for labels */
const RAW_SSE = "raw Bun.serve SSE, one write + flush a stream a turn";
const MEMORY_COUNT = 10_000;
/** the whole run is cut off here, whatever it is doing */
const DEADLINE_MS = 285_000;

// --- options ---

const flags = parseFlags(
  "usage: bun bench/pubsub.ts [--rounds N (5)] [--size BYTES (64)] [--seconds PER_BURST (2)] [--only deflate|history]",
  ["rounds", "size", "seconds", "only"],
);
const rounds = positive(flags.rounds ?? process.env.BENCH_ROUNDS ?? "5", "rounds", true);
const size = positive(flags.size ?? "64", "size", true);
const targetSeconds = positive(flags.seconds ?? "2", "seconds", false);
if (flags.only !== undefined && flags.only !== "deflate" && flags.only !== "history") {
  console.error(
    `bench: --only ${flags.only}: the phases that run alone are "deflate" and "history"`,
  );
  process.exit(2);
}
const onlyDeflate = flags.only === "deflate";
const onlyHistory = flags.only === "history";

// --- cleanup, also on Ctrl-C and at the deadline ---

const servers: Server[] = [];
const clients: LoadClient[] = [];

async function cleanup(): Promise<void> {
  await Promise.all(clients.map((c) => c.stop()));
  await Promise.all(servers.map((s) => stopServer(s)));
}

// --- what the load client (bench/pubsub-client.ts) answers ---

interface BurstResult {
  expected: number;
  received: number;
  complete: boolean;
  seconds: number;
  answeredSeconds: number;
  publishMs: number;
  perConnection: { min: number; max: number };
  badSize: number;
  /** messages that arrived compressed, and the payload bytes of all of them as sent */
  compressed: number;
  payloadBytes: number;
  closedDuring: number;
  clientCpuSeconds: number;
}

// --- one side of the comparison: a server and its load client ---

type Role = "iodine" | "raw" | "iodine-deflate" | "raw-deflate";
const LABEL: Record<Role, string> = {
  iodine: "iodine",
  raw: "raw Bun.serve",
  "iodine-deflate": "iodine -deflate",
  "raw-deflate": "raw Bun.serve perMessageDeflate",
};
/** what the label column must hold */
const LABEL_WIDTH = Math.max(...Object.values(LABEL).map((l) => l.length)) + 2;
const COMMAND: Record<Role, () => string[]> = {
  iodine: () => iodineCmd("bench/pubsub-server.ts"),
  raw: () => [process.execPath, join(import.meta.dir, "pubsub-baseline.ts")],
  "iodine-deflate": () => iodineCmd("-deflate", "bench/pubsub-server.ts"),
  "raw-deflate": () => [process.execPath, join(import.meta.dir, "pubsub-baseline.ts"), "--deflate"],
};
/** the sides whose clients offer permessage-deflate */
const isDeflate = (role: Role) => role.endsWith("-deflate");

interface Side {
  role: Role;
  server: Server;
  /** the pid that serves (iodine relaunches itself when Bun's header limit differs) */
  pid: number;
  client: LoadClient;
}

/** One burst, with the server's CPU spent on it. */
type Run = BurstResult & { rate: number; serverCpuNsPerMessage: number; clientCpuShare: number };

interface Row extends Spread {
  role: Role;
  rounds: Run[];
  serverCpuNsPerMessage: number;
  clientCpuShare: number;
}

interface Scenario {
  id: string;
  name: string;
  kind: "ws" | "sse";
  /** message size, bytes */
  bytes: number;
  subscribers: number;
  messagesPerBurst: number;
  rows: Row[];
}

async function main(): Promise<void> {
  const facts = {
    ...machineFacts(),
    openFiles: { bench: openFilesLimit(process.pid), iodine: "", raw: "", client: "" },
  };
  printMachine(
    facts,
    `bun ${facts.bun}, date: ${facts.date}, load average ${facts.loadAvg1m.toFixed(2)}`,
  );
  console.log(
    `${size}-byte text messages (words), ${rounds} rounds, bursts sized for ~${targetSeconds} s\n`,
  );
  const memory: Memory[] = [];
  const scenarios: Scenario[] = [];
  if (!onlyHistory) {
    await plainPhases(facts, memory, scenarios);
    // their servers and clients are done: the history phase's clusters get the machine to themselves
    await cleanup();
  }
  const history = onlyDeflate
    ? undefined
    : await historyPhase({ rounds, size, seconds: targetSeconds, servers, clients });
  report(scenarios, memory, facts, history);
}

type Facts = ReturnType<typeof machineFacts> & { openFiles: Record<string, string> };

/** Every phase of iodine against the raw Bun.serve: memory, fan-out, SSE, permessage-deflate. */
async function plainPhases(facts: Facts, memory: Memory[], scenarios: Scenario[]): Promise<void> {
  // --- processes ---
  const sides = [await startSide("iodine"), await startSide("raw")];
  const [iodine, raw] = sides as [Side, Side];
  facts.openFiles.iodine = openFilesLimit(iodine.pid);
  facts.openFiles.raw = openFilesLimit(raw.pid);
  facts.openFiles.client = openFilesLimit(iodine.client.proc.pid);
  console.log(
    `open-file limits (soft/hard): iodine ${facts.openFiles.iodine}, raw ${facts.openFiles.raw}, load client ${facts.openFiles.client}\n`,
  );

  // --- memory: fresh servers, 0 then 10,000 idle subscribed WebSockets ---
  if (!onlyDeflate) await mainPhases(sides, memory, scenarios);

  // --- permessage-deflate: the plain servers at 4 KiB (and --size, if not done above), then the
  // servers with it on, to clients that offer it ---
  const wsName = (bytes: number) =>
    `WS ${fmtRps(DEFLATE_COUNT)} subs${bytes === size ? "" : `, ${fmtRps(bytes)} B`}`;
  const wsId = (bytes: number) => `ws-${DEFLATE_COUNT}${bytes === size ? "" : `-${bytes}`}`;
  for (const side of sides) await resize(side, "ws", DEFLATE_COUNT);
  for (const bytes of onlyDeflate ? [size, LARGE] : [LARGE]) {
    scenarios.push(await measure(wsId(bytes), wsName(bytes), "ws", DEFLATE_COUNT, sides, bytes));
  }
  for (const side of sides) await resize(side, "ws", 0);
  const deflating = [await startSide("iodine-deflate"), await startSide("raw-deflate")];
  for (const side of deflating) await resize(side, "ws", DEFLATE_COUNT, true);
  for (const bytes of [size, LARGE]) {
    scenarios.push(
      await measure(
        `${wsId(bytes)}-deflate`,
        `${wsName(bytes)}, deflate`,
        "ws",
        DEFLATE_COUNT,
        deflating,
        bytes,
      ),
    );
  }
  for (const side of deflating) await resize(side, "ws", 0);
}

/** Starts one server and its load client. */
async function startSide(role: Role): Promise<Side> {
  const server = await startServer(LABEL[role], COMMAND[role](), { cwd: ROOT });
  servers.push(server);
  const kids = childPids(server.proc.pid);
  if (kids.length > 1)
    throw new Error(
      `${LABEL[role]}: ${kids.length} child processes; RSS and CPU would be of the wrong one`,
    );
  const client = new LoadClient("pubsub-client.ts", `${role} client`);
  clients.push(client);
  return { role, server, pid: kids[0] ?? server.proc.pid, client };
}

/** Memory, WebSocket fan-out to 10,000 and 1,000, SSE fan-out: the plain servers. */
async function mainPhases(sides: Side[], memory: Memory[], scenarios: Scenario[]): Promise<void> {
  for (const side of sides) {
    const rss0 = await settledRss(side);
    const opened = await resize(side, "ws", MEMORY_COUNT);
    const rss = await settledRss(side);
    const m = {
      server: LABEL[side.role],
      rss0,
      rss,
      connections: MEMORY_COUNT,
      bytesPerConnection: (rss - rss0) / MEMORY_COUNT,
      openSeconds: opened.ms / 1000,
    };
    memory.push(m);
    console.log(
      `  memory      ${m.server.padEnd(14)} RSS ${mb(rss0)} → ${mb(rss)} with ${fmtRps(MEMORY_COUNT)} idle WebSockets (opened in ${m.openSeconds.toFixed(1)} s): ${fmtRps(m.bytesPerConnection)} B/connection`,
    );
  }

  // --- WebSocket fan-out: 10,000 (already open), then 1,000 ---
  const ws: Scenario[] = [];
  for (const k of [...WS_COUNTS].sort((a, b) => b - a)) {
    for (const side of sides) await resize(side, "ws", k);
    ws.unshift(await measure(`ws-${k}`, `WS ${fmtRps(k)} subs`, "ws", k, sides, size)); // 1,000 first in the report
  }
  scenarios.push(...ws);

  // --- SSE fan-out: 10,000, then 1,000 streams (the WebSockets closed first: one load client
  // cannot hold 10,000 of each under the open-file limit) ---
  for (const side of sides) await resize(side, "ws", 0);
  const sse: Scenario[] = [];
  for (const k of [...SSE_COUNTS].sort((a, b) => b - a)) {
    for (const side of sides) await resize(side, "sse", k);
    sse.unshift(await measure(`sse-${k}`, `SSE ${fmtRps(k)} subs`, "sse", k, sides, size));
  }
  scenarios.push(...sse);
  for (const side of sides) await resize(side, "sse", 0);
}

type Memory = {
  server: string;
  rss0: number;
  rss: number;
  connections: number;
  bytesPerConnection: number;
  openSeconds: number;
};

function report(
  scenarios: Scenario[],
  memory: Memory[],
  facts: Facts,
  history: HistoryResults | undefined,
): void {
  if (scenarios.length > 0) printScenarios(scenarios, memory);
  if (history !== undefined) printHistory(history);

  const settings = {
    rounds,
    messageBytes: size,
    targetSecondsPerBurst: targetSeconds,
    wsSubscribers: WS_COUNTS,
    sseSubscribers: SSE_COUNTS,
    deflateSubscribers: DEFLATE_COUNT,
    largeMessageBytes: LARGE,
    onlyDeflate,
    onlyHistory,
  };
  const report = scenarios.map((sc) => {
    const pair = pairOf(sc);
    return {
      scenario: sc.name,
      kind: sc.kind,
      messageBytes: sc.bytes,
      subscribers: sc.subscribers,
      messagesPerBurst: sc.messagesPerBurst,
      deliveriesPerBurst: sc.subscribers * sc.messagesPerBurst,
      servers: sc.rows.map((r) => ({
        server: LABEL[r.role],
        median: r.median,
        min: r.min,
        max: r.max,
        serverCpuNsPerMessage: r.serverCpuNsPerMessage,
        clientCpuShare: r.clientCpuShare,
        rounds: r.rounds,
      })),
      iodineOverRaw: pair && pair[0].median / pair[1].median,
      cpuRawOverIodine: pair && pair[1].serverCpuNsPerMessage / pair[0].serverCpuNsPerMessage,
    };
  });
  const ratios = [
    ...scenarios.flatMap(ratioEntries),
    ...sseOverWs(scenarios),
    ...(history?.ratios ?? []),
  ];
  const absolutes = history?.absolutes ?? [];
  const written = writeResults("pubsub", {
    machine: facts,
    settings,
    scenarios: report,
    memory,
    history: history && { parts: history.parts, notes: history.notes },
    ratios,
    absolutes,
  });
  console.log(`\nresults: ${written}`);
}

function printScenarios(scenarios: Scenario[], memory: Memory[]): void {
  const nameWidth = Math.max(16, ...scenarios.map((sc) => sc.name.length + 2));
  console.log("");
  console.log(
    `${"scenario".padEnd(nameWidth)}${"server".padEnd(LABEL_WIDTH)}${"msgs/burst".padStart(10)}${"median msg/s".padStart(14)}   ${"min–max".padEnd(23)}${"server ns/msg".padStart(13)}${"client CPU".padStart(12)}`,
  );
  console.log("-".repeat(nameWidth + LABEL_WIDTH + 87));
  for (const sc of scenarios) {
    sc.rows.forEach((r, i) => {
      const range = `${fmtRps(r.min)}–${fmtRps(r.max)}`;
      const first = i === 0;
      console.log(
        `${(first ? sc.name : "").padEnd(nameWidth)}${LABEL[r.role].padEnd(LABEL_WIDTH)}${(first ? fmtRps(sc.messagesPerBurst) : "").padStart(10)}${fmtRps(r.median).padStart(14)}   ${range.padEnd(23)}${r.serverCpuNsPerMessage.toFixed(0).padStart(13)}${`${(r.clientCpuShare * 100).toFixed(0)} %`.padStart(12)}${wireNote(sc, r)}${dropNote(r)}`,
      );
    });
    const pair = pairOf(sc);
    if (pair !== null) {
      const [ours, base] = pair;
      console.log(
        `${"".padEnd(nameWidth)}msg/s ${LABEL[ours.role]} ÷ ${LABEL[base.role]} ${(ours.median / base.median).toFixed(2)}   ` +
          `server CPU/msg ${(base.serverCpuNsPerMessage / ours.serverCpuNsPerMessage).toFixed(2)} (> 1: iodine cheaper)`,
      );
    }
    const plain = plainOf(sc, scenarios);
    if (plain !== undefined) {
      for (const r of sc.rows) {
        const off = plain.rows.find(
          (p) => p.role === (r.role === "iodine-deflate" ? "iodine" : "raw"),
        );
        if (off === undefined) continue;
        console.log(
          `${"".padEnd(nameWidth)}${LABEL[r.role]} ÷ ${LABEL[off.role]} (${plain.name}): msg/s ${(r.median / off.median).toFixed(2)}, ` +
            `server CPU/msg ${(r.serverCpuNsPerMessage / off.serverCpuNsPerMessage).toFixed(1)}×`,
        );
      }
    }
  }
  for (const r of sseOverWs(scenarios)) {
    const goal =
      r.target === undefined
        ? "no target"
        : `target ≥ ${r.target}: ${r.ratio >= r.target ? "PASS" : "MISS"}`;
    console.log(`${r.name}: ${fmtRatio(r.ratio)} (${goal})   ${r.detail}`);
  }
  if (memory.length > 0) {
    console.log("");
    console.log(
      `${"memory".padEnd(16)}${"server".padEnd(15)}${"RSS, 0 conns".padStart(13)}${`RSS, ${fmtRps(MEMORY_COUNT)}`.padStart(13)}${"bytes/idle WS".padStart(15)}`,
    );
    console.log("-".repeat(72));
    for (const m of memory) {
      console.log(
        `${"".padEnd(16)}${m.server.padEnd(15)}${mb(m.rss0).padStart(13)}${mb(m.rss).padStart(13)}${fmtRps(m.bytesPerConnection).padStart(15)}`,
      );
    }
  }
  console.log("");
  console.log(
    "msg/s: K × N deliveries ÷ (burst request → last delivery at the client). server ns/msg: CPU of the",
  );
  console.log(
    "server process per delivered message. client CPU: the load client's CPU ÷ wall time (100 % = one core).",
  );
  console.log(
    "deflate: the clients offer permessage-deflate; iodine compresses messages of 1 KiB and more, the raw",
  );
  console.log(
    "baseline every message (server.publish's default). The load client counts compressed frames, never inflates them.",
  );
  console.log(
    "SSE: GET /sse event streams, counted by `data:`; the raw Bun.serve encodes each published event once, queues it on",
  );
  console.log(
    "every stream and writes each stream's queue in one write + flush a turn (direct streams), as iodine does.",
  );
}

/** iodine's row and the raw baseline's in a scenario both ran. */
function pairOf(sc: Scenario): [Row, Row] | null {
  const ours = sc.rows.find((r) => r.role.startsWith("iodine"));
  const base = sc.rows.find((r) => r.role.startsWith("raw"));
  return ours && base ? [ours, base] : null;
}

/** For a deflate scenario, the plain one with the same subscribers and message size. */
function plainOf(sc: Scenario, all: Scenario[]): Scenario | undefined {
  if (!sc.rows.some((r) => isDeflate(r.role))) return undefined;
  return all.find(
    (p) =>
      p !== sc &&
      p.kind === sc.kind &&
      p.subscribers === sc.subscribers &&
      p.bytes === sc.bytes &&
      !p.rows.some((r) => isDeflate(r.role)),
  );
}

/** iodine ÷ raw msg/s of a scenario both servers ran. */
function ratioEntries(sc: Scenario): Ratio[] {
  const pair = pairOf(sc);
  if (pair === null) return [];
  const [ours, base] = pair;
  const offered = isDeflate(ours.role) ? " offering permessage-deflate" : "";
  const to = sc.kind === "sse" ? "SSE streams (GET /sse)" : `WebSockets${offered}`;
  const detail = `${fmtRps(sc.messagesPerBurst)} × ${sc.bytes} B to ${fmtRps(sc.subscribers)} ${to}: ${fmtRps(ours.median)} vs ${fmtRps(base.median)} msg/s`;
  const baseLabel = sc.kind === "sse" ? RAW_SSE : LABEL[base.role];
  return [
    ratioEntry(
      "pubsub",
      `${sc.name}: ${LABEL[ours.role]} ÷ ${baseLabel}`,
      ours.rounds.map((r) => r.rate),
      base.rounds.map((r) => r.rate),
      { detail },
    ),
  ];
}

/**
 * iodine's SSE fan-out ÷ its WebSocket fan-out to as many subscribers, at --size, from the same server
 * (its i-th SSE round against its i-th WebSocket round of the phase before).
 */
function sseOverWs(scenarios: Scenario[]): Ratio[] {
  return SSE_COUNTS.flatMap((k) => {
    const sse = scenarios.find((sc) => sc.id === `sse-${k}`);
    const ws = scenarios.find((sc) => sc.id === `ws-${k}`);
    const ours = sse?.rows.find((r) => r.role === "iodine");
    const base = ws?.rows.find((r) => r.role === "iodine");
    if (!sse || !ws || !ours || !base) return [];
    const target = SSE_OVER_WS_TARGET[k];
    return [
      ratioEntry(
        "pubsub",
        `SSE ÷ WebSocket fan-out, iodine, ${fmtRps(k)} subscribers`,
        ours.rounds.map((r) => r.rate),
        base.rounds.map((r) => r.rate),
        {
          ...(target === undefined ? {} : { target }),
          detail: `${fmtRps(sse.messagesPerBurst)} × ${sse.bytes} B to ${fmtRps(k)} SSE streams vs ${fmtRps(ws.messagesPerBurst)} × ${ws.bytes} B to ${fmtRps(k)} WebSockets, one iodine -p 0 -b 127.0.0.1 bench/pubsub-server.ts: ${fmtRps(ours.median)} vs ${fmtRps(base.median)} msg/s`,
        },
      ),
    ];
  });
}

// --- steps ---

/**
 * A warm-up burst per server sizes N for ~targetSeconds on the faster one (on the slower one where the
 * clients offer permessage-deflate: the sides differ 10× or more there); then alternating rounds.
 */
async function measure(
  id: string,
  name: string,
  kind: "ws" | "sse",
  k: number,
  sides: Side[],
  bytes: number,
): Promise<Scenario> {
  // compressing fan-out runs at a tenth of the plain rate or less
  const deflate = sides.some((s) => isDeflate(s.role));
  const warmDeliveries = deflate ? 50_000 : 500_000;
  const warmN = Math.max(1, Math.round(warmDeliveries / k));
  let fastest = 0;
  let slowest = Infinity;
  for (const side of sides) {
    const r = await burst(side, warmN, bytes);
    fastest = Math.max(fastest, r.rate);
    slowest = Math.min(slowest, r.rate);
    console.log(
      `  ${name.padEnd(14)} warm-up  ${LABEL[side.role].padEnd(LABEL_WIDTH)} ${fmtRps(r.rate).padStart(11)} msg/s${runNote(r)}`,
    );
  }
  const n = Math.min(
    100_000,
    Math.max(1, Math.round(((deflate ? slowest : fastest) * targetSeconds) / k)),
  );
  const runs = new Map<Role, Run[]>(sides.map((s) => [s.role, []]));
  await inRounds(rounds, sides, async (side, round) => {
    const r = await burst(side, n, bytes);
    runs.get(side.role)!.push(r);
    console.log(
      `  ${name.padEnd(14)} round ${round + 1}  ${LABEL[side.role].padEnd(LABEL_WIDTH)} ${fmtRps(r.rate).padStart(11)} msg/s  ${r.seconds.toFixed(2)} s  ${r.serverCpuNsPerMessage.toFixed(0).padStart(5)} ns CPU/msg${runNote(r)}`,
    );
  });
  const rows = sides.map((side): Row => {
    const rs = runs.get(side.role)!;
    return {
      role: side.role,
      rounds: rs,
      ...spread(rs.map((r) => r.rate)),
      serverCpuNsPerMessage: median(rs.map((r) => r.serverCpuNsPerMessage)),
      clientCpuShare: median(rs.map((r) => r.clientCpuShare)),
    };
  });
  return { id, name, kind, bytes, subscribers: k, messagesPerBurst: n, rows };
}

async function burst(side: Side, n: number, bytes: number): Promise<Run> {
  assertAlive(side.server);
  const before = cpuTicks(side.pid);
  const r = await side.client.send<BurstResult>({
    op: "burst",
    n,
    size: bytes,
    port: side.server.port,
  });
  const ticks = cpuTicks(side.pid) - before;
  return {
    ...r,
    // what arrived, in the time it took: a burst with drops scores only its deliveries
    rate: r.received / r.seconds,
    serverCpuNsPerMessage: (cpuSeconds(ticks) * 1e9) / Math.max(1, r.received),
    clientCpuShare: r.clientCpuSeconds / r.seconds,
  };
}

/** Grows or shrinks a client's connections to k and waits until the server counts the same; `deflate`: new ones offer it. */
async function resize(
  side: Side,
  kind: "ws" | "sse",
  k: number,
  deflate = false,
): Promise<{ ms: number }> {
  assertAlive(side.server);
  const r = await side.client.send<{ live: number; failed: number; ms: number }>({
    op: kind,
    n: k,
    port: side.server.port,
    deflate,
  });
  if (r.live !== k)
    throw new Error(
      `${LABEL[side.role]}: only ${r.live} of ${k} ${kind} connections opened (${r.failed} failed)`,
    );
  const deadline = Date.now() + 15_000;
  for (;;) {
    const stats = (await (await fetch(`${side.server.url}/stats`)).json()) as Record<
      string,
      number
    >;
    if (stats[kind] === k) return { ms: r.ms };
    if (Date.now() > deadline)
      throw new Error(
        `${LABEL[side.role]}: the server counts ${stats[kind]} ${kind} subscribers, the client ${k}`,
      );
    await Bun.sleep(50);
  }
}

/** RSS after a full GC and a moment to settle. */
async function settledRss(side: Side): Promise<number> {
  await (await fetch(`${side.server.url}/gc`, { method: "POST" })).text();
  await Bun.sleep(500);
  return rssBytes(side.pid);
}

// --- formatting ---

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;

function runNote(r: Run): string {
  const notes: string[] = [];
  if (!r.complete)
    notes.push(`${fmtRps(r.expected - r.received)} of ${fmtRps(r.expected)} never arrived`);
  if (r.closedDuring) notes.push(`${r.closedDuring} connections closed`);
  if (r.badSize) notes.push(`${r.badSize} plain messages of the wrong size`);
  if (r.perConnection.min !== r.perConnection.max)
    notes.push(`per connection ${r.perConnection.min}–${r.perConnection.max}`);
  return notesText(notes);
}

/** For rows whose clients offered permessage-deflate: how much went compressed, and its size on the wire. */
function wireNote(sc: Scenario, r: Row): string {
  if (!isDeflate(r.role)) return "";
  const received = r.rounds.reduce((n, x) => n + x.received, 0);
  const compressed = r.rounds.reduce((n, x) => n + x.compressed, 0);
  const bytes = r.rounds.reduce((n, x) => n + x.payloadBytes, 0);
  return `   ${((compressed / Math.max(1, received)) * 100).toFixed(0)} % compressed, ${fmtRps(bytes / Math.max(1, received))} of ${sc.bytes} B/msg`;
}

function dropNote(r: Row): string {
  const bad = r.rounds.filter((x) => !x.complete).length;
  return bad ? `   !! ${bad} round(s) incomplete` : "";
}

await runBench(main, { cleanup, stopping: "servers and clients", deadlineMs: DEADLINE_MS });
