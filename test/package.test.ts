// SPEC §1 "Installable into a user's own project", done as the README's "Use it in your project"
// says: `bun pm pack` makes the tarball; a fresh project (its own package.json, outside the
// checkout) gets it with `bun add`, plus @types/bun; the section's app (importing "iodine-bun") is
// served by `bunx iodine`, its "start" script and its "dev" script (`bun --watch`, reloading on a
// change), with a publish reaching a WebSocket and an EventSource subscriber; the project's
// `tsc --noEmit` passes with the section's tsconfig, with and without the DOM lib and skipLibCheck.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };
import {
  CLI,
  openStream,
  ROOT,
  runCommand,
  startCommand,
  tempDir,
  type CliProcess,
} from "./harness.ts";
import { WsClient } from "./ws.ts";

const readme = readFileSync(join(ROOT, "README.md"), "utf8");
const section = readme.slice(
  readme.indexOf("## Use it in your project"),
  readme.indexOf("\n## ", readme.indexOf("## Use it in your project") + 1),
);
const blocks = (lang: string) =>
  [...section.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))].map((m) => m[1]!);
const APP = blocks("ts")[0] ?? "";
const SCRIPTS = blocks("json")
  .map((b) => JSON.parse(b))
  .find((j) => "scripts" in j)?.scripts as Record<string, string>;
const TSCONFIG = blocks("json").find((b) => b.includes("compilerOptions")) ?? "";

const work = tempDir("iodine-pkg-");
const project = join(work.path, "my-app");
const TSC = join(ROOT, "node_modules", ".bin", "tsc");
let tarball = "";

async function run(cmd: string[], cwd: string): Promise<string> {
  const r = await runCommand(cmd, { cwd, timeout: 20_000 });
  expect(r.code, `${cmd.join(" ")} exited ${r.code}:\n${r.stdout}${r.stderr}`).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  tarball = (
    await run([process.execPath, "pm", "pack", "--destination", work.path, "--quiet"], ROOT)
  ).trim();
  mkdirSync(project);
  writeFileSync(
    join(project, "package.json"),
    JSON.stringify({ name: "my-app", private: true, type: "module", scripts: SCRIPTS }, null, 2),
  );
  writeFileSync(join(project, "app.ts"), APP);
  writeFileSync(join(project, "tsconfig.json"), TSCONFIG);
  // `bun add iodine-bun`, from the tarball; and the section's @types/bun, at the Bun this checkout
  // types against. From Bun's cache where it can; the checkout's tsc stands in for the project's.
  await run([process.execPath, "add", "--prefer-offline", tarball], project);
  await run(
    [
      process.execPath,
      "add",
      "--prefer-offline",
      "-d",
      `@types/bun@${pkg.devDependencies["bun-types"]}`,
    ],
    project,
  );
}, 30_000);

afterAll(() => work[Symbol.dispose]());

describe("the package, installed into a user's project as the README says", () => {
  test("the README section gives the commands, the app, both scripts and a tsconfig", () => {
    for (const line of [
      "bun add iodine-bun",
      "bunx iodine -w -1 app.ts",
      "bun add -d typescript @types/bun",
      "bunx tsc --noEmit",
    ]) {
      expect(section).toContain(line);
    }
    expect(APP).toContain('from "iodine-bun"');
    expect(SCRIPTS).toEqual({
      start: "iodine -w -1 app.ts",
      dev: "bun --watch node_modules/.bin/iodine app.ts",
    });
    expect(JSON.parse(TSCONFIG).compilerOptions.strict).toBe(true);
  });

  test("the tarball is iodine-bun with the iodine command; it carries what runs, and no tests, bench or fixtures", async () => {
    expect(tarball).toEndWith(`iodine-bun-${pkg.version}.tgz`);
    const files = (await run(["tar", "-tzf", tarball], work.path))
      .trim()
      .split("\n")
      .map((f) => f.replace(/^package\//, ""));
    for (const f of [
      "cli.ts",
      "src/index.ts",
      "dist/types/index.d.ts",
      "dist/cli.js",
      "dist/cli.js.jsc",
      "dist/cli-stamp.json",
      "README.md",
      "LICENSE",
      "package.json",
    ])
      expect(files).toContain(f);
    expect(
      files.filter(
        (f) =>
          !/^(src\/.+\.ts|dist\/types\/.+\.d\.ts|dist\/cli\.js(\.jsc)?|dist\/cli-stamp\.json|cli\.ts|package\.json|README\.md|LICENSE)$/.test(
            f,
          ),
      ),
    ).toEqual([]);
    const installed = await Bun.file(
      join(project, "node_modules", "iodine-bun", "package.json"),
    ).json();
    expect(installed.bin).toEqual({ iodine: "./cli.ts" });
    // Committed executable, so `./cli.ts` runs in a checkout as its shebang says.
    expect(await run(["git", "ls-files", "--stage", "cli.ts"], ROOT)).toStartWith("100755 ");
  });

  /** The app's page, then one publish reaching a WebSocket and an EventSource subscriber. */
  async function servesTheApp(srv: CliProcess): Promise<void> {
    expect(await (await fetch(srv.url + "/")).text()).toBe("Hello from iodine-bun");
    const sse = await openStream(srv.url + "/news");
    const ws = new WsClient(srv.url.replace("http", "ws") + "/news");
    try {
      await sse.until("data: welcome to the news\n\n");
      expect(await ws.next()).toBe("welcome to the news");
      expect(await (await fetch(srv.url + "/?publish=hello")).text()).toBe("published");
      expect(await sse.until("data: hello\n\n")).toBe(
        "data: welcome to the news\n\ndata: hello\n\n",
      );
      expect(await ws.next()).toBe("hello");
    } finally {
      ws.close();
      sse.close();
    }
  }

  test("bunx iodine serves the app: its page, and a publish reaches WebSocket and SSE subscribers", async () => {
    await using srv = await startCommand([process.execPath, "x", "iodine", "-p", "0", "app.ts"], {
      cwd: project,
      timeout: 15_000,
    });
    await servesTheApp(srv);
  }, 20_000);

  test("another copy's CLI (this checkout's) gives the app that CLI's iodine, not the project's copy: one runtime", async () => {
    await using srv = await startCommand([process.execPath, CLI, "-p", "0", "app.ts"], {
      cwd: project,
    });
    await servesTheApp(srv);
  }, 20_000);

  test("bun run start: a worker per core", async () => {
    await using srv = await startCommand([process.execPath, "run", "start"], {
      cwd: project,
      env: { PORT: "0" },
      group: true,
      timeout: 15_000,
    });
    expect(srv.stderr()).toMatch(
      /listening on http:\/\/\S+ \((\d+ workers, cluster pub\/sub|1 worker, 1 thread)\)/,
    );
    expect(await (await fetch(srv.url + "/")).text()).toBe("Hello from iodine-bun");
  }, 20_000);

  test("the project's tsc --noEmit passes on the declarations: DOM lib or not, skipLibCheck or not, stricter flags", async () => {
    const stricter = [
      "--exactOptionalPropertyTypes",
      "--noPropertyAccessFromIndexSignature",
      "--noUnusedLocals",
      "--noUnusedParameters",
    ];
    const runs = ["ESNext", "ESNext,DOM"].flatMap((lib) =>
      ["false", "true"].map((skipLibCheck) => ({ lib, skipLibCheck })),
    );
    const results = await Promise.all(
      runs.map((o) =>
        runCommand(
          [
            TSC,
            "--noEmit",
            "-p",
            ".",
            "--lib",
            o.lib,
            "--skipLibCheck",
            o.skipLibCheck,
            ...stricter,
            "--listFiles",
          ],
          { cwd: project, timeout: 25_000 },
        ),
      ),
    );
    for (const [i, r] of results.entries()) {
      const lines = r.stdout.split("\n");
      expect(
        lines.filter((l) => l.includes("error TS")),
        `tsc with lib ${runs[i]!.lib}, skipLibCheck ${runs[i]!.skipLibCheck}`,
      ).toEqual([]);
      expect(r.code).toBe(0);
      expect(lines.some((l) => l.endsWith("/lib.dom.d.ts"))).toBe(runs[i]!.lib.includes("DOM"));
      // The user's tsc reads the package's declarations, not its sources (it would check them under the user's flags).
      const fromPackage = lines.filter((l) => l.includes("/node_modules/iodine-bun/"));
      expect(fromPackage).toContain(
        join(project, "node_modules", "iodine-bun", "dist", "types", "index.d.ts"),
      );
      expect(fromPackage.filter((f) => !f.endsWith(".d.ts"))).toEqual([]);
    }
  }, 30_000);

  test("bun run dev: a change to app.ts starts the server afresh with the new code", async () => {
    await using srv = await startCommand([process.execPath, "run", "dev"], {
      cwd: project,
      env: { PORT: "0" },
      group: true,
      timeout: 15_000,
    });
    expect(await (await fetch(srv.url + "/")).text()).toBe("Hello from iodine-bun");
    writeFileSync(join(project, "app.ts"), APP.replace('"Hello from iodine-bun"', '"Hello again"'));
    try {
      const again = await srv.waitFor(/listening on[\s\S]*listening on (http:\/\/\S+)/, 15_000);
      expect(await (await fetch(again[1]!.replace("0.0.0.0", "127.0.0.1") + "/")).text()).toBe(
        "Hello again",
      );
    } finally {
      writeFileSync(join(project, "app.ts"), APP);
    }
  }, 20_000);
});
