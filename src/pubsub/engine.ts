// The cluster engine (the default, SPEC §5): pub/sub across the processes of one cluster over the
// bus. Each worker (and thread) holds one link to the master's hub and tells it which channels and
// patterns it wants; the hub forwards a publish only to the links that want it, byte for byte as
// it came, and to the master's own subscribers. The hub in turn tells each worker which channels and
// patterns the *other* processes want (SUB/UNSUB frames in the other direction, then a HELLO once
// the first full picture is sent), so a publish nobody else wants never leaves its worker. Every publisher's frames travel one FIFO link and
// the hub forwards in arrival order, so messages from one publisher on one channel stay in order.
import { unlinkSync } from "node:fs";
import type { Socket, UnixSocketListener } from "bun";
import { FrameWriter, Link, messageOf, type FrameSink } from "../cluster/bus.ts";
import { log } from "../log.ts";
import type { Message } from "../types.ts";
import { deliverLocal, interests, setRemote } from "./index.ts";
import { compileGlob } from "./match.ts";

// --- the worker side ---

/** A worker's link to the hub; reconnects by itself until `leave()`. */
export interface ClusterMember {
  leave(): void;
}

/**
 * Joins the cluster whose hub listens on `path`. `onLinkLost` runs when the link drops (the worker
 * checks whether its master is still alive); the link is re-established after `retryMs`.
 */
export function joinCluster(path: string, name: string, onLinkLost: () => void, retryMs = 100): ClusterMember {
  let leaving = false;
  let everConnected = false;
  // What the other processes want, as the hub says. Until its first full picture arrived (and
  // while the link is down) every publish is forwarded: too much is safe, too little is not.
  let knowsOthers = false;
  const othersWant = new Set<string>();
  const othersMatch = new Map<string, (channel: string) => boolean>();
  const wanted = (channel: string): boolean => {
    if (!knowsOthers || othersWant.has(channel)) return true;
    if (othersMatch.size > 0) for (const test of othersMatch.values()) if (test(channel)) return true;
    return false;
  };
  const sink: FrameSink = {
    onPublish(channel, frame, at, binary) {
      deliverLocal(channel, messageOf(frame, at, binary));
    },
    onInterest(subscribe, key, pattern) {
      if (pattern) {
        if (subscribe) othersMatch.set(key, compileGlob(key));
        else othersMatch.delete(key);
      } else if (subscribe) othersWant.add(key);
      else othersWant.delete(key);
    },
    onHello() {
      knowsOthers = true;
    },
  };
  const link = new Link(sink, (bytes) => {
    log.error(`cluster bus: the master is not reading (${bytes} bytes waiting); reconnecting`);
    link.socket?.terminate();
  });
  // Everything this process wants goes first on every (re)connection, then the messages published
  // while the link was down. Interest changes meanwhile are not queued: the replay has them.
  const greet = () => {
    const waiting = link.out.take().slice();
    link.out.hello(name);
    for (const i of interests()) link.out.interest(true, i.key, i.pattern);
    link.out.raw(waiting);
  };
  setRemote({
    forward(channel: string, message: Message) {
      if (!wanted(channel)) return;
      link.out.publish(channel, message);
      link.flushSoon();
    },
    interest(subscribe: boolean, key: string, pattern: boolean) {
      if (link.socket === undefined) return;
      link.out.interest(subscribe, key, pattern);
      link.flushSoon();
    },
  });
  const connect = () => {
    Bun.connect({
      unix: path,
      socket: {
        open(socket) {
          if (everConnected) log.info("cluster bus: link to the master restored");
          everConnected = true;
          // The hub sends its picture afresh on every link.
          knowsOthers = false;
          othersWant.clear();
          othersMatch.clear();
          greet();
          link.attach(socket as Socket<unknown>);
        },
        data(socket, data) {
          try {
            link.reader.push(data);
          } catch (err) {
            log.error(`cluster bus: bad frame from the master (${(err as Error).message}); reconnecting`);
            socket.terminate();
          }
        },
        drain() {
          link.drain();
        },
        close() {
          link.detach();
          knowsOthers = false;
          if (leaving) return;
          onLinkLost();
          setTimeout(connect, retryMs);
        },
        error() {},
      },
    }).catch((err: Error) => {
      if (leaving) return;
      if (!everConnected) log.debug(`cluster bus: cannot reach the master yet (${err.message})`);
      onLinkLost();
      setTimeout(connect, retryMs);
    });
  };
  connect();
  return {
    leave() {
      leaving = true;
      setRemote(undefined);
      link.socket?.end();
    },
  };
}

// --- the master side ---

function newPeer(name: string): Peer {
  return { name, link: undefined, channels: new Set(), patterns: new Set(), toldChannels: new Set(), toldPatterns: new Set(), stamp: 0 };
}

interface Peer {
  name: string;
  /** undefined for the master's own subscribers */
  link: Link | undefined;
  channels: Set<string>;
  patterns: Set<string>;
  /** what this peer was told the others want (see `#tell`) */
  toldChannels: Set<string>;
  toldPatterns: Set<string>;
  /** the publish that last reached this peer (dedupe without allocating) */
  stamp: number;
}

/** The master's hub: routes every publish to the peers that want it. */
export class Hub {
  #listener: UnixSocketListener<Peer> | undefined;
  #path: string;
  #peers = new Set<Peer>();
  #self: Peer = newPeer("master");
  #byChannel = new Map<string, Set<Peer>>();
  #byPattern = new Map<string, { test: (channel: string) => boolean; peers: Set<Peer> }>();
  #stamp = 0;
  #scratch = new FrameWriter();

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
            log.error(`cluster bus: ${peer.name} is not reading (${bytes} bytes waiting); closing its link`);
            socket.terminate();
          });
          socket.data = peer;
          hub.#peers.add(peer);
          // Everything wanted so far is wanted by others than this new peer; then HELLO: complete.
          for (const key of hub.#byChannel.keys()) hub.#tell(peer, key, false);
          for (const key of hub.#byPattern.keys()) hub.#tell(peer, key, true);
          peer.link.out.hello("hub");
          peer.link.attach(socket as Socket<unknown>);
        },
        data(socket, data) {
          try {
            socket.data.link!.reader.push(data);
          } catch (err) {
            log.error(`cluster bus: bad frame from ${socket.data.name} (${(err as Error).message}); closing its link`);
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
    setRemote({
      forward: (channel, message) => this.#routeLocal(channel, message),
      interest: (subscribe, key, pattern) => this.#interest(this.#self, subscribe, key, pattern),
    });
  }

  stop(): void {
    setRemote(undefined);
    this.#listener?.stop(true);
    this.#listener = undefined;
    try {
      unlinkSync(this.#path);
    } catch {
      // already gone
    }
  }

  /** Links connected now (workers and threads). */
  get size(): number {
    return this.#peers.size;
  }

  #sinkFor(peer: Peer): FrameSink {
    return {
      onPublish: (channel, frame, at, binary) => this.#route(peer, channel, frame, at, binary),
      onInterest: (subscribe, key, pattern) => this.#interest(peer, subscribe, key, pattern),
      onHello: (text) => {
        peer.name = text;
      },
    };
  }

  /** A publish from a worker: to every other peer that wants it, once. */
  #route(from: Peer, channel: string, frame: Uint8Array, at: number, binary: boolean): void {
    const stamp = ++this.#stamp;
    from.stamp = stamp;
    const direct = this.#byChannel.get(channel);
    if (direct !== undefined) for (const p of direct) this.#send(p, stamp, channel, frame, at, binary);
    if (this.#byPattern.size > 0) {
      for (const entry of this.#byPattern.values()) {
        if (entry.test(channel)) for (const p of entry.peers) this.#send(p, stamp, channel, frame, at, binary);
      }
    }
  }

  #send(p: Peer, stamp: number, channel: string, frame: Uint8Array, at: number, binary: boolean): void {
    if (p.stamp === stamp) return;
    p.stamp = stamp;
    if (p.link === undefined) deliverLocal(channel, messageOf(frame, at, binary));
    else {
      p.link.out.raw(frame);
      p.link.flushSoon();
    }
  }

  /** A publish in the master itself (already delivered to its own subscribers). */
  #routeLocal(channel: string, message: Message): void {
    const at = this.#scratch.publish(channel, message);
    this.#route(this.#self, channel, this.#scratch.take(), at, typeof message !== "string");
  }

  #interest(peer: Peer, subscribe: boolean, key: string, pattern: boolean): void {
    if (pattern) {
      if (subscribe === peer.patterns.has(key)) return;
      let entry = this.#byPattern.get(key);
      if (subscribe) {
        peer.patterns.add(key);
        if (entry === undefined) this.#byPattern.set(key, (entry = { test: compileGlob(key), peers: new Set() }));
        entry.peers.add(peer);
      } else {
        peer.patterns.delete(key);
        entry?.peers.delete(peer);
        if (entry?.peers.size === 0) this.#byPattern.delete(key);
      }
    } else {
      if (subscribe === peer.channels.has(key)) return;
      let set = this.#byChannel.get(key);
      if (subscribe) {
        peer.channels.add(key);
        if (set === undefined) this.#byChannel.set(key, (set = new Set()));
        set.add(peer);
      } else {
        peer.channels.delete(key);
        set?.delete(peer);
        if (set?.size === 0) this.#byChannel.delete(key);
      }
    }
    for (const p of this.#peers) this.#tell(p, key, pattern);
  }

  /** Tells a worker whether processes other than itself want `key`, if that changed. */
  #tell(p: Peer, key: string, pattern: boolean): void {
    const holders = pattern ? this.#byPattern.get(key)?.peers : this.#byChannel.get(key);
    const others = holders === undefined ? 0 : holders.size - (holders.has(p) ? 1 : 0);
    const told = pattern ? p.toldPatterns : p.toldChannels;
    if (others > 0 === told.has(key)) return;
    if (others > 0) told.add(key);
    else told.delete(key);
    p.link!.out.interest(others > 0, key, pattern);
    p.link!.flushSoon();
  }

  #drop(peer: Peer): void {
    this.#peers.delete(peer);
    for (const key of [...peer.channels]) this.#interest(peer, false, key, false);
    for (const key of [...peer.patterns]) this.#interest(peer, false, key, true);
  }
}
