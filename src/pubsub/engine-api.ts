// Pub/sub engines (SPEC §5): what carries a publish beyond this cluster. The cluster engine (the
// bus, pubsub/engine.ts) is always there; an external engine — Redis (pubsub/redis.ts) or one an
// app writes — is attached by the process that holds the whole cluster's interest: the master, or
// a single process. That process tells the engine which channels and patterns the cluster wants and
// hands it every publish made in the cluster; the engine hands what it receives back with
// `Iodine.publish(channel, message, Iodine.PubSub.CLUSTER)`.
import type { Message } from "../types.ts";

/**
 * An external pub/sub engine. iodine calls it only in the process that holds the cluster's
 * interest (the master, or the single process):
 * - `subscribe`/`psubscribe` when the first process of the cluster starts wanting a channel or a
 *   Redis glob pattern, `unsubscribe` when the last one stops (`pattern` says which kind);
 * - `publish` with every message published in the cluster (except those published with
 *   `Iodine.PubSub.CLUSTER` or `PROCESS`), after it was delivered inside the cluster.
 * Messages the engine receives from elsewhere go to the cluster with
 * `Iodine.publish(channel, message, Iodine.PubSub.CLUSTER)`. A method that throws is logged.
 */
export interface PubSubEngine {
  subscribe(channel: string): void;
  psubscribe(pattern: string): void;
  unsubscribe(channel: string, pattern: boolean): void;
  publish(channel: string, message: Message): void;
  /** optional: iodine starts using the engine in this process (before the first subscribe) */
  open?(): void;
  /** optional: iodine stops using it (the process stops, or another engine became the default) */
  close?(): void | Promise<void>;
}

/** `Iodine.PubSub.CLUSTER` / `PROCESS`: where a publish may go, when passed to `Iodine.publish`. */
export interface PubSubScope {
  readonly scope: "cluster" | "process";
}

/** Every process of this cluster, not the external engine (the default when none is set). */
export const CLUSTER: PubSubScope = Object.freeze({ scope: "cluster" });
/** This process only. */
export const PROCESS: PubSubScope = Object.freeze({ scope: "process" });

/**
 * Internal fast path an engine may implement (the Redis engine does): a publish of the cluster as its
 * UTF-8 or raw bytes, valid only during the call, instead of a decoded message.
 */
export const PUBLISH_BYTES: unique symbol = Symbol("iodine.publishBytes");
export interface BytesEngine extends PubSubEngine {
  [PUBLISH_BYTES](channel: string, bytes: Uint8Array): void;
}

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
export function watchDefaultEngine(fn: (engine: PubSubEngine | undefined, old: PubSubEngine | undefined) => void): () => void {
  watchers.push(fn);
  return () => {
    const i = watchers.indexOf(fn);
    if (i >= 0) watchers.splice(i, 1);
  };
}

export function isEngine(x: unknown): x is PubSubEngine {
  if (typeof x !== "object" || x === null) return false;
  const e = x as Record<string, unknown>;
  return ["subscribe", "psubscribe", "unsubscribe", "publish"].every((m) => typeof e[m] === "function");
}
