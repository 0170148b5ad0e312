// ioredis, loaded on first use. It is by far the largest module iodine pulls in (about 30 ms of a
// 60 ms start-up on a 2-core VM), and an app that never names Redis never needs it. A plain
// `require` of a literal name, so `bun build --compile` still bundles it.
import type * as IORedisModule from "ioredis";

let loaded: typeof IORedisModule | undefined;

/** The ioredis module (`.Redis`, `.Cluster`), required the first time it is asked for. */
export function ioredis(): typeof IORedisModule {
  if (loaded === undefined) {
    traceCheaply();
    loaded = require("ioredis") as typeof IORedisModule;
  }
  return loaded;
}

/**
 * ioredis traces a command unless its tracing channel's `hasSubscribers` is exactly false; Bun
 * 1.4's TracingChannel has no `hasSubscribers`, so every command paid for argument sanitising and a
 * wrapper promise (about 1 µs of CPU per publish). Node's definition, where it is missing.
 */
function traceCheaply(): void {
  const diagnostics = require("node:diagnostics_channel") as typeof import("node:diagnostics_channel");
  const proto = Object.getPrototypeOf(diagnostics.tracingChannel("iodine:probe")) as object;
  if ("hasSubscribers" in proto) return;
  Object.defineProperty(proto, "hasSubscribers", {
    configurable: true,
    get(this: Record<"start" | "end" | "asyncStart" | "asyncEnd" | "error", { hasSubscribers: boolean }>) {
      return this.start.hasSubscribers || this.end.hasSubscribers || this.asyncStart.hasSubscribers ||
        this.asyncEnd.hasSubscribers || this.error.hasSubscribers;
    },
  });
}
