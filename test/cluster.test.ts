// Cluster mode (SPEC §8 and the cluster half of §5), always through the real CLI: a master and
// two workers sharing a port, WebSocket clients held on each worker, pub/sub across them, hot
// restart under load, re-spawn, orphan exit, graceful stop and the lifecycle hooks.
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect } from "node:net";
import { join } from "node:path";
import {
  childrenOf,
  fixture,
  runCli,
  startCli,
  tempDir,
  waitUntil,
  within,
  type CliProcess,
} from "./harness.ts";
import { pubsubSuite, twoWorkers } from "./suites/pubsub.ts";
import { Clients, fenced, linked } from "./ws.ts";

const APP = fixture("cluster-app.ts");

pubsubSuite(
  twoWorkers({
    fanOut: [
      { subscribers: 2, messages: 10_000 },
      { subscribers: 1000, messages: 100 },
    ],
    stream: 10_000,
  }),
);

/** The master's bus socket in the temp folder. */
function busSocket(masterPid: number): string | undefined {
  const name = readdirSync(tmpdir()).find(
    (f) => f.startsWith(`iodine-${masterPid}-`) && f.endsWith(".sock"),
  );
  return name === undefined ? undefined : join(tmpdir(), name);
}

/** A -w 2 cluster of `app`, for `await using`: disposal sends SIGTERM, so the master removes its bus socket. */
function cluster(args: string[] = [], app = APP): Promise<CliProcess> {
  return startCli(["-p", "0", "-w", "2", ...args, app], { timeout: 20_000 });
}

/** Resolves once `count()` has grown by `n` from now (requests answered under load, say). */
async function more(count: () => number, n: number, what: string): Promise<void> {
  const from = count();
  await waitUntil(() => count() >= from + n, 10_000, what);
}

/** Steady HTTP load from `concurrency` keep-alive loops until `stop()`: counts, failures, pids seen. */
function load(url: string, concurrency = 4) {
  let running = true;
  const r = { ok: 0, failed: [] as string[], bodies: [] as string[] };
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      try {
        const res = await fetch(url);
        const body = await res.text();
        if (res.status === 200) r.ok++;
        else r.failed.push(`status ${res.status}`);
        r.bodies.push(body);
      } catch (err) {
        r.failed.push(String((err as Error).message));
      }
    }
  });
  return {
    result: r,
    /** resolves once `n` more requests were answered */
    answered: (n: number) => more(() => r.ok, n, `${n} more answered requests`),
    async stop() {
      running = false;
      await Promise.all(loops);
      return r;
    },
  };
}

/**
 * Keep-alive load from `connections` raw sockets that, like wrk, never retry: each sends a request,
 * reads the whole response and sends the next on the same connection, opening a new one only when
 * the server said `Connection: close`. A connection closed while a request waits for its answer is a
 * failed request, where `fetch` would quietly have sent it again.
 */
function keepAliveLoad(port: number, connections = 16) {
  const REQUEST = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  let running = true;
  const r = { ok: 0, toldToClose: 0, failed: [] as string[] };
  const connection = () =>
    new Promise<void>((done) => {
      const socket = connect(port, "127.0.0.1");
      let waiting = false;
      let buffered = "";
      const next = () => {
        if (!running) return void socket.end();
        waiting = true;
        socket.write(REQUEST);
      };
      socket.on("connect", next);
      socket.on("data", (chunk) => {
        buffered += chunk.toString("latin1");
        for (;;) {
          const end = buffered.indexOf("\r\n\r\n");
          if (end === -1) return;
          const head = buffered.slice(0, end);
          const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          if (buffered.length < end + 4 + length) return;
          buffered = buffered.slice(end + 4 + length);
          waiting = false;
          if (head.startsWith("HTTP/1.1 200 ")) r.ok++;
          else r.failed.push(head.split("\r\n")[0]!);
          if (/\r\nconnection: *close/i.test(head)) {
            r.toldToClose++;
            return void socket.end();
          }
          next();
        }
      });
      socket.on("error", (err) => {
        if (waiting) r.failed.push(err.message);
        waiting = false;
      });
      socket.on("close", () => {
        if (waiting) r.failed.push("the connection closed with a request unanswered");
        done();
      });
    });
  const loops = Array.from({ length: connections }, async () => {
    while (running) await connection();
  });
  return {
    /** resolves once `n` more requests were answered */
    answered: (n: number) => more(() => r.ok, n, `${n} more answered requests`),
    async stop() {
      running = false;
      await Promise.all(loops);
      return r;
    },
  };
}

/** One hot restart of a -w 2 cluster inside `keepAliveLoad`: what the load saw. */
async function restartUnderKeepAliveLoad(srv: CliProcess) {
  const traffic = keepAliveLoad(srv.port);
  await traffic.answered(200);
  srv.proc.kill("SIGUSR1");
  await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
  await traffic.answered(200); // by the new workers
  return traffic.stop();
}

/** Running (not exited, not a zombie waiting for its reaper). */
function running(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

async function pidsServing(url: string, n = 40): Promise<Set<string>> {
  const seen = new Set<string>();
  // A new connection each time: a pooled one would stay with the worker that accepted it.
  for (let i = 0; i < n; i++)
    seen.add(await (await fetch(url, { headers: { connection: "close" } })).text());
  return seen;
}

describe("subscribe resolves once it is in effect everywhere", () => {
  test("100 publishes from the other worker, each sent the moment a subscription resolved, all arrive", async () => {
    await using srv = await cluster();
    await using clients = new Clients();
    const [a, b] = await clients.oneOnEach(`${srv.url.replace("http", "ws")}/ws?ch=none&control=1`);
    // a subscribes; the moment it says "subscribed", b (on the other worker) publishes once.
    for (let i = 0; i < 100; i++) {
      a.send(`sub fresh${i}`);
      expect(await a.next()).toBe(`subscribed fresh${i}`);
      b.send(`pub fresh${i} m${i}`);
      expect(await a.next(3000)).toBe(`m${i}`);
    }
  }, 30_000);

  for (const workers of ["1", "2"]) {
    test(`-w ${workers}: a subscription resolves only once the engine confirmed it (an engine that takes 500 ms)`, async () => {
      await using srv = await startCli(["-p", "0", "-w", workers, fixture("slow-engine-app.ts")], {
        timeout: 20_000,
      });
      const took = Number(await (await fetch(`${srv.url}/sub?ch=slow`)).text());
      expect(took).toBeGreaterThanOrEqual(450);
    }, 30_000);
  }
});

describe("pub/sub across workers: the master", () => {
  test("Iodine.subscribe in the master receives what workers publish", async () => {
    await using srv = await cluster();
    for (let i = 0; i < 4; i++) {
      expect(
        await (
          await fetch(`${srv.url}/publish?ch=to-master`, { method: "POST", body: `hello ${i}` })
        ).text(),
      ).toBe("ok");
    }
    for (let i = 0; i < 4; i++)
      await srv.waitFor(new RegExp(`master got to-master hello ${i}\\n`), 5000, "stdout");
    expect(srv.stdout().match(/master got/g)).toHaveLength(4);
  }, 30_000);

  test("a garbage frame on the bus closes only that link, with one log line; the cluster keeps routing", async () => {
    await using srv = await cluster();
    const bus = busSocket(srv.proc.pid);
    expect(bus).toBeDefined();
    const closed = Promise.withResolvers<void>();
    const rogue = await Bun.connect({
      unix: bus!,
      socket: { data() {}, close: () => closed.resolve() },
    });
    rogue.write(new Uint8Array([5, 0, 0, 0, 99, 1, 2, 3, 4])); // type 99
    await srv.waitFor(/cluster bus: bad frame from a worker \(unknown frame type 99/);
    await within(closed.promise, 2000, "the rogue link to close");
    await using clients = new Clients();
    const [a, b] = await clients.oneOnEach(`${srv.url.replace("http", "ws")}/ws?ch=after`);
    await linked(a, [b]);
    a.send("still here");
    expect(await b.next()).toBe("still here");
  }, 30_000);
});

describe("--threads", () => {
  test("-w 1 -t 2: two event loops in one worker share the port and the bus; SIGTERM stops both", async () => {
    await using srv = await cluster(["-w", "1", "-t", "2"]);
    await srv.waitFor(/\(1 worker × 2 threads, cluster pub\/sub\)/);
    {
      await using clients = new Clients();
      const [a, b] = await clients.oneOnEach(`${srv.url.replace("http", "ws")}/ws?ch=threads`);
      expect(a.pid.split(".")[0]).toBe(b.pid.split(".")[0]); // one process
      await linked(a, [b]);
      const sent = Array.from({ length: 1000 }, (_, i) => `t${i}`);
      for (const m of sent) a.send(m);
      expect(await b.take(1000)).toEqual(sent);
      expect(await a.take(1000)).toEqual(sent);
      // A fence from each thread: a copy delivered twice would come before the other thread's.
      expect(
        await fenced(
          [a, b].map((c) => ({ client: c, send: (t: string) => c.send(t) })),
          [a, b],
        ),
      ).toEqual([[], []]);
    }
    const [worker] = childrenOf(srv.proc.pid);
    srv.proc.kill("SIGTERM");
    expect(await srv.proc.exited).toBe(0);
    expect(srv.stdout().match(new RegExp(`hook on_finish worker ${worker}\n`, "g"))).toHaveLength(
      2,
    );
  }, 30_000);
});

describe("hot restart (SIGUSR1)", () => {
  test("two restarts under steady load fail zero requests and replace every worker", async () => {
    await using srv = await cluster();
    const before = await pidsServing(srv.url);
    const traffic = load(srv.url);
    await traffic.answered(50);
    for (let round = 1; round <= 2; round++) {
      srv.proc.kill("SIGUSR1");
      await waitUntil(
        () => (srv.stderr().match(/hot restart done: 2 new workers/g) ?? []).length >= round,
        20_000,
        `restart ${round}`,
      );
      await traffic.answered(50); // by the new workers
    }
    const r = await traffic.stop();
    expect(r.failed).toEqual([]);
    expect(r.ok).toBeGreaterThan(100);
    const after = await pidsServing(srv.url);
    expect(after.size).toBeGreaterThan(0);
    for (const pid of after) expect(before.has(pid)).toBe(false);
    expect(childrenOf(srv.proc.pid)).toHaveLength(2);
  }, 60_000);

  for (const args of [[], ["-t", "2"]]) {
    test(`keep-alive clients that never retry (as wrk) lose no request: the old worker answers with Connection: close before it stops${args.length ? ` (${args.join(" ")})` : ""}`, async () => {
      await using srv = await cluster(args);
      const r = await restartUnderKeepAliveLoad(srv);
      // Bun's server.stop() closes idle keep-alive connections at once: without the hand-over, each
      // connection caught between two requests lost the second one.
      expect(r.failed).toEqual([]);
      expect(r.ok).toBeGreaterThan(500);
      expect(r.toldToClose).toBeGreaterThanOrEqual(1);
    }, 30_000);
  }

  test("the old worker's start_shutdown hooks run after the hand-over: what it answers meanwhile comes from the whole app", async () => {
    using dir = tempDir();
    const app = join(dir.path, "app.ts");
    // An app that closes its "pool" on start_shutdown, as iodine's hooks are meant for.
    writeFileSync(
      app,
      `import { Iodine } from "iodine";\n` +
        `let poolOpen = true;\n` +
        `Iodine.onState("start_shutdown", () => { poolOpen = false; });\n` +
        `export default () => (poolOpen ? new Response("ok") : new Response("pool closed", { status: 503 }));\n`,
    );
    await using srv = await cluster([], app);
    const r = await restartUnderKeepAliveLoad(srv);
    expect(r.failed).toEqual([]);
    expect(r.toldToClose).toBeGreaterThanOrEqual(1);
  }, 30_000);

  test("WebSocket clients of the old workers get onShutdown and a close; the restart does not wait for them", async () => {
    await using srv = await cluster();
    const ws = srv.url.replace("http", "ws");
    await using clients = new Clients();
    const [a, b] = await clients.oneOnEach(`${ws}/ws?ch=bye`);
    const [na, nb] = await clients.oneOnEach(`${ws}/native`);
    const codes = [a, b, na, nb].map(async (c) => (await c.closed).code);
    const t0 = Date.now();
    srv.proc.kill("SIGUSR1");
    await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
    expect(Date.now() - t0).toBeLessThan(8000); // well inside the 10 s drain deadline per worker
    expect(await Promise.all(codes)).toEqual([1001, 1001, 1001, 1001]); // 1001: going away
    expect(a.received.at(-1)).toBe("shutting down");
    expect(b.received.at(-1)).toBe("shutting down");
  }, 30_000);

  test('what a retiring worker publishes as it closes its sockets (a chat\'s "ann left") reaches the master', async () => {
    await using srv = await cluster();
    const ws = srv.url.replace("http", "ws");
    // Two named chatters on each worker (the kernel picks the worker; extras are closed at once).
    await using clients = new Clients();
    const kept = new Map<string, string[]>();
    for (let i = 0; i < 100 && [...kept.values()].filter((n) => n.length === 2).length < 2; i++) {
      const c = await clients.worker(`${ws}/ws?ch=room&bye=c${i}`);
      const names = kept.get(c.pid) ?? [];
      if (names.length === 2) c.close();
      else kept.set(c.pid, [...names, `c${i}`]);
    }
    const chatters = [...kept.values()].flat();
    expect(chatters).toHaveLength(4);
    srv.proc.kill("SIGUSR1");
    await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
    const heard = (name: string) =>
      srv.stdout().match(new RegExp(`master got to-master ${name} (left|gone)\n`, "g")) ?? [];
    for (const name of chatters)
      await srv.waitFor(new RegExp(`master got to-master ${name} gone\n`), 3000, "stdout");
    for (const name of chatters)
      expect(heard(name).sort()).toEqual([
        `master got to-master ${name} gone\n`,
        `master got to-master ${name} left\n`,
      ]);
  }, 30_000);

  test("a restart deploys the edited app file, with no failed request in between", async () => {
    using dir = tempDir();
    const app = join(dir.path, "app.ts");
    writeFileSync(app, `export default () => new Response("v1");\n`);
    await using srv = await cluster([], app);
    const traffic = load(srv.url);
    await traffic.answered(50);
    writeFileSync(app, `export default () => new Response("v2");\n`);
    srv.proc.kill("SIGUSR1");
    await srv.waitFor(/hot restart done/, 20_000);
    await waitUntil(() => traffic.result.bodies.includes("v2"), 5000, "the edited app to answer");
    await traffic.answered(50);
    const r = await traffic.stop();
    expect(r.failed).toEqual([]);
    expect(r.bodies.filter((b) => b !== "v1" && b !== "v2")).toEqual([]);
    expect(r.bodies.at(-1)).toBe("v2");
    expect(await pidsServing(srv.url)).toEqual(new Set(["v2"]));
  }, 60_000);

  test("a broken app file leaves the old workers serving, and the master says why", async () => {
    using dir = tempDir();
    const app = join(dir.path, "app.ts");
    writeFileSync(app, `export default () => new Response("pid " + process.pid);\n`);
    await using srv = await cluster([], app);
    const before = await pidsServing(srv.url);
    const workers = childrenOf(srv.proc.pid);
    writeFileSync(app, `export default () => new Response("oops";\n`);
    const traffic = load(srv.url, 2);
    srv.proc.kill("SIGUSR1");
    // The replacement reports why it could not start; the master says it once, in its own line.
    await srv.waitFor(
      /hot restart stopped: cannot load .*app\.ts: .*(Expected|Unexpected).*\(line 1, column \d+\); the old workers keep serving/,
      20_000,
    );
    expect(srv.stderr().match(/cannot load/g)).toHaveLength(1);
    // The replacement has gone and the master has reaped it, which is when a re-spawn would start.
    await waitUntil(
      () => childrenOf(srv.proc.pid).filter(running).sort().join() === [...workers].sort().join(),
      5000,
      "only the old workers left",
    );
    await traffic.answered(100);
    const r = await traffic.stop();
    expect(r.failed).toEqual([]);
    expect(await pidsServing(srv.url)).toEqual(before);
    // No re-spawn loop of the broken replacement.
    expect(srv.stderr()).not.toMatch(/starting a new one/);
    expect(childrenOf(srv.proc.pid).filter(running).sort()).toEqual([...workers].sort());
  }, 60_000);
});

describe("supervision", () => {
  test("kill -9 of a worker: a new pid serves within 2 s", async () => {
    await using srv = await cluster();
    const [victim, survivor] = childrenOf(srv.proc.pid);
    process.kill(victim!, "SIGKILL");
    let fresh: number | undefined;
    // No event says a worker was started: /proc and HTTP are polled.
    await waitUntil(
      async () => {
        fresh ??= childrenOf(srv.proc.pid).find((p) => p !== victim && p !== survivor);
        return fresh !== undefined && (await pidsServing(srv.url, 10)).has(`pid ${fresh}`);
      },
      2000,
      "a new worker to serve",
    );
    expect(srv.stderr()).toMatch(
      new RegExp(`worker \\d \\(pid ${victim}\\) exited with signal SIGKILL; starting a new one`),
    );
    await srv.waitFor(new RegExp(`hook on_child_crush master ${srv.proc.pid}`), 2000, "stdout");
  }, 30_000);

  test("a worker killed while the cluster starts is replaced and logged; the start-up line counts live workers only (20 of 20)", async () => {
    // Each worker holds 150 ms before it listens. Early rounds kill worker 0 as soon as it exists
    // (before it listens); the others kill it when worker 1 appears, which the master starts once
    // worker 0 listens (so while worker 1 is still starting).
    const round = async (early: boolean) => {
      let victim: number | undefined;
      let poller: ReturnType<typeof setInterval> | undefined;
      await using srv = await startCli(["-p", "0", "-w", "2", APP], {
        timeout: 20_000,
        env: { START_HOLD_MS: "150" },
        onSpawn(proc) {
          poller = setInterval(() => {
            const kids = childrenOf(proc.pid); // oldest first: worker 0 first
            if (kids.length < (early ? 1 : 2)) return;
            victim = kids[0]!;
            process.kill(victim, "SIGKILL");
            clearInterval(poller);
          }, 1);
        },
      }).finally(() => clearInterval(poller));
      expect(victim).toBeDefined();
      const logged = early
        ? `worker 0 \\(pid ${victim}\\) was killed \\(SIGKILL\\) before it was listening; starting a new one`
        : `worker 0 \\(pid ${victim}\\) exited with signal SIGKILL; starting a new one`;
      expect(srv.stderr()).toMatch(
        new RegExp(`${logged}[^]*listening on http://\\S+ \\(2 workers, cluster pub/sub\\)`),
      );
      const live = childrenOf(srv.proc.pid).filter(running);
      expect(live).toHaveLength(2);
      expect(live).not.toContain(victim);
      expect(await (await fetch(srv.url)).text()).toMatch(/^pid \d+$/);
    };
    // Two clusters at a time, one of each kind.
    for (let pair = 0; pair < 10; pair++) await Promise.all([round(true), round(false)]);
  }, 60_000);

  test("kill -9 of the master: no worker is left after 2 s", async () => {
    await using srv = await cluster();
    const workers = childrenOf(srv.proc.pid);
    expect(workers).toHaveLength(2);
    const bus = busSocket(srv.proc.pid);
    expect(bus).toBeDefined();
    srv.proc.kill("SIGKILL");
    await srv.proc.exited;
    await waitUntil(() => workers.every((p) => !running(p)), 2000, "the workers to exit");
    // A killed master cannot remove its bus socket: the next master that starts does.
    expect(existsSync(bus!)).toBe(true);
    await using _next = await cluster();
    expect(existsSync(bus!)).toBe(false);
  }, 30_000);

  test("SIGTERM: in-flight requests complete, every process runs its hooks, exit 0", async () => {
    await using srv = await cluster();
    const workers = childrenOf(srv.proc.pid);
    const slow = Promise.all(
      [1, 2, 3, 4].map(() => fetch(`${srv.url}/slow`).then((r) => r.text())),
    );
    await srv.waitFor(/(slow request started pid \d+\n[^]*){4}/, 5000, "stdout");
    srv.proc.kill("SIGTERM");
    expect(await srv.proc.exited).toBe(0);
    for (const body of await slow) expect(body).toMatch(/^slow pid \d+$/);
    expect(workers.every((p) => !running(p))).toBe(true);
    const out = srv.stdout();
    const master = srv.proc.pid;
    const order = (lines: string[]) => lines.map((l) => out.indexOf(l));
    const m = order(
      [
        "pre_start",
        "before_fork",
        "after_fork",
        "enter_master",
        "on_start",
        "start_shutdown",
        "on_finish",
      ].map((e) => `hook ${e} master ${master}\n`),
    );
    expect(m.every((i) => i >= 0)).toBe(true);
    expect([...m].sort((x, y) => x - y)).toEqual(m);
    for (const w of workers) {
      const seq = order(
        ["enter_child", "on_start", "start_shutdown", "on_finish"].map(
          (e) => `hook ${e} worker ${w}\n`,
        ),
      );
      expect(seq.every((i) => i >= 0)).toBe(true);
      expect([...seq].sort((x, y) => x - y)).toEqual(seq);
    }
    expect(out.match(/hook before_fork master/g)).toHaveLength(2);
  }, 30_000);

  test("the master dying fires on_parent_crush in the workers", async () => {
    await using srv = await cluster();
    const workers = childrenOf(srv.proc.pid);
    srv.proc.kill("SIGKILL");
    for (const w of workers)
      await srv.waitFor(new RegExp(`hook on_parent_crush worker ${w}`), 2000, "stdout");
  }, 30_000);
});

describe("single process and the CLI", () => {
  test("one process is master and worker: its hooks run, on_idle after a quiet second", async () => {
    await using srv = await startCli(["-p", "0", APP]);
    const pid = srv.proc.pid;
    await fetch(srv.url);
    await srv.waitFor(new RegExp(`hook on_idle single ${pid}`), 4000, "stdout");
    srv.proc.kill("SIGTERM");
    expect(await srv.proc.exited).toBe(0);
    const out = srv.stdout();
    const seq = [
      "pre_start",
      "enter_child",
      "on_start",
      "on_idle",
      "start_shutdown",
      "on_finish",
    ].map((e) => out.indexOf(`hook ${e} single ${pid}\n`));
    expect(seq.every((i) => i >= 0)).toBe(true);
    expect([...seq].sort((x, y) => x - y)).toEqual(seq);
    expect(out).not.toMatch(/hook (before_fork|after_fork|enter_master)/);
  }, 30_000);

  test("-w 2 on a Unix socket is refused with one line and exit 2", async () => {
    using dir = tempDir();
    const r = await runCli(["-w", "2", "-b", join(dir.path, "x.sock"), APP]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^iodine: a Unix socket cannot be shared by several workers .*\n$/);
  });

  test("a worker that cannot start at launch ends the cluster with exit 2", async () => {
    // A port held without reusePort cannot be shared: the first worker fails to bind.
    const holder = Bun.serve({ port: 0, fetch: () => new Response("x") });
    try {
      const r = await runCli(["-w", "2", "-p", String(holder.port), APP], { timeout: 20_000 });
      expect(r.code).toBe(2);
      // One line, from the master, with the worker's reason (not the worker's line and the master's).
      expect(r.stderr).toBe(
        `iodine: cannot listen on http://0.0.0.0:${holder.port}: port ${holder.port} is already in use (EADDRINUSE)\n`,
      );
    } finally {
      holder.stop(true);
    }
  }, 30_000);
});

describe("a worker's bus link (in this process, against a hub written with the bus framing)", () => {
  test("it announces its interests, reconnects after a bad frame, replays them, and delivers what the hub sends", async () => {
    const { FrameReader, messageOf } = await import("../src/pubsub/bus.ts");
    const { FrameWriter } = await import("../src/pubsub/bus-writer.ts");
    const { joinCluster } = await import("../src/pubsub/member.ts");
    const { Iodine } = await import("../src/index.ts");
    using dir = tempDir();
    const path = join(dir.path, "hub.sock");
    // Each accepted link: the frames it sent, in order.
    const links: { frames: string[]; socket: import("bun").Socket<undefined> }[] = [];
    const hub = Bun.listen({
      unix: path,
      socket: {
        open(socket) {
          const link = { frames: [] as string[], socket };
          const reader = new FrameReader({
            onHello: (t) => void link.frames.push(`hello ${t}`),
            onInterest: (sub, key, pattern) =>
              void link.frames.push(`${sub ? "sub" : "unsub"} ${pattern ? "pattern " : ""}${key}`),
            onPublish: (ch, f, at, bin) =>
              void link.frames.push(`pub ${ch} ${String(messageOf(f, at, bin))}`),
            onWantAll: (want) => void link.frames.push(`all ${want}`),
            onCommand: (id, args) => void link.frames.push(`cmd ${id} ${args}`),
            onReply: (id, ok, json) => void link.frames.push(`reply ${id} ${ok} ${json}`),
            onPositioned: (ch) => void link.frames.push(`hpub ${ch}`),
            // History declarations other test files made in this process are replayed on
            // connect (a process-wide table): not this test's subject.
            onControl: (id, json) => {
              if (!json.startsWith('["history"')) link.frames.push(`ctl ${id} ${json}`);
            },
            // A subscription waits for the hub's answer (SPEC §5: it resolves once in effect).
            onSync: (id) => {
              link.frames.push(`sync ${id}`);
              const answer = new FrameWriter();
              answer.reply(id, true, "null");
              socket.write(answer.take());
            },
          });
          (socket as unknown as { reader: typeof reader }).reader = reader;
          links.push(link);
        },
        data(socket, data) {
          (socket as unknown as { reader: InstanceType<typeof FrameReader> }).reader.push(data);
        },
      },
    });
    const got: string[] = [];
    Iodine.subscribe("link-test", (ch, m) => void got.push(`${ch} ${String(m)}`));
    const member = joinCluster(path, "test worker", () => {}, 20);
    try {
      await waitUntil(
        () => (links[0]?.frames.length ?? 0) >= 2,
        2000,
        "hello and the subscription",
      );
      expect(links[0]!.frames.slice(0, 2)).toEqual(["hello test worker", "sub link-test"]);
      const subscribed = Iodine.subscribe("news.*", { match: "redis" }, () => {});
      Iodine.publish("out", "from the worker");
      await subscribed; // the hub answered the SYNC that followed the SUB
      await waitUntil(() => links[0]!.frames.length >= 6, 2000, "the pattern and the publish");
      // It also reports its subscriptions to each exact channel (presence, SPEC §5).
      expect(links[0]!.frames.slice(2)).toEqual([
        'ctl 0 ["count","link-test",1]',
        "sub pattern news.*",
        "sync 1",
        "pub out from the worker",
      ]);
      // The hub sends garbage: the worker drops the link (logged) and comes back with its interests.
      links[0]!.socket.write(new Uint8Array([5, 0, 0, 0, 77, 0, 0, 0, 0]));
      await waitUntil(() => (links[1]?.frames.length ?? 0) >= 4, 2000, "the link to come back");
      expect([...links[1]!.frames].sort()).toEqual([
        'ctl 0 ["count","link-test",1]',
        "hello test worker",
        "sub link-test",
        "sub pattern news.*",
      ]);
      // What the hub forwards reaches this process's subscribers.
      const w = new FrameWriter();
      w.publish("link-test", "from the hub");
      links[1]!.socket.write(w.take());
      await waitUntil(() => got.length > 0, 2000, "delivery");
      expect(got).toEqual(["link-test from the hub"]);
      // The hub's frames are read in order: once a publish the hub sends after them is delivered
      // here, the member has taken in the frames before it.
      let barriers = 0;
      const taken = async () => {
        const text = `barrier ${++barriers}`;
        w.publish("link-test", text);
        links[1]!.socket.write(w.take());
        await waitUntil(
          () => got.includes(`link-test ${text}`),
          2000,
          "the member to read the hub's frames",
        );
      };
      // Once the hub has said what the others want (then HELLO), nothing else leaves this process.
      w.interest(true, "wanted", false);
      w.interest(true, "room.*", true);
      w.hello("hub");
      await taken();
      for (const ch of ["unwanted", "wanted", "room.1", "roomy", "wanted"]) Iodine.publish(ch, ch);
      w.interest(false, "wanted", false);
      await taken();
      Iodine.publish("wanted", "after the unsubscribe");
      Iodine.publish("room.2", "room.2");
      // The last publish, wanted: anything sent in between would have reached the hub before it.
      Iodine.publish("room.3", "last");
      await waitUntil(
        () => links[1]!.frames.includes("pub room.3 last"),
        2000,
        "the wanted publishes",
      );
      expect(links[1]!.frames.slice(4)).toEqual([
        "pub wanted wanted",
        "pub room.1 room.1",
        "pub wanted wanted",
        "pub room.2 room.2",
        "pub room.3 last",
      ]);
    } finally {
      member.leave();
      Iodine.unsubscribe("link-test");
      Iodine.unsubscribe("news.*", { match: "redis" });
      hub.stop(true);
    }
  });
});
