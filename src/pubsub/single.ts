// A single process (no cluster) with an external engine (SPEC §5): the process is master and worker,
// so its registry talks to the engine directly — what this process wants is what the cluster wants.
// Follows `Iodine.PubSub.default`; without an engine the registry has no remote link at all.
import type { Message } from "../types.ts";
import {
  callEngine,
  closeEngine,
  CLUSTER,
  defaultEngine,
  type EngineHost,
  historyOf,
  openEngine,
  PendingCalls,
  type PubSubEngine,
  tellEngine,
  watchDefaultEngine,
} from "./engine-api.ts";
import { Keeper } from "./keeper.ts";
import { Counts } from "./presence.ts";
import { attachRemote, deliverLocal, publish } from "./registry.ts";

const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const decode = (bytes: Uint8Array, text: boolean): Message =>
  text ? decoder.decode(bytes) : new Uint8Array(bytes);

/** What the engine receives goes to this process's subscribers (and never back to the engine). */
const host: EngineHost = {
  deliver: (channel: string, message: Message) => void publish(channel, message, CLUSTER),
  deliverBytes: (channel, bytes, text) => void deliverLocal(channel, decode(bytes, text)),
  deliverAt: (channel, bytes, text, position) =>
    void deliverLocal(channel, decode(bytes, text), undefined, position),
};

/** Drives `Iodine.PubSub.default` in this process from now on; returns the stop. */
export function driveEngineHere(): () => Promise<void> {
  let engine: PubSubEngine | undefined;
  let detach: (() => void) | undefined;
  const keeper = new Keeper((channel, bytes, text, position) =>
    host.deliverAt(channel, bytes, text, position),
  );
  const use = (next: PubSubEngine | undefined) => {
    const old = engine;
    engine = next;
    detach?.();
    detach = undefined;
    void closeEngine(old);
    if (next === undefined || !openEngine(next, host)) return;
    const history = historyOf(next);
    keeper.useEngine(history);
    const counts = new Counts(history);
    const pending = new PendingCalls();
    detach = attachRemote({
      forward: (channel, message, clusterOnly) => {
        if (clusterOnly) return false;
        void callEngine(next, "publish", () => next.publish(channel, message));
        return true;
      },
      interest: (subscribe, key, pattern) => pending.add(tellEngine(next, subscribe, key, pattern)),
      settled: () => pending.settled(),
      sequence: (channel, message, clusterOnly) => {
        keeper.publish(channel, message, typeof message === "string", clusterOnly);
        // An engine that keeps no history is handed the message like any other.
        if (history === undefined && !clusterOnly)
          void callEngine(next, "publish", () => next.publish(channel, message));
      },
      read: (channel, after) => keeper.read(channel, after),
      count: (channel, n) => counts.set(channel, n),
      presence: (channel) => counts.presence(channel),
    });
  };
  use(defaultEngine());
  const unwatch = watchDefaultEngine((next) => use(next));
  return async () => {
    unwatch();
    detach?.();
    detach = undefined;
    keeper.stop();
    const old = engine;
    engine = undefined;
    await closeEngine(old);
  };
}
