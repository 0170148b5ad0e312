// Handler resolution (SPEC §4, STYLE §C): camelCase and iodine's snake_case names, resolved once
// into a frozen table of bound callbacks, and a clear TypeError for every malformed handler.
import { describe, expect, test } from "bun:test";
import { defineHandler, resolveHandler } from "../src/connections/handler.ts";
import type { Connection, Handler, Message } from "../src/types.ts";
import { errorOf } from "./harness.ts";

// Callbacks under test never touch the connection; they only record what they were given.
const client = {} as Connection;

/** The error `fn` throws, as "Class: message", so one assertion checks both exactly. */
/** Calls every resolved callback once and returns what each recorded, in call order. */
function callAll(h: object): string[] {
  const cb = resolveHandler(h);
  cb.onOpen?.(client);
  cb.onMessage?.(client, "hi");
  cb.onDrained?.(client);
  cb.onTimeout?.(client);
  cb.onShutdown?.(client);
  cb.onClose?.(client);
  return (h as { calls: string[] }).calls;
}

describe("resolveHandler", () => {
  test("camelCase object: every callback, with its arguments", () => {
    const calls: string[] = [];
    const h = {
      calls,
      onOpen: (c: Connection) => calls.push(`open ${c === client}`),
      onMessage: (c: Connection, d: Message) => calls.push(`message ${c === client} ${String(d)}`),
      onDrained: () => calls.push("drained"),
      onTimeout: () => calls.push("timeout"),
      onShutdown: () => calls.push("shutdown"),
      onClose: () => calls.push("close"),
    };
    expect(callAll(h)).toEqual([
      "open true",
      "message true hi",
      "drained",
      "timeout",
      "shutdown",
      "close",
    ]);
  });

  test("snake_case object: iodine's names, ping as onTimeout", () => {
    const calls: string[] = [];
    const h = {
      calls,
      on_open: () => calls.push("on_open"),
      on_message: (_c: Connection, d: Message) => calls.push(`on_message ${String(d)}`),
      on_drained: () => calls.push("on_drained"),
      ping: () => calls.push("ping"),
      on_shutdown: () => calls.push("on_shutdown"),
      on_close: () => calls.push("on_close"),
    };
    expect(callAll(h)).toEqual([
      "on_open",
      "on_message hi",
      "on_drained",
      "ping",
      "on_shutdown",
      "on_close",
    ]);
  });

  test("ping resolves to onTimeout and nothing else", () => {
    const ping = () => "pong";
    const cb = resolveHandler({ ping });
    expect(cb.onTimeout?.(client)).toBe("pong");
    expect([cb.onOpen, cb.onMessage, cb.onDrained, cb.onShutdown, cb.onClose]).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
  });

  test("class instance: prototype methods, inherited ones too, with `this` the instance", () => {
    class Base {
      calls: string[] = [];
      name = "base";
      onClose(): void {
        this.calls.push(`close ${this.name}`);
      }
    }
    class Chat extends Base implements Handler {
      override name = "chat";
      onOpen(): void {
        this.calls.push(`open ${this.name}`);
      }
      on_message(_c: Connection, data: Message): void {
        this.calls.push(`message ${this.name} ${String(data)}`);
      }
    }
    const h = new Chat();
    expect(callAll(h)).toEqual(["open chat", "message chat hi", "close chat"]);
    expect(resolveHandler(h).handler).toBe(h);
  });

  test("mixed spellings: onOpen with on_message", () => {
    const calls: string[] = [];
    const h = { calls, onOpen: () => calls.push("onOpen"), on_message: () => calls.push("on_msg") };
    expect(callAll(h)).toEqual(["onOpen", "on_msg"]);
  });

  test("both spellings with the same function are accepted", () => {
    const calls: string[] = [];
    const fn = () => calls.push("once");
    const h = { calls, onMessage: fn, on_message: fn, onTimeout: fn, ping: fn };
    expect(callAll(h)).toEqual(["once", "once"]);
  });

  test("both spellings with different functions: TypeError naming both", () => {
    expect(errorOf(() => resolveHandler({ onMessage() {}, on_message() {} }))).toBe(
      "TypeError: handler defines both onMessage and on_message",
    );
    expect(errorOf(() => resolveHandler({ onTimeout() {}, ping() {} }, "Iodine.upgrade"))).toBe(
      "TypeError: Iodine.upgrade: handler defines both onTimeout and ping",
    );
  });

  test("a callback that is not a function: TypeError naming it", () => {
    expect(errorOf(() => resolveHandler({ onOpen: 5 }, "Iodine.upgrade"))).toBe(
      `TypeError: Iodine.upgrade: handler's "onOpen" must be a function, got number`,
    );
    expect(errorOf(() => resolveHandler({ on_close: "bye" }))).toBe(
      `TypeError: handler's "on_close" must be a function, got string`,
    );
  });

  test("null and undefined callbacks count as absent", () => {
    const cb = resolveHandler({ onOpen: null, on_open: undefined, onClose: undefined });
    expect(cb.onOpen).toBeUndefined();
    expect(cb.onClose).toBeUndefined();
  });

  test("not an object: TypeError naming where", () => {
    expect(errorOf(() => resolveHandler(5, "Iodine.upgrade"))).toBe(
      "TypeError: Iodine.upgrade: handler must be an object, got number",
    );
    expect(errorOf(() => resolveHandler(null, "Iodine.connect"))).toBe(
      "TypeError: Iodine.connect: handler must be an object, got null",
    );
    expect(errorOf(() => resolveHandler(undefined))).toBe(
      "TypeError: handler must be an object, got undefined",
    );
    class Chat {}
    expect(errorOf(() => resolveHandler(Chat, "Iodine.upgrade"))).toBe(
      "TypeError: Iodine.upgrade: handler must be an object, got function" +
        " (pass an instance, e.g. new MyHandler())",
    );
  });

  test("an empty object is a valid handler with no callbacks", () => {
    const h = {};
    expect(resolveHandler(h)).toEqual({
      handler: h,
      onOpen: undefined,
      onMessage: undefined,
      onDrained: undefined,
      onTimeout: undefined,
      onShutdown: undefined,
      onClose: undefined,
    });
  });

  test("the result is frozen, and a later change to the handler does not reach it", () => {
    const h: Handler = { onOpen: () => "first" };
    const cb = resolveHandler(h);
    expect(Object.isFrozen(cb)).toBe(true);
    expect(() => {
      (cb as { onOpen: unknown }).onOpen = undefined;
    }).toThrow(TypeError);
    h.onOpen = () => "second";
    expect(cb.onOpen?.(client)).toBe("first");
    expect(resolveHandler(h).onOpen?.(client)).toBe("second");
  });
});

describe("defineHandler", () => {
  test("returns the very same object", () => {
    const h = { onMessage: (c: Connection, d: Message) => c.write(d) };
    expect(defineHandler(h)).toBe(h);
    const snake = { on_open() {} };
    expect(defineHandler(snake)).toBe(snake);
  });

  test("types a literal's callback parameters without annotations", () => {
    const written: Message[] = [];
    const echo = defineHandler({
      onMessage(c, data) {
        c.write(data);
      },
    });
    echo.onMessage?.({ write: (d: Message) => written.push(d) > 0 } as Connection, "echo");
    expect(written).toEqual(["echo"]);
  });
});
