// A worker's membership of the cluster (SPEC §5): one link over the bus to the master's hub (hub.ts),
// re-established by itself until the worker leaves. It tells the hub everything this process wants
// (again on every reconnection), forwards a local publish only when another process wants it (the
// hub says which: SUB/UNSUB frames, then a HELLO once its first full picture is sent), delivers what
// the hub forwards, and runs a worker's `redis.cmd` in the master.
import type { Socket } from "bun";
import { SETTLE_MS } from "../limits.ts";
import { log } from "../log.ts";
import type { Message } from "../types.ts";
import { BusError, messageOf, type FrameSink } from "./bus.ts";
import {
  defaultEngine,
  lendRelay,
  watchDefaultEngine,
  type Relay,
  type Retained,
} from "./engine-api.ts";
import { declarations, watchDeclarations, type HistoryConfig } from "./history.ts";
import { Link } from "./link.ts";
import { compileGlob } from "./match.ts";
import { attachRemote, deliverLocal, interests } from "./registry.ts";

/** A worker's link to the hub; reconnects by itself until `leave()`. */
export interface ClusterMember {
  /**
   * Resolves true once the hub has handled every frame this process sent before (so what it
   * published is routed), false when the link is down or no answer came within `ms`.
   */
  sync(ms: number): Promise<boolean>;
  leave(): void;
  /** Sends a control frame (the JSON `frame()` makes) to the hub, only while the link is up. */
  tell(frame: () => string): void;
}

/**
 * Joins the cluster whose hub listens on `path`. `onLinkLost` runs when the link drops (the worker
 * checks whether its master is still alive); the link is re-established after `retryMs`.
 */
export function joinCluster(
  path: string,
  name: string,
  onLinkLost: () => void,
  retryMs = 100,
): ClusterMember {
  return new Member(path, name, onLinkLost, retryMs);
}

class Member implements ClusterMember {
  readonly #path: string;
  readonly #name: string;
  readonly #onLinkLost: () => void;
  readonly #retryMs: number;
  readonly #link: Link;
  readonly #detach: () => void;
  readonly #unwatch: () => void;
  #leaving = false;
  #everConnected = false;
  // What the other processes want, as the hub says. Until its first full picture arrived (and
  // while the link is down) every publish is forwarded: too much is safe, too little is not.
  #knowsOthers = false;
  /** the master has an external engine (Redis): it takes every publish not meant for the cluster only */
  #wantAll = false;
  #othersWant = new Set<string>();
  #othersMatch = new Map<string, (channel: string) => boolean>();
  /** commands and syncs waiting for the hub's REPLY, by id */
  #waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** the retained messages of reads under way, by id (they arrive before the REPLY) */
  #reads = new Map<number, Retained["entries"]>();
  #nextId = 0;
  /** this process's subscriptions per exact channel (presence), and those the hub has not heard yet */
  #counts = new Map<string, number>();
  #countsDirty = new Set<string>();
  #unwatchHistory: () => void;

  constructor(path: string, name: string, onLinkLost: () => void, retryMs: number) {
    this.#path = path;
    this.#name = name;
    this.#onLinkLost = onLinkLost;
    this.#retryMs = retryMs;
    this.#link = new Link(this.#sink(), (bytes) => {
      log.error(`cluster bus: the master is not reading (${bytes} bytes waiting); reconnecting`);
      this.#link.socket?.terminate();
    });
    this.#detach = attachRemote({
      forward: (channel, message, clusterOnly) => this.#forward(channel, message, clusterOnly),
      interest: (subscribe, key, pattern) => {
        if (this.#link.socket === undefined) return;
        this.#link.out.interest(subscribe, key, pattern);
        this.#link.flushSoon();
      },
      // The hub answers a SYNC once the other workers (and Redis) have taken what came before it.
      settled: () => this.sync(SETTLE_MS).then(() => {}),
      // The hub sequences it and sends it back with its position (it waits here while the link is down).
      sequence: (channel, message, clusterOnly) => {
        this.#link.out.publish(channel, message, clusterOnly, false, true);
        this.#link.flushSoon();
      },
      read: (channel, after) => this.#read(channel, after),
      count: (channel, n) => this.#count(channel, n),
      presence: (channel) => {
        this.#flushCounts();
        return this.#ask(["presence", channel]) as Promise<number>;
      },
    });
    this.#unwatchHistory = watchDeclarations((config) => {
      this.#declare(config);
      this.#link.flushSoon();
    });
    this.#connect();
    // The default engine's `cmd` runs in the master, whichever engine is the default.
    lendRelay(defaultEngine(), this.#relay);
    this.#unwatch = watchDefaultEngine((engine, old) => {
      lendRelay(old, undefined);
      lendRelay(engine, this.#relay);
    });
  }

  sync(ms: number): Promise<boolean> {
    if (this.#link.socket === undefined) return Promise.resolve(false);
    const id = this.#newId();
    const { promise, resolve } = Promise.withResolvers<boolean>();
    const timer = setTimeout(() => {
      this.#waiting.delete(id);
      resolve(false);
    }, ms);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      resolve(ok);
    };
    this.#waiting.set(id, { resolve: () => done(true), reject: () => done(false) });
    this.#link.out.sync(id);
    this.#link.flushSoon();
    return promise;
  }

  leave(): void {
    this.#leaving = true;
    this.#unwatch();
    this.#unwatchHistory();
    lendRelay(defaultEngine(), undefined);
    this.#detach();
    this.#link.socket?.end();
  }

  /** A publish of this process (delivered here already): to the hub when anyone else may want it. */
  #forward(channel: string, message: Message, clusterOnly: boolean): boolean {
    if (!(this.#wantAll && !clusterOnly) && !this.#othersMayWant(channel)) return false;
    this.#link.out.publish(channel, message, clusterOnly);
    this.#link.flushSoon();
    return true;
  }

  #othersMayWant(channel: string): boolean {
    if (!this.#knowsOthers || this.#othersWant.has(channel)) return true;
    if (this.#othersMatch.size > 0)
      for (const test of this.#othersMatch.values()) if (test(channel)) return true;
    return false;
  }

  /** A control question for the hub (hub-history.ts); resolves to its REPLY. */
  #ask(args: unknown[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.#link.socket === undefined)
        return reject(new Error("the link to the master is down"));
      const id = this.#newId();
      this.#waiting.set(id, { resolve, reject });
      this.#link.out.control(id, JSON.stringify(args));
      this.#link.flushSoon();
    });
  }

  async #read(channel: string, after: number): Promise<Retained> {
    const id = this.#nextId + 1;
    this.#reads.set(id, []);
    try {
      const held = (await this.#ask(["read", channel, after])) as Omit<Retained, "entries">;
      return { ...held, entries: this.#reads.get(id) ?? [] };
    } finally {
      this.#reads.delete(id);
    }
  }

  tell(frame: () => string): void {
    if (this.#link.socket === undefined) return;
    this.#link.out.control(0, frame());
    this.#link.flushSoon();
  }

  #declare(config: HistoryConfig): void {
    const { key, pattern, size, ttlMs } = config;
    this.#link.out.control(0, JSON.stringify(["history", key, pattern ? 1 : 0, size, ttlMs]));
  }

  /** Counts go to the hub once per burst (a thousand subscriptions in one turn: one frame). */
  #count(channel: string, n: number): void {
    if (n > 0) this.#counts.set(channel, n);
    else this.#counts.delete(channel);
    if (this.#countsDirty.size === 0) queueMicrotask(() => this.#flushCounts());
    this.#countsDirty.add(channel);
  }

  #flushCounts(): void {
    if (this.#countsDirty.size === 0) return;
    if (this.#link.socket !== undefined) {
      for (const channel of this.#countsDirty)
        this.#link.out.control(
          0,
          JSON.stringify(["count", channel, this.#counts.get(channel) ?? 0]),
        );
      this.#link.flushSoon();
    }
    this.#countsDirty.clear();
  }

  #relay: Relay = (args) =>
    new Promise((resolve, reject) => {
      if (this.#link.socket === undefined)
        return reject(new Error("the link to the master is down"));
      const id = this.#newId();
      this.#waiting.set(id, { resolve, reject });
      this.#link.out.command(id, JSON.stringify(args));
      this.#link.flushSoon();
    });

  #newId(): number {
    return (this.#nextId = (this.#nextId + 1) >>> 0);
  }

  // --- the link ---

  #sink(): FrameSink {
    return {
      onPublish: (channel, frame, at, binary) =>
        void deliverLocal(channel, messageOf(frame, at, binary)),
      onPositioned: (channel, frame, at, binary, position, request) => {
        if (request === 0)
          return void deliverLocal(channel, messageOf(frame, at, binary), undefined, position);
        this.#reads
          .get(request)
          ?.push({ offset: position.offset, bytes: frame.slice(at), text: !binary });
      },
      onControl: () => {
        throw new BusError("a CTL frame from the master");
      },
      onWantAll: (want) => void (this.#wantAll = want),
      onCommand: () => {
        throw new BusError("a command frame from the master");
      },
      onReply: (id, ok, json) => {
        const waiting = this.#waiting.get(id);
        if (waiting === undefined) return;
        this.#waiting.delete(id);
        const value = JSON.parse(json) as unknown;
        if (ok) waiting.resolve(value);
        else waiting.reject(new Error(String(value)));
      },
      onInterest: (subscribe, key, pattern) => {
        if (pattern) {
          if (subscribe) this.#othersMatch.set(key, compileGlob(key));
          else this.#othersMatch.delete(key);
        } else if (subscribe) this.#othersWant.add(key);
        else this.#othersWant.delete(key);
      },
      onHello: () => void (this.#knowsOthers = true),
      // The hub asks whether this worker has taken what it sent so far (frames are handled in order).
      onSync: (id) => {
        this.#link.out.reply(id, true, "null");
        this.#link.flushSoon();
      },
    };
  }

  #connect = (): void => {
    Bun.connect({
      unix: this.#path,
      socket: {
        open: (socket) => this.#opened(socket as Socket<unknown>),
        data: (socket, data) => {
          try {
            this.#link.receive(data);
          } catch (err) {
            log.error(
              `cluster bus: bad frame from the master (${(err as Error).message}); reconnecting`,
            );
            socket.terminate();
          }
        },
        drain: () => this.#link.drain(),
        close: () => this.#closed(),
        error() {},
      },
    }).catch((err: Error) => {
      if (this.#leaving) return;
      if (!this.#everConnected)
        log.debug(`cluster bus: cannot reach the master yet (${err.message})`);
      this.#onLinkLost();
      setTimeout(this.#connect, this.#retryMs);
    });
  };

  /**
   * Everything this process wants goes first on every (re)connection, then the messages published
   * while the link was down. Interest changes meanwhile are not queued: the replay has them.
   */
  #opened(socket: Socket<unknown>): void {
    if (this.#everConnected) log.info("cluster bus: link to the master restored");
    this.#everConnected = true;
    // The hub sends its picture afresh on every link.
    this.#knowsOthers = false;
    this.#wantAll = false;
    this.#othersWant.clear();
    this.#othersMatch.clear();
    const link = this.#link;
    const waiting = link.out.take().slice();
    link.out.hello(this.#name);
    for (const config of declarations()) this.#declare(config);
    for (const i of interests()) link.out.interest(true, i.key, i.pattern);
    for (const [channel, n] of this.#counts)
      link.out.control(0, JSON.stringify(["count", channel, n]));
    this.#countsDirty.clear();
    link.out.raw(waiting);
    link.attach(socket);
  }

  #closed(): void {
    this.#link.detach();
    this.#knowsOthers = false;
    for (const c of this.#waiting.values())
      c.reject(new Error("the link to the master was lost before it answered"));
    this.#waiting.clear();
    if (this.#leaving) return;
    this.#onLinkLost();
    setTimeout(this.#connect, this.#retryMs);
  }
}
