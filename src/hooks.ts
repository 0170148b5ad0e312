// Lifecycle hooks (SPEC §8): `Iodine.onState(event, fn)`, fired by the lifecycle and the cluster
// supervisor at the moments iodine fires them. A hook that throws is logged; the others still run.
import { logException } from "./log.ts";

const STATE_EVENTS = [
  "pre_start",
  "before_fork",
  "after_fork",
  "enter_child",
  "enter_master",
  "on_start",
  "on_idle",
  "on_finish",
  "on_parent_crush",
  "on_child_crush",
  "start_shutdown",
] as const;

/** The lifecycle events of `Iodine.onState`. */
export type StateEvent = (typeof STATE_EVENTS)[number];

const hooks = new Map<StateEvent, (() => unknown)[]>();
let idleWatch: ReturnType<typeof setInterval> | undefined;
/** bumped by the HTTP service per request, read once a second for `on_idle` */
export const activity = { count: 0 };

export function onState(event: StateEvent, fn: () => unknown): void {
  if (!STATE_EVENTS.includes(event)) {
    throw new TypeError(
      `Iodine.onState: unknown event ${JSON.stringify(event)}; one of ${STATE_EVENTS.join(", ")}`,
    );
  }
  if (typeof fn !== "function")
    throw new TypeError(`Iodine.onState: "fn" must be a function, got ${typeof fn}`);
  let list = hooks.get(event);
  if (!list) hooks.set(event, (list = []));
  list.push(fn);
}

/** Runs the hooks of `event` in registration order; awaits the ones that return a promise. */
export async function fireState(event: StateEvent): Promise<void> {
  const list = hooks.get(event);
  if (list === undefined) return;
  for (const fn of [...list]) {
    try {
      await fn();
    } catch (err) {
      logException(`onState("${event}") hook`, err);
    }
  }
}

/**
 * `on_idle`: Bun has no idle hook on its loop, so once a second the requests served are counted;
 * the hooks run after the first quiet second following start-up or a busy period.
 */
export function watchIdle(): void {
  if (idleWatch !== undefined || !hooks.has("on_idle")) return;
  let seen = activity.count;
  let busy = true;
  idleWatch = setInterval(() => {
    if (activity.count !== seen) {
      seen = activity.count;
      busy = true;
    } else if (busy) {
      busy = false;
      void fireState("on_idle");
    }
  }, 1000);
  idleWatch.unref();
}

export function stopIdleWatch(): void {
  if (idleWatch !== undefined) clearInterval(idleWatch);
  idleWatch = undefined;
}
