// Where a cluster's history lives (SPEC §5): the process that holds the cluster's interest (the
// master's hub, or a single process) sequences every publish on a history channel. With an engine
// that keeps history (Redis), the engine does, so every cluster on it shares one sequence per
// channel, and the message comes back through the engine like any other. Otherwise — no engine, a
// custom one, a publish for this cluster only, or Redis away — this process's own store does, and
// the message is delivered at once with its position.
import { log } from "../log.ts";
import type { Position } from "../types.ts";
import type { EngineHistory, Retained } from "./engine-api.ts";
import { HISTORY_SIZE, HISTORY_TTL, historyFor, type HistoryConfig } from "./history.ts";
import { HistoryStore } from "./history-store.ts";

/** Where a sequenced message goes: every subscriber of the cluster (the origin's too). */
export type Sequenced = (
  channel: string,
  bytes: Uint8Array,
  text: boolean,
  position: Position,
) => void;

const encoder = new TextEncoder();
const FALLBACK: HistoryConfig = {
  key: "",
  pattern: false,
  size: HISTORY_SIZE,
  ttlMs: HISTORY_TTL * 1000,
};

/** The cap on what a process's own store keeps, all channels together ($IODINE_HISTORY_MB, default 256). */
export function historyCapBytes(): number {
  const mb = Number(process.env.IODINE_HISTORY_MB);
  return (Number.isFinite(mb) && mb > 0 ? mb : 256) * 1024 * 1024;
}

export class Keeper {
  readonly store = new HistoryStore(historyCapBytes());
  #engine: EngineHistory | undefined;
  #deliver: Sequenced;
  #saidAway = false;
  /**
   * the engine's promise for the appends since, and what they were (channel, bytes, text, config,
   * waited …; waited: published while the engine was away, kept here once the batch settles)
   */
  #batch: Promise<void> | undefined;
  #inBatch: unknown[] = [];
  /** batches not settled yet */
  #inFlight = 0;

  constructor(deliver: Sequenced) {
    this.#deliver = deliver;
  }

  /** The engine that keeps history from now on (undefined: this process does). */
  useEngine(engine: EngineHistory | undefined): void {
    this.#engine = engine;
  }

  /** A publish on a history channel; `local`: kept here even with an engine (a publish for this cluster only). */
  publish(channel: string, message: Uint8Array | string, text: boolean, local: boolean): void {
    const config = historyFor(channel) ?? FALLBACK;
    const engine = this.#engine;
    if (engine === undefined || local || !engine.available) {
      if (engine !== undefined && !local) {
        this.#away();
        engine.missed(channel);
        // Appends still in flight come first (they may yet fail and be kept here): this one waits
        // behind them (a copy: the caller may reuse its buffer).
        if (this.#inFlight > 0) {
          const copy =
            typeof message === "string" ? encoder.encode(message) : new Uint8Array(message);
          this.#inBatch.push(channel, copy, text, config, true);
          return;
        }
      }
      const bytes = typeof message === "string" ? encoder.encode(message) : message;
      return this.#keep(channel, bytes, text, config);
    }
    // The engine keeps what it is given, and the caller may reuse its buffer meanwhile: a copy.
    const copy = Buffer.from(message);
    const batch = engine.append(channel, copy, text, config.size, config.ttlMs);
    if (batch !== this.#batch) this.#watch(engine, (this.#batch = batch));
    this.#inBatch.push(channel, copy, text, config, false);
  }

  /**
   * One handler per batch of appends (they share a promise; batches settle in order): what it held
   * is kept here, in order, when the engine could not take it — and what waited behind it either way.
   */
  #watch(engine: EngineHistory, batch: Promise<void>): void {
    const held: unknown[] = [];
    this.#inBatch = held;
    this.#inFlight++;
    const settle = (taken: boolean) => {
      this.#inFlight--;
      if (taken) this.#saidAway = false;
      else this.#away();
      for (let i = 0; i < held.length; i += 5) {
        const waited = held[i + 4] === true;
        if (taken && !waited) continue;
        const channel = held[i] as string;
        if (!waited) engine.missed(channel);
        // (a Uint8Array: what the store hands out is sliced, and a Buffer's slice is a view)
        const bytes = held[i + 1] as Uint8Array;
        this.#keep(
          channel,
          waited ? bytes : new Uint8Array(bytes),
          held[i + 2] as boolean,
          held[i + 3] as HistoryConfig,
        );
      }
    };
    batch.then(
      () => settle(true),
      () => settle(false),
    );
  }

  /** What a channel still retains after `after`: from the engine while it is there, else from here. */
  read(channel: string, after: number): Promise<Retained> {
    const ttlMs = (historyFor(channel) ?? FALLBACK).ttlMs;
    const engine = this.#engine;
    const here = () => this.store.read(channel, after, ttlMs);
    if (engine === undefined || !engine.available) return Promise.resolve(here());
    return engine.read(channel, after, ttlMs).catch(here);
  }

  stop(): void {
    this.store.stop();
  }

  #keep(channel: string, bytes: Uint8Array, text: boolean, config: HistoryConfig): void {
    const position = this.store.append(channel, bytes, text, config.size, config.ttlMs);
    this.#deliver(channel, bytes, text, position);
  }

  #away(): void {
    if (this.#saidAway) return;
    this.#saidAway = true;
    log.warn(
      "pub/sub history: the engine cannot take history publishes now; this process keeps them (positions of its own epoch) until it can",
    );
  }
}
