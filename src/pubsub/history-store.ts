// The history a master (or a single process) keeps itself (SPEC §5): per channel, the last `size`
// messages for `ttl`, as the bytes that came in (no decoding), under one epoch per channel and
// process lifetime. All channels together stay under a cap in bytes; past it the oldest messages
// anywhere go first, and the first such eviction is logged once.
import { log } from "../log.ts";
import type { Position } from "../types.ts";
import type { Retained } from "./engine-api.ts";

/**
 * What one retained message costs besides its bytes (the entry, its Uint8Array, their slots), as
 * bench/pubsub.ts --only history measured the master's JS heap: 150 B for a 16 B message.
 */
const ENTRY_COST = 128;
/** How often idle channels are swept of expired messages, ms. */
const SWEEP_MS = 10_000;

interface Entry {
  offset: number;
  time: number;
  bytes: Uint8Array;
  text: boolean;
  ring: Ring;
}

class Ring {
  top = 0;
  /** retained entries, oldest at `head` */
  entries: Entry[] = [];
  head = 0;
  ttlMs = 0;
  touched = 0;
  constructor(readonly epoch: string) {}

  get length(): number {
    return this.entries.length - this.head;
  }

  get first(): number {
    return this.length > 0 ? this.entries[this.head]!.offset : this.top + 1;
  }

  shift(): Entry {
    const e = this.entries[this.head++]!;
    if (this.head > 64 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    return e;
  }
}

export class HistoryStore {
  #rings = new Map<string, Ring>();
  /** every retained entry in append order, across channels (`#oldest` is the first still held) */
  #all: Entry[] = [];
  #oldest = 0;
  /** entries retained now (the rest of `#all` after `#oldest` are dropped ones) */
  #live = 0;
  #bytes = 0;
  #capBytes: number;
  #saidCap = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #epochSeed = `${Date.now().toString(36)}${process.pid.toString(36)}`;
  #epochs = 0;
  #appends = 0;

  constructor(capBytes: number) {
    this.#capBytes = capBytes;
  }

  /** Bytes held now (messages and their entries). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Entries the global order still references, dropped ones included (kept within 2 × live + 1024). */
  get tracked(): number {
    return this.#all.length - this.#oldest;
  }

  /** Appends a message (its bytes are copied) and returns its position. */
  append(channel: string, bytes: Uint8Array, text: boolean, size: number, ttlMs: number): Position {
    const now = Date.now();
    const ring = this.#ring(channel, now);
    ring.ttlMs = ttlMs;
    const entry: Entry = { offset: ++ring.top, time: now, bytes: bytes.slice(), text, ring };
    ring.entries.push(entry);
    this.#all.push(entry);
    this.#bytes += entry.bytes.length + ENTRY_COST;
    this.#live++;
    while (ring.length > size) this.#drop(ring.shift());
    this.#expire(ring, now);
    if (this.#bytes > this.#capBytes) this.#evict();
    else if ((++this.#appends & 1023) === 0) this.#compact();
    this.#sweepSoon();
    return { epoch: ring.epoch, offset: entry.offset };
  }

  /** What `channel` still holds after `after` (copies of nothing: the entries' own bytes). */
  read(channel: string, after: number, ttlMs: number): Retained {
    const now = Date.now();
    const ring = this.#ring(channel, now);
    ring.ttlMs = Math.max(ring.ttlMs, ttlMs);
    this.#expire(ring, now);
    const entries: Retained["entries"] = [];
    for (let i = ring.head; i < ring.entries.length; i++) {
      const e = ring.entries[i]!;
      if (e.offset > after) entries.push({ offset: e.offset, bytes: e.bytes, text: e.text });
    }
    return { epoch: ring.epoch, top: ring.top, first: ring.first, entries };
  }

  stop(): void {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  #ring(channel: string, now: number): Ring {
    let ring = this.#rings.get(channel);
    if (ring === undefined) {
      ring = new Ring(`${this.#epochSeed}${(++this.#epochs).toString(36)}`);
      this.#rings.set(channel, ring);
    }
    ring.touched = now;
    return ring;
  }

  #expire(ring: Ring, now: number): void {
    while (ring.length > 0 && ring.entries[ring.head]!.time <= now - ring.ttlMs)
      this.#drop(ring.shift());
  }

  /** An entry left its ring: its bytes no longer count, and the global order forgets it later. */
  #drop(e: Entry): void {
    this.#bytes -= e.bytes.length + ENTRY_COST;
    this.#live--;
    e.bytes = EMPTY;
    e.offset = -1;
  }

  /** Past the cap: the oldest messages anywhere go, each from the head of its own ring. */
  #evict(): void {
    if (!this.#saidCap) {
      this.#saidCap = true;
      log.warn(
        `pub/sub history: the retained messages reached ${Math.round(this.#capBytes / 1048576)} MB ($IODINE_HISTORY_MB); the oldest are dropped first (said once)`,
      );
    }
    while (this.#bytes > this.#capBytes && this.#oldest < this.#all.length) {
      const e = this.#all[this.#oldest++]!;
      if (e.offset < 0) continue;
      const ring = e.ring;
      // Appended in time order everywhere: the globally oldest entry is its ring's oldest.
      this.#drop(ring.shift());
    }
    this.#compact();
  }

  #compact(): void {
    while (this.#oldest < this.#all.length && this.#all[this.#oldest]!.offset < 0) this.#oldest++;
    if (this.tracked > 2 * this.#live + 1024) {
      // An old message of a quiet channel holds the front while busy channels drop theirs behind it.
      this.#all = this.#all.slice(this.#oldest).filter((e) => e.offset >= 0);
      this.#oldest = 0;
    } else if (this.#oldest > 1024 && this.#oldest * 2 > this.#all.length) {
      this.#all = this.#all.slice(this.#oldest);
      this.#oldest = 0;
    }
  }

  /** Expired messages of channels nobody publishes to any more are dropped too, and idle empty rings forgotten. */
  #sweepSoon(): void {
    if (this.#sweeper !== undefined) return;
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      for (const [channel, ring] of this.#rings) {
        this.#expire(ring, now);
        if (ring.length === 0 && now - ring.touched > Math.max(ring.ttlMs, SWEEP_MS))
          this.#rings.delete(channel);
      }
      this.#compact();
      if (this.#rings.size === 0) this.stop();
    }, SWEEP_MS);
    this.#sweeper.unref();
  }
}

const EMPTY = new Uint8Array(0);
