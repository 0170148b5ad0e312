// cli.ts runs the CLI's bytecode build (dist/cli.js) only while dist/cli-stamp.json still describes
// the sources it was built from, and this Bun; else it runs src/cli/main.ts. Each test builds a copy
// of the package (scripts/build.ts, as `bun install` does), marks the built dist/cli.js with one
// extra stderr line, and looks for that line: there when the build ran, gone when the sources did.
// The same app is served either way.
import { describe, expect, test } from "bun:test";
import { cpSync, mkdirSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildCli } from "../scripts/build.ts";
import { ROOT, runCommand, startCommand, tempDir } from "./harness.ts";

const MARK = "launcher-test: dist/cli.js ran";

/** A copy of the package at `root` (its node_modules linked), built and marked. */
async function builtCopy(root: string): Promise<void> {
  mkdirSync(root, { recursive: true });
  for (const part of ["cli.ts", "package.json", "src", "scripts", "examples"])
    cpSync(join(ROOT, part), join(root, part), { recursive: true });
  symlinkSync(join(ROOT, "node_modules"), join(root, "node_modules"));
  await buildCli(root);
  // Not a source, so the stamp does not cover it (Bun parses the changed file instead of using its
  // bytecode). The line goes inside the CommonJS wrapper, as the bundle's first statement.
  const built = join(root, "dist", "cli.js");
  const code = await Bun.file(built).text();
  const wrapper = "(function(exports, require, module, __filename, __dirname) {";
  expect(code).toContain(wrapper);
  writeFileSync(built, code.replace(wrapper, `${wrapper}console.error(${JSON.stringify(MARK)});`));
}

/** What `bun cli.ts --version` in `root` printed on stderr. */
async function versionRun(root: string): Promise<string> {
  const r = await runCommand([process.execPath, join(root, "cli.ts"), "--version"], { cwd: root });
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toStartWith("iodine ");
  return r.stderr;
}

/** Gives `file` another modification time, its bytes as they were. */
function touch(file: string): void {
  const later = new Date(Date.now() + 5_000);
  utimesSync(file, later, later);
}

describe("cli.ts runs the bytecode build while it matches the sources", () => {
  test("a fresh build serves the app; an edit of any source, even one that keeps its size, goes back to the sources", async () => {
    using dir = tempDir("iodine-launcher-");
    const root = join(dir.path, "checkout");
    await builtCopy(root);
    {
      await using srv = await startCommand(
        [process.execPath, join(root, "cli.ts"), "-p", "0", join(root, "examples", "hello.ts")],
        { cwd: root },
      );
      expect(await (await fetch(srv.url + "/")).text()).toBe("Hello World!");
      expect(srv.stderr()).toContain(MARK);
    }
    // A same-size edit: `<` for `>` keeps the size; only the time tells.
    touch(join(root, "src", "http", "guards.ts"));
    expect(await versionRun(root)).not.toContain(MARK);
    {
      await using srv = await startCommand(
        [process.execPath, join(root, "cli.ts"), "-p", "0", join(root, "examples", "hello.ts")],
        { cwd: root },
      );
      expect(await (await fetch(srv.url + "/")).text()).toBe("Hello World!");
      expect(srv.stderr()).not.toContain(MARK);
    }
  });

  test("a build by another Bun, or no stamp, runs the sources", async () => {
    using dir = tempDir("iodine-launcher-");
    const root = join(dir.path, "checkout");
    await builtCopy(root);
    expect(await versionRun(root)).toContain(MARK);
    const stampFile = join(root, "dist", "cli-stamp.json");
    const stamp = await Bun.file(stampFile).json();
    writeFileSync(stampFile, JSON.stringify({ ...stamp, bun: "0.0.1" }));
    expect(await versionRun(root)).not.toContain(MARK);
    writeFileSync(stampFile, "");
    expect(await versionRun(root)).not.toContain(MARK);
  });

  test("installed under node_modules (every file timed at the unpacking) the sizes decide", async () => {
    using dir = tempDir("iodine-launcher-");
    const root = join(dir.path, "node_modules", "iodine-bun");
    await builtCopy(root);
    touch(join(root, "src", "http", "guards.ts"));
    expect(await versionRun(root)).toContain(MARK);
    writeFileSync(join(root, "src", "http", "guards.ts"), "// patched\n", { flag: "a" });
    expect(await versionRun(root)).not.toContain(MARK);
  });
});
