// README.md follows the code: its option table is generated from src/cli/options.ts, the table `--help`
// prints; its quick start is SPEC §1's two commands; every example in examples/ is named in it and
// run by a test. A stale block is regenerated with `bun run readme`.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { blockOf, generatedBlocks, README } from "../scripts/readme.ts";
import { helpLine, OPTIONS, readArgv } from "../src/cli/options.ts";
import { chatLine, chatLinked, chatter } from "./ws.ts";
import {
  childrenOf,
  ROOT,
  runCli,
  startCommand,
  streamReader,
  tempDir,
  type CliProcess,
} from "./harness.ts";
import { skipRedis, startRedis } from "./redis-server.ts";

const readme = readFileSync(README, "utf8");
const squash = (text: string) => text.replace(/\s+/g, " ");

describe("README.md", () => {
  test("every generated block equals what its source makes now (else: bun run readme)", () => {
    for (const [name, text] of Object.entries(generatedBlocks())) {
      const block = blockOf(readme, name);
      expect(block, `README.md lacks the ${name} block`).toBeDefined();
      expect(block, `README.md's ${name} block is stale: run \`bun run readme\``).toBe(text);
    }
  });

  test("every spelling the option table shows is one the CLI's parser takes for that option", () => {
    const rows = blockOf(readme, "options")!.split("\n").slice(2);
    expect(rows).toHaveLength(OPTIONS.length + 1); // + APP
    for (const o of OPTIONS) {
      const row = rows.find((r) => new RegExp(`^\\| \`(-\\w, )?--${o.name}[ ,\`]`).test(r));
      expect(row, `no row for --${o.name}`).toBeDefined();
      const [flags, single] = row!.split(" | ");
      const spellings = [...`${flags} ${single}`.matchAll(/(?<![\w-])(--?[\w?-]+)/g)].map(
        (m) => m[1]!,
      );
      expect(spellings).toContain(`--${o.name}`);
      for (const s of o.iodine) expect(spellings).toContain(`-${s}`);
      for (const spelled of new Set(spellings)) {
        const argv = o.kind === "boolean" ? [spelled] : [spelled, "1"];
        expect([...readArgv(argv).values.keys()], `${spelled} in --${o.name}'s row`).toEqual([
          o.name,
        ]);
      }
    }
  });

  test("--help prints each option's line from the same table, so it and the README agree", async () => {
    const r = await runCli(["--help"]);
    expect(r.code).toBe(0);
    const help = squash(r.stdout);
    for (const o of OPTIONS) {
      const flags = `${o.short ? `-${o.short}, ` : ""}--${o.name}${o.valueHint ? `=<${o.valueHint}>` : ""}`;
      expect(help).toContain(`${flags} ${squash(helpLine(o))}`);
    }
  });

  test("the quick start is SPEC §1's two commands, and chat.ts is the example it runs", () => {
    expect(readme).toContain(
      "bun install && bun run iodine examples/chat.ts   # serves http://localhost:3000",
    );
    expect(readme).toContain("bun test                                         # the whole suite");
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
      scripts: Record<string, string>;
    };
    expect(pkg.scripts.iodine).toMatch(/cli\.ts$/);
    expect(pkg.scripts.test).toBe("bun test");
  });

  test("every example in examples/ is named in the README and run by a test", () => {
    const tests = readdirSync(join(ROOT, "test"))
      .filter((f) => f.endsWith(".test.ts"))
      .map((f) => readFileSync(join(ROOT, "test", f), "utf8"))
      .join("\n");
    const examples = readdirSync(join(ROOT, "examples"), { withFileTypes: true })
      .filter(
        (e) =>
          (e.isFile() && e.name.endsWith(".ts")) ||
          (e.isDirectory() && e.name !== "chat" && e.name !== "mustache"),
      )
      .map((e) => e.name);
    expect(examples.length).toBeGreaterThan(5);
    for (const name of examples) {
      expect(
        readme.includes(`examples/${name}`),
        `README.md does not mention examples/${name}`,
      ).toBe(true);
      const driven =
        tests.includes(`example("${name}`) ||
        tests.includes(`examples/${name}`) ||
        tests.includes(`"examples", "${name}"`);
      expect(driven, `no test runs examples/${name}`).toBe(true);
    }
  });
});

// --- the tour ---

/** One stop of the tour: its bold title and its shell lines (commands and `# …` comments). */
interface Stop {
  title: string;
  lines: string[];
}

function tourStops(text: string): Stop[] {
  const start = text.indexOf("## A 30-second tour");
  const tour = text.slice(start, text.indexOf("\n## ", start + 1));
  return tour
    .split(/^\*\*/m)
    .slice(1)
    .map((part) => ({
      title: part.slice(0, part.indexOf("**")),
      lines: [...part.matchAll(/^ {4}(.+)$/gm)].map((m) => m[1]!.trim()),
    }));
}

/** A tour line split into its command and the `# …` comment after it ("" where there is none). */
function split(line: string): { cmd: string; says: string } {
  const at = line.search(/(^|\s)#\s/);
  return at === -1
    ? { cmd: line, says: "" }
    : { cmd: line.slice(0, at).trim(), says: line.slice(at).replace(/^\s*#\s*/, "") };
}

/** `localhost:3000` and `localhost:3001` in the tour are its first and second server. */
function rebase(url: string, servers: CliProcess[]): string {
  return url.replace(
    /^(https?:\/\/)?localhost:(\d+)/,
    (_m, _s, port: string) => servers[Number(port) - 3000]!.url,
  );
}

/**
 * What a `curl` line of the tour does, done with fetch: `-i` shows the status line and headers
 * before the body, `-I` is a HEAD showing only those, `-H` adds a header, `-N` (follow a stream)
 * hands back the open response. Other flags are refused, so the README cannot grow one this
 * does not understand.
 */
async function curl(
  cmd: string,
  servers: CliProcess[],
  signal?: AbortSignal,
): Promise<{ shown: string; res: Response }> {
  const words = [...cmd.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]!);
  expect(words[0]).toBe("curl");
  const headers = new Headers();
  let url = "";
  let head = false;
  let showHeaders = false;
  let stream = false;
  for (let i = 1; i < words.length; i++) {
    const w = words[i]!;
    if (w === "-H") {
      const [name, ...value] = words[++i]!.split(":");
      headers.set(name!, value.join(":").trim());
    } else if (w.startsWith("-")) {
      for (const f of w.slice(1)) {
        if (f === "I") head = showHeaders = true;
        else if (f === "i") showHeaders = true;
        else if (f === "N") stream = true;
        else if (f !== "s")
          throw new Error(`the tour's curl line uses -${f}, which this test does not know: ${cmd}`);
      }
    } else url = w;
  }
  const res = await fetch(rebase(url, servers), { method: head ? "HEAD" : "GET", headers, signal });
  let shown = "";
  if (showHeaders) {
    shown = `HTTP/1.1 ${res.status} ${res.statusText}\n`;
    for (const [k, v] of res.headers) shown += `${k}: ${v}\n`;
  }
  if (!head && !stream) shown += await res.text();
  return { shown, res };
}

describe("the README's tour runs as written", () => {
  const stops = tourStops(readme);
  const redisMissing = skipRedis("test/readme.test.ts", "the tour's Redis stop");

  test("it has its stops: hello, chat, workers, Redis, static files, the executable", () => {
    expect(stops.map((s) => s.title.split(" ")[0])).toEqual([
      "Hello",
      "Chat",
      "Pub/sub",
      "Redis:",
      "Static",
      "One",
    ]);
    for (const s of stops)
      expect(s.lines.length, `the stop "${s.title}" has no command`).toBeGreaterThan(0);
  });

  /**
   * Runs a stop's `bun run iodine` lines (ports made 0, `--pid` into a temp dir, `-r` to a
   * redis-server of the test's own), then `check` with the servers in the order of the lines.
   */
  async function runStop(
    title: string,
    check: (servers: CliProcess[], lines: string[], pidDir: string) => Promise<void>,
  ) {
    const stop = stops.find((s) => s.title.startsWith(title));
    expect(stop, `the tour has no stop "${title}"`).toBeDefined();
    using dir = tempDir();
    const usesRedis = stop!.lines.some((l) => l.startsWith("redis-server"));
    await using redis = usesRedis ? await startRedis() : undefined;
    const servers: CliProcess[] = [];
    try {
      for (const line of stop!.lines) {
        const { cmd } = split(line);
        if (!cmd.startsWith("bun run iodine ")) continue;
        const words = cmd.slice("bun run iodine ".length).split(/\s+/);
        const args = words.map((w, i) => {
          if (words[i - 1] === "-p") return "0";
          if (words[i - 1] === "--pid") return `${dir.path}/`;
          if (words[i - 1] === "-r") return redis!.url;
          return w;
        });
        if (!args.includes("-p")) args.unshift("-p", "0");
        servers.push(
          await startCommand([process.execPath, "run", "iodine", ...args], { timeout: 20_000 }),
        );
      }
      await check(servers, stop!.lines, dir.path);
    } finally {
      await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
    }
  }

  const curlLines = (lines: string[]) => lines.map(split).filter((l) => l.cmd.startsWith("curl "));

  /** A stop with one `curl` line that answers 200: what curl shows, and what the line's comment says it shows. */
  async function theCurl(
    lines: string[],
    servers: CliProcess[],
  ): Promise<{ shown: string; says: string }> {
    const curls = curlLines(lines);
    expect(curls).toHaveLength(1);
    const { shown } = await curl(curls[0]!.cmd, servers);
    expect(shown).toStartWith("HTTP/1.1 200");
    return { shown, says: curls[0]!.says };
  }

  test("Hello world: curl shows what the comment says", async () => {
    await runStop("Hello world", async (servers, lines) => {
      const { shown, says } = await theCurl(lines, servers);
      expect(shown).toEndWith(says);
    });
  }, 30_000);

  test("Chat: the curl stream follows the room, and what ann says in the browser tab shows up in it", async () => {
    await runStop("Chat over WebSocket and SSE", async (servers, lines) => {
      const curls = curlLines(lines);
      expect(curls).toHaveLength(1);
      const ac = new AbortController();
      try {
        const { res } = await curl(curls[0]!.cmd, servers, ac.signal);
        expect(res.headers.get("content-type")).toStartWith("text/event-stream");
        const name = new URL(
          curls[0]!.cmd.match(/'([^']*chat[^']*)'/)![1]!,
          "http://x",
        ).searchParams.get("name")!;
        const stream = streamReader(res);
        await stream.until(`data: ${name} joined (sse)`);
        // The browser tab of the next comment: the page opens /chat?name=ann over WebSocket.
        const tab = lines.map(split).find((l) => l.cmd === "" && l.says.includes("?name="))!.says;
        const ann = new URL(tab.match(/http:\/\/\S+/)![0]).searchParams.get("name")!;
        using tabChat = await chatter(servers[0]!.url, ann);
        tabChat.send("hello from the tab");
        await stream.until(`data: ${ann}: hello from the tab`);
      } finally {
        ac.abort();
      }
    });
  }, 30_000);

  test("Pub/sub across workers: two workers, the pid file names the master, kill -USR1 replaces them", async () => {
    await runStop("Pub/sub across workers", async (servers, lines, pidDir) => {
      expect(servers).toHaveLength(1);
      expect(servers[0]!.stderr()).toContain("(2 workers, cluster pub/sub)");
      expect(lines.some((l) => /^kill -USR1 \$\(cat \/tmp\/iodine\.pid\)/.test(l))).toBe(true);
      // The master is the process `bun run` started (or `bun run` itself, where it runs the script in place).
      const pid = Number(readFileSync(join(pidDir, "iodine.pid"), "utf8"));
      const runner = servers[0]!.proc.pid;
      expect([runner, ...childrenOf(runner)]).toContain(pid);
      const before = childrenOf(pid).sort();
      expect(before).toHaveLength(2);
      process.kill(pid, "SIGUSR1");
      await servers[0]!.waitFor(/hot restart done/, 20_000);
      const after = childrenOf(pid).sort();
      expect(after).toHaveLength(2);
      expect(after.filter((p) => before.includes(p))).toEqual([]);
      expect((await fetch(servers[0]!.url + "/")).status).toBe(200);
    });
  }, 30_000);

  test.skipIf(redisMissing)(
    "Redis: the two servers on one Redis share the chat room",
    async () => {
      await runStop("Redis: one room across machines", async (servers, lines) => {
        expect(servers).toHaveLength(2);
        const tab = lines
          .map(split)
          .find((l) => l.cmd === "" && l.says.includes("chat with each other"))!.says;
        const [annUrl, bobUrl] = [...tab.matchAll(/http:\/\/\S+/g)].map((m) => new URL(m[0]));
        expect(annUrl!.port).toBe("3000");
        expect(bobUrl!.port).toBe("3001");
        using ann = await chatter(servers[0]!.url, annUrl!.searchParams.get("name")!);
        using bob = await chatter(servers[1]!.url, bobUrl!.searchParams.get("name")!);
        // Each server subscribes Redis to the room when its first chatter joins: say something until
        // the other side hears it, then both ways.
        await chatLinked(ann, bob);
        ann.send("hi bob");
        bob.send("hi ann");
        await bob.waitFor(chatLine("ann: hi bob"));
        await ann.waitFor(chatLine("bob: hi ann"));
      });
    },
    30_000,
  );

  test("Static files: the pre-compressed sibling is served with Content-Encoding: br", async () => {
    await runStop("Static files", async (servers, lines) => {
      const { shown, says } = await theCurl(lines, servers);
      expect(shown.toLowerCase()).toContain(says.toLowerCase());
    });
  }, 30_000);

  test("One file to deploy: the tour's build is package.json's, which test/executable.test.ts runs (scripts/build.ts)", () => {
    const stop = stops.find((s) => s.title.startsWith("One file to deploy"))!;
    const { cmd } = split(stop.lines[0]!);
    expect(cmd).toStartWith("bun run build && ./dist/iodine ");
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
      scripts: Record<string, string>;
    };
    expect(pkg.scripts.build).toContain("--outfile dist/iodine");
    expect(readFileSync(join(ROOT, "test", "executable.test.ts"), "utf8")).toContain(
      "await buildExecutable(",
    );
  });
});
