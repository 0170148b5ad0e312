// The registry's one link to the rest of the cluster (registry.ts): who holds it, and what it was
// told this process wants. One owner at a time — the hub in the master (hub.ts), the member in a
// worker (member.ts), or the driver of a single process with an external engine (single.ts) —
// attaches it, and can detach only its own link.
import type { Message } from "../types.ts";
import type { Retained } from "./engine-api.ts";

/** How the registry reaches the other processes of a cluster (or a single process's engine). */
export interface Remote {
  /**
   * A message published in this process (already delivered here); `clusterOnly`: not for an
   * external engine. True when it went anywhere (another process wants it, or an engine took it).
   */
  forward(channel: string, message: Message, clusterOnly: boolean): boolean;
  /** this process starts or stops wanting a channel (or a pattern) */
  interest(subscribe: boolean, key: string, pattern: boolean): void;
  /**
   * Resolves once every interest told so far is in effect everywhere it must be: every other
   * process of the cluster knows it, and the external engine (Redis) is subscribed (SPEC §5).
   */
  settled(): Promise<void>;
  /**
   * A publish on a history channel, not delivered here yet: sequenced where the history lives, then
   * delivered everywhere (this process included) with its position. `clusterOnly` as for forward.
   */
  sequence(channel: string, message: Message, clusterOnly: boolean): void;
  /** What a history channel retains after the offset `after`. */
  read(channel: string, after: number): Promise<Retained>;
  /** This process now has `n` subscriptions to exactly `channel` (for presence). */
  count(channel: string, n: number): void;
  /** Subscriptions to exactly `channel` in the cluster (and every cluster on the engine). */
  presence(channel: string): Promise<number>;
}

export class RemoteLink {
  #remote: Remote | undefined;
  /** what the remote was told this process wants: channels, and patterns */
  #channels = new Set<string>();
  #patterns = new Set<string>();

  get remote(): Remote | undefined {
    return this.#remote;
  }

  /** Links `remote` (it has been told nothing yet); returns its detach, which does nothing once another took over. */
  attach(remote: Remote): () => void {
    if (this.#remote !== undefined)
      throw new Error(
        "pub/sub: the registry is linked to the cluster already (one hub, member or engine driver per process)",
      );
    this.#remote = remote;
    return () => {
      if (this.#remote !== remote) return;
      this.#remote = undefined;
      this.#channels.clear();
      this.#patterns.clear();
    };
  }

  /** Tells the remote that this process now wants `key`, or stopped wanting it, if that changed. */
  announce(key: string, wanted: boolean, pattern: boolean): void {
    const remote = this.#remote;
    if (remote === undefined) return;
    const told = pattern ? this.#patterns : this.#channels;
    if (wanted === told.has(key)) return;
    if (wanted) told.add(key);
    else told.delete(key);
    remote.interest(wanted, key, pattern);
  }

  /** Every channel and pattern the remote was told, for a link that (re)connects. */
  interests(): { key: string; pattern: boolean }[] {
    return [
      ...[...this.#channels].map((key) => ({ key, pattern: false })),
      ...[...this.#patterns].map((key) => ({ key, pattern: true })),
    ];
  }
}
