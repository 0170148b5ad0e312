// node:fs costs ~1.3 ms of start-up to load, node:path ~1.1 ms (node:worker_threads ~2.5 ms), and a
// plain start needs none of them: the paths that do (a config file, a pid file, a public folder, a
// Unix socket, an error message) load them the first time they run, synchronously.

/** node:fs, loaded on first use. */
export function nodeFs(): typeof import("node:fs") {
  return require("node:fs") as typeof import("node:fs");
}

/** node:path, loaded on first use. */
export function nodePath(): typeof import("node:path") {
  return require("node:path") as typeof import("node:path");
}
