// The tools a bench runs (wrk, nginx, redis-server) and the checkout it runs in. A bench installs
// nothing: a missing tool is one line naming the package, and the bench fails or skips that part
// loudly (.ci/run installs what the tests need; wrk is for bench/ only).
import { resolve } from "node:path";

/** The checkout the benches run in: servers and load clients start here, so `cli.ts` and `examples/` resolve. */
export const ROOT = resolve(import.meta.dir, "..", "..");

/** Finds `name` on PATH or in sbin (nginx lives in /usr/sbin, often off a non-root PATH). */
export function findTool(name: string): string | null {
  return Bun.which(name) ?? Bun.which(name, { PATH: "/usr/local/sbin:/usr/sbin:/sbin" });
}

/** The line that says `tool` is missing and which package brings it. */
export const missingTool = (tool: string, pkg: string) =>
  `${tool} is not installed (apt-get install ${pkg})`;

/** `tool`'s path; a missing one throws the line naming its package (the bench then fails with it). */
export function requireTool(tool: string, pkg: string): string {
  const path = findTool(tool);
  if (path === null) throw new Error(missingTool(tool, pkg));
  return path;
}

/** First line a tool prints about its version, whichever stream it uses. */
export async function versionLine(cmd: string[]): Promise<string> {
  try {
    const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
    const text = p.stdout.toString() + p.stderr.toString();
    return text.split("\n")[0]?.trim() ?? "";
  } catch {
    return "";
  }
}

/** The line wrk gives for its version; throws the line naming its package when it is missing. */
export async function wrkVersion(): Promise<string> {
  return versionLine([requireTool("wrk", "wrk"), "-v"]);
}
