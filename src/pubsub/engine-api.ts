// Pub/sub engines (SPEC §5): what carries a publish beyond this cluster. The cluster itself (the
// bus: hub.ts in the master, member.ts in each worker) is always there; an external engine — Redis
// (redis.ts, redis-sharded.ts) or one an app writes — is attached by the process that holds the whole
// cluster's interest: the master (hub.ts), or a single process (single.ts). That process opens the
// engine with a host object, tells it which channels and patterns the cluster wants and hands it every
// publish made in the cluster; the engine hands what it receives to `host.deliver`. An engine never
// imports the process that holds it.
import { logException } from "../log.ts";
import type { Position, PubSubEngine, PubSubEngineHost, PubSubScope } from "../types.ts";

export type { Position, PubSubEngine, PubSubEngineHost, PubSubScope };

/** Every process of this cluster, not the external engine (the default when none is set). */
export const CLUSTER: PubSubScope = Object.freeze({ scope: "cluster" });
/** This process only. */
export const PROCESS: PubSubScope = Object.freeze({ scope: "process" });

// --- what iodine's own engines use besides the public interface ---

/**
 * Internal fast path an engine may implement (the Redis engine does): a publish of the cluster as its
 * UTF-8 or raw bytes, valid only during the call, instead of a decoded message.
 */
export const PUBLISH_BYTES: unique symbol = Symbol("iodine.publishBytes");
export interface BytesEngine extends PubSubEngine {
  [PUBLISH_BYTES](channel: string, bytes: Uint8Array): void;
}

/** The host iodine hands every engine: `deliver`, and a fast path its own engines use. */
export interface EngineHost extends PubSubEngineHost {
  /** A message received as bytes (`text`: they are valid UTF-8), handed on without decoding them here. */
  deliverBytes(channel: string, bytes: Uint8Array, text: boolean): void;
  /** A message of a history channel, with the position the engine's store gave it (bytes as above). */
  deliverAt(channel: string, bytes: Uint8Array, text: boolean, position: Position): void;
}

/**
 * Internal: an engine that keeps history and presence itself (the Redis engine does: SPEC §5), so
 * every cluster on it shares one sequence per channel. `engine[HISTORY_API]` is that part of it.
 */
export const HISTORY_API: unique symbol = Symbol("iodine.historyApi");
export interface HistoryEngine extends PubSubEngine {
  readonly [HISTORY_API]: EngineHistory;
}

/** What a store holds of one channel after a position (SPEC §5 history). */
export interface Retained {
  epoch: string;
  /** the offset of the channel's last message (0: none yet) */
  top: number;
  /** the offset of the oldest message still retained (`top + 1` when none is) */
  first: number;
  /** the retained messages after the offset asked for, oldest first */
  entries: { offset: number; bytes: Uint8Array; text: boolean }[];
}

export interface EngineHistory {
  /** False while the engine cannot take a history publish (Redis away): the master keeps it then. */
  readonly available: boolean;
  /**
   * Appends `bytes` (the engine's to keep) to the channel's history (keeping the last `size` for
   * `ttlMs`) and publishes it with its position, in one step; every cluster subscribed to the channel
   * gets it through `host.deliverAt` (this one too: nothing is delivered here). Resolves once the
   * engine took it; rejects when it could not (the caller keeps it then). Appends of one turn may
   * share one promise: the caller then handles the batch once.
   */
  append(
    channel: string,
    bytes: Uint8Array,
    text: boolean,
    size: number,
    ttlMs: number,
  ): Promise<void>;
  /**
   * The caller kept a message of `channel` itself (the engine was not available, or rejected the
   * append): the engine's history of the channel now lacks it, so its next append starts a new epoch.
   */
  missed(channel: string): void;
  /** What the channel still retains after `after` (messages older than `ttlMs` are not). */
  read(channel: string, after: number, ttlMs: number): Promise<Retained>;
  /** This cluster's number of subscriptions per channel changed: only the changed ones, 0 for none left. */
  counts(changed: ReadonlyMap<string, number>): void;
  /** Subscriptions to `channel` in every cluster on the engine that is still alive (this one's included). */
  presence(channel: string): Promise<number>;
}

export function historyOf(engine: PubSubEngine | undefined): EngineHistory | undefined {
  return engine !== undefined && HISTORY_API in engine
    ? (engine as HistoryEngine)[HISTORY_API]
    : undefined;
}

/** Runs a command (a `redis.cmd(...)` as strings) on the master's engine; resolves to its reply. */
export type Relay = (args: string[]) => Promise<unknown>;

/**
 * In a cluster worker the default engine is never opened: a worker lends it, through this method,
 * the way to run its `cmd` in the master (the cluster keeps its two Redis connections), and takes it
 * back (undefined) when it leaves or another engine becomes the default.
 */
export const USE_RELAY: unique symbol = Symbol("iodine.useRelay");
export interface RelayingEngine {
  [USE_RELAY](relay: Relay | undefined): void;
}

// --- Iodine.PubSub.default ---

let current: PubSubEngine | undefined;
const watchers: ((engine: PubSubEngine | undefined, old: PubSubEngine | undefined) => void)[] = [];

/** The external engine set as `Iodine.PubSub.default`, if any. */
export function defaultEngine(): PubSubEngine | undefined {
  return current;
}

/** `Iodine.PubSub.default = engine` (CLUSTER for no external engine). */
export function setDefaultEngine(engine: PubSubEngine | PubSubScope | undefined): void {
  const next = engine === undefined || engine === CLUSTER ? undefined : engine;
  if (next === PROCESS || (next !== undefined && !isEngine(next))) {
    throw new TypeError(
      "Iodine.PubSub.default must be Iodine.PubSub.CLUSTER or an engine with subscribe, psubscribe, unsubscribe and publish methods",
    );
  }
  if (next === current) return;
  const old = current;
  current = next as PubSubEngine | undefined;
  for (const w of watchers) w(current, old);
}

/** Runs `fn` whenever `Iodine.PubSub.default` changes (the attaching process follows it). */
export function watchDefaultEngine(
  fn: (engine: PubSubEngine | undefined, old: PubSubEngine | undefined) => void,
): () => void {
  watchers.push(fn);
  return () => {
    const i = watchers.indexOf(fn);
    if (i >= 0) watchers.splice(i, 1);
  };
}

export function isEngine(x: unknown): x is PubSubEngine {
  if (typeof x !== "object" || x === null) return false;
  const e = x as Record<string, unknown>;
  return ["subscribe", "psubscribe", "unsubscribe", "publish"].every(
    (m) => typeof e[m] === "function",
  );
}

/** How the engine names itself on a start-up line ("Redis", "Redis Cluster"). */
export function engineLabel(engine: PubSubEngine): string {
  return typeof engine.label === "string" && engine.label !== "" ? engine.label : "custom engine";
}

/** Lends (or takes back) a worker's relay to an engine that can use one. */
export function lendRelay(engine: PubSubEngine | undefined, relay: Relay | undefined): void {
  if (engine !== undefined && USE_RELAY in engine)
    (engine as PubSubEngine & RelayingEngine)[USE_RELAY](relay);
}

// --- calling an engine (a method that throws or rejects is logged, never thrown into iodine) ---

/** True when the engine opened (or has no `open`). */
export function openEngine(engine: PubSubEngine, host: EngineHost): boolean {
  try {
    engine.open?.(host);
    return true;
  } catch (err) {
    logException("the pub/sub engine's open()", err);
    return false;
  }
}

export async function closeEngine(engine: PubSubEngine | undefined): Promise<void> {
  try {
    await engine?.close?.();
  } catch (err) {
    logException("the pub/sub engine's close()", err);
  }
}

/** The cluster starts (`subscribe`) or stops wanting a channel or pattern. */
/**
 * Tells the engine what the cluster now wants; resolves once the engine says it is in place (an
 * engine whose calls return nothing: at once), never rejects (a failure is logged).
 */
export function tellEngine(
  engine: PubSubEngine,
  subscribe: boolean,
  key: string,
  pattern: boolean,
): Promise<void> {
  if (!subscribe) return callEngine(engine, "unsubscribe", () => engine.unsubscribe(key, pattern));
  if (pattern) return callEngine(engine, "psubscribe", () => engine.psubscribe(key));
  return callEngine(engine, "subscribe", () => engine.subscribe(key));
}

export function callEngine(engine: PubSubEngine, what: string, fn: () => unknown): Promise<void> {
  try {
    const r = fn();
    if (r instanceof Promise)
      return r.then(noop, (err: unknown) => logException(`the pub/sub engine's ${what}()`, err));
  } catch (err) {
    logException(`the pub/sub engine's ${what}()`, err);
  }
  return DONE;
}
const noop = () => {};
/** An engine call, or a subscription, that has nothing to wait for: already settled. */
export const DONE = Promise.resolve();

/** Engine calls still under way (subscriptions Redis has not confirmed yet), to wait for as a whole. */
export class PendingCalls {
  #calls = new Set<Promise<void>>();

  add(call: Promise<void>): void {
    if (call === DONE) return;
    this.#calls.add(call);
    void call.then(() => this.#calls.delete(call));
  }

  /** Resolves once every call added so far has settled. */
  settled(): Promise<void> {
    return this.#calls.size === 0 ? DONE : Promise.all(this.#calls).then(noop);
  }
}
