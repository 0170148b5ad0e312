// README.md follows the code: its option table is generated from src/options.ts, the table `--help`
// prints; its quick start is SPEC §1's two commands; every example in examples/ is named in it and
// run by a test. A stale block is regenerated with `bun run readme`.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { blockOf, generatedBlocks, README } from "../scripts/readme.ts";
import { helpLine, markdownOptionTable, OPTIONS } from "../src/options.ts";
import { ROOT, runCli, startCommand, tempDir } from "./harness.ts";
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

  test("the option table has a row for every option, with its spellings and default", () => {
    const table = blockOf(readme, "options")!;
    expect(table).toBe(markdownOptionTable());
    const rows = table.split("\n").slice(2);
    expect(rows).toHaveLength(OPTIONS.length + 1); // + APP
    for (const o of OPTIONS) {
      const row = rows.find((r) => new RegExp(`^\\| \`(-\\w, )?--${o.name}[ ,\`]`).test(r));
      expect(row, `no row for --${o.name}`).toBeDefined();
      for (const s of o.iodine) expect(row).toContain(`\`-${s}\``);
      if (o.default) expect(row!.replace(/`/g, "")).toContain(o.default);
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
    expect(readme).toContain("bun install && bun run iodine examples/chat.ts   # serves http://localhost:3000");
    expect(readme).toContain("bun test                                         # the whole suite");
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
    expect(pkg.scripts.iodine).toMatch(/cli\.ts$/);
    expect(pkg.scripts.test).toBe("bun test");
  });

  test("every example in examples/ is named in the README and run by a test", () => {
    const tests = readdirSync(join(ROOT, "test"))
      .filter((f) => f.endsWith(".test.ts"))
      .map((f) => readFileSync(join(ROOT, "test", f), "utf8"))
      .join("\n");
    const examples = readdirSync(join(ROOT, "examples"), { withFileTypes: true })
      .filter((e) => (e.isFile() && e.name.endsWith(".ts")) || (e.isDirectory() && e.name !== "chat" && e.name !== "mustache"))
      .map((e) => e.name);
    expect(examples.length).toBeGreaterThan(5);
    for (const name of examples) {
      expect(readme.includes(`examples/${name}`), `README.md does not mention examples/${name}`).toBe(true);
      const driven = tests.includes(`example("${name}`) || tests.includes(`examples/${name}`) || tests.includes(`"examples", "${name}"`);
      expect(driven, `no test runs examples/${name}`).toBe(true);
    }
  });
});

describe("the README's tour runs as written", () => {
  const start = readme.indexOf("## A 30-second tour");
  const tour = readme.slice(start, readme.indexOf("\n## ", start + 1));
  const lines = [...tour.matchAll(/^ {4}bun run iodine (.+?)(?:\s+#.*)?$/gm)].map((m) => m[1]!.split(/\s+/));

  test("it has a command for each stop: hello, chat, workers, Redis, static", () => {
    const all = lines.map((l) => l.join(" "));
    expect(all).toEqual(expect.arrayContaining(["examples/hello.ts", "examples/chat.ts"]));
    expect(all.some((l) => l.includes("-w 2"))).toBe(true);
    expect(all.some((l) => l.includes("-r redis://"))).toBe(true);
    expect(all.some((l) => l.includes("--www"))).toBe(true);
  });

  const redisMissing = skipRedis("test/readme.test.ts", "the tour's Redis commands");
  for (const words of lines) {
    const usesRedis = words.includes("-r");
    test.skipIf(usesRedis && redisMissing)(`bun run iodine ${words.join(" ")}`, async () => {
      using dir = tempDir();
      await using redis = usesRedis ? await startRedis() : undefined;
      const args = words.map((w, i) => {
        if (words[i - 1] === "-p") return "0";
        if (words[i - 1] === "--pid") return `${dir.path}/`;
        if (words[i - 1] === "-r") return redis!.url;
        return w;
      });
      if (!args.includes("-p")) args.unshift("-p", "0");
      await using srv = await startCommand([process.execPath, "run", "iodine", ...args], { timeout: 20_000 });
      const res = await fetch(srv.url + "/");
      expect(res.status).toBe(200);
      expect((await res.text()).length).toBeGreaterThan(0);
      if (args.includes("--pid")) {
        // The tour's hot restart: the pid file names the master, and SIGUSR1 replaces the workers.
        const pid = Number(readFileSync(join(dir.path, "iodine.pid"), "utf8"));
        expect(pid).toBeGreaterThan(0);
        process.kill(pid, "SIGUSR1");
        await srv.waitFor(/hot restart done/, 20_000);
      }
    }, 30_000);
  }
});
