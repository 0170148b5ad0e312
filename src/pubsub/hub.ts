// The master's hub (the cluster engine, the default, SPEC §5): pub/sub across the processes of one
// cluster over the bus. Each worker (and thread) holds one link to the hub (member.ts) and tells it
// which channels and patterns it wants; the hub forwards a publish only to the links that want it,
// byte for byte as it came, and to the master's own subscribers. The hub in turn tells each worker
// which channels and patterns the *other* processes want (SUB/UNSUB frames in the other direction,
// then a HELLO once the first full picture is sent), so a publish nobody else wants never leaves its
// worker. Every publisher's frames travel one FIFO link and the hub forwards in arrival order, so
// messages from one publisher on one channel stay in order. The external engine (Redis), if any, is
// opened here with a host object: what it receives is routed as a publish from it.
import { unlinkSync } from "node:fs";
import type { Socket, UnixSocketListener } from "bun";
import { SETTLE_MS } from "../limits.ts";
import { log, logException } from "../log.ts";
import type { Message, Position } from "../types.ts";
import { BusError, messageOf, type FrameSink } from "./bus.ts";
import { FrameWriter } from "./bus-writer.ts";
import {
  CLUSTER,
  closeEngine,
  defaultEngine,
  openEngine,
  PendingCalls,
  PUBLISH_BYTES,
  tellEngine,
  watchDefaultEngine,
  historyOf,
  type BytesEngine,
  type EngineHost,
  type PubSubEngine,
} from "./engine-api.ts";
import { HubHistory } from "./hub-history.ts";
import { newPeer, runCommand, type Peer } from "./hub-peer.ts";
import { Wants } from "./hub-wants.ts";
import { Link } from "./link.ts";
import { attachRemote, deliverLocal, publish } from "./registry.ts";

/** The master's hub: routes every publish to the peers that want it, and to the external engine. */
export class Hub {
  #listener: UnixSocketListener<Peer> | undefined;
  #path: string;
  #peers = new Set<Peer>();
  #self: Peer = newPeer("master");
  /** who wants what: exact channels and patterns */
  #wants = new Wants();
  #stamp = 0;
  #scratch = new FrameWriter();
  /** the external engine (`Iodine.PubSub.default`): told what the cluster wants, handed every publish */
  #engine: PubSubEngine | undefined;
  /** the engine as the sender of what it receives (so the hub never hands it back) */
  #enginePeer: Peer = newPeer("engine");
  /** the sender of a history channel's sequenced message: nobody, so every process gets it */
  #keeperPeer: Peer = newPeer("history");
  #history = new HubHistory(
    (channel, bytes, text, position) => this.#routeAt(channel, bytes, text, position),
    (from) => this.#settled(from),
  );
  #unwatch: (() => void) | undefined;
  #detach: (() => void) | undefined;
  /** the engine's subscribe calls not confirmed yet */
  #pending = new PendingCalls();
  #nextSync = 0;
  /** what the engine is handed when it opens: what it receives goes to every process, not back to it */
  #host: EngineHost = {
    deliver: (channel, message) => void publish(channel, message, CLUSTER),
    deliverBytes: (channel, bytes, text) => {
      const at = this.#scratch.publish(channel, bytes, true, text);
      this.#route(this.#enginePeer, channel, this.#scratch.take(), at, !text, true, undefined);
    },
    deliverAt: (channel, bytes, text, position) => this.#routeAt(channel, bytes, text, position),
  };

  constructor(path: string) {
    this.#path = path;
  }

  /** Listens for workers, and connects the master's own registry (Iodine.subscribe in the master). */
  start(): void {
    const hub = this;
    this.#listener = Bun.listen<Peer>({
      unix: this.#path,
      socket: {
        open(socket) {
          const peer = newPeer("a worker");
          peer.link = new Link(hub.#sinkFor(peer), (bytes) => {
            log.error(
              `cluster bus: ${peer.name} is not reading (${bytes} bytes waiting); closing its link`,
            );
            socket.terminate();
          });
          socket.data = peer;
          hub.#peers.add(peer);
          // Everything wanted so far is wanted by others than this new peer; then HELLO: complete.
          if (hub.#engine !== undefined) peer.link.out.wantAll(true);
          for (const key of hub.#wants.byChannel.keys()) hub.#wants.tell(peer, key, false);
          for (const key of hub.#wants.byPattern.keys()) hub.#wants.tell(peer, key, true);
          peer.link.out.hello("hub");
          peer.link.attach(socket as Socket<unknown>);
        },
        data(socket, data) {
          try {
            socket.data.link!.receive(data);
          } catch (err) {
            log.error(
              `cluster bus: bad frame from ${socket.data.name} (${(err as Error).message}); closing its link`,
            );
            socket.terminate();
          }
        },
        drain(socket) {
          socket.data.link?.drain();
        },
        close(socket) {
          const peer = socket.data;
          if (peer === undefined) return;
          peer.link?.detach();
          hub.#drop(peer);
        },
        error() {},
      },
    });
    this.#detach = attachRemote({
      forward: (channel, message, clusterOnly) => this.#routeLocal(channel, message, clusterOnly),
      interest: (subscribe, key, pattern) => this.#interest(this.#self, subscribe, key, pattern),
      settled: () => this.#settled(this.#self),
      sequence: (channel, message, clusterOnly) =>
        this.#sequence(channel, message, typeof message === "string", clusterOnly, message),
      read: (channel, after) => this.#history.keeper.read(channel, after),
      count: (channel, n) => this.#history.count(this.#self, channel, n),
      presence: (channel) => this.#history.presence(this.#self, channel),
    });
    this.#useEngine(defaultEngine());
    this.#unwatch = watchDefaultEngine((engine) => this.#useEngine(engine));
  }

  /** Stops listening; resolves once the external engine closed. */
  stop(): Promise<void> {
    this.#detach?.();
    this.#detach = undefined;
    this.#unwatch?.();
    this.#unwatch = undefined;
    this.#listener?.stop(true);
    this.#listener = undefined;
    try {
      unlinkSync(this.#path);
    } catch {
      // already gone
    }
    const engine = this.#engine;
    this.#engine = undefined;
    this.#history.stop();
    return closeEngine(engine);
  }

  /** Attaches the external engine (or none): it learns everything wanted now; workers send it all. */
  #useEngine(engine: PubSubEngine | undefined): void {
    if (engine === this.#engine) return;
    const old = this.#engine;
    this.#engine = undefined;
    void closeEngine(old);
    if (engine !== undefined && openEngine(engine, this.#host)) {
      this.#engine = engine;
      this.#history.useEngine(engine);
      for (const key of this.#wants.byChannel.keys())
        this.#pending.add(tellEngine(engine, true, key, false));
      for (const key of this.#wants.byPattern.keys())
        this.#pending.add(tellEngine(engine, true, key, true));
    }
    if (this.#engine === undefined) this.#history.useEngine(undefined);
    if ((old === undefined) === (this.#engine === undefined)) return;
    for (const p of this.#peers) {
      p.link!.out.wantAll(this.#engine !== undefined);
      p.link!.flushSoon();
    }
  }

  /** Links connected now (workers and threads). */
  get size(): number {
    return this.#peers.size;
  }

  #sinkFor(peer: Peer): FrameSink {
    return {
      onPublish: (channel, frame, at, binary, clusterOnly, sequence) => {
        if (sequence) this.#sequence(channel, frame.subarray(at), !binary, clusterOnly, undefined);
        else this.#route(peer, channel, frame, at, binary, clusterOnly, undefined);
      },
      onPositioned: () => {
        throw new BusError("an HPUB frame from a worker");
      },
      onControl: (id, json) =>
        this.#history.control(
          peer,
          id,
          json,
          (ok, value) => this.#answer(peer, id, ok, value),
          (channel, bytes, text, position) => {
            peer.link!.out.positioned(channel, bytes, text, position, id);
            peer.link!.flushSoon();
          },
        ),
      onInterest: (subscribe, key, pattern) => this.#interest(peer, subscribe, key, pattern),
      onHello: (text) => {
        peer.name = text;
      },
      onWantAll: () => {
        throw new BusError("an ALL frame from a worker");
      },
      onCommand: (id, args) =>
        runCommand(this.#engine, args, (ok, value) => this.#answer(peer, id, ok, value)),
      // A worker's answer to the hub's SYNC (see #settled).
      onReply: (id) => {
        // An id no longer waited for is a late answer (the wait gave up after SETTLE_MS): nothing to do.
        const done = peer.syncs.get(id);
        if (done === undefined) return;
        peer.syncs.delete(id);
        done();
      },
      // Frames are handled in arrival order: everything this worker sent before is routed. The
      // answer waits until that is in effect everywhere: a subscription resolves then (SPEC §5).
      onSync: (id) => {
        void this.#settled(peer).then(() => {
          if (!this.#peers.has(peer)) return;
          peer.link!.out.reply(id, true, "null");
          peer.link!.flushSoon();
        });
      },
    };
  }

  /**
   * A publish from a worker (or the master: `message` given): to every other peer that wants it,
   * once, and to the external engine unless it was for the cluster only.
   */
  #route(
    from: Peer,
    channel: string,
    frame: Uint8Array,
    at: number,
    binary: boolean,
    clusterOnly: boolean,
    message: Message | undefined,
    position?: Position,
  ): void {
    const stamp = ++this.#stamp;
    from.stamp = stamp;
    const direct = this.#wants.byChannel.get(channel);
    if (direct !== undefined)
      for (const p of direct) this.#send(p, stamp, channel, frame, at, binary, position);
    if (this.#wants.byPattern.size > 0) {
      for (const entry of this.#wants.byPattern.values()) {
        if (entry.test(channel))
          for (const p of entry.peers) this.#send(p, stamp, channel, frame, at, binary, position);
      }
    }
    const engine = this.#engine;
    if (engine === undefined || clusterOnly) return;
    try {
      if (message !== undefined) engine.publish(channel, message);
      else if (PUBLISH_BYTES in engine)
        (engine as BytesEngine)[PUBLISH_BYTES](channel, frame.subarray(at));
      else engine.publish(channel, messageOf(frame, at, binary));
    } catch (err) {
      logException("the pub/sub engine's publish()", err);
    }
  }

  /** Sends a REPLY to a worker still linked (JSON: this is control, not payload). */
  #answer(peer: Peer, id: number, ok: boolean, value: unknown): void {
    if (!this.#peers.has(peer)) return;
    peer.link!.out.reply(id, ok, JSON.stringify(value));
    peer.link!.flushSoon();
  }

  /**
   * A history channel's message (not delivered anywhere yet): sequenced by the keeper, which hands
   * it to #routeAt with its position. An engine that keeps no history gets it as any publish.
   */
  #sequence(
    channel: string,
    bytes: Uint8Array | string,
    text: boolean,
    clusterOnly: boolean,
    message: Message | undefined,
  ): void {
    const engine = this.#engine;
    const local = clusterOnly || engine === undefined || historyOf(engine) === undefined;
    this.#history.keeper.publish(channel, bytes, text, local);
    if (engine === undefined || clusterOnly || !local) return;
    try {
      engine.publish(
        channel,
        message ??
          (text ? messageOf(bytes as Uint8Array, 0, false) : (bytes as Uint8Array).slice()),
      );
    } catch (err) {
      logException("the pub/sub engine's publish()", err);
    }
  }

  /** A sequenced message, with its position: to every process that wants it, its sender included. */
  #routeAt(channel: string, bytes: Uint8Array, text: boolean, position: Position): void {
    const at = this.#scratch.positioned(channel, bytes, text, position, 0);
    this.#route(
      this.#keeperPeer,
      channel,
      this.#scratch.take(),
      at,
      !text,
      true,
      undefined,
      position,
    );
  }

  #send(
    p: Peer,
    stamp: number,
    channel: string,
    frame: Uint8Array,
    at: number,
    binary: boolean,
    position: Position | undefined,
  ): void {
    if (p.stamp === stamp) return;
    p.stamp = stamp;
    if (p.link === undefined)
      deliverLocal(channel, messageOf(frame, at, binary), undefined, position);
    else {
      p.link.out.raw(frame);
      p.link.flushSoon();
    }
  }

  /** A publish in the master itself (already delivered to its own subscribers). */
  #routeLocal(channel: string, message: Message, clusterOnly: boolean): boolean {
    const at = this.#scratch.publish(channel, message, clusterOnly);
    this.#route(
      this.#self,
      channel,
      this.#scratch.take(),
      at,
      typeof message !== "string",
      clusterOnly,
      message,
    );
    return true;
  }

  #interest(peer: Peer, subscribe: boolean, key: string, pattern: boolean): void {
    const before = pattern ? this.#wants.byPattern.has(key) : this.#wants.byChannel.has(key);
    if (this.#wants.change(peer, subscribe, key, pattern))
      for (const p of this.#peers) this.#wants.tell(p, key, pattern);
    const after = pattern ? this.#wants.byPattern.has(key) : this.#wants.byChannel.has(key);
    if (before !== after && this.#engine !== undefined)
      this.#pending.add(tellEngine(this.#engine, after, key, pattern));
  }

  /**
   * Resolves once what the hub has sent so far is taken everywhere: every other worker answered a
   * SYNC sent after it (so each knows who wants what), and the engine confirmed its subscribe calls.
   * A worker that does not answer within SETTLE_MS is not waited for (stuck, or going away).
   */
  #settled(from: Peer): Promise<void> {
    const others = [...this.#peers].filter((p) => p !== from && p.link?.socket !== undefined);
    return Promise.all([...others.map((p) => this.#syncPeer(p)), this.#pending.settled()]).then(
      () => {},
    );
  }

  #syncPeer(p: Peer): Promise<void> {
    return new Promise<void>((resolve) => {
      const id = (this.#nextSync = (this.#nextSync + 1) >>> 0);
      const timer = setTimeout(() => {
        p.syncs.delete(id);
        resolve();
      }, SETTLE_MS);
      p.syncs.set(id, () => {
        clearTimeout(timer);
        resolve();
      });
      p.link!.out.sync(id);
      p.link!.flushSoon();
    });
  }

  #drop(peer: Peer): void {
    this.#peers.delete(peer);
    this.#history.drop(peer);
    for (const done of peer.syncs.values()) done();
    peer.syncs.clear();
    for (const key of [...peer.channels]) this.#interest(peer, false, key, false);
    for (const key of [...peer.patterns]) this.#interest(peer, false, key, true);
  }
}
