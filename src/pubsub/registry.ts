// Pub/sub inside one process (SPEC §5). WebSocket subscribers without a callback ride Bun's native
// topics (`ws.subscribe` + `server.publish`: the fan-out happens in C++); callbacks, patterns,
// SSE and raw subscribers live in a JS registry that costs one Map lookup per exact-channel
// publish when nobody matches, plus one test per pattern subscription. In a cluster the registry
// also tells its remote link (remote-link.ts: the hub, the member or the single-process engine
// driver) which channels and patterns this process wants, and hands it every local publish to
// forward; messages from other processes come in through deliverLocal.
import { counts } from "../metrics/counters.ts";
import type { Server } from "bun";
import { logException } from "../log.ts";
import type {
  Connection,
  Message,
  Position,
  ProcessSubscribeCallback,
  Subscribed,
  SubscribeCallback,
  SubscribeOptions,
} from "../types.ts";
import {
  CLUSTER,
  defaultEngine,
  DONE,
  PROCESS,
  type PubSubEngine,
  type PubSubScope,
  type Retained,
} from "./engine-api.ts";
import { compileGlob } from "./match.ts";
import { OutgoingCheck, type OutgoingChecked } from "./outgoing.ts";
import { BunApps, sizeOf } from "./bun-apps.ts";
import { RemoteLink, type Remote } from "./remote-link.ts";
import { anyHistory, historyFor } from "./history.ts";
import { Keeper } from "./keeper.ts";
import { LIVE, recover, sinceOf, type Since } from "./recovery.ts";
import type { NativeTopics, Subscriber, Subscription } from "./subscription.ts";

export type { NativeTopics, Subscriber, Subscription };

const exact = new Map<string, Set<Subscription>>();
const patterns = new Map<string, { test: (channel: string) => boolean; subs: Set<Subscription> }>();
/** channels with native (iodine) WebSocket subscribers, and who they are */
const nativeSubs = new Map<string, Set<NativeTopics>>();
/** checks the native subscribers of what was published, once per burst (outgoing.ts) */
const outgoing = new OutgoingCheck((channel) => nativeSubs.get(channel));
/** the process's own subscriptions (`Iodine.subscribe`), by key */
const processSubs = new Map<string, Subscription>();

/** the rest of the cluster (or the engine of a single process), once its one owner attached it */
const link = new RemoteLink();
/** a process alone keeps its history channels itself */
let keeper: Keeper | undefined;
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const keeperHere = (): Keeper =>
  (keeper ??= new Keeper((channel, bytes, text, position) =>
    deliverLocal(channel, text ? decoder.decode(bytes) : bytes, undefined, position),
  ));
/** Bun-native apps' servers, sockets and topics (bun-apps.ts), which reach the registry through this port */
const bunApps = new BunApps({
  deliverLocal: (channel, message, covered) => deliverLocal(channel, message, covered),
  forward: (channel, message) =>
    link.remote !== undefined && link.remote.forward(channel, message, false),
  touch: (channel) => touch(channel),
  linked: () => link.remote !== undefined,
  kept: (channel) => anyHistory && historyFor(channel) !== undefined,
  publish: (channel, message) => void publish(channel, message),
});
export const attachServer = bunApps.attachServer;
export const publishFromApp = bunApps.publishFromApp;
export const watchBunSocket = bunApps.watchSocket;
export const bunTopicsMayEnd = bunApps.topicsMayEnd;

const isPattern = (o: SubscribeOptions | undefined) => o?.match === "redis";
/** A subscription's key in a connection's `subscriptions`: the channel, or the marked pattern. */
export const keyOf = (channel: string, o: SubscribeOptions | undefined): string =>
  isPattern(o) ? "\u0000p:" + channel : channel;

/**
 * `Iodine.publish`: delivers to every subscriber in this process, in publish order, and hands the
 * message to the rest of the cluster and the external engine (`to` narrows that: CLUSTER, PROCESS;
 * an engine other than the default gets the message itself and nothing is delivered here).
 */
export function publish(
  channel: string,
  message: Message,
  to?: PubSubEngine | PubSubScope,
): boolean {
  checkChannel("Iodine.publish", channel);
  if (typeof message !== "string" && !(message instanceof Uint8Array)) {
    throw new TypeError(
      `Iodine.publish: "message" must be a string or a Uint8Array, got ${typeof message}`,
    );
  }
  if (to !== undefined && to !== CLUSTER && to !== PROCESS && to !== defaultEngine()) {
    if (typeof (to as PubSubEngine).publish !== "function") {
      throw new TypeError(
        "Iodine.publish: the engine must be Iodine.PubSub.CLUSTER, PROCESS or an engine with a publish method",
      );
    }
    (to as PubSubEngine).publish(channel, message);
    return true;
  }
  counts.published++;
  // A history channel's messages are sequenced where its history lives, then delivered (here too).
  if (anyHistory && to !== PROCESS && historyFor(channel) !== undefined) {
    if (link.remote !== undefined) link.remote.sequence(channel, message, to === CLUSTER);
    else keeperHere().publish(channel, message, typeof message === "string", false);
    return true;
  }
  deliverLocal(channel, message);
  if (link.remote !== undefined && to !== PROCESS)
    link.remote.forward(channel, message, to === CLUSTER);
  return true;
}

/**
 * Delivers to this process's subscribers only: a local publish, or one that came from another
 * process. `covered`: a server whose topic subscribers Bun's own `ws.publish` already reached.
 * Returns the bytes Bun sent, or the message's size when a JS subscriber got it, else 0.
 */
export function deliverLocal(
  channel: string,
  message: Message,
  covered?: Server<unknown>,
  position?: Position,
): number {
  let sent = 0;
  const natives = nativeSubs.get(channel);
  if (bunApps.hasServers) sent = bunApps.deliver(channel, message, natives !== undefined, covered);
  if (natives !== undefined) outgoing.watch(channel);
  const subs = exact.get(channel);
  counts.delivered += (natives?.size ?? 0) + (subs?.size ?? 0);
  if (subs !== undefined) {
    for (const s of subs) safely(s, channel, message, position);
    if (subs.size > 0 && sent <= 0) sent = sizeOf(message);
  }
  if (patterns.size > 0) {
    for (const p of patterns.values()) {
      if (!p.test(channel)) continue;
      for (const s of p.subs) safely(s, channel, message, position);
      counts.delivered += p.subs.size;
      if (p.subs.size > 0 && sent <= 0) sent = sizeOf(message);
    }
  }
  return sent;
}

// --- cluster interest ---

/**
 * Connects the registry to the cluster: the remote hears every interest from now on (and the current
 * ones). One owner at a time (another attach throws until it detaches); returns the detach.
 */
export function attachRemote(remote: Remote): () => void {
  const detach = link.attach(remote);
  for (const ch of new Set([...exact.keys(), ...nativeSubs.keys(), ...bunApps.topics])) touch(ch);
  for (const p of patterns.keys()) touchPattern(p);
  return detach;
}

/** Every channel and pattern this process wants, for a link that (re)connects. */
export function interests(): { key: string; pattern: boolean }[] {
  return link.interests();
}

/** After a channel's subscribers changed: tells the remote if this process now wants it, or stopped. */
function touch(channel: string): void {
  const remote = link.remote;
  if (remote === undefined) return;
  link.announce(
    channel,
    exact.has(channel) || nativeSubs.has(channel) || bunApps.topics.has(channel),
    false,
  );
  remote.count(channel, countHere(channel));
}

/** Subscriptions to exactly `channel` in this process (connections' and the process's own). */
function countHere(channel: string): number {
  return (exact.get(channel)?.size ?? 0) + (nativeSubs.get(channel)?.size ?? 0);
}

/** `Iodine.presence`: subscriptions to exactly `channel` in the cluster (and on Redis, every cluster). */
export function presence(channel: string): Promise<number> {
  checkChannel("Iodine.presence", channel);
  const remote = link.remote;
  return remote === undefined ? Promise.resolve(countHere(channel)) : remote.presence(channel);
}

function touchPattern(pattern: string): void {
  if (link.remote === undefined) return;
  link.announce(pattern, patterns.has(pattern), true);
}

/**
 * Resolves once this process's interests told so far are in effect everywhere (every process of the
 * cluster, and Redis when an engine is attached); at once in a process alone.
 */
function inEffect(): Promise<void> {
  return link.remote === undefined ? DONE : link.remote.settled();
}

const SETTLED_LIVE = Promise.resolve(LIVE);
/** What a subscribe resolves to: in effect everywhere, and with `since`, the history replayed first. */
function subscribed(
  sub: Subscription,
  channel: string,
  since: Since | undefined,
): Promise<Subscribed> {
  if (since !== undefined) return recover(sub, channel, since, inEffect(), readHistory, safely);
  return link.remote === undefined ? SETTLED_LIVE : link.remote.settled().then(() => LIVE);
}

const readHistory = (channel: string, after: number) =>
  link.remote !== undefined ? link.remote.read(channel, after) : keeperHere().read(channel, after);

/** A history channel's last position now (undefined if unreadable): where a resuming subscriber started. */
export function historyTop(channel: string): Promise<Position | undefined> {
  const top = (r: Retained) => ({ epoch: r.epoch, offset: r.top });
  return readHistory(channel, Number.MAX_SAFE_INTEGER).then(top, () => undefined);
}

/** `Iodine.subscribe`: a process-level subscription; a callback is required. Resolves once it is in effect everywhere. */
export function subscribeProcess(
  channel: string,
  options: SubscribeOptions | undefined,
  callback: ProcessSubscribeCallback,
): Promise<Subscribed> {
  checkChannel("Iodine.subscribe", channel);
  if (typeof callback !== "function")
    throw new TypeError(`Iodine.subscribe: "callback" must be a function, got ${typeof callback}`);
  const since = sinceOf("Iodine.subscribe", channel, options, undefined);
  const key = keyOf(channel, options);
  const old = processSubs.get(key);
  if (old) remove(old);
  const sub: Subscription = {
    key: channel,
    options,
    native: false,
    deliver: (ch, m, p) => callback(ch, m, p),
    held: since === undefined ? undefined : [],
  };
  processSubs.set(key, sub);
  add(sub);
  return subscribed(sub, channel, since);
}

export function unsubscribeProcess(channel: string, options?: SubscribeOptions): boolean {
  const key = keyOf(channel, options);
  const sub = processSubs.get(key);
  if (!sub) return false;
  processSubs.delete(key);
  remove(sub);
  return true;
}

/** `client.subscribe`: written to the connection unless a callback is given (SPEC §5). Resolves once it is in effect everywhere. */
export function subscribeConnection(
  conn: Connection & { readonly subscriptions: Map<string, Subscription> },
  channel: string,
  options: SubscribeOptions | undefined,
  callback: SubscribeCallback | undefined,
): Promise<Subscribed> {
  checkChannel("client.subscribe", channel);
  if (callback !== undefined && typeof callback !== "function") {
    throw new TypeError(`client.subscribe: "callback" must be a function, got ${typeof callback}`);
  }
  if (!conn.isOpen) return SETTLED_LIVE;
  const since = sinceOf(
    "client.subscribe",
    channel,
    options,
    (conn as Partial<Subscriber>).defaultSince?.bind(conn),
  );
  const key = keyOf(channel, options);
  const old = conn.subscriptions.get(key);
  if (old) dropConnectionSub(conn, key, old);
  const native =
    callback === undefined &&
    since === undefined &&
    !isPattern(options) &&
    options?.as !== "binary" &&
    "nativeSubscribe" in conn;
  const sub: Subscription = {
    key: channel,
    options,
    native,
    deliver: callback
      ? (ch, m, p) => callback(ch, m, conn, p)
      : (ch, m, p) => (conn as unknown as Subscriber).deliver(m, options, ch, p),
    held: since === undefined ? undefined : [],
  };
  conn.subscriptions.set(key, sub);
  if (native) {
    (conn as unknown as NativeTopics).nativeSubscribe(channel);
    let set = nativeSubs.get(channel);
    if (!set) nativeSubs.set(channel, (set = new Set()));
    set.add(conn as unknown as NativeTopics);
    touch(channel);
  } else add(sub);
  return subscribed(sub, channel, since);
}

export function unsubscribeConnection(
  conn: Connection & { readonly subscriptions: Map<string, Subscription> },
  channel: string,
  options?: SubscribeOptions,
): boolean {
  const key = keyOf(channel, options);
  const sub = conn.subscriptions.get(key);
  if (!sub) return false;
  dropConnectionSub(conn, key, sub);
  return true;
}

// --- internal ---

function dropConnectionSub(
  conn: Connection & { readonly subscriptions: Map<string, Subscription> },
  key: string,
  sub: Subscription,
): void {
  conn.subscriptions.delete(key);
  sub.dropped = true;
  if (!sub.native) return remove(sub);
  const set = nativeSubs.get(sub.key);
  set?.delete(conn as unknown as NativeTopics);
  if (set?.size === 0) nativeSubs.delete(sub.key);
  (conn as unknown as NativeTopics).nativeUnsubscribe(sub.key);
  touch(sub.key);
}

function add(sub: Subscription): void {
  if (isPattern(sub.options)) {
    let p = patterns.get(sub.key);
    if (!p) patterns.set(sub.key, (p = { test: compileGlob(sub.key), subs: new Set() }));
    p.subs.add(sub);
    return touchPattern(sub.key);
  }
  let set = exact.get(sub.key);
  if (!set) exact.set(sub.key, (set = new Set()));
  set.add(sub);
  touch(sub.key);
}

function remove(sub: Subscription): void {
  sub.dropped = true;
  const table = isPattern(sub.options) ? patterns : exact;
  const entry = table.get(sub.key);
  const set = entry instanceof Set ? entry : entry?.subs;
  if (!set) return;
  set.delete(sub);
  if (set.size === 0) table.delete(sub.key);
  if (table === patterns) touchPattern(sub.key);
  else touch(sub.key);
}

function safely(
  sub: Subscription,
  channel: string,
  message: Message,
  position: Position | undefined,
): void {
  if (sub.held !== undefined) {
    sub.held.push(channel, message, position);
    return;
  }
  if (position !== undefined) sub.position = position;
  try {
    const r = sub.deliver(channel, message, position) as unknown;
    if (r instanceof Promise)
      r.catch((err) => logException(`subscription to ${JSON.stringify(sub.key)}`, err));
  } catch (err) {
    logException(`subscription to ${JSON.stringify(sub.key)}`, err);
  }
}

function checkChannel(where: string, channel: unknown): asserts channel is string {
  if (typeof channel !== "string")
    throw new TypeError(`${where}: "channel" must be a string, got ${typeof channel}`);
}
