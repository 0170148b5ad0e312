// The command line of SPEC §2: every option's spellings and values, the environment, the config
// file, and every error path (one line, exit code 2, no stack).
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { OPTIONS, readArgv, readConfigText } from "../src/cli/options.ts";
import { BUN_DEFAULT_HEADER_LIMIT, bunHeaderLimit } from "../src/cli/relaunch.ts";
import { resolveCount, resolveSettings, type Settings } from "../src/cli/settings.ts";
import { selfSigned } from "../src/tls.ts";
import { childrenOf, errorOf, fixture, runCli, startCli, tempDir } from "./harness.ts";

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
    [["-r", "redis://h/0?sharded"], "redis", "redis://h/0?sharded"],
    [["-r", "rediss://u:p@[::1]:6380/"], "redis", "rediss://u:p@[::1]:6380/"],
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
    [["--metrics", "0"], "metrics", { hostname: "127.0.0.1", port: 0 }],
    [["-metrics", "0.0.0.0:9100"], "metrics", { hostname: "0.0.0.0", port: 9100 }],
    [["--metrics=[::1]:9100"], "metrics", { hostname: "::1", port: 9100 }],
    [["--warmup"], "warmup", true],
    [["--preload"], "warmup", true],
    [["-warmup"], "warmup", true],
    [["--deflate"], "deflate", true],
    [["-deflate"], "deflate", true],
    [["--deflate=no"], "deflate", false],
    [["-deflate=1"], "deflate", true],
    [["--log-format", "json"], "logFormat", "json"],
    [["-log-format=text"], "logFormat", "text"],
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
      app: "",
      port: undefined,
      hostname: undefined,
      unix: undefined,
      workers: 1,
      threads: 1,
      www: undefined,
      verbose: false,
      redis: undefined,
      redisPing: 300,
      keepAlive: 40,
      bodyTimeout: 10,
      ping: 40,
      maxBody: 50 * MiB,
      maxHeader: 16 * KiB,
      maxMsg: 250 * KiB,
      deflate: false,
      tls: false,
      tlsCert: undefined,
      tlsKey: undefined,
      tlsPass: undefined,
      pid: undefined,
      verbosity: 4,
      metrics: undefined,
      logFormat: "text",
      warmup: false,
      given: new Set(),
    });
    expect([...settingsOf(["-k", "5", "--max-body=2", "app.ts"]).given].sort()).toEqual([
      "keep-alive",
      "max-body",
    ]);
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
    // Bun.serve's variables, in Bun's order: $BUN_PORT, $PORT, $NODE_PORT.
    expect(settingsOf([], { NODE_PORT: "4002" }).port).toBe(4002);
    expect(settingsOf([], { PORT: "4001", NODE_PORT: "4002" }).port).toBe(4001);
    expect(settingsOf([], { BUN_PORT: "4003", PORT: "4001", NODE_PORT: "4002" }).port).toBe(4003);
    expect(errorOf(() => settingsOf([], { BUN_PORT: "x" }))).toBe(
      'CliError: $BUN_PORT must be an integer 0–65535, got "x"',
    );
    expect(settingsOf([], { WORKERS: "-2" }).workers).toBe(4);
    expect(settingsOf([], { WEB_CONCURRENCY: "3" }).workers).toBe(3);
    expect(settingsOf([], { WORKERS: "2", WEB_CONCURRENCY: "3" }).workers).toBe(2);
    expect(settingsOf([], { THREADS: "2" }).threads).toBe(2);
    expect(settingsOf([], { REDIS_URL: "redis://a:1" }).redis).toBe("redis://a:1");
    expect(settingsOf([], { IODINE_REDIS_URL: "redis://b:2" }).redis).toBe("redis://b:2");
    expect(settingsOf(["-r", "redis://c:3"], { REDIS_URL: "redis://a:1" }).redis).toBe(
      "redis://c:3",
    );
  });

  test("config file: one option per line, comments, every spelling; the command line wins", () => {
    const config = readConfigText(
      "# a comment\n\n-p 4001\n--www=public\nverbose\nmax-body 7\n-maxhd=20\n",
      "iodine.conf",
    );
    const s = resolveSettings(readArgv(["-p", "4002"]), config, {}, 2);
    expect(s.port).toBe(4002);
    expect(s.www).toBe("public");
    expect(s.verbose).toBe(true);
    expect(s.maxBody).toBe(7 * MiB);
    expect(s.maxHeader).toBe(20 * KiB);
    expect(() => readConfigText("-p 1\n--nope 3\n", "bad.conf")).toThrow(
      'bad.conf:2: unknown option "--nope"',
    );
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
    [["--log-format", "JSON"], {}, '--log-format must be text or json, got "JSON"'],
    [["-rp", "0"], {}, "--redis-ping must be an integer"],
    [["-r", "http://x"], {}, "--redis must be a redis:// or rediss:// URL"],
    [[], { REDIS_URL: "localhost:6379" }, "$REDIS_URL must be a redis:// or rediss:// URL"],
    [
      ["-r", "redis://localhost:notaport"],
      {},
      '--redis needs a port 1–65535, got "notaport" in "redis://localhost:notaport"',
    ],
    [
      ["-r", "redis://u:secret@h:0"],
      {},
      '--redis needs a port 1–65535, got "0" in "redis://u:***@h:0"',
    ],
    [["-r", "redis://:6379"], {}, '--redis needs a host (redis://host:6379), got "redis://:6379"'],
    [
      ["-r", "redis://h:6379/3"],
      {},
      '--redis names a database ("/3"), which Redis pub/sub ignores',
    ],
    [["-r", "redis://h:6379?db=1&sharded"], {}, '--redis names a database ("db=1")'],
    [[], { IODINE_REDIS_URL: "redis://h:6379/abc" }, '$IODINE_REDIS_URL names a database ("/abc")'],
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
      expect(
        readArgv([`-${o.iodine[0]}`, ...(o.kind === "string" ? ["1"] : [])]).values.has(o.name),
      ).toBe(true);
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
    [
      "an unknown option",
      ["--frobnicate", fixture("function-app.ts")],
      {},
      /^iodine: unknown option "--frobnicate" \(see --help\)\n$/,
    ],
    [
      "a bad port",
      ["-p", "http", fixture("function-app.ts")],
      {},
      /^iodine: --port must be an integer 0–65535, got "http"\n$/,
    ],
    [
      "a bad $PORT",
      [fixture("function-app.ts")],
      { PORT: "-1" },
      /^iodine: \$PORT must be an integer 0–65535, got "-1"\n$/,
    ],
    [
      "a missing app file",
      ["-p", "0", "does-not-exist.ts"],
      {},
      /^iodine: app file not found: does-not-exist\.ts\n$/,
    ],
    [
      "a module without a usable export",
      ["-p", "0", fixture("no-export.ts")],
      {},
      /^iodine: .*no-export\.ts has no usable export: .*got no default export\n$/,
    ],
    [
      "a missing public folder",
      ["--www", "no/such/dir", "-p", "0", fixture("function-app.ts")],
      {},
      /^iodine: public folder not found: no\/such\/dir\n$/,
    ],
    [
      "a missing TLS file",
      ["--tls-cert", "nope.pem", "--tls-key", "nope.key", "-p", "0", fixture("function-app.ts")],
      {},
      /^iodine: cannot read the TLS certificate "nope\.pem": ENOENT\n$/,
    ],
    [
      "a missing config file",
      ["-C", "nope.conf", fixture("function-app.ts")],
      {},
      /^iodine: cannot read the config file "nope\.conf": ENOENT\n$/,
    ],
  ];
  for (const [what, args, env, pattern] of failures) {
    test(`exit 2 and one line for ${what}`, async () => {
      const r = await runCli(args, { env });
      expect(r.stderr).toMatch(pattern);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.code).toBe(2);
    });
  }

  test("--help has no colour codes into a pipe, whatever the environment (citty's test is NO_COLOR=1 only)", async () => {
    for (const NO_COLOR of [undefined, "true"]) {
      const r = await runCli(["--help"], {
        env: { NO_COLOR, CI: undefined, TEST: undefined, TERM: "xterm-256color" },
      });
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("USAGE iodine [OPTIONS] [APP]\n");
      expect(r.stdout).not.toContain("\x1b");
      expect(r.stdout).not.toMatch(/[ \t]$/m);
    }
  });

  test("exit 2 naming the file and line for a syntax error in the app", async () => {
    using dir = tempDir();
    const file = join(dir.path, "broken.ts");
    writeFileSync(
      file,
      "export default {\n  fetch() { return new Response('x') \n  oops oops\n};\n",
    );
    const r = await runCli(["-p", "0", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^iodine: cannot load .*broken\.ts: .*\(line 3/);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });

  test("exit 2 for an app whose top level throws: the error's name, message, line and column", async () => {
    using dir = tempDir();
    const file = join(dir.path, "throws.ts");
    writeFileSync(
      file,
      "const url = process.env.NO_SUCH_URL;\nif (!url) throw new Error('database unreachable');\nexport default () => new Response('x');\n",
    );
    const r = await runCli(["-p", "0", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      `iodine: cannot load ${file}: Error: database unreachable (line 2, column 21)\n`,
    );
    // The same in a cluster: the master loads the app first and says it once.
    const c = await runCli(["-w", "2", "-p", "0", file]);
    expect(c.code).toBe(2);
    expect(c.stderr).toBe(
      `iodine: cannot load ${file}: Error: database unreachable (line 2, column 21)\n`,
    );
  });

  /** app.ts imports config.ts, whose need() throws while app.ts loads. */
  const writeThrowingApp = (dir: string) => {
    writeFileSync(
      join(dir, "config.ts"),
      "export function need(name: string): string {\n  throw new TypeError(`${name} is not set`);\n}\n",
    );
    writeFileSync(
      join(dir, "app.ts"),
      "import { need } from './config.ts';\nneed('SECRET');\nexport default () => new Response('x');\n",
    );
  };

  test("a throw in a file the app imports is placed in that file; iodine's own frames are skipped", async () => {
    using dir = tempDir();
    writeThrowingApp(dir.path);
    writeFileSync(
      join(dir.path, "listen.ts"),
      "import { Iodine } from 'iodine';\n\nIodine.listen({ port: 'abc' as never, handler: () => new Response('x') });\n",
    );
    const r = await runCli(["-p", "0", "app.ts"], { cwd: dir.path });
    expect(r.stderr).toBe(
      "iodine: cannot load app.ts: TypeError: SECRET is not set (at config.ts:2:13)\n",
    );
    expect(r.code).toBe(2);
    const l = await runCli(["-p", "0", "listen.ts"], { cwd: dir.path });
    expect(l.stderr).toBe(
      `iodine: cannot load listen.ts: RangeError: Iodine.listen: "port" must be an integer 0–65535, got "abc" (line 3, column 8)\n`,
    );
  });

  test("-V 5 adds the stack to the load error, in the same entry", async () => {
    using dir = tempDir();
    writeThrowingApp(dir.path);
    const r = await runCli(["-V", "5", "-p", "0", "app.ts"], { cwd: dir.path });
    expect(r.code).toBe(2);
    expect(r.stderr.split("\n")).toEqual([
      "iodine: cannot load app.ts: TypeError: SECRET is not set (at config.ts:2:13)",
      `    at need (${join(dir.path, "config.ts")}:2:13)`,
      `    at ${join(dir.path, "app.ts")}:2:1`,
      "",
    ]);
  });

  test("a syntax error in a file the app imports names that file", async () => {
    using dir = tempDir();
    writeFileSync(join(dir.path, "broken.ts"), "export const x = {\n  oops oops\n};\n");
    writeFileSync(
      join(dir.path, "app.ts"),
      "import { x } from './broken.ts';\nexport default () => new Response(String(x));\n",
    );
    const r = await runCli(["-p", "0", "app.ts"], { cwd: dir.path });
    expect(r.stderr).toBe(
      'iodine: cannot load app.ts: Expected "}" but found "oops" (at broken.ts:2:8)\n',
    );
    expect(r.code).toBe(2);
  });

  test("-w 2: an app that throws only in the workers is one line from the master, not one per worker", async () => {
    using dir = tempDir();
    writeFileSync(
      join(dir.path, "app.ts"),
      "import { Iodine } from 'iodine';\nif (Iodine.isWorker) throw new Error('no pool in workers');\nexport default () => new Response('x');\n",
    );
    const r = await runCli(["-w", "2", "-p", "0", "app.ts"], { cwd: dir.path });
    expect(r.stderr).toBe(
      "iodine: cannot load app.ts: Error: no pool in workers (line 2, column 32)\n",
    );
    expect(r.code).toBe(2);
  });

  describe("values judged by trying them: one line, exit 2, in one process and in a cluster", () => {
    const app = fixture("function-app.ts");
    const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    // The resolver's code for a name that does not resolve (ENOTFOUND here) may differ elsewhere.
    const unresolved = (host: string, where: string) =>
      new RegExp(
        `^iodine: cannot listen on ${escape(where)}: "${escape(host)}" is neither an IP address nor a hostname that resolves \\([A-Z_]+\\)\\n$`,
      );
    const exact = (line: string) => new RegExp(`^${escape(line)}\\n$`);
    const cases: [string, string[], Record<string, string | undefined>, RegExp][] = [];
    for (const mode of [[], ["-w", "2"], ["-t", "2"]]) {
      const m = mode.join(" ");
      cases.push(
        [
          `${m} -b 999.1.1.1 (not an IP address)`,
          [...mode, "-b", "999.1.1.1", "-p", "0", app],
          {},
          unresolved("999.1.1.1", "http://999.1.1.1:0"),
        ],
        [
          `${m} -b a name that does not resolve`,
          [...mode, "-b", "no-such-host.invalid", "-p", "0", app],
          {},
          unresolved("no-such-host.invalid", "http://no-such-host.invalid:0"),
        ],
        // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this host.
        [
          `${m} -b an address not on this host`,
          [...mode, "-b", "192.0.2.1", "-p", "0", app],
          {},
          exact(
            "iodine: cannot listen on http://192.0.2.1:0: 192.0.2.1 is not an address of this host (EADDRNOTAVAIL)",
          ),
        ],
      );
    }
    cases.push(
      [
        "-b a socket in a missing folder",
        ["-b", "/no/such/dir/x.sock", app],
        {},
        exact(
          "iodine: cannot listen on unix:/no/such/dir/x.sock: the folder /no/such/dir does not exist (ENOENT)",
        ),
      ],
      [
        "-r with a port that is not a number",
        ["-r", "redis://localhost:notaport", "-p", "0", app],
        {},
        exact(
          'iodine: --redis needs a port 1–65535, got "notaport" in "redis://localhost:notaport"',
        ),
      ],
      [
        "-w 2 -r with a port that is not a number",
        ["-w", "2", "-r", "redis://localhost:notaport", "-p", "0", app],
        {},
        exact(
          'iodine: --redis needs a port 1–65535, got "notaport" in "redis://localhost:notaport"',
        ),
      ],
      [
        "-r with a database name",
        ["-r", "redis://localhost:6379/abc", "-p", "0", app],
        {},
        exact(
          'iodine: --redis names a database ("/abc"), which Redis pub/sub ignores (a channel is the same in every database): leave it out of "redis://localhost:6379/abc"',
        ),
      ],
      [
        "-r with a database number, ?sharded",
        ["-r", "redis://localhost:7000/3?sharded", "-p", "0", app],
        {},
        exact(
          'iodine: --redis names a database ("/3"), which Redis pub/sub ignores (a channel is the same in every database): leave it out of "redis://localhost:7000/3?sharded"',
        ),
      ],
      [
        "$REDIS_URL with a database number",
        ["-p", "0", app],
        { REDIS_URL: "redis://localhost:6379/3" },
        exact(
          'iodine: $REDIS_URL names a database ("/3"), which Redis pub/sub ignores (a channel is the same in every database): leave it out of "redis://localhost:6379/3"',
        ),
      ],
      [
        "$IODINE_REDIS_URL with a bad port, its password hidden",
        ["-p", "0", app],
        { IODINE_REDIS_URL: "redis://:pw@localhost:x" },
        exact(
          'iodine: $IODINE_REDIS_URL needs a port 1–65535, got "x" in "redis://:***@localhost:x"',
        ),
      ],
    );
    for (const [what, args, env, pattern] of cases) {
      test(what, async () => {
        const r = await runCli(args, { env, timeout: 5000 });
        expect(r.stderr).toMatch(pattern);
        expect(r.stderr).not.toContain("    at ");
        expect(r.code).toBe(2);
      });
    }

    test("a port in use, also by a listener that shares it (SO_REUSEPORT)", async () => {
      // reusePort: a holder Linux lets any other SO_REUSEPORT socket of this user bind beside.
      await using held = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        reusePort: true,
        fetch: () => new Response("held"),
      });
      const line = `iodine: cannot listen on http://127.0.0.1:${held.port}: port ${held.port} is already in use (EADDRINUSE)\n`;
      for (const mode of [[], ["-w", "2"], ["-t", "2"]]) {
        const r = await runCli([...mode, "-b", "127.0.0.1", "-p", String(held.port), app], {
          timeout: 5000,
        });
        expect([mode.join(" "), r.stderr]).toEqual([mode.join(" "), line]);
        expect(r.code).toBe(2);
      }
      const raw = await runCli(["-p", String(held.port), fixture("raw-app.ts")], { timeout: 5000 });
      expect(raw.stderr).toBe(
        `iodine: cannot listen on tcp://127.0.0.1:${held.port}: port ${held.port} is already in use (EADDRINUSE)\n`,
      );
      expect(raw.code).toBe(2);
    });

    test("a port held by another iodine", async () => {
      await using first = await startCli(["-b", "127.0.0.1", "-p", "0", app]);
      const r = await runCli(["-b", "127.0.0.1", "-p", String(first.port), app], { timeout: 5000 });
      expect(r.stderr).toBe(
        `iodine: cannot listen on http://127.0.0.1:${first.port}: port ${first.port} is already in use (EADDRINUSE)\n`,
      );
      expect(r.code).toBe(2);
    });

    test("a TLS key that is not the certificate's", async () => {
      using dir = tempDir();
      const [a, b] = [await selfSigned(), await selfSigned()];
      writeFileSync(join(dir.path, "cert.pem"), a.cert);
      writeFileSync(join(dir.path, "other.key"), b.key);
      const r = await runCli(["--tls-cert", "cert.pem", "--tls-key", "other.key", "-p", "0", app], {
        cwd: dir.path,
        timeout: 5000,
      });
      expect(r.stderr).toBe(
        'iodine: the TLS key "other.key" is not the key of the certificate "cert.pem"\n',
      );
      expect(r.code).toBe(2);
    });
  });

  test("-V 0 silences even errors; the exit code still tells", async () => {
    const r = await runCli(["-V", "0", "-p", "0", "missing.ts"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("");
  });

  test("APP defaults to app.ts in the working directory", async () => {
    using dir = tempDir();
    writeFileSync(
      join(dir.path, "app.ts"),
      "export default () => new Response('default app.ts');\n",
    );
    await using srv = await startCli(["-p", "0"], { cwd: dir.path });
    expect(await (await fetch(srv.url)).text()).toBe("default app.ts");
  });

  test("APP falls back to app.js", async () => {
    using dir = tempDir();
    writeFileSync(
      join(dir.path, "app.js"),
      "export default { fetch: () => new Response('default app.js') };\n",
    );
    await using srv = await startCli(["-p", "0"], { cwd: dir.path });
    expect(await (await fetch(srv.url)).text()).toBe("default app.js");
  });

  test("an app in CommonJS, and one whose top-level await waits, load as import() loads them, their top level run once", async () => {
    using dir = tempDir();
    writeFileSync(
      join(dir.path, "cjs.js"),
      "module.exports = { fetch: () => new Response('commonjs app') };\n",
    );
    writeFileSync(
      join(dir.path, "cjs-default.js"),
      "exports.__esModule = true;\nexports.default = { fetch: () => new Response('commonjs default') };\n",
    );
    writeFileSync(
      join(dir.path, "waits.ts"),
      "console.log('top level ran');\nawait Bun.sleep(20);\nexport default { fetch: () => new Response('waited') };\n",
    );
    for (const [app, body] of [
      ["cjs.js", "commonjs app"],
      ["cjs-default.js", "commonjs default"],
      ["waits.ts", "waited"],
    ] as const) {
      await using srv = await startCli(["-p", "0", app], { cwd: dir.path });
      expect(await (await fetch(srv.url)).text()).toBe(body);
      if (app === "waits.ts") expect(srv.stdout()).toBe("top level ran\n");
    }
  });

  test("a folder as APP is no app file, with or without an index.ts in it", async () => {
    using dir = tempDir();
    mkdirSync(join(dir.path, "empty"));
    mkdirSync(join(dir.path, "indexed"));
    writeFileSync(
      join(dir.path, "indexed", "index.ts"),
      "export default () => new Response('x');\n",
    );
    for (const folder of ["empty", "indexed"]) {
      const r = await runCli(["-p", "0", folder], { cwd: dir.path });
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(`iodine: app path is not a file: ${folder}\n`);
    }
  });

  test("--port 0 prints the real port; $PORT is honoured", async () => {
    await using a = await startCli(["--port", "0", fixture("function-app.ts")]);
    expect(a.port).toBeGreaterThan(0);
    expect(a.stderr()).toMatch(
      /^iodine: listening on http:\/\/0\.0\.0\.0:\d+ \(1 worker, 1 thread\)\n/,
    );
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
    writeFileSync(
      app,
      "let n = 0;\nexport default (req: Request) => new Response(`call ${++n} ${new URL(req.url).pathname}`);\n",
    );
    await using warm = await startCli(["--warmup", "-p", "0", app]);
    expect(await (await fetch(warm.url + "/first")).text()).toBe("call 2 /first");
    await using cold = await startCli(["-p", "0", app]);
    expect(await (await fetch(cold.url + "/first")).text()).toBe("call 1 /first");
  });

  test("Bun's default header limit is what the CLI assumes without a flag (a Bun upgrade that changes it fails here)", () => {
    expect(process.execArgv.some((a) => a.startsWith("--max-http-header-size"))).toBe(false);
    expect(BUN_DEFAULT_HEADER_LIMIT).toBe(require("node:http").maxHeaderSize);
    expect(bunHeaderLimit()).toBe(BUN_DEFAULT_HEADER_LIMIT);
  });

  test("the CLI re-launches itself with Bun's header flag only for a --max-header Bun is not running with", async () => {
    await using srv = await startCli(["--max-header", "20", "-p", "0", fixture("function-app.ts")]);
    expect((await fetch(srv.url)).status).toBe(200);
    expect(childrenOf(srv.proc.pid)).toHaveLength(1); // the re-launched Bun
    // The listening line comes from the re-launched child; SIGTERM reaches it through the parent.
    expect(await srv.stop("SIGTERM")).toBe(0);
    // The default (Bun's own 16 KiB) and a flag that matches need no second process.
    await using plain = await startCli(["-p", "0", fixture("function-app.ts")]);
    expect(childrenOf(plain.proc.pid)).toHaveLength(0);
    await using flagged = await startCli(
      ["--max-header", "20", "-p", "0", fixture("function-app.ts")],
      {
        headerFlag: 20 * 1024,
      },
    );
    expect(childrenOf(flagged.proc.pid)).toHaveLength(0);
  });
});
