// Cluster mode (SPEC §8 and the cluster half of §5), always through the real CLI: a master and
// two workers sharing a port, WebSocket clients held on each worker, pub/sub across them, hot
// restart under load, re-spawn, orphan exit, graceful stop and the lifecycle hooks.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect } from "node:net";
import { join } from "node:path";
import { childrenOf, fixture, runCli, startCli, tempDir, type CliProcess } from "./harness.ts";
import { client, linked, oneOnEach, waitUntil, type Client } from "./ws-clients.ts";

const APP = fixture("cluster-app.ts");
const open: CliProcess[] = [];
afterAll(async () => {
  // SIGTERM, so each master removes its bus socket; SIGKILL for one that does not stop in time.
  await Promise.all(
    open.map(async (p) => {
      const timer = setTimeout(() => p.proc.kill("SIGKILL"), 5000);
      await p.stop("SIGTERM");
      clearTimeout(timer);
    }),
  );
});

/** The master's bus socket in the temp folder. */
function busSocket(masterPid: number): string | undefined {
  const name = readdirSync(tmpdir()).find((f) => f.startsWith(`iodine-${masterPid}-`) && f.endsWith(".sock"));
  return name === undefined ? undefined : join(tmpdir(), name);
}

async function cluster(args: string[] = [], app = APP): Promise<CliProcess> {
  const p = await startCli(["-p", "0", "-w", "2", ...args, app], { timeout: 20_000 });
  open.push(p);
  return p;
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
  await Bun.sleep(300);
  srv.proc.kill("SIGUSR1");
  await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
  await Bun.sleep(200);
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
  for (let i = 0; i < n; i++) seen.add(await (await fetch(url, { headers: { connection: "close" } })).text());
  return seen;
}


describe("pub/sub across workers", () => {
  test("a client on each worker receives 10,000 messages published on the other, exactly once and in order", async () => {
    const srv = await cluster();
    const ws = srv.url.replace("http", "ws");
    const [a, b] = await oneOnEach(`${ws}/ws?ch=orders`);
    await linked(a, b);
    const N = 10_000;
    for (let i = 0; i < N; i++) a.ws.send(`m${i}`);
    await Promise.all([a.until(N), b.until(N)]);
    await Bun.sleep(200); // nothing more may arrive
    const expected = Array.from({ length: N }, (_, i) => `m${i}`);
    expect(b.got).toEqual(expected);
    expect(a.got).toEqual(expected);
    a.ws.close();
    b.ws.close();
  }, 30_000);

  test("pattern subscriptions reach across workers; other channels do not", async () => {
    const srv = await cluster();
    const ws = srv.url.replace("http", "ws");
    // a publishes on news.sports (its own channel); b follows news.* by pattern.
    let a: Client | undefined;
    let b: Client | undefined;
    const extra: Client[] = [];
    for (let i = 0; i < 100 && (!a || !b); i++) {
      const pub = await client(`${ws}/ws?ch=news.sports`);
      const sub = await client(`${ws}/ws?ch=news.*&match=redis`);
      if (pub.pid !== sub.pid) [a, b] = [pub, sub];
      else extra.push(pub, sub);
    }
    for (const c of extra) c.ws.close();
    expect(a && b).toBeTruthy();
    await linked(a!, b!);
    const other = await client(`${ws}/ws?ch=weather`);
    for (let i = 0; i < 100; i++) {
      a!.ws.send(`n${i}`);
      other.ws.send(`w${i}`);
    }
    await b!.until(100);
    await Bun.sleep(200);
    expect(b!.got).toEqual(Array.from({ length: 100 }, (_, i) => `n${i}`));
    for (const c of [a!, b!, other]) c.ws.close();
  }, 30_000);

  test("a Bun-native app's server.publish reaches its sockets on every worker, once each", async () => {
    const srv = await cluster();
    const [a, b] = await oneOnEach(`${srv.url.replace("http", "ws")}/native`);
    // Native subscriptions are learnt from ws.subscribe; give the hub a moment, then probe.
    const seen = () => a.got.length > 0 && b.got.length > 0;
    for (let i = 0; i < 100 && !seen(); i++) {
      await fetch(`${srv.url}/native-publish`, { method: "POST", body: `probe ${i}` });
      await Bun.sleep(20);
    }
    await waitUntil(seen, 3000, "a native probe on both workers");
    await Bun.sleep(100);
    a.got.length = 0;
    b.got.length = 0;
    const N = 200;
    for (let i = 0; i < N; i++) await fetch(`${srv.url}/native-publish`, { method: "POST", body: `n${i}` });
    await Promise.all([a.until(N), b.until(N)]);
    await Bun.sleep(200);
    const expected = Array.from({ length: N }, (_, i) => `n${i}`);
    // Requests land on either worker: one publisher each, so only the set (and count) is fixed.
    expect([...a.got].sort()).toEqual([...expected].sort());
    expect([...b.got].sort()).toEqual([...expected].sort());
    a.ws.close();
    b.ws.close();
  }, 30_000);

  test("a Bun-native socket's ws.publish, publishText and publishBinary reach the other worker: 10,000 exactly once, in order, never the sender", async () => {
    const srv = await cluster();
    const [a, b] = await oneOnEach(`${srv.url.replace("http", "ws")}/native`);
    // b's worker learns of the topic when b subscribes; probe until the route is there.
    for (let i = 0; i < 100 && b.got.length === 0; i++) {
      a.ws.send(`publish probe ${i}`);
      await Bun.sleep(20);
    }
    await waitUntil(() => b.got.length > 0, 3000, "a probe across workers");
    await Bun.sleep(100);
    b.got.length = 0;
    const N = 10_000;
    const calls = ["publish", "publishText", "publishBinary"];
    for (let i = 0; i < N; i++) a.ws.send(`${calls[i % 3]} m${i}`);
    await b.until(N, 20_000);
    await Bun.sleep(200);
    expect(b.got).toEqual(Array.from({ length: N }, (_, i) => `m${i}`));
    expect(a.got.filter((m) => !m.startsWith("probe"))).toEqual([]);
    a.ws.close();
    b.ws.close();
  }, 40_000);

  test("a subscription's promise resolves once it is in effect on the other worker: 100 publishes sent right after each arrive", async () => {
    const srv = await cluster();
    const [a, b] = await oneOnEach(`${srv.url.replace("http", "ws")}/ws?ch=none&control=1`);
    // a subscribes; the moment it says "subscribed", b (on the other worker) publishes once.
    for (let i = 0; i < 100; i++) {
      a.ws.send(`sub fresh${i}`);
      await a.until(2 * i + 1);
      expect(a.got[2 * i]).toBe(`subscribed fresh${i}`);
      b.ws.send(`pub fresh${i} m${i}`);
      await a.until(2 * i + 2, 3000);
      expect(a.got[2 * i + 1]).toBe(`m${i}`);
    }
    a.ws.close();
    b.ws.close();
  }, 30_000);

  for (const workers of ["1", "2"]) {
    test(`-w ${workers}: a subscription resolves only once the engine confirmed it (an engine that takes 500 ms)`, async () => {
      await using srv = await startCli(["-p", "0", "-w", workers, fixture("slow-engine-app.ts")], { timeout: 20_000 });
      const took = Number(await (await fetch(`${srv.url}/sub?ch=slow`)).text());
      expect(took).toBeGreaterThanOrEqual(450);
    }, 30_000);
  }

  test("Iodine.subscribe in the master receives what workers publish", async () => {
    const srv = await cluster();
    for (let i = 0; i < 4; i++) {
      expect(await (await fetch(`${srv.url}/publish?ch=to-master`, { method: "POST", body: `hello ${i}` })).text()).toBe("ok");
    }
    for (let i = 0; i < 4; i++) await srv.waitFor(new RegExp(`master got to-master hello ${i}\\n`), 5000, "stdout");
    expect(srv.stdout().match(/master got/g)).toHaveLength(4);
  }, 30_000);

  test("a garbage frame on the bus closes only that link, with one log line; the cluster keeps routing", async () => {
    const srv = await cluster();
    const bus = busSocket(srv.proc.pid);
    expect(bus).toBeDefined();
    let closed = false;
    const rogue = await Bun.connect({
      unix: bus!,
      socket: { data() {}, close: () => void (closed = true) },
    });
    rogue.write(new Uint8Array([5, 0, 0, 0, 99, 1, 2, 3, 4])); // type 99
    await srv.waitFor(/cluster bus: bad frame from a worker \(unknown frame type 99/);
    await waitUntil(() => closed, 2000, "the rogue link to close");
    const [a, b] = await oneOnEach(`${srv.url.replace("http", "ws")}/ws?ch=after`);
    await linked(a, b);
    a.ws.send("still here");
    await b.until(1);
    expect(b.got).toEqual(["still here"]);
    a.ws.close();
    b.ws.close();
  }, 30_000);
});

describe("--threads", () => {
  test("-w 1 -t 2: two event loops in one worker share the port and the bus; SIGTERM stops both", async () => {
    const srv = await cluster(["-w", "1", "-t", "2"]);
    await srv.waitFor(/\(1 worker × 2 threads, cluster pub\/sub\)/);
    const [a, b] = await oneOnEach(`${srv.url.replace("http", "ws")}/ws?ch=threads`);
    expect(a.pid.split(".")[0]).toBe(b.pid.split(".")[0]); // one process
    await linked(a, b);
    for (let i = 0; i < 1000; i++) a.ws.send(`t${i}`);
    await b.until(1000);
    await Bun.sleep(100);
    expect(b.got).toEqual(Array.from({ length: 1000 }, (_, i) => `t${i}`));
    a.ws.close();
    b.ws.close();
    const [worker] = childrenOf(srv.proc.pid);
    srv.proc.kill("SIGTERM");
    expect(await srv.proc.exited).toBe(0);
    expect(srv.stdout().match(new RegExp(`hook on_finish worker ${worker}\n`, "g"))).toHaveLength(2);
  }, 30_000);
});

describe("hot restart (SIGUSR1)", () => {
  test("two restarts under steady load fail zero requests and replace every worker", async () => {
    const srv = await cluster();
    const before = await pidsServing(srv.url);
    const traffic = load(srv.url);
    await Bun.sleep(300);
    for (let round = 1; round <= 2; round++) {
      srv.proc.kill("SIGUSR1");
      await waitUntil(() => (srv.stderr().match(/hot restart done: 2 new workers/g) ?? []).length >= round, 20_000, `restart ${round}`);
      await Bun.sleep(300);
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
      const r = await restartUnderKeepAliveLoad(await cluster(args));
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
    const r = await restartUnderKeepAliveLoad(await cluster([], app));
    expect(r.failed).toEqual([]);
    expect(r.toldToClose).toBeGreaterThanOrEqual(1);
  }, 30_000);

  test("WebSocket clients of the old workers get onShutdown and a close; the restart does not wait for them", async () => {
    const srv = await cluster();
    const ws = srv.url.replace("http", "ws");
    const [a, b] = await oneOnEach(`${ws}/ws?ch=bye`);
    const [na, nb] = await oneOnEach(`${ws}/native`);
    const codes = [a, b, na, nb].map((c) => new Promise<number>((res) => c.ws.addEventListener("close", (e) => res(e.code))));
    const t0 = Date.now();
    srv.proc.kill("SIGUSR1");
    await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
    expect(Date.now() - t0).toBeLessThan(8000); // well inside the 10 s drain deadline per worker
    expect(await Promise.all(codes)).toEqual([1001, 1001, 1001, 1001]); // 1001: going away
    expect(a.got.at(-1)).toBe("shutting down");
    expect(b.got.at(-1)).toBe("shutting down");
  }, 30_000);

  test("what a retiring worker publishes as it closes its sockets (a chat's \"ann left\") reaches the master", async () => {
    const srv = await cluster();
    const ws = srv.url.replace("http", "ws");
    // Two named chatters on each worker (the kernel picks the worker; extras are closed at once).
    const kept = new Map<string, string[]>();
    for (let i = 0; i < 100 && [...kept.values()].filter((n) => n.length === 2).length < 2; i++) {
      const c = await client(`${ws}/ws?ch=room&bye=c${i}`);
      const names = kept.get(c.pid) ?? [];
      if (names.length === 2) c.ws.close();
      else kept.set(c.pid, [...names, `c${i}`]);
    }
    const chatters = [...kept.values()].flat();
    expect(chatters).toHaveLength(4);
    srv.proc.kill("SIGUSR1");
    await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
    const heard = (name: string) => srv.stdout().match(new RegExp(`master got to-master ${name} (left|gone)\n`, "g")) ?? [];
    for (const name of chatters) await srv.waitFor(new RegExp(`master got to-master ${name} gone\n`), 3000, "stdout");
    for (const name of chatters) expect(heard(name).sort()).toEqual([`master got to-master ${name} gone\n`, `master got to-master ${name} left\n`]);
  }, 30_000);

  test("a restart deploys the edited app file, with no failed request in between", async () => {
    using dir = tempDir();
    const app = join(dir.path, "app.ts");
    writeFileSync(app, `export default () => new Response("v1");\n`);
    const srv = await cluster([], app);
    const traffic = load(srv.url);
    await Bun.sleep(200);
    writeFileSync(app, `export default () => new Response("v2");\n`);
    srv.proc.kill("SIGUSR1");
    await srv.waitFor(/hot restart done/, 20_000);
    await Bun.sleep(200);
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
    const srv = await cluster([], app);
    const before = await pidsServing(srv.url);
    writeFileSync(app, `export default () => new Response("oops";\n`);
    const traffic = load(srv.url, 2);
    srv.proc.kill("SIGUSR1");
    // The replacement reports why it could not start; the master says it once, in its own line.
    await srv.waitFor(/hot restart stopped: cannot load .*app\.ts: .*(Expected|Unexpected).*\(line 1, column \d+\); the old workers keep serving/, 20_000);
    expect(srv.stderr().match(/cannot load/g)).toHaveLength(1);
    await Bun.sleep(200);
    const r = await traffic.stop();
    expect(r.failed).toEqual([]);
    expect(await pidsServing(srv.url)).toEqual(before);
    // No re-spawn loop of the broken replacement.
    await Bun.sleep(500);
    expect(srv.stderr()).not.toMatch(/starting a new one/);
  }, 60_000);
});

describe("supervision", () => {
  test("kill -9 of a worker: a new pid serves within 2 s", async () => {
    const srv = await cluster();
    const [victim, survivor] = childrenOf(srv.proc.pid);
    const deadline = Date.now() + 2000;
    process.kill(victim!, "SIGKILL");
    let fresh: number | undefined;
    let served = false;
    while (!served && Date.now() < deadline) {
      fresh ??= childrenOf(srv.proc.pid).find((p) => p !== victim && p !== survivor);
      if (fresh !== undefined) served = (await pidsServing(srv.url, 10)).has(`pid ${fresh}`);
      else await Bun.sleep(20);
    }
    expect(served).toBe(true);
    expect(srv.stderr()).toMatch(new RegExp(`worker \\d \\(pid ${victim}\\) exited with signal SIGKILL; starting a new one`));
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
            const kids = childrenOf(proc.pid).sort((x, y) => x - y);
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
      expect(srv.stderr()).toMatch(new RegExp(`${logged}[^]*listening on http://\\S+ \\(2 workers, cluster pub/sub\\)`));
      const live = childrenOf(srv.proc.pid).filter(running);
      expect(live).toHaveLength(2);
      expect(live).not.toContain(victim);
      expect(await (await fetch(srv.url)).text()).toMatch(/^pid \d+$/);
    };
    // Two clusters at a time, one of each kind.
    for (let pair = 0; pair < 10; pair++) await Promise.all([round(true), round(false)]);
  }, 60_000);

  test("kill -9 of the master: no worker is left after 2 s", async () => {
    const srv = await cluster();
    const workers = childrenOf(srv.proc.pid);
    expect(workers).toHaveLength(2);
    const bus = busSocket(srv.proc.pid);
    expect(bus).toBeDefined();
    srv.proc.kill("SIGKILL");
    await srv.proc.exited;
    await waitUntil(() => workers.every((p) => !running(p)), 2000, "the workers to exit");
    // A killed master cannot remove its bus socket: the next master that starts does.
    expect(existsSync(bus!)).toBe(true);
    await cluster();
    expect(existsSync(bus!)).toBe(false);
  }, 30_000);

  test("SIGTERM: in-flight requests complete, every process runs its hooks, exit 0", async () => {
    const srv = await cluster();
    const workers = childrenOf(srv.proc.pid);
    const slow = Promise.all([1, 2, 3, 4].map(() => fetch(`${srv.url}/slow`).then((r) => r.text())));
    await Bun.sleep(150);
    srv.proc.kill("SIGTERM");
    expect(await srv.proc.exited).toBe(0);
    for (const body of await slow) expect(body).toMatch(/^slow pid \d+$/);
    expect(workers.every((p) => !running(p))).toBe(true);
    const out = srv.stdout();
    const master = srv.proc.pid;
    const order = (lines: string[]) => lines.map((l) => out.indexOf(l));
    const m = order(["pre_start", "before_fork", "after_fork", "enter_master", "on_start", "start_shutdown", "on_finish"].map((e) => `hook ${e} master ${master}\n`));
    expect(m.every((i) => i >= 0)).toBe(true);
    expect([...m].sort((x, y) => x - y)).toEqual(m);
    for (const w of workers) {
      const seq = order(["enter_child", "on_start", "start_shutdown", "on_finish"].map((e) => `hook ${e} worker ${w}\n`));
      expect(seq.every((i) => i >= 0)).toBe(true);
      expect([...seq].sort((x, y) => x - y)).toEqual(seq);
    }
    expect(out.match(/hook before_fork master/g)).toHaveLength(2);
  }, 30_000);

  test("the master dying fires on_parent_crush in the workers", async () => {
    const srv = await cluster();
    const workers = childrenOf(srv.proc.pid);
    srv.proc.kill("SIGKILL");
    for (const w of workers) await srv.waitFor(new RegExp(`hook on_parent_crush worker ${w}`), 2000, "stdout");
  }, 30_000);
});

describe("single process and the CLI", () => {
  test("one process is master and worker: its hooks run, on_idle after a quiet second", async () => {
    const srv = await startCli(["-p", "0", APP]);
    open.push(srv);
    const pid = srv.proc.pid;
    await fetch(srv.url);
    await srv.waitFor(new RegExp(`hook on_idle single ${pid}`), 4000, "stdout");
    srv.proc.kill("SIGTERM");
    expect(await srv.proc.exited).toBe(0);
    const out = srv.stdout();
    const seq = ["pre_start", "enter_child", "on_start", "on_idle", "start_shutdown", "on_finish"].map((e) => out.indexOf(`hook ${e} single ${pid}\n`));
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
      expect(r.stderr).toBe(`iodine: cannot listen on http://0.0.0.0:${holder.port}: port ${holder.port} is already in use (EADDRINUSE)\n`);
    } finally {
      holder.stop(true);
    }
  }, 30_000);
});

describe("a worker's bus link (in this process, against a hub written with the bus framing)", () => {
  test("it announces its interests, reconnects after a bad frame, replays them, and delivers what the hub sends", async () => {
    const { FrameReader, FrameWriter, messageOf } = await import("../src/pubsub/bus.ts");
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
            onInterest: (sub, key, pattern) => void link.frames.push(`${sub ? "sub" : "unsub"} ${pattern ? "pattern " : ""}${key}`),
            onPublish: (ch, f, at, bin) => void link.frames.push(`pub ${ch} ${String(messageOf(f, at, bin))}`),
            onWantAll: (want) => void link.frames.push(`all ${want}`),
            onCommand: (id, args) => void link.frames.push(`cmd ${id} ${args}`),
            onReply: (id, ok, json) => void link.frames.push(`reply ${id} ${ok} ${json}`),
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
      await waitUntil(() => (links[0]?.frames.length ?? 0) >= 2, 2000, "hello and the subscription");
      expect(links[0]!.frames.slice(0, 2)).toEqual(["hello test worker", "sub link-test"]);
      const subscribed = Iodine.subscribe("news.*", { match: "redis" }, () => {});
      Iodine.publish("out", "from the worker");
      await subscribed; // the hub answered the SYNC that followed the SUB
      await waitUntil(() => links[0]!.frames.length >= 5, 2000, "the pattern and the publish");
      expect(links[0]!.frames.slice(2)).toEqual(["sub pattern news.*", "sync 1", "pub out from the worker"]);
      // The hub sends garbage: the worker drops the link (logged) and comes back with its interests.
      links[0]!.socket.write(new Uint8Array([5, 0, 0, 0, 77, 0, 0, 0, 0]));
      await waitUntil(() => (links[1]?.frames.length ?? 0) >= 3, 2000, "the link to come back");
      expect([...links[1]!.frames].sort()).toEqual(["hello test worker", "sub link-test", "sub pattern news.*"]);
      // What the hub forwards reaches this process's subscribers.
      const w = new FrameWriter();
      w.publish("link-test", "from the hub");
      links[1]!.socket.write(w.take());
      await waitUntil(() => got.length > 0, 2000, "delivery");
      expect(got).toEqual(["link-test from the hub"]);
      // Once the hub has said what the others want (then HELLO), nothing else leaves this process.
      w.interest(true, "wanted", false);
      w.interest(true, "room.*", true);
      w.hello("hub");
      links[1]!.socket.write(w.take());
      await Bun.sleep(50);
      for (const ch of ["unwanted", "wanted", "room.1", "roomy", "wanted"]) Iodine.publish(ch, ch);
      w.interest(false, "wanted", false);
      links[1]!.socket.write(w.take());
      await Bun.sleep(50);
      Iodine.publish("wanted", "after the unsubscribe");
      Iodine.publish("room.2", "room.2");
      await waitUntil(() => links[1]!.frames.length >= 7, 2000, "the wanted publishes");
      await Bun.sleep(50);
      expect(links[1]!.frames.slice(3)).toEqual(["pub wanted wanted", "pub room.1 room.1", "pub wanted wanted", "pub room.2 room.2"]);
    } finally {
      member.leave();
      Iodine.unsubscribe("link-test");
      Iodine.unsubscribe("news.*", { match: "redis" });
      hub.stop(true);
    }
  });
});
