// Builds of the CLI. `bun scripts/build.ts` (package.json's prepare and prepack, so `bun install` in
// a checkout and `bun pm pack`) makes dist/cli.js, the bytecode build cli.ts runs while its stamp
// matches the sources (src/cli/stamp.ts). buildExecutable runs package.json's `build` command (the
// single-file executable, dist/iodine) with its --outfile pointed elsewhere: how the tests and
// benches get an executable of this very checkout without touching dist/.
import { rmSync } from "node:fs";
import { relative, resolve } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { STAMP_FILE, stampOf } from "../src/cli/stamp.ts";

const ROOT = resolve(import.meta.dir, "..");

/** Runs the build script with `--outfile out` (run by this Bun) and resolves to `out`; throws with Bun's output if it fails. */
export async function buildExecutable(out: string): Promise<string> {
  const words = pkg.scripts.build.split(/\s+/);
  const at = words.indexOf("--outfile");
  if (words[0] !== "bun" || at === -1)
    throw new Error(
      `package.json's build script is not "bun build … --outfile FILE": ${pkg.scripts.build}`,
    );
  words[at + 1] = out;
  const build = Bun.spawn([process.execPath, ...words.slice(1)], {
    cwd: ROOT,
    stdout: "ignore",
    stderr: "pipe",
  });
  const [code, err] = await Promise.all([build.exited, new Response(build.stderr).text()]);
  if (code !== 0) throw new Error(`bun run build failed (${code}):\n${err}`);
  return out;
}

/**
 * dist/cli.js (+ .jsc): src/cli/main.ts and everything it loads, as one CommonJS bundle with Bun's
 * bytecode (ESM bytecode needs --compile), the dependencies left to node_modules; then its stamp,
 * last, so that an interrupted build leaves none and cli.ts keeps to the sources.
 */
export async function buildCli(root = ROOT): Promise<void> {
  const stamp = resolve(root, STAMP_FILE);
  rmSync(stamp, { force: true });
  const result = await Bun.build({
    entrypoints: [resolve(root, "src/cli/main.ts")],
    outdir: resolve(root, "dist"),
    naming: "cli.js",
    target: "bun",
    format: "cjs",
    bytecode: true,
    external: Object.keys(pkg.dependencies),
    metafile: true,
    throw: false,
  });
  if (!result.success) throw new AggregateError(result.logs, "the CLI's build failed");
  // The metafile names inputs from the current directory; the stamp, from the root.
  const inputs = Object.keys(result.metafile!.inputs).map((p) => relative(root, resolve(p)));
  await Bun.write(stamp, JSON.stringify(stampOf(root, inputs)));
}

if (import.meta.main) await buildCli();
