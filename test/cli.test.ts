// The command line of SPEC §2: every option's spellings and values, the environment, the config
// file, and every error path (one line, exit code 2, no stack).
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { OPTIONS, readArgv, readConfigText } from "../src/options.ts";
import { resolveCount, resolveSettings, type Settings } from "../src/settings.ts";
import { fixture, runCli, startCli, tempDir } from "./harness.ts";

const settingsOf = (argv: string[], env: Record<string, string> = {}, cores = 8): Settings =>
  resolveSettings(readArgv(argv), undefined, env, cores);

const KiB = 1024;
const MiB = 1024 * 1024;

describe("option parsing", () => {
  // [argv, field, expected] — each option in its long, short, `=` and iodine single-dash spellings.
  const cases: [string[], keyof Settings, unknown][] = [
    [["--port", "8080"], "port", 8080],
    [["-p", "8080"], "port", 8080],
    [["-port", "8080"], "port", 8080],
    [["-port=8080"], "port", 8080],
    [["--port=0"], "port", 0],
    [["-b", "127.0.0.1"], "hostname", "127.0.0.1"],
    [["-bind", "::1"], "hostname", "::1"],
    [["--bind", "/tmp/x.sock"], "unix", "/tmp/x.sock"],
    [["--bind", "unix:/tmp/y.sock"], "unix", "/tmp/y.sock"],
    [["-w", "1"], "workers", 1],
    [["-workers", "3"], "workers", 3],
    [["--workers", "-2"], "workers", 4],
    [["-w", "-2"], "workers", 4],
    [["-w=-8"], "workers", 1],
    [["-w", "-16"], "workers", 1],
    [["-t", "-4"], "threads", 2],
    [["-threads", "2"], "threads", 2],
    [["--www", "pub"], "www", "pub"],
    [["-www", "pub"], "www", "pub"],
    [["-public", "pub"], "www", "pub"],
    [["-v"], "verbose", true],
    [["-log"], "verbose", true],
    [["--verbose"], "verbose", true],
    [["--verbose=false"], "verbose", false],
    [["-r", "redis://127.0.0.1:6379"], "redis", "redis://127.0.0.1:6379"],
    [["-redis", "rediss://h:1"], "redis", "rediss://h:1"],
    [["-rp", "60"], "redisPing", 60],
    [["--redis-ping", "61"], "redisPing", 61],
    [["-k", "5"], "keepAlive", 5],
    [["-keep-alive", "0"], "keepAlive", 0],
    [["--body-timeout", "5"], "bodyTimeout", 5],
    [["-bt", "0"], "bodyTimeout", 0],
    [["-body-timeout=7"], "bodyTimeout", 7],
    [["--ping", "10"], "ping", 10],
    [["-ping", "11"], "ping", 11],
    [["--max-body", "2"], "maxBody", 2 * MiB],
    [["-maxbd", "3"], "maxBody", 3 * MiB],
    [["-max-body", "4"], "maxBody", 4 * MiB],
    [["--max-header", "8"], "maxHeader", 8 * KiB],
    [["-maxhd", "9"], "maxHeader", 9 * KiB],
    [["--max-msg", "100"], "maxMsg", 100 * KiB],
    [["-maxms", "101"], "maxMsg", 101 * KiB],
    [["--tls"], "tls", true],
    [["-tls"], "tls", true],
    [["--tls-cert", "c.pem", "--tls-key", "k.pem"], "tlsCert", "c.pem"],
    [["-cert", "c.pem", "-key", "k.pem"], "tlsKey", "k.pem"],
    [["-tls-cert", "c.pem", "-tls-key", "k.pem", "-tls-password", "pw"], "tlsPass", "pw"],
    [["--tls-pass", "pw", "--tls-cert", "c", "--tls-key", "k"], "tlsPass", "pw"],
    [["--pid", "x.pid"], "pid", "x.pid"],
    [["-pidfile", "run/"], "pid", "run/iodine.pid"],
    [["-V", "5"], "verbosity", 5],
    [["-verbosity", "0"], "verbosity", 0],
    [["--warmup"], "warmup", true],
    [["--preload"], "warmup", true],
    [["-warmup"], "warmup", true],
    [["app.ts"], "app", "app.ts"],
    [["-p", "1", "--", "-weird-name.ts"], "app", "-weird-name.ts"],
  ];
  for (const [argv, field, expected] of cases) {
    test(`${argv.join(" ")} → ${field} = ${JSON.stringify(expected)}`, () => {
      expect(settingsOf(argv)[field] as unknown).toEqual(expected as never);
    });
  }

  test("defaults", () => {
    const s = settingsOf([]);
    expect(s).toEqual({
      app: "", port: undefined, hostname: undefined, unix: undefined, workers: 1, threads: 1,
      www: undefined, verbose: false, redis: undefined, redisPing: 300, keepAlive: 40, bodyTimeout: 10, ping: 40,
      maxBody: 50 * MiB, maxHeader: 32 * KiB, maxMsg: 250 * KiB, tls: false, tlsCert: undefined,
      tlsKey: undefined, tlsPass: undefined, pid: undefined, verbosity: 4, warmup: false,
    });
  });

  test("negative counts are cores ÷ |N|, at least 1", () => {
    expect(resolveCount(-2, 2)).toBe(1);
    expect(resolveCount(-2, 8)).toBe(4);
    expect(resolveCount(-3, 8)).toBe(2);
    expect(resolveCount(-1, 6)).toBe(6);
    expect(resolveCount(-64, 6)).toBe(1);
    expect(resolveCount(5, 2)).toBe(5);
  });

  test("environment: $PORT, $WORKERS, $WEB_CONCURRENCY, $THREADS, $REDIS_URL, $IODINE_REDIS_URL", () => {
    expect(settingsOf([], { PORT: "4000" }).port).toBe(4000);
    expect(settingsOf(["-p", "5000"], { PORT: "4000" }).port).toBe(5000);
    expect(settingsOf([], { WORKERS: "-2" }).workers).toBe(4);
    expect(settingsOf([], { WEB_CONCURRENCY: "3" }).workers).toBe(3);
    expect(settingsOf([], { WORKERS: "2", WEB_CONCURRENCY: "3" }).workers).toBe(2);
    expect(settingsOf([], { THREADS: "2" }).threads).toBe(2);
    expect(settingsOf([], { REDIS_URL: "redis://a:1" }).redis).toBe("redis://a:1");
    expect(settingsOf([], { IODINE_REDIS_URL: "redis://b:2" }).redis).toBe("redis://b:2");
    expect(settingsOf(["-r", "redis://c:3"], { REDIS_URL: "redis://a:1" }).redis).toBe("redis://c:3");
  });

  test("config file: one option per line, comments, every spelling; the command line wins", () => {
    const config = readConfigText("# a comment\n\n-p 4001\n--www=public\nverbose\nmax-body 7\n-maxhd=20\n", "iodine.conf");
    const s = resolveSettings(readArgv(["-p", "4002"]), config, {}, 2);
    expect(s.port).toBe(4002);
    expect(s.www).toBe("public");
    expect(s.verbose).toBe(true);
    expect(s.maxBody).toBe(7 * MiB);
    expect(s.maxHeader).toBe(20 * KiB);
    expect(() => readConfigText("-p 1\n--nope 3\n", "bad.conf")).toThrow('bad.conf:2: unknown option "--nope"');
    expect(() => readConfigText("app.ts\n", "bad.conf")).toThrow("bad.conf:1:");
  });

  const errors: [string[], Record<string, string>, string][] = [
    [["--nope"], {}, 'unknown option "--nope"'],
    [["-x"], {}, 'unknown option "-x"'],
    [["-vp", "3000"], {}, 'unknown option "-vp"'],
    [["--port"], {}, 'option "--port" needs a value'],
    [["-port"], {}, 'option "-port" needs a value'],
    [["-p", "abc"], {}, '--port must be an integer 0–65535, got "abc"'],
    [["-p", "65536"], {}, "--port must be an integer 0–65535"],
    [["-p", "1.5"], {}, "--port must be an integer"],
    [[], { PORT: "x" }, '$PORT must be an integer 0–65535, got "x"'],
    [["-w", "0"], {}, "--workers must be a non-zero integer"],
    [["-w", "two"], {}, "--workers must be a non-zero integer"],
    [[], { WORKERS: "lots" }, "$WORKERS must be a non-zero integer"],
    [["-t", "0"], {}, "--threads must be a non-zero integer"],
    [["-k", "256"], {}, "--keep-alive must be an integer 0–255"],
    [["-bt", "-1"], {}, "--body-timeout must be an integer 0–255"],
    [["--ping", "0"], {}, "--ping must be an integer 1–960"],
    [["--max-body", "0"], {}, "--max-body must be an integer"],
    [["--max-header", "-1"], {}, "--max-header must be an integer"],
    [["--max-msg", "x"], {}, "--max-msg must be an integer"],
    [["-V", "6"], {}, "--verbosity must be an integer 0–5"],
    [["-rp", "0"], {}, "--redis-ping must be an integer"],
    [["-r", "http://x"], {}, "--redis must be a redis:// or rediss:// URL"],
    [[], { REDIS_URL: "localhost:6379" }, "$REDIS_URL must be a redis:// or rediss:// URL"],
    [["--tls-cert", "c.pem"], {}, 'option "--tls-cert" needs "--tls-key" too'],
    [["--tls-key", "k.pem"], {}, 'option "--tls-key" needs "--tls-cert" too'],
    [["--tls=maybe"], {}, 'option "--tls" takes no value, got "maybe"'],
    [["a.ts", "b.ts"], {}, 'unexpected argument "b.ts"'],
    [["--bind", "unix:"], {}, "needs a socket path"],
    [["--pid", ""], {}, 'option "--pid" needs a file name'],
  ];
  for (const [argv, env, message] of errors) {
    test(`refuses ${argv.join(" ") || JSON.stringify(env)}`, () => {
      expect(() => settingsOf(argv, env)).toThrow(message);
    });
  }

  test("every option in the table has an iodine single-dash spelling", () => {
    for (const o of OPTIONS) {
      if (o.name === "version") continue;
      expect(o.iodine.length).toBeGreaterThan(0);
      expect(readArgv([`-${o.iodine[0]}`, ...(o.kind === "string" ? ["1"] : [])]).values.has(o.name)).toBe(true);
    }
  });
});

describe("the CLI process", () => {
  test("--help lists every option and exits 0; -? and -help too", async () => {
    for (const flag of ["--help", "-h", "-?", "-help"]) {
      const r = await runCli([flag]);
      expect(r.code).toBe(0);
      for (const o of OPTIONS) {
        expect(r.stdout).toContain(`--${o.name}`);
        for (const s of o.iodine) if (s !== o.short) expect(r.stdout).toContain(`-${s}`);
      }
    }
  });

  test("--version prints the package version", async () => {
    const r = await runCli(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^iodine \d+\.\d+\.\d+ \(bun \d+\.\d+\.\d+\)\n$/);
  });

  const failures: [string, string[], Record<string, string>, RegExp][] = [
    ["an unknown option", ["--frobnicate", fixture("function-app.ts")], {}, /^iodine: unknown option "--frobnicate" \(see --help\)\n$/],
    ["a bad port", ["-p", "http", fixture("function-app.ts")], {}, /^iodine: --port must be an integer 0–65535, got "http"\n$/],
    ["a bad $PORT", [fixture("function-app.ts")], { PORT: "-1" }, /^iodine: \$PORT must be an integer 0–65535, got "-1"\n$/],
    ["a missing app file", ["-p", "0", "does-not-exist.ts"], {}, /^iodine: app file not found: does-not-exist\.ts\n$/],
    ["a module without a usable export", ["-p", "0", fixture("no-export.ts")], {}, /^iodine: .*no-export\.ts has no usable export: .*got no default export\n$/],
    ["a missing public folder", ["--www", "no/such/dir", "-p", "0", fixture("function-app.ts")], {}, /^iodine: public folder not found: no\/such\/dir\n$/],
    ["a missing TLS file", ["--tls-cert", "nope.pem", "--tls-key", "nope.key", "-p", "0", fixture("function-app.ts")], {}, /^iodine: cannot read the TLS certificate "nope\.pem": ENOENT\n$/],
    ["a missing config file", ["-C", "nope.conf", fixture("function-app.ts")], {}, /^iodine: cannot read the config file "nope\.conf": ENOENT\n$/],
  ];
  for (const [what, args, env, pattern] of failures) {
    test(`exit 2 and one line for ${what}`, async () => {
      const r = await runCli(args, { env });
      expect(r.stderr).toMatch(pattern);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.code).toBe(2);
    });
  }

  test("exit 2 naming the file and line for a syntax error in the app", async () => {
    using dir = tempDir();
    const file = join(dir.path, "broken.ts");
    writeFileSync(file, "export default {\n  fetch() { return new Response('x') \n  oops oops\n};\n");
    const r = await runCli(["-p", "0", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^iodine: cannot load .*broken\.ts: .*\(line 3/);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });

  test("exit 2 for an app whose top level throws", async () => {
    using dir = tempDir();
    const file = join(dir.path, "throws.ts");
    writeFileSync(file, "throw new Error('database unreachable');\nexport default () => new Response('x');\n");
    const r = await runCli(["-p", "0", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`iodine: cannot load ${file}: database unreachable\n`);
  });

  test("-V 0 silences even errors; the exit code still tells", async () => {
    const r = await runCli(["-V", "0", "-p", "0", "missing.ts"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("");
  });

  test("APP defaults to app.ts in the working directory", async () => {
    using dir = tempDir();
    writeFileSync(join(dir.path, "app.ts"), "export default () => new Response('default app.ts');\n");
    await using srv = await startCli(["-p", "0"], { cwd: dir.path });
    expect(await (await fetch(srv.url)).text()).toBe("default app.ts");
  });

  test("APP falls back to app.js", async () => {
    using dir = tempDir();
    writeFileSync(join(dir.path, "app.js"), "export default { fetch: () => new Response('default app.js') };\n");
    await using srv = await startCli(["-p", "0"], { cwd: dir.path });
    expect(await (await fetch(srv.url)).text()).toBe("default app.js");
  });

  test("--port 0 prints the real port; $PORT is honoured", async () => {
    await using a = await startCli(["--port", "0", fixture("function-app.ts")]);
    expect(a.port).toBeGreaterThan(0);
    expect(a.stderr()).toMatch(/^iodine: listening on http:\/\/0\.0\.0\.0:\d+ \(1 worker, 1 thread\)\n/);
    await using b = await startCli([fixture("function-app.ts")], { env: { PORT: "0" } });
    expect(b.port).toBeGreaterThan(0);
    expect(await (await fetch(b.url + "/x")).text()).toBe("GET /x server=true");
  });

  test("--bind 127.0.0.1 binds that address only", async () => {
    await using srv = await startCli(["-b", "127.0.0.1", "-p", "0", fixture("function-app.ts")]);
    expect(srv.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(srv.url)).status).toBe(200);
  });

  test("--bind with a path serves on a Unix socket (both spellings) and removes it on stop", async () => {
    using dir = tempDir();
    for (const spelling of ["", "unix:"]) {
      const sock = join(dir.path, `s${spelling.length}.sock`);
      const srv = await startCli(["--bind", spelling + sock, fixture("function-app.ts")]);
      try {
        expect(srv.url).toBe(`unix:${sock}`);
        const res = await fetch("http://localhost/over-unix", { unix: sock });
        expect(await res.text()).toBe("GET /over-unix server=true");
      } finally {
        expect(await srv.stop("SIGTERM")).toBe(0);
      }
      expect(existsSync(sock)).toBe(false);
    }
  });

  test("--pid writes the pid and removes the file on exit; a trailing / gets iodine.pid", async () => {
    using dir = tempDir();
    const pidDir = join(dir.path, "run") + "/";
    mkdirSync(pidDir);
    for (const arg of [join(dir.path, "x.pid"), pidDir]) {
      const file = arg.endsWith("/") ? arg + "iodine.pid" : arg;
      const srv = await startCli(["--pid", arg, "-p", "0", fixture("function-app.ts")]);
      try {
        expect(readFileSync(file, "utf8")).toBe(`${srv.proc.pid}\n`);
      } finally {
        expect(await srv.stop("SIGINT")).toBe(0);
      }
      expect(existsSync(file)).toBe(false);
    }
  });

  test("-C reads options from a file; command-line flags win", async () => {
    using dir = tempDir();
    const conf = join(dir.path, "iodine.conf");
    writeFileSync(conf, `# served from the config\n-p 1\n-v\n--www ${join(dir.path)}\n`);
    writeFileSync(join(dir.path, "hello.txt"), "from the public folder");
    await using srv = await startCli(["-C", conf, "-p", "0", fixture("function-app.ts")]);
    expect(srv.port).not.toBe(1);
    expect(await (await fetch(srv.url + "/hello.txt")).text()).toBe("from the public folder");
    await srv.waitFor(/"GET \/hello\.txt HTTP\/1\.1" 200/);
  });

  test("--warmup calls the app once before accepting connections", async () => {
    using dir = tempDir();
    const app = join(dir.path, "count.ts");
    writeFileSync(app, "let n = 0;\nexport default (req: Request) => new Response(`call ${++n} ${new URL(req.url).pathname}`);\n");
    await using warm = await startCli(["--warmup", "-p", "0", app]);
    expect(await (await fetch(warm.url + "/first")).text()).toBe("call 2 /first");
    await using cold = await startCli(["-p", "0", app]);
    expect(await (await fetch(cold.url + "/first")).text()).toBe("call 1 /first");
  });

  test("the CLI re-launches itself with Bun's header flag when it was started without it", async () => {
    await using srv = await startCli(["--max-header", "20", "-p", "0", fixture("function-app.ts")], { headerFlag: false });
    expect((await fetch(srv.url)).status).toBe(200);
    // The listening line comes from the re-launched child; SIGTERM reaches it through the parent.
    expect(await srv.stop("SIGTERM")).toBe(0);
  });
});
