// The hub's part in history and presence (SPEC §5): it sequences every history channel's message of
// the cluster (its Keeper: the master's store, or the engine's), answers a worker's reads and
// presence questions, and sums what each process reports of its subscriptions. Control frames (CTL,
// bus.ts) carry a JSON array; these are their kinds:
//   ["history", key, pattern 0|1, size, ttlMs]   a worker's `Iodine.history` (id 0)
//   ["count", channel, n]                         the sender now has n subscriptions to it (id 0)
//   ["read", channel, after]                      HPUB frames with the id, then a REPLY {epoch, top, first}
//   ["presence", channel]                         a REPLY with the number
//   ["metrics", report]                           the sender's metrics (metrics/report.ts), once a second
import { asReport } from "../metrics/report.ts";
import { totals } from "../metrics/totals.ts";
import type { Position } from "../types.ts";
import { BusError } from "./bus.ts";
import { historyOf, type PubSubEngine, type Retained } from "./engine-api.ts";
import { record } from "./history.ts";
import type { Peer } from "./hub-peer.ts";
import { Keeper, type Sequenced } from "./keeper.ts";
import { Counts } from "./presence.ts";

export class HubHistory {
  readonly keeper: Keeper;
  readonly counts = new Counts();

  readonly #settled: (from: Peer) => Promise<void>;

  /**
   * `settled(from)`: resolves once every other process has handled what it sent before (a SYNC
   * round), so a presence question sees the counts of subscriptions whose acknowledgement the
   * asker may have seen through another worker.
   */
  constructor(routeAt: Sequenced, settled: (from: Peer) => Promise<void>) {
    this.keeper = new Keeper(routeAt);
    this.#settled = settled;
  }

  /** Subscriptions to `channel` in the cluster (and on the engine), asked by `from`. */
  presence(from: Peer, channel: string): Promise<number> {
    return this.#settled(from).then(() => this.counts.presence(channel));
  }

  useEngine(engine: PubSubEngine | undefined): void {
    const history = historyOf(engine);
    this.keeper.useEngine(history);
    this.counts.useEngine(history);
  }

  /** A process now has `n` subscriptions to `channel`. */
  count(peer: Peer, channel: string, n: number): void {
    const old = peer.counts.get(channel) ?? 0;
    if (n > 0) peer.counts.set(channel, n);
    else peer.counts.delete(channel);
    this.counts.add(channel, n - old);
  }

  /** A process left: its subscriptions no longer count. */
  drop(peer: Peer): void {
    totals.drop(peer);
    for (const [channel, n] of peer.counts) this.counts.add(channel, -n);
    peer.counts.clear();
  }

  /**
   * A worker's CTL frame. `answer` sends its REPLY; `entry` one retained message of a read (an
   * HPUB frame with the read's id, before the REPLY).
   */
  control(
    peer: Peer,
    id: number,
    json: string,
    answer: (ok: boolean, value: unknown) => void,
    entry: (channel: string, bytes: Uint8Array, text: boolean, position: Position) => void,
  ): void {
    const args = parse(json);
    const [kind, channel] = args;
    if (kind === "metrics") {
      const report = asReport(channel);
      if (report === undefined) throw new BusError("a CTL metrics frame that is not a report");
      return totals.add(peer, report);
    }
    if (typeof channel !== "string") throw new BusError(`a CTL ${kind} frame without a channel`);
    if (kind === "history") {
      const [, , pattern, size, ttlMs] = args;
      if (typeof size !== "number" || typeof ttlMs !== "number")
        throw new BusError("a CTL history frame without size and ttl");
      return record({ key: channel, pattern: pattern === 1, size, ttlMs });
    }
    if (kind === "count") {
      const n = args[2];
      if (typeof n !== "number" || !(n >= 0))
        throw new BusError("a CTL count frame without a count");
      return this.count(peer, channel, n);
    }
    if (kind === "read") {
      const after = args[2];
      if (typeof after !== "number") throw new BusError("a CTL read frame without an offset");
      this.keeper.read(channel, after).then(
        (held: Retained) => {
          for (const e of held.entries)
            entry(channel, e.bytes, e.text, { epoch: held.epoch, offset: e.offset });
          answer(true, { epoch: held.epoch, top: held.top, first: held.first });
        },
        (err: unknown) => answer(false, String(err)),
      );
      return;
    }
    if (kind === "presence") {
      this.presence(peer, channel).then(
        (n) => answer(true, n),
        (err: unknown) => answer(false, String(err)),
      );
      return;
    }
    throw new BusError(`a CTL frame of unknown kind ${JSON.stringify(kind)}`);
  }

  stop(): void {
    this.keeper.stop();
  }
}

function parse(json: string): unknown[] {
  let args: unknown;
  try {
    args = JSON.parse(json);
  } catch {
    throw new BusError("a CTL frame that is not JSON");
  }
  if (!Array.isArray(args)) throw new BusError("a CTL frame that is not a JSON array");
  return args;
}
