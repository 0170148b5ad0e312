// package.json's `build` command (the single-file executable, `bun run build` → dist/iodine) with its
// --outfile pointed elsewhere: how the tests and benches get an executable of this very checkout
// without touching dist/.
import { resolve } from "node:path";
import pkg from "../package.json" with { type: "json" };

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
