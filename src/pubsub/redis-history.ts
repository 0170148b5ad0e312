// History and presence kept in one Redis (SPEC §5), for the Redis engine (redis.ts): every cluster on
// that Redis shares one sequence per history channel. Key layout and scripts: redis-lua.ts.
//
// - Appends: what a turn of the event loop collected goes out as EVALSHAs of APPEND_SCRIPT (≤ 256
//   messages each; a run of one channel and kind shares the bookkeeping and one RPUSH) on the publishing
//   connection; the script numbers each message, adds it to the channel's list and PUBLISHes it with
//   a header carrying its position, atomically. Nothing is delivered here: every cluster, this one included,
//   gets the message back on its subscribing connection (`receive`), and delivers it with its position.
// - Redis away: `available` is false unless both connections are ready, and the master keeps history
//   publishes itself under its own epoch (keeper.ts) and tells us (`missed`): the next append of such a
//   channel starts a new epoch in Redis, since its history there lacks what was kept elsewhere (so a
//   `since` from before the outage resolves `recovered: false`, which is the truth). An append in
//   flight when the publishing connection drops is rejected (maxRetriesPerRequest 0: ioredis would
//   otherwise send it again after the reconnect, late and out of order) and kept by the master; if
//   Redis had run it before the drop, this cluster delivers it twice (once per epoch).
// - Reads: READ_SCRIPT, then a PING on the subscribing connection, so every live message the read saw
//   has arrived before the read resolves (recovery drops duplicates only while it holds live ones).
// - Per-message ttl, to the run: the lists expire ttl after the last message, and each run carries
//   Redis's clock, so a read leaves out older messages even while newer ones keep the lists alive
//   (they stay in memory until trimmed by size or the lists expire).
// - Presence: `iodine:pres:<channel>` holds each cluster's count; a cluster proves it is alive with
//   `iodine:alive:<id>` (PX 5000, refreshed every 1.5 s), so a SIGKILLed one's share goes within 5 s.
import { isUtf8 } from "node:buffer";
import { hostname } from "node:os";
import type { Redis as IORedis } from "ioredis";
import { log } from "../log.ts";
import type { Position } from "../types.ts";
import type { EngineHistory, Retained } from "./engine-api.ts";
import { historyFor } from "./history.ts";
import { Backlog } from "./redis-common.ts";
import { APPEND_SCRIPT, PRESENCE_SCRIPT, READ_SCRIPT } from "./redis-lua.ts";

/** Messages per EVALSHA of the append script (bounded so Redis serves others in between). */
const APPEND_BATCH = 256;
/** Appends waiting for Redis's answer past which the master keeps history publishes itself. */
const MAX_APPENDS_WAITING = 200_000;
const ALIVE_MS = 5_000;
const REFRESH_MS = 1_500;
const HEADER = Buffer.from("\0iodine-h ");
const NL = 10;
const COLON = 58;

type Conn = IORedis & {
  iodineAppend(...args: (string | Buffer)[]): Promise<unknown>;
  iodineReadBuffer(channel: string, after: string, ttlMs: string): Promise<ReadReply>;
  iodinePresence(channel: string, id: string): Promise<number>;
};
type ReadReply = [Buffer, number, number, number, Buffer[], Buffer[]];

/** A run of one channel's messages of one kind, in order (one RPUSH in the script). */
interface Run {
  text: boolean;
  /** "1": start a new epoch first (see `missed`) */
  fresh: string;
  size: number;
  ttlMs: number;
  messages: Buffer[];
}

/**
 * The appends of one EVALSHA of APPEND_SCRIPT, by channel: each channel's runs stay in order, and
 * channels interleaved in a turn still make one run each (order across channels is not kept, as
 * between any two channels), so the script's bookkeeping per run is paid once per channel.
 */
class Chunk {
  byChannel = new Map<string, Run[]>();
  n = 0;
  bytes = 0;
  done = Promise.withResolvers<void>();

  args(): (string | Buffer)[] {
    const args: (string | Buffer)[] = [];
    for (const [channel, runs] of this.byChannel)
      for (const r of runs)
        args.push(
          channel,
          String(r.size),
          String(r.ttlMs),
          r.fresh + (r.text ? "t" : "b"),
          String(r.messages.length),
          ...r.messages,
        );
    return args;
  }
}

/** What the history part needs of its engine. */
export interface HistoryLinks {
  /** the publishing connection, the subscribing one (undefined while the engine is closed) */
  pub(): IORedis | undefined;
  sub(): IORedis | undefined;
  deliverAt(channel: string, bytes: Buffer, text: boolean, position: Position): void;
}

export class RedisHistory implements EngineHistory {
  /** names this cluster in presence hashes and its alive key */
  readonly clusterId = `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  readonly #links: HistoryLinks;
  /** appends waiting for the next turn, by EVALSHA; `#open` takes more */
  #chunks: Chunk[] = [];
  #open: Chunk | undefined;
  #backlog = new Backlog("redis (history)", MAX_APPENDS_WAITING);
  /** channels the master kept messages of while Redis was away: their next append starts a new epoch */
  #gaps = new Set<string>();
  /** this cluster's subscriptions per channel (what Redis is told again after a reconnect) */
  #counts = new Map<string, number>();
  #refused = false;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(links: HistoryLinks) {
    this.#links = links;
  }

  get available(): boolean {
    const pub = this.#links.pub();
    const sub = this.#links.sub();
    return (
      pub?.status === "ready" &&
      sub?.status === "ready" &&
      !this.#refused &&
      this.#backlog.hasRoom()
    );
  }

  /** A new publishing connection: its scripts, and on every (re)connection, presence again. */
  prepare(pub: IORedis): void {
    pub.defineCommand("iodineAppend", { numberOfKeys: 0, lua: APPEND_SCRIPT });
    pub.defineCommand("iodineRead", { numberOfKeys: 0, lua: READ_SCRIPT });
    pub.defineCommand("iodinePresence", { numberOfKeys: 0, lua: PRESENCE_SCRIPT });
    pub.on("ready", () => {
      this.#refused = false;
      this.#backlog.resume();
      this.#refresh();
    });
  }

  open(): void {
    this.#timer = setInterval(() => this.#refresh(), REFRESH_MS);
    this.#timer.unref?.();
  }

  /** The engine closes: pending appends fail (the caller keeps them), and this cluster leaves presence. */
  close(): void {
    clearInterval(this.#timer);
    this.#flush();
    this.#backlog.clear();
    const pub = this.#links.pub();
    if (pub?.status === "ready" && this.#counts.size > 0) {
      // Best effort: written before the connection ends; else the alive key expires in 5 s.
      const p = pub.pipeline().del(this.#aliveKey);
      for (const channel of this.#counts.keys()) p.hdel(presKey(channel), this.clusterId);
      p.exec().catch(() => {});
    }
    this.#counts.clear();
  }

  // --- appends ---

  append(
    channel: string,
    bytes: Uint8Array,
    text: boolean,
    size: number,
    ttlMs: number,
  ): Promise<void> {
    let c = this.#open;
    if (c === undefined || c.n === APPEND_BATCH) {
      c = this.#open = new Chunk();
      this.#chunks.push(c);
      if (this.#chunks.length === 1) setImmediate(this.#flush);
    }
    let runs = c.byChannel.get(channel);
    if (runs === undefined) c.byChannel.set(channel, (runs = []));
    let run = runs[runs.length - 1];
    if (run === undefined || run.text !== text) {
      const fresh = this.#gaps.delete(channel) ? "1" : "0";
      runs.push((run = { text, fresh, size, ttlMs, messages: [] }));
    }
    run.messages.push(
      bytes instanceof Buffer
        ? bytes
        : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    );
    c.n++;
    c.bytes += bytes.byteLength;
    return c.done.promise;
  }

  missed(channel: string): void {
    this.#gaps.add(channel);
  }

  /** Sends what is queued, in order: one EVALSHA per chunk (≤ APPEND_BATCH messages). */
  #flush = (): void => {
    const chunks = this.#chunks;
    if (chunks.length === 0) return;
    this.#chunks = [];
    this.#open = undefined;
    const pub = this.#links.pub() as Conn | undefined;
    for (const c of chunks) {
      if (pub?.status !== "ready") {
        c.done.reject(new Error("redis: not connected"));
        continue;
      }
      const { n, bytes } = c;
      this.#backlog.add(n, bytes);
      pub.iodineAppend(...c.args()).then(
        () => {
          this.#backlog.answered(n, bytes);
          c.done.resolve();
        },
        (err: Error) => {
          this.#backlog.answered(n, bytes);
          if (err.name === "ReplyError") this.#refuse(err);
          c.done.reject(err);
        },
      );
    }
  };

  #refuse(err: Error): void {
    if (this.#refused) return;
    this.#refused = true;
    log.warn(
      `redis: cannot keep history in Redis (${err.message}); the master keeps it until Redis reconnects`,
    );
  }

  // --- reads ---

  async read(channel: string, after: number, ttlMs: number): Promise<Retained> {
    // Appends queued before this read are sent before it (one connection: Redis runs them first).
    this.#flush();
    const pub = this.#links.pub() as Conn | undefined;
    if (pub?.status !== "ready") throw new Error("redis: not connected");
    const reply = await pub.iodineReadBuffer(channel, String(after), String(ttlMs));
    // Every live message Redis published before the read is on the subscribing connection before
    // this PING's answer: it has been delivered once this resolves.
    const sub = this.#links.sub();
    if (sub?.status === "ready") await sub.ping();
    return retained(reply, after, ttlMs);
  }

  // --- presence ---

  counts(changed: ReadonlyMap<string, number>): void {
    for (const [channel, n] of changed) {
      if (n > 0) this.#counts.set(channel, n);
      else this.#counts.delete(channel);
    }
    const pub = this.#links.pub();
    // While away: told again on "ready" (#refresh finds its alive key gone).
    if (pub?.status === "ready") this.#tell(pub, changed);
  }

  async presence(channel: string): Promise<number> {
    const pub = this.#links.pub() as Conn | undefined;
    if (pub?.status !== "ready") throw new Error("redis: not connected");
    // Counts are sent as they change, on this connection: Redis has them before this.
    return Number(await pub.iodinePresence(channel, this.clusterId));
  }

  get #aliveKey(): string {
    return `iodine:alive:${this.clusterId}`;
  }

  /** Proves this cluster alive; when Redis had let it lapse (or lost it), tells every count again. */
  #refresh(): void {
    const pub = this.#links.pub();
    if (pub?.status !== "ready") return;
    pub.set(this.#aliveKey, "1", "PX", ALIVE_MS, "GET").then(
      (old) => {
        if (old === null && this.#counts.size > 0 && pub.status === "ready")
          this.#tell(pub, this.#counts);
      },
      (err: Error) => log.debug(`redis: refreshing presence failed: ${err.message}`),
    );
  }

  #tell(pub: IORedis, counts: ReadonlyMap<string, number>): void {
    const p = pub.pipeline();
    for (const [channel, n] of counts) {
      if (n > 0) p.hset(presKey(channel), this.clusterId, n);
      else p.hdel(presKey(channel), this.clusterId);
    }
    p.exec().catch((err: Error) => log.debug(`redis: presence counts failed: ${err.message}`));
  }

  // --- receiving ---

  /**
   * A message from the subscribing connection: true when it is a history message of a history
   * channel (delivered here with its position); anything else is an ordinary message.
   */
  receive(channel: string, message: Buffer): boolean {
    if (message.length <= HEADER.length || message[0] !== 0) return false;
    for (let i = 1; i < HEADER.length; i++) if (message[i] !== HEADER[i]) return false;
    if (historyFor(channel) === undefined) return false;
    const nl = message.indexOf(NL, HEADER.length);
    if (nl < 0) return false;
    const binary = message[nl - 1] === 98 && message[nl - 2] === 32; // " b"
    const end = binary ? nl - 2 : nl;
    const colon = message.lastIndexOf(COLON, end);
    if (colon < HEADER.length) return false;
    let offset = 0;
    for (let i = colon + 1; i < end; i++) {
      const d = message[i]! - 48;
      if (d < 0 || d > 9) return false;
      offset = offset * 10 + d;
    }
    const epoch = message.toString("latin1", HEADER.length, colon);
    this.#links.deliverAt(channel, message.subarray(nl + 1), !binary, { epoch, offset });
    return true;
  }
}

const presKey = (channel: string) => `iodine:pres:${channel}`;

/** The read script's answer as a Retained: only the messages within ttl (see the top of this file). */
function retained(reply: ReadReply, after: number, ttlMs: number): Retained {
  const [epochBytes, top, now, listFirst, runs, messages] = reply;
  const from = Math.max(after + 1, listFirst);
  let first = listFirst;
  const entries: Retained["entries"] = [];
  // Runs come newest first: `<last offset>:<ms>:<t|b>`; the oldest one read may end before `from`.
  let r = runs.length - 1;
  let run = parseRun(runs[r]);
  for (let i = 0; i < messages.length; i++) {
    const offset = from + i;
    while (run !== undefined && run.last < offset) run = parseRun(runs[--r]);
    const bytes = messages[i]!;
    if (run !== undefined && run.ms < now - ttlMs) {
      first = Math.max(first, run.last + 1);
      continue;
    }
    entries.push({ offset, bytes, text: run !== undefined ? run.text : isUtf8(bytes) });
  }
  return { epoch: epochBytes.toString("latin1"), top, first, entries };
}

function parseRun(
  run: Buffer | undefined,
): { last: number; ms: number; text: boolean } | undefined {
  if (run === undefined) return undefined;
  const [last, ms, kind] = run.toString("latin1").split(":");
  return { last: Number(last), ms: Number(ms), text: kind === "t" };
}
