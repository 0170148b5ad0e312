// The public surface of iodine for Bun: the `Iodine` object and the public types.
import pkg from "../package.json" with { type: "json" };
import { addListener, requestStart, stopAll } from "./runtime.ts";
import type { ListenOptions } from "./types.ts";

/**
 * The iodine API.
 * @example
 * import { Iodine } from "iodine";
 * Iodine.listen({ port: 3000, handler: () => new Response("Hello World!") });
 * Iodine.start();
 */
export const Iodine = {
  /** The package version. */
  version: pkg.version as string,
  /** True in the process that supervises workers; in a single process both flags are true. */
  isMaster: true,
  /** True in a process that serves connections; in a single process both flags are true. */
  isWorker: true,
  /** Registers an HTTP service; several may be registered on different ports (SPEC §3). */
  listen(options: ListenOptions): void {
    addListener(options);
  },
  /** Starts every registered listener (script mode); under the CLI it starts once the module has loaded. */
  start(): Promise<void> {
    return requestStart();
  },
  /** Stops the server gracefully: in-flight requests finish, then the process may exit. */
  stop(): Promise<void> {
    return stopAll();
  },
};

// Apps and their handlers.
export type { AppModule, AppObject, FetchHandler, IodineServer } from "./types.ts";
// Options.
export type { ListenOptions, TLSOptions } from "./types.ts";
// Errors.
export { IodineError } from "./errors.ts";
