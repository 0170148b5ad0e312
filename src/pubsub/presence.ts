// Presence (SPEC §5): how many subscriptions to exactly a channel exist. The process that holds the
// cluster's interest (the master's hub, or a single process) sums what each process reports; with an
// engine that keeps presence (Redis), it hands the engine its cluster's sums, once per burst, and
// asks the engine, which sums every cluster still alive.
import { log } from "../log.ts";
import type { EngineHistory } from "./engine-api.ts";

export class Counts {
  #totals = new Map<string, number>();
  /** what the engine has not been told yet */
  #changed = new Map<string, number>();
  #engine: EngineHistory | undefined;
  #queued = false;

  constructor(engine?: EngineHistory) {
    this.useEngine(engine);
  }

  /** The engine that sums every cluster from now on (it hears this cluster's counts at once). */
  useEngine(engine: EngineHistory | undefined): void {
    this.#engine = engine;
    this.#changed = new Map(this.#totals);
    if (engine !== undefined && this.#changed.size > 0) this.#soon();
  }

  get(channel: string): number {
    return this.#totals.get(channel) ?? 0;
  }

  set(channel: string, n: number): void {
    if (n === this.get(channel)) return;
    if (n > 0) this.#totals.set(channel, n);
    else this.#totals.delete(channel);
    if (this.#engine === undefined) return;
    this.#changed.set(channel, n);
    this.#soon();
  }

  add(channel: string, delta: number): void {
    if (delta !== 0) this.set(channel, this.get(channel) + delta);
  }

  /** Subscriptions to `channel`: here, or across every cluster on the engine. */
  presence(channel: string): Promise<number> {
    const engine = this.#engine;
    if (engine === undefined || !engine.available) return Promise.resolve(this.get(channel));
    this.#flush();
    return engine.presence(channel).catch((err: unknown) => {
      log.debug(
        `pub/sub: presence of ${JSON.stringify(channel)} from the engine failed: ${String(err)}`,
      );
      return this.get(channel);
    });
  }

  #soon(): void {
    if (this.#queued) return;
    this.#queued = true;
    queueMicrotask(() => this.#flush());
  }

  #flush(): void {
    this.#queued = false;
    const engine = this.#engine;
    if (engine === undefined || this.#changed.size === 0) return;
    const changed = this.#changed;
    this.#changed = new Map();
    try {
      engine.counts(changed);
    } catch (err) {
      log.debug(`pub/sub: handing presence counts to the engine failed: ${String(err)}`);
    }
  }
}
