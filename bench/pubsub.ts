// Pub/sub fan-out of iodine against a raw Bun.serve, both on this machine, in one run.
//
// Run:   bun bench/pubsub.ts                      (5 rounds, 64-byte messages, ~2 s per burst)
//        bun bench/pubsub.ts --rounds 3 --size 256 --seconds 1
// Out:   a table on stdout, and every round in bench/results/pubsub.json (its `ratios`: iodine ÷ raw
//        msg/s per WebSocket scenario, for bench/report.ts).
//
// Servers (each its own process): iodine through the CLI with bench/pubsub-server.ts, whose
// WebSockets subscribe to "bench" without a callback (Bun's native topics), and the raw
// bench/pubsub-baseline.ts, whose `open` does ws.subscribe("bench"). A burst is
// `POST /burst?n=N&size=S`: N publishes in a tight loop (Iodine.publish / server.publish).
//
// Load: one bench/pubsub-client.ts process per server (one process cannot hold 2 × 10,000
// sockets under this machine's hard limit of open files), raw TCP sockets, counting frames.
// A round's time runs from the burst request to the last of the K × N deliveries; the score is
// delivered messages/s = K × N / seconds. Rounds alternate the servers, and the order rotates.
//
// Phases: memory (RSS with 0, then 10,000 idle subscribed WebSockets, fresh servers) → WebSocket
// fan-out to 10,000, then 1,000 subscribers → SSE fan-out to 1,000 streams (iodine only).
import { join } from "node:path";
import {
  assertAlive,
  childPids,
  cpuTicks,
  cpuSeconds,
  fmtRps,
  inRounds,
  iodineCmd,
  LoadClient,
  machineFacts,
  median,
  notesText,
  openFilesLimit,
  parseFlags,
  positive,
  printMachine,
  ratioEntry,
  ROOT,
  rssBytes,
  runBench,
  spread,
  startServer,
  stopServer,
  writeResults,
  type Ratio,
  type Server,
  type Spread,
} from "./lib.ts";

const WS_COUNTS = [1_000, 10_000] as const;
const SSE_COUNT = 1_000;
const MEMORY_COUNT = 10_000;
/** the whole run is cut off here, whatever it is doing */
const DEADLINE_MS = 285_000;

// --- options ---

const flags = parseFlags("usage: bun bench/pubsub.ts [--rounds N (5)] [--size BYTES (64)] [--seconds PER_BURST (2)]", ["rounds", "size", "seconds"]);
const rounds = positive(flags.rounds ?? process.env.BENCH_ROUNDS ?? "5", "rounds", true);
const size = positive(flags.size ?? "64", "size", true);
const targetSeconds = positive(flags.seconds ?? "2", "seconds", false);

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
  closedDuring: number;
  clientCpuSeconds: number;
}

// --- one side of the comparison: a server and its load client ---

type Role = "iodine" | "raw";
const LABEL: Record<Role, string> = { iodine: "iodine", raw: "raw Bun.serve" };

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
  subscribers: number;
  messagesPerBurst: number;
  rows: Row[];
}

async function main(): Promise<void> {
  const facts = { ...machineFacts(), openFiles: { bench: openFilesLimit(process.pid), iodine: "", raw: "", client: "" } };
  printMachine(facts, `bun ${facts.bun}, date: ${facts.date}, load average ${facts.loadAvg1m.toFixed(2)}`);
  console.log(`${size}-byte text messages, ${rounds} rounds, bursts sized for ~${targetSeconds} s\n`);

  // --- processes ---
  const sides: Side[] = [];
  for (const role of ["iodine", "raw"] as const) {
    const cmd =
      role === "iodine"
        ? iodineCmd("bench/pubsub-server.ts")
        : [process.execPath, join(import.meta.dir, "pubsub-baseline.ts")];
    const server = await startServer(LABEL[role], cmd, { cwd: ROOT });
    servers.push(server);
    const kids = childPids(server.proc.pid);
    if (kids.length > 1) throw new Error(`${LABEL[role]}: ${kids.length} child processes; RSS and CPU would be of the wrong one`);
    const client = new LoadClient("pubsub-client.ts", `${role} client`);
    clients.push(client);
    sides.push({ role, server, pid: kids[0] ?? server.proc.pid, client });
  }
  const [iodine, raw] = sides as [Side, Side];
  facts.openFiles.iodine = openFilesLimit(iodine.pid);
  facts.openFiles.raw = openFilesLimit(raw.pid);
  facts.openFiles.client = openFilesLimit(iodine.client.proc.pid);
  console.log(`open-file limits (soft/hard): iodine ${facts.openFiles.iodine}, raw ${facts.openFiles.raw}, load client ${facts.openFiles.client}\n`);

  // --- memory: fresh servers, 0 then 10,000 idle subscribed WebSockets ---
  const memory: { server: string; rss0: number; rss: number; connections: number; bytesPerConnection: number; openSeconds: number }[] = [];
  for (const side of sides) {
    const rss0 = await settledRss(side);
    const opened = await resize(side, "ws", MEMORY_COUNT);
    const rss = await settledRss(side);
    const m = { server: LABEL[side.role], rss0, rss, connections: MEMORY_COUNT, bytesPerConnection: (rss - rss0) / MEMORY_COUNT, openSeconds: opened.ms / 1000 };
    memory.push(m);
    console.log(`  memory      ${m.server.padEnd(14)} RSS ${mb(rss0)} → ${mb(rss)} with ${fmtRps(MEMORY_COUNT)} idle WebSockets (opened in ${m.openSeconds.toFixed(1)} s): ${fmtRps(m.bytesPerConnection)} B/connection`);
  }

  // --- WebSocket fan-out: 10,000 (already open), then 1,000 ---
  const scenarios: Scenario[] = [];
  for (const k of [...WS_COUNTS].sort((a, b) => b - a)) {
    for (const side of sides) await resize(side, "ws", k);
    scenarios.push(await measure(`ws-${k}`, `WS ${fmtRps(k)} subs`, "ws", k, sides));
  }
  scenarios.reverse(); // 1,000 first in the report

  // --- SSE fan-out, iodine only ---
  for (const side of sides) await resize(side, "ws", 0);
  await resize(iodine, "sse", SSE_COUNT);
  scenarios.push(await measure(`sse-${SSE_COUNT}`, `SSE ${fmtRps(SSE_COUNT)} subs`, "sse", SSE_COUNT, [iodine]));
  await resize(iodine, "sse", 0);

  // --- report ---
  /** iodine's and raw's `key` in a scenario, or null if one of them did not run it */
  const both = (sc: Scenario, key: "median" | "serverCpuNsPerMessage") => {
    const io = sc.rows.find((r) => r.role === "iodine")?.[key];
    const rw = sc.rows.find((r) => r.role === "raw")?.[key];
    return io !== undefined && rw !== undefined ? { io, rw } : null;
  };
  const ratioOf = (sc: Scenario) => {
    const m = both(sc, "median");
    return m && m.io / m.rw;
  };
  // CPU per message moves far less with steal time than msg/s does (> 1: iodine is cheaper)
  const cpuRatioOf = (sc: Scenario) => {
    const c = both(sc, "serverCpuNsPerMessage");
    return c && c.rw / c.io;
  };
  console.log("");
  console.log(`${"scenario".padEnd(16)}${"server".padEnd(15)}${"msgs/burst".padStart(10)}${"median msg/s".padStart(14)}   ${"min–max".padEnd(23)}${"server ns/msg".padStart(13)}${"client CPU".padStart(12)}`);
  console.log("-".repeat(103));
  for (const sc of scenarios) {
    sc.rows.forEach((r, i) => {
      const range = `${fmtRps(r.min)}–${fmtRps(r.max)}`;
      const first = i === 0;
      console.log(
        `${(first ? sc.name : "").padEnd(16)}${LABEL[r.role].padEnd(15)}${(first ? fmtRps(sc.messagesPerBurst) : "").padStart(10)}${fmtRps(r.median).padStart(14)}   ${range.padEnd(23)}${r.serverCpuNsPerMessage.toFixed(0).padStart(13)}${`${(r.clientCpuShare * 100).toFixed(0)} %`.padStart(12)}${dropNote(r)}`,
      );
    });
    const ratio = ratioOf(sc);
    const cpuRatio = cpuRatioOf(sc);
    if (ratio !== null && cpuRatio !== null) {
      console.log(`${"".padEnd(16)}msg/s iodine ÷ raw ${ratio.toFixed(2)}   server CPU/msg raw ÷ iodine ${cpuRatio.toFixed(2)} (> 1: iodine cheaper)`);
    }
  }
  console.log("");
  console.log(`${"memory".padEnd(16)}${"server".padEnd(15)}${"RSS, 0 conns".padStart(13)}${`RSS, ${fmtRps(MEMORY_COUNT)}`.padStart(13)}${"bytes/idle WS".padStart(15)}`);
  console.log("-".repeat(72));
  for (const m of memory) {
    console.log(`${"".padEnd(16)}${m.server.padEnd(15)}${mb(m.rss0).padStart(13)}${mb(m.rss).padStart(13)}${fmtRps(m.bytesPerConnection).padStart(15)}`);
  }
  console.log("");
  console.log("msg/s: K × N deliveries ÷ (burst request → last delivery at the client). server ns/msg: CPU of the");
  console.log("server process per delivered message. client CPU: the load client's CPU ÷ wall time (100 % = one core).");

  const settings = { rounds, messageBytes: size, targetSecondsPerBurst: targetSeconds, wsSubscribers: WS_COUNTS, sseSubscribers: SSE_COUNT };
  const report = scenarios.map((sc) => ({
    scenario: sc.name,
    kind: sc.kind,
    subscribers: sc.subscribers,
    messagesPerBurst: sc.messagesPerBurst,
    deliveriesPerBurst: sc.subscribers * sc.messagesPerBurst,
    servers: sc.rows.map((r) => ({ server: LABEL[r.role], median: r.median, min: r.min, max: r.max, serverCpuNsPerMessage: r.serverCpuNsPerMessage, clientCpuShare: r.clientCpuShare, rounds: r.rounds })),
    iodineOverRaw: ratioOf(sc),
    cpuRawOverIodine: cpuRatioOf(sc),
  }));
  const ratios = scenarios.flatMap(ratioEntries);
  console.log(`\nresults: ${writeResults("pubsub", { machine: facts, settings, scenarios: report, memory, ratios })}`);
}

/** iodine ÷ raw msg/s of a scenario both servers ran (SSE is iodine's only: none). */
function ratioEntries(sc: Scenario): Ratio[] {
  const io = sc.rows.find((r) => r.role === "iodine");
  const rw = sc.rows.find((r) => r.role === "raw");
  if (!io || !rw) return [];
  const detail = `${fmtRps(sc.messagesPerBurst)} × ${size} B to ${fmtRps(sc.subscribers)} WebSockets: ${fmtRps(io.median)} vs ${fmtRps(rw.median)} msg/s`;
  return [ratioEntry("pubsub", `${sc.name}: iodine ÷ ${LABEL.raw}`, io.rounds.map((r) => r.rate), rw.rounds.map((r) => r.rate), { detail })];
}

// --- steps ---

/** A warm-up burst per server sizes N for ~targetSeconds on the faster one; then alternating rounds. */
async function measure(id: string, name: string, kind: "ws" | "sse", k: number, sides: Side[]): Promise<Scenario> {
  const warmDeliveries = kind === "ws" ? 500_000 : 50_000;
  const warmN = Math.max(1, Math.round(warmDeliveries / k));
  let fastest = 0;
  for (const side of sides) {
    const r = await burst(side, warmN);
    fastest = Math.max(fastest, r.rate);
    console.log(`  ${name.padEnd(14)} warm-up  ${LABEL[side.role].padEnd(14)} ${fmtRps(r.rate).padStart(11)} msg/s${runNote(r)}`);
  }
  const n = Math.min(100_000, Math.max(1, Math.round((fastest * targetSeconds) / k)));
  const runs = new Map<Role, Run[]>(sides.map((s) => [s.role, []]));
  await inRounds(rounds, sides, async (side, round) => {
    const r = await burst(side, n);
    runs.get(side.role)!.push(r);
    console.log(
      `  ${name.padEnd(14)} round ${round + 1}  ${LABEL[side.role].padEnd(14)} ${fmtRps(r.rate).padStart(11)} msg/s  ${r.seconds.toFixed(2)} s  ${r.serverCpuNsPerMessage.toFixed(0).padStart(5)} ns CPU/msg${runNote(r)}`,
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
  return { id, name, kind, subscribers: k, messagesPerBurst: n, rows };
}

async function burst(side: Side, n: number): Promise<Run> {
  assertAlive(side.server);
  const before = cpuTicks(side.pid);
  const r = await side.client.send<BurstResult>({ op: "burst", n, size, port: side.server.port });
  const ticks = cpuTicks(side.pid) - before;
  return {
    ...r,
    // what arrived, in the time it took: a burst with drops scores only its deliveries
    rate: r.received / r.seconds,
    serverCpuNsPerMessage: (cpuSeconds(ticks) * 1e9) / Math.max(1, r.received),
    clientCpuShare: r.clientCpuSeconds / r.seconds,
  };
}

/** Grows or shrinks a client's connections to k and waits until the server counts the same. */
async function resize(side: Side, kind: "ws" | "sse", k: number): Promise<{ ms: number }> {
  assertAlive(side.server);
  const r = await side.client.send<{ live: number; failed: number; ms: number }>({ op: kind, n: k, port: side.server.port });
  if (r.live !== k) throw new Error(`${LABEL[side.role]}: only ${r.live} of ${k} ${kind} connections opened (${r.failed} failed)`);
  const deadline = Date.now() + 15_000;
  for (;;) {
    const stats = (await (await fetch(`${side.server.url}/stats`)).json()) as Record<string, number>;
    if (stats[kind] === k) return { ms: r.ms };
    if (Date.now() > deadline) throw new Error(`${LABEL[side.role]}: the server counts ${stats[kind]} ${kind} subscribers, the client ${k}`);
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
  if (!r.complete) notes.push(`${fmtRps(r.expected - r.received)} of ${fmtRps(r.expected)} never arrived`);
  if (r.closedDuring) notes.push(`${r.closedDuring} connections closed`);
  if (r.badSize) notes.push(`${r.badSize} messages of the wrong size`);
  if (r.perConnection.min !== r.perConnection.max) notes.push(`per connection ${r.perConnection.min}–${r.perConnection.max}`);
  return notesText(notes);
}

function dropNote(r: Row): string {
  const bad = r.rounds.filter((x) => !x.complete).length;
  return bad ? `   !! ${bad} round(s) incomplete` : "";
}

await runBench(main, { cleanup, stopping: "servers and clients", deadlineMs: DEADLINE_MS });
