// What the registry (registry.ts) needs from Bun-native apps (SPEC §3): each listening server's own
// `publish` for the native fan-out, a Bun-native app's `server.publish`, `ws.publish`, `publishText`
// and `publishBinary` turned into iodine publishes, and the topics such an app subscribes its
// sockets to itself (`ws.subscribe`), which the cluster must hear about. It reaches the registry
// only through the port it is given, so the registry imports this file and never the reverse.
import type { Server } from "bun";
import { log } from "../log.ts";
import { counts } from "../metrics/counters.ts";
import type { Message } from "../types.ts";

/** What this file asks of the registry. */
export interface RegistryPort {
  /** delivers in this process; `covered`: a server whose topic subscribers Bun already reached */
  deliverLocal(channel: string, message: Message, covered: Server<unknown> | undefined): number;
  /** hands a publish to the rest of the cluster (and Redis); true when it went anywhere */
  forward(channel: string, message: Message): boolean;
  /** the channel's subscribers changed: the cluster is told if this process now wants it */
  touch(channel: string): void;
  /** the registry is linked to a cluster or an engine */
  linked(): boolean;
  /** the channel keeps history (`Iodine.history`): its publishes must be sequenced */
  kept(channel: string): boolean;
  /** an `Iodine.publish`: sequenced where the history lives, then delivered everywhere */
  publish(channel: string, message: Message): void;
}

type BunPublish = (topic: string, data: Message, compress: boolean) => number;
type SocketPublish = (
  this: object,
  topic: string,
  data: Message | ArrayBuffer | ArrayBufferView,
  compress?: boolean,
) => number;

export class BunApps {
  /**
   * Each listening server with its own (unwrapped) `publish`, whether a Bun-native app runs on it,
   * and the size from which a message goes compressed to its permessage-deflate sockets.
   */
  #servers = new Map<Server<unknown>, { own: BunPublish; bunApp: boolean; compressFrom: number }>();
  /** topics a Bun-native app subscribed its own sockets to (`ws.subscribe`), in cluster mode */
  readonly topics = new Set<string>();
  /** the server of each open Bun-native socket, for its `ws.publish` */
  #serverOf = new WeakMap<object, Server<unknown>>();
  #sweep: ReturnType<typeof setTimeout> | undefined;
  #saidUnkept = false;
  readonly #registry: RegistryPort;

  constructor(registry: RegistryPort) {
    this.#registry = registry;
  }

  get hasServers(): boolean {
    return this.#servers.size > 0;
  }

  /**
   * Makes `server.publish` an iodine publish (a Bun-native app's publish reaches every subscriber),
   * keeping Bun's own for the native fan-out.
   */
  attachServer = (server: Server<unknown>, bunApp: boolean, compressFrom: number): void => {
    const own = server.publish.bind(server) as BunPublish;
    this.#servers.set(server, { own, bunApp, compressFrom });
    Object.defineProperty(server, "publish", {
      configurable: true,
      value: (topic: string, data: Message | ArrayBuffer | ArrayBufferView) =>
        this.publishFromApp(topic, data, 0, undefined),
    });
  };

  /**
   * The native part of a delivery in this process: each server's Bun topic, where it has iodine
   * WebSocket subscribers (`natives`) or a Bun-native app's own sockets hold the topic. Returns
   * the bytes Bun sent (0 when none).
   */
  deliver(
    channel: string,
    message: Message,
    natives: boolean,
    covered: Server<unknown> | undefined,
  ): number {
    let sent = 0;
    // Bun's publish compresses for every permessage-deflate subscriber unless told not to.
    const size = typeof message === "string" ? message.length : message.byteLength;
    for (const [server, { own, bunApp, compressFrom }] of this.#servers) {
      if (server === covered) continue;
      // A Bun-native app's own sockets are not in the registry: ask Bun about them (only where such
      // an app runs: the call is native and shows in a publish-heavy profile).
      if (natives || (bunApp && server.subscriberCount(channel) > 0)) {
        sent = Math.max(sent, own(channel, message, size >= compressFrom));
      }
    }
    return sent;
  }

  /**
   * A publish by a Bun-native app (`server.publish`, `ws.publish`, `publishText`, `publishBinary`):
   * to every subscriber in this process and, as any publish, to the rest of the cluster and Redis.
   * `sentHere` is what Bun's own `ws.publish` already sent on `covered`, the sender's server (Bun
   * leaves the sender out). Returns as Bun does: the bytes sent, or 0 when nobody wants it.
   */
  publishFromApp = (
    topic: string,
    data: Message | ArrayBuffer | ArrayBufferView,
    sentHere: number,
    covered: Server<unknown> | undefined,
  ): number => {
    const message = toMessage(data);
    if (this.#registry.kept(topic)) {
      // `server.publish` on a history channel is kept like `Iodine.publish`. A socket's own
      // publish was already sent by Bun to its server's subscribers (the sender left out), so it
      // cannot wait for a position: it goes on as an ordinary publish, and is not kept.
      if (covered === undefined) {
        this.#registry.publish(topic, message);
        return sizeOf(message);
      }
      if (!this.#saidUnkept) {
        this.#saidUnkept = true;
        log.warn(
          `pub/sub history: ws.publish(${JSON.stringify(topic)}) from a Bun-native socket is delivered but not kept in the channel's history (use server.publish or Iodine.publish; said once)`,
        );
      }
    }
    counts.published++;
    const local = this.#registry.deliverLocal(topic, message, covered);
    const away = this.#registry.forward(topic, message);
    if (sentHere > 0) return sentHere;
    if (local > 0) return local;
    return away ? sizeOf(message) : 0;
  };

  /**
   * A Bun-native app's socket opened on `server`. Its `ws.publish`, `publishText` and
   * `publishBinary` become iodine publishes (they reach every worker and Redis, exactly once, the
   * sender left out as Bun does): ServerWebSocket's methods are wrapped once, on the prototype.
   */
  watchSocket = (ws: object, server: Server<unknown>): void => {
    this.#serverOf.set(ws, server);
    const proto = Object.getPrototypeOf(ws) as Record<string | symbol, unknown>;
    if (!proto[kPublishing]) {
      proto[kPublishing] = true;
      const apps = this;
      for (const name of ["publish", "publishText", "publishBinary"] as const) {
        const own = proto[name] as SocketPublish;
        proto[name] = function (this: object, topic, data, compress) {
          const sent = own.call(this, topic, data, compress);
          return apps.publishFromApp(topic, data, sent, apps.#serverOf.get(this));
        } satisfies SocketPublish;
      }
    }
    this.#watchTopics(proto);
  };

  /**
   * A Bun-native app subscribes its sockets itself (`ws.subscribe`), out of iodine's sight. In a
   * cluster, ServerWebSocket's subscribe/unsubscribe are wrapped once (on the prototype, so no cost
   * per socket) to learn its topics; a topic is given up when Bun counts no subscriber for it any
   * more, checked shortly after an unsubscribe or a close.
   */
  #watchTopics(proto: Record<string | symbol, unknown>): void {
    if (!this.#registry.linked() || proto[kWatched]) return;
    proto[kWatched] = true;
    const apps = this;
    const sub = proto.subscribe as (this: unknown, topic: string) => unknown;
    const unsub = proto.unsubscribe as (this: unknown, topic: string) => unknown;
    proto.subscribe = function (this: object, topic: string) {
      const r = sub.call(this, topic);
      // iodine's own WebSockets share the prototype; the registry has their topics already.
      if (!apps.#serverOf.has(this)) return r;
      if (typeof topic === "string" && !apps.topics.has(topic)) {
        apps.topics.add(topic);
        apps.#registry.touch(topic);
      }
      return r;
    };
    proto.unsubscribe = function (this: unknown, topic: string) {
      const r = unsub.call(this, topic);
      apps.topicsMayEnd();
      return r;
    };
  }

  /** After a Bun-native socket unsubscribed or closed: drop the topics nobody holds any more (batched). */
  topicsMayEnd = (): void => {
    if (this.topics.size === 0 || this.#sweep !== undefined) return;
    this.#sweep = setTimeout(() => {
      this.#sweep = undefined;
      for (const topic of this.topics) {
        let held = false;
        for (const server of this.#servers.keys()) {
          if ((held = server.subscriberCount(topic) > 0)) break;
        }
        if (!held) {
          this.topics.delete(topic);
          this.#registry.touch(topic);
        }
      }
    }, 50);
    this.#sweep.unref?.();
  };
}

const kPublishing = Symbol("iodine.publishing");
const kWatched = Symbol("iodine.watched");

export const sizeOf = (m: Message) => (typeof m === "string" ? Buffer.byteLength(m) : m.byteLength);

function toMessage(data: Message | ArrayBuffer | ArrayBufferView): Message {
  if (typeof data === "string" || data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}
