// Handler resolution (SPEC §4, STYLE §C): a handler's callbacks are looked up once, when it is
// attached (upgrade, listen, connect, `client.handler = x`), so the per-message path is one call
// through a frozen table with no name lookups and no spelling fallbacks.
import type { Connection, Handler, Message, RawListenOptions, SnakeHandler } from "../types.ts";

/** The callbacks of a handler resolved once, when it is attached (STYLE §C rule 1). */
export interface Callbacks {
  /** The handler object itself. */
  readonly handler: Handler | SnakeHandler;
  // Each bound to `handler`, so `this` works in class methods.
  readonly onOpen: ((c: Connection) => unknown) | undefined;
  readonly onMessage: ((c: Connection, data: Message) => unknown) | undefined;
  readonly onDrained: ((c: Connection) => unknown) | undefined;
  readonly onTimeout: ((c: Connection) => unknown) | undefined;
  readonly onShutdown: ((c: Connection) => unknown) | undefined;
  readonly onClose: ((c: Connection) => unknown) | undefined;
}

/**
 * Resolves a handler's callbacks, accepting iodine's snake_case names (`ping` is `onTimeout`).
 * `where` prefixes error messages, e.g. `"Iodine.upgrade"`.
 * @throws TypeError when `h` is not an object, a callback is not a function, or both spellings
 *   of one callback are different functions.
 */
export function resolveHandler(h: unknown, where?: string): Callbacks {
  const at = where ? `${where}: ` : "";
  if (h === null || typeof h !== "object") {
    // A class passed instead of an instance is the likely slip when porting `handler: ChatHandler`.
    const hint = typeof h === "function" ? " (pass an instance, e.g. new MyHandler())" : "";
    const got = h === null ? "null" : typeof h;
    throw new TypeError(`${at}handler must be an object, got ${got}${hint}`);
  }
  const o = h as Record<string, unknown>;
  // null counts as absent: `{ onOpen: null }` reads as "no callback", as DOM `on*` properties do.
  const get = (name: string) => {
    // Indexing, not own keys: class instances keep their methods on the prototype chain.
    const v = o[name];
    if (v != null && typeof v !== "function") {
      throw new TypeError(`${at}handler's "${name}" must be a function, got ${typeof v}`);
    }
    return (v ?? undefined) as ((...args: never[]) => unknown) | undefined;
  };
  const pick = (camel: string, snake: string) => {
    const a = get(camel);
    const b = get(snake);
    // One function under both names is a deliberate alias; two different ones need a choice.
    if (a && b && a !== b) throw new TypeError(`${at}handler defines both ${camel} and ${snake}`);
    return (a ?? b)?.bind(h);
  };
  return Object.freeze({
    handler: h as Handler | SnakeHandler,
    onOpen: pick("onOpen", "on_open"),
    onMessage: pick("onMessage", "on_message"),
    onDrained: pick("onDrained", "on_drained"),
    onTimeout: pick("onTimeout", "ping"),
    onShutdown: pick("onShutdown", "on_shutdown"),
    onClose: pick("onClose", "on_close"),
  }) as Callbacks;
}

/**
 * Returns `h` unchanged; it only gives an object literal the handler type, so callbacks'
 * parameters are typed without annotations (as crossws `defineHooks`).
 * @example
 * const Echo = defineHandler({ onMessage(client, data) { client.write(data); } });
 */
export function defineHandler<T extends Handler | SnakeHandler>(h: T): T {
  return h;
}

/** Turns the listen option into "make the next connection's handler". */
export function handlerMaker(
  handler: RawListenOptions["handler"],
  where: string,
): () => Handler | SnakeHandler {
  if (typeof handler === "function") {
    if (/^class[\s{]/.test(Function.prototype.toString.call(handler))) {
      const C = handler as new () => Handler | SnakeHandler;
      return () => new C();
    }
    return handler as () => Handler | SnakeHandler;
  }
  if (handler === null || typeof handler !== "object") {
    throw new TypeError(
      `${where}: "handler" must be a function returning a handler, a class or a handler object, got ${handler === null ? "null" : typeof handler}`,
    );
  }
  return () => handler;
}
