// The stamp of the CLI's bytecode build, written beside dist/cli.js by scripts/build.ts and read by
// cli.ts: the Bun that built it, and the size and modification time of every source it was built
// from. cli.ts runs the build only while the stamp still describes the files on disk, as Python
// trusts a .pyc only while its source's size and time match; anything else (an edit, another Bun,
// no build) runs the sources.

/** dist/cli-stamp.json (cli.ts reads it by that name) */
export interface Stamp {
  bun: string;
  /** path from the package root → [size in bytes, Bun.file().lastModified] */
  files: Record<string, [number, number]>;
}

export const STAMP_FILE = "dist/cli-stamp.json";

/** The stamp of a build from `inputs` (paths from `root`), made now. */
export function stampOf(root: string, inputs: string[]): Stamp {
  const files: Stamp["files"] = {};
  for (const path of inputs) {
    const file = Bun.file(`${root}/${path}`);
    files[path] = [file.size, file.lastModified];
  }
  return { bun: Bun.version, files };
}
