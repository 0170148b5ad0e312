// The single-file executable (SPEC §1, `bun run build`): built once here with package.json's own
// build command into a temp dir, then run the way a user runs it, on app files copied out of the
// checkout (so nothing is found through this project's node_modules or sources): examples/chat.ts
// with -w 2 (the room spans both workers; SIGUSR1 replaces them and the room works again), static
// files and TLS, the --max-header re-launch, and Redis between two executables. Then the deployment
// files in examples/deploy/: the systemd unit's ExecStart/ExecReload/KillSignal run as written (paths
// moved into a temp dir), and nginx with examples/deploy/nginx.conf in front of the executable passes
// HTTP, WebSocket and EventSource through.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { buildExecutable } from "../scripts/build.ts";
import {
  childrenOf,
  connectionsHeld,
  ctrlCDuringRequest,
  fixture,
  freePort,
  openStream,
  rawRequest,
  ROOT,
  skipWithout,
  startCommand,
  statusLines,
  tempDir,
  waitUntil,
  type CliProcess,
} from "./harness.ts";
import { skipRedis, startRedis } from "./redis-server.ts";
import { chatLine, chatLinked, chatter, Clients, type Chatter } from "./ws.ts";

const dir = tempDir("iodine-exe-");
const exe = join(dir.path, "iodine");
const apps = join(dir.path, "apps");

beforeAll(async () => {
  await buildExecutable(exe);
  cpSync(join(ROOT, "examples", "chat.ts"), join(apps, "chat.ts"));
  cpSync(join(ROOT, "examples", "chat"), join(apps, "chat"), { recursive: true });
  cpSync(join(ROOT, "examples", "static"), join(apps, "static"), { recursive: true });
  cpSync(join(ROOT, "examples", "hello.ts"), join(apps, "hello.ts"));
}, 60_000);

afterAll(() => dir[Symbol.dispose]());

const run = (args: string[], timeout = 15_000) =>
  startCommand([exe, ...args], { cwd: apps, timeout });

/**
 * Opens chatters one at a time until each of the two workers holds one, telling by which worker's
 * count of connections on the port went up: [on the first worker, on the second].
 */
async function oneOnEachWorker(
  srv: CliProcess,
  workers: number[],
  prefix: string,
  opened: Chatter[],
): Promise<[Chatter, Chatter]> {
  const byWorker = new Map<number, Chatter>();
  for (let i = 0; i < 40 && byWorker.size < 2; i++) {
    const before = connectionsHeld(workers, srv.port);
    const c = await chatter(srv.url, `${prefix}${i}`);
    opened.push(c);
    const after = connectionsHeld(workers, srv.port);
    const gained = workers.filter((w) => after.get(w)! > before.get(w)!);
    if (gained.length === 1 && !byWorker.has(gained[0]!)) byWorker.set(gained[0]!, c);
  }
  expect([...byWorker.keys()].sort()).toEqual([...workers].sort());
  return [byWorker.get(workers[0]!)!, byWorker.get(workers[1]!)!];
}

/** `a` and `b` (on different workers or machines) each say something; both hear both, in the room's words. */
async function talkAcross(a: Chatter, b: Chatter): Promise<void> {
  await chatLinked(a, b);
  a.send("hello from a");
  b.send("hello from b");
  for (const c of [a, b]) {
    await c.waitFor(chatLine(`${a.name}: hello from a`));
    await c.waitFor(chatLine(`${b.name}: hello from b`));
  }
}

/** An EventSource follower of the room: its own "joined" event has come. */
async function follower(base: string, name: string) {
  const s = await openStream(`${base}/chat?name=${name}`);
  expect(s.res.headers.get("content-type")).toStartWith("text/event-stream");
  await s.until(`data: ${name} joined (sse)\n\n`);
  return s;
}

describe("the executable (bun run build)", () => {
  test("--version names iodine and the Bun inside it", async () => {
    const p = Bun.spawn([exe, "--version"], { cwd: apps, stdout: "pipe" });
    expect((await new Response(p.stdout).text()).trim()).toBe(
      `iodine ${pkg.version} (bun ${Bun.version})`,
    );
    expect(await p.exited).toBe(0);
  });

  test("examples/chat.ts with -w 2: the room spans both workers, and SIGUSR1 replaces them", async () => {
    await using srv = await run(["-p", "0", "-w", "2", "chat.ts"], 20_000);
    expect(srv.stderr()).toContain("(2 workers, cluster pub/sub)");
    const page = await fetch(srv.url + "/");
    expect(await page.text()).toContain("<title>iodine chat</title>");
    const opened: Chatter[] = [];
    try {
      const workers = childrenOf(srv.proc.pid);
      expect(workers).toHaveLength(2);
      const [a, b] = await oneOnEachWorker(srv, workers, "a", opened);
      await talkAcross(a, b);
      // The master alone follows the room on stdout: each line once, whichever worker it came from.
      await srv.waitFor(/\[chat\] .*: hello from b\n/, 5000, "stdout");
      for (const line of [`[chat] ${a.name}: hello from a`, `[chat] ${b.name}: hello from b`]) {
        expect(
          srv
            .stdout()
            .split("\n")
            .filter((l) => l === line),
        ).toHaveLength(1);
      }

      // An EventSource follower (on whichever worker) hears the room too.
      const eve = await follower(srv.url, "eve");
      try {
        a.send("to everyone");
        await eve.until(`data: ${a.name}: to everyone\n\n`);
      } finally {
        eve.close();
      }

      srv.proc.kill("SIGUSR1");
      await srv.waitFor(/hot restart done: 2 new workers/, 20_000);
      // The old workers closed their WebSockets on the way out; two new pids serve.
      for (const c of opened) expect((await c.closed).code).toBe(1001); // going away
      const fresh = childrenOf(srv.proc.pid);
      expect(fresh).toHaveLength(2);
      for (const pid of fresh) expect(workers).not.toContain(pid);
      const [c, d] = await oneOnEachWorker(srv, fresh, "c", opened);
      await talkAcross(c, d);
    } finally {
      for (const c of opened) c.close();
    }
    expect(await srv.stop()).toBe(0);
  }, 45_000);

  test("-t 2: both event-loop threads of a worker serve (Bun Workers started from inside the executable)", async () => {
    await using srv = await startCommand([exe, "-p", "0", "-t", "2", fixture("cluster-app.ts")], {
      cwd: apps,
    });
    await using clients = new Clients();
    const [a, b] = await clients.oneOnEach(`${srv.url.replace("http", "ws")}/ws?ch=threads`);
    expect(a.pid.split(".")[0]).toBe(b.pid.split(".")[0]); // one process, two threads
    expect(a.pid).not.toBe(b.pid);
  }, 20_000);

  test("static files and TLS: --www with pre-compressed assets over https, the app behind them", async () => {
    await using srv = await run(["-p", "0", "--tls", "--www", "static/public", "static/app.ts"]);
    expect(srv.url).toStartWith("https://");
    const insecure = { tls: { rejectUnauthorized: false } };
    const br = await fetch(srv.url + "/style.css", {
      headers: { "accept-encoding": "br" },
      decompress: false,
      ...insecure,
    });
    expect(br.status).toBe(200);
    expect(br.headers.get("content-encoding")).toBe("br");
    const index = await fetch(srv.url + "/", insecure);
    expect(await index.text()).toBe(await Bun.file(join(apps, "static/public/index.html")).text());
    expect((await fetch(srv.url + "/nothing-here", insecure)).status).toBe(404);
  }, 20_000);

  test("an app with its own node_modules (Hono, and a copy of iodine-bun), outside any checkout, resolves its packages and the executable's iodine", async () => {
    using app = tempDir("iodine-exe-hono-");
    cpSync(join(ROOT, "node_modules", "hono"), join(app.path, "node_modules", "hono"), {
      recursive: true,
    });
    // The project's own install of the package: "iodine-bun" must still be the executable's (one runtime).
    const copy = join(app.path, "node_modules", "iodine-bun");
    mkdirSync(copy, { recursive: true });
    writeFileSync(
      join(copy, "package.json"),
      JSON.stringify({ name: "iodine-bun", type: "module", exports: "./index.ts" }),
    );
    writeFileSync(join(copy, "index.ts"), `export const Iodine = { version: "a second copy" };\n`);
    writeFileSync(
      join(app.path, "app.ts"),
      `import { Hono } from "hono";\nimport { Iodine } from "iodine-bun";\nimport { Iodine as Alias } from "iodine";\n` +
        `const app = new Hono();\napp.get("/", (c) => c.text(\`hono \${Iodine.version} \${Iodine === Alias}\`));\nexport default app;\n`,
    );
    await using srv = await startCommand([exe, "-p", "0", "app.ts"], { cwd: app.path });
    expect(await (await fetch(srv.url + "/")).text()).toBe(`hono ${pkg.version} true`);
  }, 20_000);

  for (const args of [
    ["-w", "2"],
    ["--max-header", "64"],
  ]) {
    test(`Ctrl-C in a terminal (SIGINT to the group, twice) with ${args.join(" ")}: the request in flight is answered, exit 0`, async () => {
      await using srv = await startCommand([exe, "-p", "0", ...args, fixture("slow-app.ts")], {
        cwd: apps,
        group: true,
      });
      expect(await ctrlCDuringRequest(srv)).toEqual({
        status: 200,
        body: "done after 1200 ms",
        code: 0,
      });
    }, 20_000);
  }

  test("--max-header: the executable re-launches itself with Bun's flag; 431 above the limit", async () => {
    await using srv = await run(["-p", "0", "--max-header", "64", "hello.ts"]);
    const header = (n: number) =>
      `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(n)}\r\nConnection: close\r\n\r\n`;
    expect(statusLines(await rawRequest(srv.port, header(48 * 1024)))).toEqual([200]);
    expect(statusLines(await rawRequest(srv.port, header(70 * 1024)))).toEqual([431]);
  }, 20_000);

  describe.skipIf(skipRedis("test/executable.test.ts", "the executable's Redis test"))(
    "with Redis",
    () => {
      test("two executables with -r share one chat room", async () => {
        await using redis = await startRedis();
        await using one = await run(["-p", "0", "-r", redis.url, "chat.ts"]);
        await using two = await run(["-p", "0", "-r", redis.url, "chat.ts"]);
        const opened: Chatter[] = [];
        try {
          const a = await chatter(one.url, "ann");
          opened.push(a);
          const b = await chatter(two.url, "bob");
          opened.push(b);
          await talkAcross(a, b);
        } finally {
          for (const c of opened) c.close();
        }
      }, 30_000);
    },
  );
});

// --- deployment files ---

const deploy = (name: string) => readFileSync(join(ROOT, "examples", "deploy", name), "utf8");

/** `Key=value` lines of a systemd unit's sections (the last one wins, as systemd reads them). */
function unitKeys(text: string): Map<string, string> {
  const keys = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) keys.set(m[1]!, m[2]!);
  }
  return keys;
}

const nginx = Bun.which("nginx") ?? Bun.which("nginx", { PATH: "/usr/sbin:/usr/local/sbin" });

describe("examples/deploy", () => {
  test("iodine.service: ExecStart serves, ExecReload hot-restarts, KillSignal stops with exit 0", async () => {
    using unitDir = tempDir();
    const unit = unitKeys(deploy("iodine.service"));
    const workDir = unit.get("WorkingDirectory")!;
    const exec = unit.get("ExecStart")!.split(/\s+/);
    expect(exec[0]).toBe(`${workDir}/iodine`);
    cpSync(join(ROOT, "examples", "hello.ts"), join(unitDir.path, "app.ts"));
    // The unit's command line with its paths moved here and a free port: every flag as written.
    const args = exec
      .slice(1)
      .map((w, i, all) =>
        all[i - 1] === "-p" ? "0" : all[i - 1] === "--pid" ? `${unitDir.path}/` : w,
      );
    await using srv = await startCommand([exe, ...args], { cwd: unitDir.path, timeout: 20_000 });
    expect(await (await fetch(srv.url + "/")).text()).toBe("Hello World!");
    const pid = Number(readFileSync(join(unitDir.path, "iodine.pid"), "utf8"));
    expect(pid).toBe(srv.proc.pid);

    const reload = unit.get("ExecReload")!.replace("$MAINPID", String(pid)).split(/\s+/);
    expect(Bun.spawnSync(reload).exitCode).toBe(0);
    await srv.waitFor(/hot restart done/, 20_000);
    expect(await (await fetch(srv.url + "/")).text()).toBe("Hello World!");

    // KillMode=mixed: systemd signals the master alone, as here, and the master stops its workers.
    expect(unit.get("KillSignal")).toBe("SIGTERM");
    expect(unit.get("KillMode")).toBe("mixed");
    const t0 = Date.now();
    expect(await srv.stop("SIGTERM")).toBe(0);
    expect(Date.now() - t0).toBeLessThan(Number(unit.get("TimeoutStopSec")) * 1000);
  }, 45_000);

  test.skipIf(
    skipWithout("nginx", nginx !== null, "test/executable.test.ts", "the nginx.conf test"),
  )(
    "nginx.conf: HTTP, a WebSocket and an EventSource stream through nginx to the executable",
    async () => {
      using dir = tempDir("iodine-nginx-");
      await using srv = await run(["-p", "0", "-b", "127.0.0.1", "chat.ts"]);
      const port = freePort();
      const site = deploy("nginx.conf")
        .replace("listen 80;", `listen 127.0.0.1:${port};`)
        .replace("server 127.0.0.1:3000;", `server 127.0.0.1:${srv.port};`);
      expect(site).toContain(`server 127.0.0.1:${srv.port};`);
      writeFileSync(join(dir.path, "site.conf"), site);
      const built = Bun.spawnSync([nginx!, "-V"], { stderr: "pipe" }).stderr.toString();
      const temps = [...built.matchAll(/--http-([a-z-]+)-temp-path=/g)].map(
        (m) => `${m[1]!.replace("-", "_")}_temp_path ${join(dir.path, m[1]!)};`,
      );
      writeFileSync(
        join(dir.path, "nginx.conf"),
        [
          "daemon off;",
          "worker_processes 1;",
          `pid ${join(dir.path, "nginx.pid")};`,
          `error_log ${join(dir.path, "error.log")} warn;`,
          ...(process.getuid?.() === 0 ? ["user root;"] : []),
          "events { worker_connections 64; }",
          `http { access_log off; ${temps.join(" ")} include ${join(dir.path, "site.conf")}; }`,
        ].join("\n"),
      );
      const proc = Bun.spawn(
        [
          nginx!,
          "-p",
          dir.path,
          "-c",
          join(dir.path, "nginx.conf"),
          "-e",
          join(dir.path, "error.log"),
        ],
        {
          stdout: "ignore",
          stderr: "pipe",
        },
      );
      const opened: Chatter[] = [];
      try {
        const url = `http://127.0.0.1:${port}`;
        // nginx says nothing when it listens: polled.
        let page: Response | undefined;
        await waitUntil(
          async () => {
            if (proc.exitCode !== null)
              throw new Error(
                `nginx exited with ${proc.exitCode}: ${await new Response(proc.stderr).text()}`,
              );
            page = await fetch(url + "/").catch(() => undefined);
            return page !== undefined;
          },
          5000,
          "nginx to answer",
        );
        expect(page?.status).toBe(200);
        expect(await page!.text()).toContain("<title>iodine chat</title>");

        const eve = await follower(url, "eve");
        try {
          const ann = await chatter(url, "ann");
          opened.push(ann);
          ann.send("through nginx");
          // Event by event, not held in nginx's buffer until it fills.
          await eve.until("data: ann: through nginx\n\n");
          await ann.waitFor(chatLine("ann: through nginx")); // its own message over the proxied WebSocket
        } finally {
          eve.close();
        }
      } finally {
        for (const c of opened) c.close();
        proc.kill("SIGTERM");
        await proc.exited;
      }
    },
    30_000,
  );
});
