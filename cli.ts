#!/usr/bin/env bun
// `iodine [options] [APP]`: the command line of src/cli/main.ts, run as its bytecode build
// (dist/cli.js, made by `bun install` in a checkout and by the package's prepack) when that build is
// of exactly these sources and this Bun, else from the sources. From source, Bun transpiles and
// compiles ~250 KB of TypeScript at every start (~8 ms; bench/startup.ts); the build did that once.
import type { Stamp } from "./src/cli/stamp.ts";

/**
 * Whether dist/cli.js was built from the sources as they are now, by this Bun (src/cli/stamp.ts).
 * Under node_modules (a package unpacked from its tarball, every file timed at the unpacking) the
 * sizes speak for the files; in a checkout the times must match too, so that an edit that keeps a
 * file's size still counts. Here, not in a module of its own: every module costs start-up.
 */
function freshBuild(root: string): boolean {
  let stamp: Stamp;
  try {
    stamp = require(`${root}/dist/cli-stamp.json`) as Stamp;
  } catch {
    return false;
  }
  if (stamp.bun !== Bun.version) return false;
  const installed = root.includes("/node_modules/");
  for (const path in stamp.files) {
    const [size, time] = stamp.files[path]!;
    const file = Bun.file(`${root}/${path}`);
    if (file.size !== size || (!installed && file.lastModified !== time)) return false;
  }
  return true;
}

if (freshBuild(import.meta.dir)) require(`${import.meta.dir}/dist/cli.js`);
else await import("./src/cli/main.ts");
