// Timers (SPEC §8): Iodine.run / runAfter / runEvery fire when and as often as asked, stop() and
// stopAllTimers cancel, a throwing task is logged and never stops its schedule or the process,
// and misuse is refused at the call site.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { run, runAfter, runEvery, stopAllTimers } from "../src/timers.ts";
import { errorOf } from "./harness.ts";

/**
 * Waits a fixed time: used only to show that something did NOT happen (a stopped or finished
 * timer stays silent across several of its own periods). Everything else waits on the event.
 */
const quietFor = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The error `fn` throws, as "Class: message", so one assertion checks both exactly. */
const TIMERS = join(import.meta.dir, "..", "src", "timers.ts");

describe("run", () => {
  test("runs once, after the current code and its microtasks", async () => {
    const order: string[] = [];
    const ran = Promise.withResolvers<void>();
    const handle = run(() => {
      order.push("run");
      ran.resolve();
    });
    queueMicrotask(() => order.push("microtask"));
    order.push("sync");
    expect(handle.isActive).toBe(true);
    await ran.promise;
    expect(handle.isActive).toBe(false);
    await quietFor(20);
    expect(order).toEqual(["sync", "microtask", "run"]);
  });

  test("stop() before the next turn prevents it, and is idempotent", async () => {
    let calls = 0;
    const handle = run(() => calls++);
    handle.stop();
    handle.stop();
    expect(handle.isActive).toBe(false);
    await quietFor(20);
    expect(calls).toBe(0);
  });
});

describe("runAfter", () => {
  test("fires in order of delay; a timer stopped before firing never fires", async () => {
    const order: string[] = [];
    const last = Promise.withResolvers<void>();
    const late = runAfter(30, () => {
      order.push("30ms");
      last.resolve();
    });
    const early = runAfter(10, () => order.push("10ms"));
    const stopped = runAfter(20, () => order.push("20ms (stopped)"));
    expect([late.isActive, early.isActive, stopped.isActive]).toEqual([true, true, true]);
    stopped.stop();
    expect(stopped.isActive).toBe(false);
    await last.promise;
    expect(order).toEqual(["10ms", "30ms"]);
    expect([late.isActive, early.isActive]).toEqual([false, false]);
    late.stop(); // stopping a finished timer is a no-op
    expect(late.isActive).toBe(false);
  });

  test("0 ms is allowed and runs on a later turn", async () => {
    const ran = Promise.withResolvers<string>();
    runAfter(0, () => ran.resolve("ran"));
    expect(await ran.promise).toBe("ran");
  });
});

describe("runEvery", () => {
  test("with times = 3: exactly 3 calls, inactive from the last call on", async () => {
    const seen: boolean[] = [];
    const third = Promise.withResolvers<void>();
    const handle = runEvery(
      5,
      () => {
        seen.push(handle.isActive);
        if (seen.length === 3) third.resolve();
      },
      3,
    );
    await third.promise;
    // Inside the last call the schedule is already over.
    expect(seen).toEqual([true, true, false]);
    expect(handle.isActive).toBe(false);
    await quietFor(40);
    expect(seen.length).toBe(3);
  });

  test("without times: runs until stop() is called from inside the callback", async () => {
    let calls = 0;
    const stopped = Promise.withResolvers<void>();
    const handle = runEvery(2, () => {
      if (++calls === 5) {
        handle.stop();
        stopped.resolve();
      }
    });
    await stopped.promise;
    expect(handle.isActive).toBe(false);
    await quietFor(30);
    expect(calls).toBe(5);
  });

  test("a stopped runEvery never fires", async () => {
    let calls = 0;
    const handle = runEvery(5, () => calls++);
    handle.stop();
    await quietFor(30);
    expect(calls).toBe(0);
  });
});

describe("errors in a task", () => {
  test("a throw or a rejected Promise is logged; the schedule and the process go on", async () => {
    // A subprocess, because logException writes straight to fd 2. It also shows that pending
    // timers keep a process alive (the script ends with work still scheduled) and that it exits
    // on its own, with 0, once they are done.
    const script = `
      import { runAfter, runEvery } from ${JSON.stringify(TIMERS)};
      let n = 0;
      runEvery(5, () => {
        n++;
        if (n === 1) throw new Error("boom " + n);
        if (n === 2) return Promise.reject(new Error("boom " + n));
        console.log("call " + n);
      }, 3);
      runAfter(60, () => console.log("late"));
    `;
    await using proc = Bun.spawn([process.execPath, "-e", script], {
      stdout: "pipe",
      stderr: "pipe",
    });
    const [stdout, stderr, code] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    expect(stdout).toBe("call 3\nlate\n");
    expect(stderr).toContain("iodine: timer: Error: boom 1\n");
    expect(stderr).toContain("iodine: timer: Error: boom 2\n");
    expect(stderr.match(/^iodine: timer: /gm)?.length).toBe(2);
    expect(code).toBe(0);
  }, 10_000);
});

describe("stopAllTimers", () => {
  test("cancels every pending timer of every kind", async () => {
    let calls = 0;
    const count = () => calls++;
    const handles = [run(count), runAfter(10, count), runEvery(5, count), runEvery(5, count, 2)];
    stopAllTimers();
    expect(handles.map((h) => h.isActive)).toEqual([false, false, false, false]);
    await quietFor(40);
    expect(calls).toBe(0);
    // Timers scheduled afterwards are unaffected.
    const ran = Promise.withResolvers<string>();
    runAfter(1, () => ran.resolve("after"));
    expect(await ran.promise).toBe("after");
  });

  test("finished timers are not held on to (no leak for many short timers)", async () => {
    const N = 1_000;
    const refs: WeakRef<object>[] = [];
    let done = 0;
    const all = Promise.withResolvers<void>();
    const finish = () => {
      if (++done === 3 * N) all.resolve();
    };
    // Handles are kept only as WeakRefs, so once a timer finished only the registry could hold it.
    for (let i = 0; i < N; i++) {
      refs.push(new WeakRef(run(finish)));
      refs.push(new WeakRef(runAfter(1, finish)));
      refs.push(new WeakRef(runEvery(1, finish, 1)));
    }
    await all.promise;
    await quietFor(0); // let the last callbacks' frames go
    Bun.gc(true);
    const alive = refs.filter((r) => r.deref() !== undefined).length;
    // JSC scans the stack conservatively, so a stray handle or two may survive one collection;
    // a registry that kept finished timers would keep all 3,000.
    expect(alive).toBeLessThan(10);
  });
});

describe("argument validation", () => {
  test('"ms" must be a finite number ≥ 0 and within setTimeout\'s range', () => {
    const f = () => {};
    expect(errorOf(() => runEvery(-1, f))).toBe(
      `RangeError: Iodine.runEvery: "ms" must be a finite number ≥ 0, got -1`,
    );
    expect(errorOf(() => runAfter(NaN, f))).toBe(
      `RangeError: Iodine.runAfter: "ms" must be a finite number ≥ 0, got NaN`,
    );
    expect(errorOf(() => runAfter(Infinity, f))).toBe(
      `RangeError: Iodine.runAfter: "ms" must be a finite number ≥ 0, got Infinity`,
    );
    expect(errorOf(() => runAfter("5" as unknown as number, f))).toBe(
      `RangeError: Iodine.runAfter: "ms" must be a finite number ≥ 0, got "5"`,
    );
    expect(errorOf(() => runEvery(2 ** 31, f))).toBe(
      `RangeError: Iodine.runEvery: "ms" must be at most 2147483647 (about 24.8 days),` +
        ` got 2147483648`,
    );
  });

  test('"times" must be a positive integer', () => {
    const f = () => {};
    const cases = [
      [0, "0"],
      [-1, "-1"],
      [1.5, "1.5"],
      [NaN, "NaN"],
      [Infinity, "Infinity"],
      ["3", '"3"'],
    ];
    for (const [times, shown] of cases) {
      expect(errorOf(() => runEvery(10, f, times as number))).toBe(
        `RangeError: Iodine.runEvery: "times" must be a positive integer, got ${shown}`,
      );
    }
  });

  test('"fn" must be a function', () => {
    expect(errorOf(() => run(undefined as unknown as () => void))).toBe(
      `TypeError: Iodine.run: "fn" must be a function, got undefined`,
    );
    expect(errorOf(() => runAfter(10, "code" as unknown as () => void))).toBe(
      `TypeError: Iodine.runAfter: "fn" must be a function, got string`,
    );
    expect(errorOf(() => runEvery(10, null as unknown as () => void))).toBe(
      `TypeError: Iodine.runEvery: "fn" must be a function, got null`,
    );
  });
});
