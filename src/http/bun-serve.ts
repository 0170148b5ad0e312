// An app file that calls `Bun.serve(options)` itself (SPEC §3), the most common Bun server script:
// under the CLI each such call registers its options as an HTTP listener, so the script runs on
// every worker as if it had exported them, and the caller gets a stand-in for Bun's Server that
// forwards to the real one once it listens (publish, upgrade, requestIP, url, port, stop, reload …).
import type { Server } from "bun";
import { normaliseApp } from "../app.ts";
import { log } from "../log.ts";
import { publishFromApp } from "../pubsub/registry.ts";
import { bunServe, reloadHttp } from "./server.ts";
import type { Message } from "../types.ts";

/** What the stand-ins need from the process's listeners (lifecycle.ts, wired by the CLI). */
export interface ServeHooks {
  /** registers the options as an HTTP listener */
  register(options: object): void;
  /** true once the listeners are bound: a later Bun.serve is the app's own business */
  started(): boolean;
  /** where a listener with these options will listen (before it does) */
  planned(options: object): { port: number; hostname: string | undefined };
  /** a graceful stop of every listener (`server.stop()`) */
  stop(): Promise<void>;
}

const standIns = new WeakMap<object, StandIn>();

/** From now on `Bun.serve(options)` registers a listener and returns its stand-in. */
export function captureBunServe(hooks: ServeHooks): void {
  Bun.serve = ((options: object) => {
    if (hooks.started()) {
      log.warn(
        "Bun.serve was called after the server started, so it runs outside iodine (one process, not clustered); " +
          "call it while the app file loads (top level, after an await if it needs one)",
      );
      return bunServe(options as Parameters<typeof Bun.serve>[0]);
    }
    if (normaliseApp(options) === undefined) {
      throw new TypeError("Bun.serve: options need a fetch function or routes");
    }
    const standIn = new StandIn(options, hooks);
    standIns.set(options, standIn);
    hooks.register(options);
    return standIn.server;
  }) as typeof Bun.serve;
}

/** The real server of a listener that came from an app's Bun.serve call. */
export function attachStandIn(options: object, server: Server<unknown>): void {
  standIns.get(options)?.attach(server);
}

/**
 * Bun's Server for the script that called Bun.serve. Before the listener is bound (and in a
 * cluster's master, where it never is) it answers from the options: `port`, `url`, a publish to the
 * cluster; after, everything goes to the real server.
 */
class StandIn {
  readonly server: Server<unknown>;
  #real: Server<unknown> | undefined;
  #reloaded: object | undefined;

  constructor(options: object, hooks: ServeHooks) {
    const self = this;
    const planned = () => hooks.planned(options);
    const own = {
      get port() {
        return self.#real?.port ?? planned().port;
      },
      get hostname() {
        return self.#real?.hostname ?? planned().hostname ?? "localhost";
      },
      get url() {
        if (self.#real !== undefined) return self.#real.url;
        const { port, hostname } = planned();
        return new URL(
          `http://${hostname === undefined || hostname === "0.0.0.0" ? "localhost" : hostname}:${port}/`,
        );
      },
      get pendingRequests() {
        return self.#real?.pendingRequests ?? 0;
      },
      get pendingWebSockets() {
        return self.#real?.pendingWebSockets ?? 0;
      },
      publish(topic: string, data: Message | ArrayBuffer | ArrayBufferView, compress?: boolean) {
        // The real server's publish is iodine's too (pubsub/registry.ts attachServer).
        if (self.#real !== undefined) return self.#real.publish(topic, data as never, compress);
        return publishFromApp(topic, data, 0, undefined);
      },
      subscriberCount(topic: string) {
        return self.#real?.subscriberCount(topic) ?? 0;
      },
      requestIP(req: Request) {
        return self.#real?.requestIP(req) ?? null;
      },
      stop() {
        return hooks.stop();
      },
      reload(next: object) {
        if (self.#real === undefined) self.#reloaded = next;
        else reload(self.#real, next);
        return self.server;
      },
      ref() {
        self.#real?.ref();
      },
      unref() {
        self.#real?.unref();
      },
      [Symbol.dispose]() {
        void hooks.stop();
      },
    };
    this.server = new Proxy(own, {
      get(target, key) {
        if (key in target) return Reflect.get(target, key);
        const real = self.#real;
        if (real === undefined) return undefined;
        const value = Reflect.get(real, key) as unknown;
        return typeof value === "function"
          ? (value as (...a: unknown[]) => unknown).bind(real)
          : value;
      },
    }) as unknown as Server<unknown>;
  }

  attach(server: Server<unknown>): void {
    this.#real = server;
    if (this.#reloaded !== undefined) reload(server, this.#reloaded);
    this.#reloaded = undefined;
  }
}

function reload(server: Server<unknown>, next: object): void {
  const app = normaliseApp(next);
  if (app === undefined)
    throw new TypeError("server.reload: options need a fetch function or routes");
  reloadHttp(server, {
    fetch: app.fetch,
    ...(app.serve?.routes !== undefined ? { routes: app.serve.routes } : {}),
    ...(app.serve?.error !== undefined ? { error: app.serve.error } : {}),
  });
}
