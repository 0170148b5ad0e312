// HTTP throughput of iodine against a raw Bun.serve and nginx, all on this machine, in one run.
//
// Run:   bun bench/http.ts                    (5 scenarios × 5 rounds × 5 s per server)
//        bun bench/http.ts --duration 2 --rounds 3 --only plain,log
//        bun bench/http.ts --duration 3 --rounds 5 --only log-json   (-v JSON ÷ -v text alone)
//        bun bench/http.ts --duration 3 --rounds 5 --only metrics    (--metrics ÷ without alone)
//        BENCH_DURATION=2 BENCH_ROUNDS=3 bun bench/http.ts
// Out:   a table on stdout, and every round in bench/results/http.json (its `ratios`: iodine ÷ each
//        baseline per scenario, for bench/report.ts).
//
// Each scenario drives every server with the same wrk command, one server at a time, and
// rotates the order from round to round so warm-up and thermal drift do not favour one side.
// The score is the median round; the ratios compare medians.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { findTool, missingTool, ROOT, versionLine, wrkVersion } from "./lib/tools.ts";
import {
  assertAlive,
  freePort,
  indent,
  iodineCmd,
  startServer,
  stopServer,
  waitReachable,
  type Server,
} from "./lib/processes.ts";
import { runWrk, wrkNote, type WrkResult } from "./lib/wrk.ts";
import { cpuMicros, cpuTicks, machineFacts, printMachine } from "./lib/machine.ts";
import {
  fmtRatio,
  fmtRps,
  inRounds,
  median,
  ratioEntry,
  spread,
  type Ratio,
  type Spread,
} from "./lib/stats.ts";
import { parseFlags, positive, runBench, writeResults } from "./lib/run.ts";

const THREADS = 2;
const CONNECTIONS = 200;

// --- options ---

const flags = parseFlags(
  "usage: bun bench/http.ts [--duration SECONDS] [--rounds N] [--only plain,log,log-json,metrics,routes,static-1k,static-1m]",
  ["duration", "rounds", "only"],
);
const duration = positive(flags.duration ?? process.env.BENCH_DURATION ?? "5", "duration", true);
const rounds = positive(flags.rounds ?? process.env.BENCH_ROUNDS ?? "5", "rounds", true);
// A short unscored run per server first: JIT warm-up would otherwise land in round 1 only.
const warmupSeconds = Math.min(2, duration);

// --- cleanup, also on Ctrl-C ---

const children: Server[] = [];
let wrk: Subprocess | undefined;
let tmp: string | undefined;

async function cleanup(): Promise<void> {
  wrk?.kill("SIGKILL");
  await Promise.all(children.map((s) => stopServer(s)));
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}

// --- scenarios ---

// "rawIP" is the raw server asking Bun for each client's address, as an access log must: what
// iodine -v costs beyond that one call is the part iodine controls. "text" is iodine -v with text
// lines, the baseline of the JSON access log. "bare" is iodine without --metrics, the baseline of
// counting every request for the master's /metrics.
type Role = "iodine" | "raw" | "rawIP" | "nginx" | "text" | "bare";
const LABEL: Record<Role, string> = {
  iodine: "iodine",
  raw: "raw Bun.serve",
  rawIP: "raw + requestIP",
  nginx: "nginx",
  text: "iodine -v text",
  bare: "iodine without --metrics",
};
const SHORT: Record<Role, string> = {
  iodine: "iodine",
  raw: "raw",
  rawIP: "raw+IP",
  nginx: "nginx",
  text: "-v text",
  bare: "no metrics",
};

interface Scenario {
  id: string;
  name: string;
  path: string;
  servers: Partial<Record<Role, Server>>;
  expected: Uint8Array;
  target: { against: Exclude<Role, "iodine">; ratio: number };
}

/** One wrk run and the CPU the server spent on it. */
type Run = WrkResult & { cpuMicrosPerRequest: number };

interface Row extends Spread {
  role: Role;
  rounds: Run[];
  /** median µs of server CPU per request */
  cpu: number;
}

async function main(): Promise<void> {
  const facts = { ...machineFacts(), wrk: "", nginx: "" };

  // --- tools ---
  facts.wrk = await wrkVersion();
  const nginx = findTool("nginx");
  if (!nginx) {
    console.error(
      `\n!!!!! bench: ${missingTool("nginx", "nginx-light")} — the nginx baselines are SKIPPED !!!!!\n`,
    );
  }
  if (nginx) facts.nginx = await versionLine([nginx, "-v"]);

  printMachine(
    facts,
    `bun ${facts.bun}, ${facts.wrk || "wrk"}${facts.nginx ? `, ${facts.nginx}` : ""}`,
    `date: ${facts.date}, load average ${facts.loadAvg1m.toFixed(2)}`,
  );
  console.log(
    `wrk -t${THREADS} -c${CONNECTIONS} -d${duration}s, ${rounds} rounds, ${warmupSeconds} s warm-up per server\n`,
  );

  // --- files: random bytes, so no server can win by compressing ---
  tmp = mkdtempSync(join(tmpdir(), "iodine-bench-"));
  const www = join(tmp, "www");
  mkdirSync(www);
  const small = crypto.getRandomValues(new Uint8Array(1024));
  const large = new Uint8Array(1024 * 1024);
  for (let i = 0; i < large.length; i += 65536)
    crypto.getRandomValues(large.subarray(i, i + 65536));
  writeFileSync(join(www, "1k.bin"), small);
  writeFileSync(join(www, "1m.bin"), large);
  // nginx's worker drops to an unprivileged user: mkdtemp's 0700 would hide the files from it.
  chmodSync(tmp, 0o755);
  chmodSync(www, 0o755);

  // --- servers, all up side by side ---
  const only = flags.only?.split(",").map((s) => s.trim());
  const wants = (id: string) => !only || only.includes(id);
  const iodine = (name: string, args: string[], stderrFile?: string) =>
    start(name, iodineCmd(...args), stderrFile);
  const hello = new TextEncoder().encode("Hello World!");
  const scenarios: Scenario[] = [];

  if (wants("plain") || wants("log")) {
    const raw = await start("raw hello", [process.execPath, join(import.meta.dir, "baseline.ts")]);
    if (wants("plain")) {
      const io = await iodine("iodine", ["examples/hello.ts"]);
      scenarios.push({
        id: "plain",
        name: "plain",
        path: "/",
        servers: { iodine: io, raw },
        expected: hello,
        target: { against: "raw", ratio: 0.95 },
      });
    }
    if (wants("log")) {
      const io = await iodine("iodine -v", ["-v", "examples/hello.ts"], join(tmp, "access.log"));
      const rawIP = await start("raw hello + requestIP", [
        process.execPath,
        join(import.meta.dir, "baseline.ts"),
        "--ip",
      ]);
      const servers = { iodine: io, raw, rawIP };
      scenarios.push({
        id: "log",
        name: "log (-v)",
        path: "/",
        servers,
        expected: hello,
        target: { against: "raw", ratio: 0.85 },
      });
    }
  }
  if (wants("log-json")) {
    // The same access log as JSON lines against text lines: what --log-format json costs.
    const json = await iodine(
      "iodine -v --log-format json",
      ["-v", "--log-format", "json", "examples/hello.ts"],
      join(tmp, "access-json.log"),
    );
    const text = await iodine(
      "iodine -v text",
      ["-v", "examples/hello.ts"],
      join(tmp, "access-text.log"),
    );
    scenarios.push({
      id: "log-json",
      name: "-v JSON",
      path: "/",
      servers: { iodine: json, text },
      expected: hello,
      target: { against: "text", ratio: 0.95 },
    });
  }
  if (wants("metrics")) {
    // Counting every request (status, duration histogram) for --metrics against the same server
    // without it: what the request path pays for the master's /metrics.
    const counted = await iodine("iodine --metrics 0", ["--metrics", "0", "examples/hello.ts"]);
    const bare = await iodine("iodine without --metrics", ["examples/hello.ts"]);
    scenarios.push({
      id: "metrics",
      name: "--metrics",
      path: "/",
      servers: { iodine: counted, bare },
      expected: hello,
      target: { against: "bare", ratio: 0.95 },
    });
  }
  if (wants("routes")) {
    // A handler route: Bun's router, then (under iodine) the same request path as fetch.
    const io = await iodine("iodine routes", ["bench/routes-app.ts"]);
    const raw = await start("raw Bun.serve routes", [
      process.execPath,
      join(import.meta.dir, "baseline.ts"),
      "--routes",
    ]);
    scenarios.push({
      id: "routes",
      name: "routes",
      path: "/hello",
      servers: { iodine: io, raw },
      expected: hello,
      target: { against: "raw", ratio: 0.95 },
    });
  }
  if (wants("static-1k") || wants("static-1m")) {
    const io = await iodine("iodine --www", ["--www", www, "examples/hello.ts"]);
    const raw = await start("raw Bun.file", [
      process.execPath,
      join(import.meta.dir, "baseline.ts"),
      "--dir",
      www,
    ]);
    const ngx = nginx ? await startNginx(nginx, tmp, www) : undefined;
    const servers = { iodine: io, raw, ...(ngx ? { nginx: ngx } : {}) };
    if (wants("static-1k")) {
      scenarios.push({
        id: "static-1k",
        name: "static 1 KB",
        path: "/1k.bin",
        servers,
        expected: small,
        target: { against: "nginx", ratio: 1.0 },
      });
    }
    if (wants("static-1m")) {
      scenarios.push({
        id: "static-1m",
        name: "static 1 MB",
        path: "/1m.bin",
        servers,
        expected: large,
        target: { against: "nginx", ratio: 0.9 },
      });
    }
  }
  if (scenarios.length === 0)
    throw new Error(
      `--only ${flags.only}: no such scenario (plain, log, log-json, metrics, routes, static-1k, static-1m)`,
    );

  // A server answering with the wrong bytes (say the app's "Hello World!" for /1k.bin) would
  // post a great number for the wrong work; check every body once before measuring.
  for (const sc of scenarios) {
    for (const s of Object.values(sc.servers)) await checkBody(s, sc.path, sc.expected);
  }

  // --- measure ---
  const results: { scenario: Scenario; rows: Row[] }[] = [];
  for (const sc of scenarios) {
    const roles = Object.keys(sc.servers) as Role[];
    const runs = new Map<Role, Run[]>(roles.map((r) => [r, []]));
    for (const role of roles) await drive(sc.servers[role]!, sc.path, warmupSeconds);
    if (sc.id === "log") await assertLogging(sc.servers.iodine!, /"GET \/ HTTP\/1\.1" 200 12 /);
    if (sc.id === "log-json") {
      await assertLogging(
        sc.servers.iodine!,
        /"method":"GET","path":"\/","status":200,"bytes":12,/,
      );
      await assertLogging(sc.servers.text!, /"GET \/ HTTP\/1\.1" 200 12 /);
    }
    await inRounds(rounds, roles, async (role, round) => {
      const r = await drive(sc.servers[role]!, sc.path, duration);
      runs.get(role)!.push(r);
      console.log(
        `  ${sc.name.padEnd(12)} round ${round + 1}  ${LABEL[role].padEnd(14)} ${fmtRps(r.rps).padStart(9)} req/s  ${r.cpuMicrosPerRequest.toFixed(1).padStart(6)} µs CPU/req${wrkNote(r)}`,
      );
    });
    results.push({
      scenario: sc,
      rows: roles.map((role) => {
        const rs = runs.get(role)!;
        return {
          role,
          rounds: rs,
          ...spread(rs.map((r) => r.rps)),
          cpu: median(rs.map((r) => r.cpuMicrosPerRequest)),
        };
      }),
    });
  }

  // --- report ---
  const report = results.map(({ scenario: sc, rows }) => {
    const of = (role: Role) => rows.find((r) => r.role === role)?.median;
    const cpuOf = (role: Role) => rows.find((r) => r.role === role)?.cpu;
    const io = of("iodine")!;
    const ratio = (role: Role) => (of(role) ? io / of(role)! : null);
    // CPU efficiency: baseline µs per request ÷ iodine µs per request (> 1: iodine is cheaper)
    const cpuRatio = (role: Role) => (cpuOf(role) ? cpuOf(role)! / cpuOf("iodine")! : null);
    const versus = ratio(sc.target.against);
    return {
      scenario: sc.name,
      path: sc.path,
      servers: rows.map((r) => ({
        server: LABEL[r.role],
        median: r.median,
        min: r.min,
        max: r.max,
        cpuMicrosPerRequest: r.cpu,
        rounds: r.rounds,
      })),
      // iodine ÷ each baseline by req/s, and the baseline's CPU per request ÷ iodine's (> 1: iodine cheaper)
      baselines: (["raw", "rawIP", "nginx", "text", "bare"] as const).map((role) => ({
        server: LABEL[role],
        short: SHORT[role],
        ratio: ratio(role),
        cpuRatio: cpuRatio(role),
      })),
      target: { against: LABEL[sc.target.against], ratio: sc.target.ratio },
      verdict: versus === null ? "SKIPPED" : versus >= sc.target.ratio ? "PASS" : "MISS",
    };
  });

  console.log("");
  console.log(
    `${"scenario".padEnd(13)}${"server".padEnd(15)}${"median req/s".padStart(13)}   ${"min–max".padEnd(19)}${"µs CPU/req".padStart(11)}`,
  );
  console.log("-".repeat(73));
  for (const r of report) {
    r.servers.forEach((s, i) => {
      const range = `${fmtRps(s.min)}–${fmtRps(s.max)}`;
      console.log(
        `${(i === 0 ? r.scenario : "").padEnd(13)}${s.server.padEnd(15)}${fmtRps(s.median).padStart(13)}   ${range.padEnd(19)}${s.cpuMicrosPerRequest.toFixed(1).padStart(11)}`,
      );
    });
    const bases = r.baselines.filter((b) => b.ratio !== null);
    const parts = bases.map((b) => `iodine ÷ ${b.short} ${fmtRatio(b.ratio)}`);
    parts.push(`target ≥ ${r.target.ratio.toFixed(2)} × ${r.target.against}: ${r.verdict}`);
    console.log(`${"".padEnd(13)}${parts.join("   ")}`);
    const cpuParts = bases.map((b) => `${b.short} ÷ iodine ${fmtRatio(b.cpuRatio)}`);
    console.log(`${"".padEnd(13)}CPU per request (> 1: iodine cheaper): ${cpuParts.join("   ")}`);
    console.log("");
  }

  const settings = {
    threads: THREADS,
    connections: CONNECTIONS,
    durationSeconds: duration,
    rounds,
    warmupSeconds,
  };
  const ratios = results.flatMap(({ scenario, rows }) => ratioEntries(scenario, rows));
  console.log(
    `results: ${writeResults("http", { machine: facts, settings, scenarios: report, ratios })}`,
  );
}

/** iodine ÷ each baseline of a scenario; the target goes with the baseline it is set against. */
function ratioEntries(sc: Scenario, rows: Row[]): Ratio[] {
  const io = rows.find((r) => r.role === "iodine")!;
  return rows
    .filter((r) => r.role !== "iodine")
    .map((base) =>
      ratioEntry(
        "http",
        `${sc.name}: iodine ÷ ${LABEL[base.role]}`,
        io.rounds.map((r) => r.rps),
        base.rounds.map((r) => r.rps),
        {
          ...(base.role === sc.target.against ? { target: sc.target.ratio } : {}),
          detail: `GET ${sc.path}, ${CONNECTIONS} connections: ${fmtRps(io.median)} vs ${fmtRps(base.median)} req/s`,
        },
      ),
    );
}

// --- helpers ---

async function start(name: string, cmd: string[], stderrFile?: string): Promise<Server> {
  const s = await startServer(name, cmd, { cwd: ROOT, ...(stderrFile ? { stderrFile } : {}) });
  children.push(s);
  return s;
}

async function startNginx(nginx: string, dir: string, www: string): Promise<Server> {
  const port = freePort();
  const conf = join(dir, "nginx.conf");
  // Only the temp paths this build knows: naming a module's path without the module is an error.
  const built = Bun.spawnSync([nginx, "-V"], { stdout: "pipe", stderr: "pipe" }).stderr.toString();
  const temps = [...built.matchAll(/--http-([a-z-]+)-temp-path=/g)].map(
    (m) => `  ${m[1]!.replace("-", "_")}_temp_path ${join(dir, `nginx-${m[1]}`)};`,
  );
  writeFileSync(
    conf,
    [
      "worker_processes 1;",
      "daemon off;",
      `pid ${join(dir, "nginx.pid")};`,
      `error_log ${join(dir, "nginx-error.log")} warn;`,
      // As root nginx switches its worker to nobody:nobody by default, and Debian has no group nobody.
      ...(process.getuid?.() === 0 ? ["user root;"] : []),
      "events { worker_connections 1024; }",
      "http {",
      "  access_log off;",
      "  sendfile on;",
      "  default_type application/octet-stream;",
      // Bun.serve never closes a keep-alive connection after N requests; nginx's default 1000
      // would make wrk reconnect all the time and measure connection set-up instead.
      "  keepalive_requests 1000000;",
      ...temps,
      `  server { listen 127.0.0.1:${port}; root ${www}; }`,
      "}",
      "",
    ].join("\n"),
  );
  const s = await startServer("nginx", [nginx, "-c", conf, "-p", dir], { port });
  children.push(s);
  await waitReachable(s, "/1k.bin");
  return s;
}

async function checkBody(s: Server, path: string, expected: Uint8Array): Promise<void> {
  const res = await fetch(s.url + path);
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 200 || !Buffer.from(body).equals(Buffer.from(expected))) {
    throw new Error(
      `${s.name}: GET ${path} gave ${res.status} with ${body.length} bytes, expected 200 with ${expected.length} bytes`,
    );
  }
}

/** `-v` must really be logging (in the format asked for), or the scenario measures plain again. */
async function assertLogging(s: Server, line: RegExp): Promise<void> {
  // the access log is flushed in batches on a short timer; the file is polled every 100 ms
  await Bun.sleep(400);
  if (!line.test(s.stderr.tail)) {
    throw new Error(
      `${s.name}: no access-log lines on stderr after a warm-up run\n${indent(s.stderr.tail.slice(-2000))}`,
    );
  }
}

async function drive(s: Server, path: string, seconds: number): Promise<Run> {
  assertAlive(s);
  const before = cpuTicks(s.proc.pid);
  const r = await runWrk(
    s.url + path,
    { threads: THREADS, connections: CONNECTIONS, seconds },
    (p) => (wrk = p),
  );
  wrk = undefined;
  return { ...r, cpuMicrosPerRequest: cpuMicros(cpuTicks(s.proc.pid) - before, r.requests) };
}

await runBench(main, { cleanup, stopping: "servers" });
