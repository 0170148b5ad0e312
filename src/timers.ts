// Timers (SPEC §8): iodine's Iodine.run / run_after / run_every on the event loop's own timers,
// so they keep the process alive like any setTimeout. Every scheduled task sits in `live` until
// its last run or its stop, so stopAllTimers can cancel them on a graceful stop and finished
// tasks leave nothing behind.
import { logException } from "./log.ts";
import type { TimerHandle } from "./types.ts";

// setTimeout's limit: past 2^31−1 ms (about 24.8 days) Bun fires after 1 ms instead.
const MAX_MS = 2_147_483_647;

const live = new Set<Task>();

/**
 * Runs `fn` once, on the next turn of the event loop (after the current code and its microtasks).
 * @example
 * Iodine.run(() => console.log("the server is up"));
 */
export function run(fn: () => unknown): TimerHandle {
  checkFn("Iodine.run", fn);
  return new Task(fn, 1, (tick) => {
    const id = setImmediate(tick);
    return () => clearImmediate(id);
  });
}

/** Runs `fn` once, after `ms` milliseconds. */
export function runAfter(ms: number, fn: () => unknown): TimerHandle {
  checkMs("Iodine.runAfter", ms);
  checkFn("Iodine.runAfter", fn);
  return new Task(fn, 1, (tick) => {
    const id = setTimeout(tick, ms);
    return () => clearTimeout(id);
  });
}

/**
 * Runs `fn` every `ms` milliseconds, `times` times, or until stopped when `times` is omitted.
 * @example
 * const beat = Iodine.runEvery(1000, () => Iodine.publish("clock", new Date().toISOString()));
 */
export function runEvery(ms: number, fn: () => unknown, times?: number): TimerHandle {
  checkMs("Iodine.runEvery", ms);
  checkFn("Iodine.runEvery", fn);
  if (times !== undefined && !(Number.isInteger(times) && times >= 1)) {
    const got = show(times);
    throw new RangeError(`Iodine.runEvery: "times" must be a positive integer, got ${got}`);
  }
  return new Task(fn, times ?? Infinity, (tick) => {
    const id = setInterval(tick, ms);
    return () => clearInterval(id);
  });
}

/** Stops every timer still scheduled (for a graceful stop of the process). */
export function stopAllTimers(): void {
  // Deleting the visited entry while iterating a Set is safe.
  for (const t of live) t.stop();
}

// --- internal ---

class Task implements TimerHandle {
  readonly #fn: () => unknown;
  /** Calls still to come; Infinity until stopped. */
  #left: number;
  /** Undefined once finished or stopped. */
  #cancel: (() => void) | undefined;

  constructor(fn: () => unknown, left: number, start: (tick: () => void) => () => void) {
    this.#fn = fn;
    this.#left = left;
    this.#cancel = start(() => this.#tick());
    live.add(this);
  }

  get isActive(): boolean {
    return this.#cancel !== undefined;
  }

  stop(): void {
    const cancel = this.#cancel;
    if (cancel === undefined) return;
    this.#cancel = undefined;
    live.delete(this);
    cancel();
  }

  #tick(): void {
    // A stop from another callback in the same timer phase can race the already-due tick.
    if (this.#cancel === undefined) return;
    // Unschedule before the last call, so the callback already sees isActive false.
    if (--this.#left === 0) this.stop();
    try {
      const r = this.#fn() as PromiseLike<unknown> | undefined;
      if (typeof r?.then === "function") r.then(undefined, onError);
    } catch (err) {
      onError(err);
    }
  }
}

// One log line, and the schedule goes on: a failing task must not take the process down.
const onError = (err: unknown) => logException("timer", err);

function checkMs(where: string, ms: number): void {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
    throw new RangeError(`${where}: "ms" must be a finite number ≥ 0, got ${show(ms)}`);
  }
  if (ms > MAX_MS) {
    const limit = `${MAX_MS} (about 24.8 days)`;
    throw new RangeError(`${where}: "ms" must be at most ${limit}, got ${show(ms)}`);
  }
}

function checkFn(where: string, fn: unknown): void {
  if (typeof fn !== "function") {
    const got = fn === null ? "null" : typeof fn;
    throw new TypeError(`${where}: "fn" must be a function, got ${got}`);
  }
}

/** A value as it would be written in code: strings quoted, so `"5"` and `5` read apart. */
function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  return typeof v === "object" && v !== null ? "object" : String(v);
}
