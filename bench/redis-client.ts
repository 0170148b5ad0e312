// The load client of bench/redis.ts. The bench runs two of these: the receiving one holds the
// WebSocket subscribers on cluster A and the raw ioredis subscriber; the publishing one holds a
// WebSocket on a worker of cluster B (which it commands to publish) and the raw ioredis publisher.
// Publisher and receivers live in different processes on both sides, so neither side shares an event
// loop between its publishing and its receiving.
// Driven by JSON lines on stdin, answers JSON lines on stdout (each answer carries the `seq` of its
// command). Exits when stdin closes (the parent is gone).
//
// Receiving:
//   {"op":"subscribers","port":A,"channel":CH,"count":2}
//        WebSockets on `count` different workers of A, each subscribed to CH → {pids, attempts}
//   {"op":"rawSub","redis":PORT,"channel":CH}     an ioredis subscriber on CH (`messageBuffer`) → {}
//   {"op":"counts"}                               → {iodine: [n, n], raw: [n]} since the last arm
//   {"op":"arm","side":S,"stamped":N}             zero side S's receivers (room for N delays each)
//   {"op":"wait","side":S,"expected":N,"since":µs}
//        until every receiver of S has N messages, or nothing arrived for QUIET_MS
//        → {received: [..] (counted LATE_MS longer, for duplicates), firstAt, lastAt (µs, wall clock),
//          delays: {p50Us, p99Us, …}}
// Publishing:
//   {"op":"publisher","port":B}                   a WebSocket on a worker of B → {pid, clock}
//   {"op":"rawPub","redis":PORT}                  an ioredis connection for publishing → {}
//   {"op":"pub","side":S,"channel":CH,"text":T}   one publish (readiness probes)
//   {"op":"burst","side":S,"channel":CH,"total":N,"batch":B,"size":64}
//        N publishes of `#xxx…`, B per turn of the publisher's event loop → {t0, publishMs}
//   {"op":"rate","side":S,"channel":CH,"perSecond":R,"ms":MS,"size":64}
//        R/s for MS ms from a 1 ms timer, each `@µs …` stamped at its publish → {t0, sent, lagMs}
// Side "iodine": through the clusters (the publishing is done by cluster B's worker, bench/cluster-app.ts);
// side "raw": straight through ioredis, one pipeline per turn as iodine's engine batches.
//
// The WebSockets are raw TCP (Bun.connect, see bench/client-lib.ts) with a small frame walker.
import type { Socket } from "bun";
import IORedis from "ioredis";
import {
  afterHead,
  connectPeer,
  failHandlers,
  headerByte,
  HOST,
  PONG,
  RawPeer,
  serveCommands,
  upgradeRequest,
} from "./client-lib.ts";

const MAX_ATTEMPTS = 64;
const OPEN_TIMEOUT_MS = 5_000;
/** how long without a delivery before the missing messages count as dropped */
const QUIET_MS = 3_000;
const RUN_TIMEOUT_MS = 60_000;
/** how long after the last expected message extra copies are still counted */
const LATE_MS = 100;
const HASH = 0x23; // '#': a counted message
const AT = 0x40; // '@': a timestamped message
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The wall clock shared by every process on this machine (timeOrigin + now), in µs. */
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;

type Side = "iodine" | "raw";

/** What one subscriber (a WebSocket, or the ioredis subscriber) received since it was armed. */
class Tally {
  count = 0;
  firstAt = 0;
  lastAt = 0;
  delays: Float64Array | undefined;
  ndelays = 0;

  reset(stamped: number): void {
    this.count = 0;
    this.firstAt = 0;
    this.lastAt = 0;
    this.ndelays = 0;
    this.delays = stamped > 0 ? new Float64Array(stamped + 1024) : undefined;
  }

  /** A message `buf[start..end)` that arrived at `at` µs; false if it is not a bench message. */
  take(buf: Uint8Array, start: number, end: number, at: number): boolean {
    const first = end > start ? buf[start]! : 0;
    if (first !== HASH && first !== AT) return false;
    this.count++;
    if (this.firstAt === 0) this.firstAt = at;
    this.lastAt = at;
    if (first === AT && this.delays !== undefined && this.ndelays < this.delays.length) {
      let stamp = 0;
      for (let i = start + 1; i < end; i++) {
        const d = buf[i]! - 48;
        if (d < 0 || d > 9) break;
        stamp = stamp * 10 + d;
      }
      this.delays[this.ndelays++] = at - stamp;
    }
    return true;
  }
}

// --- WebSockets ---

class Peer extends RawPeer<Peer> {
  pid = 0;
  closed = false;
  tally = new Tally();
  texts: { prefix: string; resolve: (text: string) => void }[] = [];
  // frame walker state (besides the partial header): a payload split across chunks
  opcode = 0;
  part = new Uint8Array(256);
  partLen = 0;
  need = 0;
  /** the arrival time of the chunk being walked, µs (read once per chunk) */
  chunkAt = 0;

  /** Resolves with the next text message (not `#`/`@`) that starts with `prefix`. */
  next(prefix: string, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.texts = this.texts.filter((w) => w !== waiter);
        reject(new Error(`no "${prefix}…" from pid ${this.pid} within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        prefix,
        resolve: (text: string) => {
          clearTimeout(timer);
          resolve(text);
        },
      };
      this.texts.push(waiter);
    });
  }

  send(text: string): void {
    const payload = encoder.encode(text);
    const n = payload.length;
    const head = n < 126 ? [0x81, 0x80 | n] : [0x81, 0x80 | 126, n >> 8, n & 255];
    const frame = new Uint8Array(head.length + 4 + n);
    frame.set(head);
    // a zero masking key: masked as the protocol demands, the payload unchanged
    frame.set(payload, head.length + 4);
    this.socket?.write(frame);
  }
}

function onFrame(p: Peer, opcode: number, buf: Uint8Array, start: number, end: number): void {
  if (opcode === 1 || opcode === 2) {
    if (p.tally.take(buf, start, end, p.chunkAt)) return;
    const text = decoder.decode(buf.subarray(start, end));
    const i = p.texts.findIndex((w) => text.startsWith(w.prefix));
    if (i >= 0) p.texts.splice(i, 1)[0]!.resolve(text);
  } else if (opcode === 9) p.socket?.write(PONG);
}

/** Walks the server's frames (never masked), handing each whole payload to onFrame. */
function walk(p: Peer, buf: Uint8Array, from: number): void {
  const len = buf.length;
  let i = from;
  while (i < len) {
    if (p.need > 0) {
      const take = Math.min(p.need, len - i);
      p.part.set(buf.subarray(i, i + take), p.partLen);
      p.partLen += take;
      p.need -= take;
      i += take;
      if (p.need === 0) onFrame(p, p.opcode, p.part, 0, p.partLen);
      continue;
    }
    if (p.hlen === 0 && len - i >= 2) {
      const l7 = buf[i + 1]! & 0x7f;
      if (l7 < 126 && len - i - 2 >= l7) {
        onFrame(p, buf[i]! & 0x0f, buf, i + 2, i + 2 + l7);
        i += 2 + l7;
        continue;
      }
    }
    const l = headerByte(p, buf[i++]!);
    if (l < 0) continue;
    p.opcode = p.hdr[0]! & 0x0f;
    if (l === 0) {
      onFrame(p, p.opcode, p.part, 0, 0);
      continue;
    }
    if (p.part.length < l) p.part = new Uint8Array(l);
    p.partLen = 0;
    p.need = l;
  }
}

const handlers = {
  open(socket: Socket<Peer>) {
    socket.data.socket = socket;
    socket.write(upgradeRequest("/ws"));
  },
  data(socket: Socket<Peer>, buf: Buffer) {
    const p = socket.data;
    p.chunkAt = nowUs();
    const from = p.ready ? 0 : afterHead(p, buf, "HTTP/1.1 101");
    if (from >= 0) walk(p, buf, from);
  },
  close(socket: Socket<Peer>) {
    socket.data.closed = true;
    socket.data.onReady?.(false);
  },
  ...failHandlers<Peer>(),
};

async function openOne(port: number): Promise<Peer | undefined> {
  const p = new Peer();
  const pid = p.next("pid ", OPEN_TIMEOUT_MS).catch(() => "");
  if (!(await connectPeer(p, port, handlers, OPEN_TIMEOUT_MS))) return undefined;
  p.pid = Number((await pid).slice(4));
  return p.pid > 0 ? p : undefined;
}

// --- the receiving process ---

let subscribers: Peer[] = [];
let rawSub: IORedis | undefined;
const rawTally = new Tally();

/** Sockets on `count` different workers of the cluster on `port`, each subscribed to `channel`. */
async function connectSubscribers(port: number, channel: string, count: number) {
  const held: Peer[] = [];
  let attempts = 0;
  while (held.length < count && attempts < MAX_ATTEMPTS) {
    attempts++;
    const p = await openOne(port);
    if (p === undefined) continue;
    if (held.some((h) => h.pid === p.pid)) p.socket?.terminate();
    else held.push(p);
  }
  if (held.length < count)
    throw new Error(
      `${attempts} connections, and only pid ${held.map((p) => p.pid).join(", ") || "none"} answered`,
    );
  for (const p of held) {
    const ok = p.next(`ok sub ${channel}`);
    p.send(`sub ${channel}`);
    await ok;
  }
  subscribers = held;
  return { pids: held.map((p) => p.pid), attempts };
}

async function connectRawSub(port: number, channel: string) {
  rawSub = new IORedis({
    host: HOST,
    port,
    lazyConnect: true,
    connectionName: `bench-raw-sub-${process.pid}`,
  });
  await rawSub.connect();
  rawSub.on("messageBuffer", (_channel: Buffer, message: Buffer) =>
    rawTally.take(message, 0, message.length, nowUs()),
  );
  await rawSub.subscribe(channel);
  return {};
}

function receivers(side: Side): Tally[] {
  if (side === "raw") {
    if (rawSub === undefined) throw new Error("no raw subscriber");
    return [rawTally];
  }
  if (subscribers.length === 0) throw new Error("no subscribers");
  for (const p of subscribers)
    if (p.closed) throw new Error(`the subscriber on pid ${p.pid} was closed`);
  return subscribers.map((p) => p.tally);
}

/** Resolves when every tally has `expected` messages, or nothing came for QUIET_MS (after `since` µs), or at the hard limit. */
function arrival(tallies: Tally[], expected: number, since: number): Promise<boolean> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const tick = setInterval(() => {
      const done = tallies.every((t) => t.count >= expected);
      const last = Math.max(since, ...tallies.map((t) => t.lastAt));
      const quiet = nowUs() - last > QUIET_MS * 1000;
      const closed = subscribers.some((p) => p.closed);
      if (done || quiet || closed || Date.now() - t0 > RUN_TIMEOUT_MS) {
        clearInterval(tick);
        resolve(done);
      }
    }, 1);
  });
}

async function wait(cmd: { side: Side; expected: number; since: number }) {
  const tallies = receivers(cmd.side);
  const cpu0 = process.cpuUsage();
  const complete = await arrival(tallies, cmd.expected, Math.max(cmd.since, nowUs()));
  const cpu = process.cpuUsage(cpu0);
  const firstAt = Math.min(...tallies.map((t) => t.firstAt));
  const lastAt = Math.max(...tallies.map((t) => t.lastAt));
  // A little longer for copies beyond `expected` (a message delivered twice), which are counted, not timed.
  if (complete) await Bun.sleep(LATE_MS);
  // Delays of every delivery, all subscribers pooled.
  const all = new Float64Array(tallies.reduce((n, t) => n + t.ndelays, 0));
  let at = 0;
  for (const t of tallies) {
    if (t.delays !== undefined) all.set(t.delays.subarray(0, t.ndelays), at);
    at += t.ndelays;
  }
  all.sort();
  const q = (f: number) =>
    all.length ? all[Math.min(all.length - 1, Math.floor(f * all.length))]! : NaN;
  let sum = 0;
  for (const x of all) sum += x;
  return {
    complete,
    received: tallies.map((t) => t.count),
    firstAt,
    lastAt,
    delays: all.length
      ? {
          n: all.length,
          minUs: all[0]!,
          p50Us: q(0.5),
          p90Us: q(0.9),
          p99Us: q(0.99),
          p999Us: q(0.999),
          maxUs: all[all.length - 1]!,
          meanUs: sum / all.length,
        }
      : null,
    clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

// --- the publishing process ---

let publisher: Peer | undefined;
let rawPub: IORedis | undefined;

async function connectPublisher(port: number) {
  const p = await openOne(port);
  if (p === undefined) throw new Error(`no WebSocket on port ${port}`);
  publisher = p;
  return { pid: p.pid, clock: await clockOffset(p) };
}

/** The worker's wall clock minus ours, from the exchange with the shortest round trip (NTP's estimate). */
async function clockOffset(p: Peer) {
  let best = { offsetUs: 0, rttUs: Infinity };
  for (let i = 0; i < 20; i++) {
    const reply = p.next("clock ");
    const t0 = nowUs();
    p.send("clock");
    const theirs = Number((await reply).slice(6));
    const t1 = nowUs();
    if (t1 - t0 < best.rttUs) best = { offsetUs: theirs - (t0 + t1) / 2, rttUs: t1 - t0 };
  }
  return best;
}

async function connectRawPub(port: number) {
  rawPub = new IORedis({
    host: HOST,
    port,
    lazyConnect: true,
    connectionName: `bench-raw-pub-${process.pid}`,
  });
  await rawPub.connect();
  return {};
}

function needPublisher(): Peer {
  if (publisher === undefined) throw new Error("no publisher socket");
  if (publisher.closed) throw new Error(`the publisher socket on pid ${publisher.pid} was closed`);
  return publisher;
}

function needRawPub(): IORedis {
  if (rawPub === undefined) throw new Error("no raw publisher");
  return rawPub;
}

async function pub(cmd: { side: Side; channel: string; text: string }) {
  if (cmd.side === "iodine") needPublisher().send(`pub ${cmd.channel} ${cmd.text}`);
  else await needRawPub().publish(cmd.channel, cmd.text);
  return {};
}

async function burst(cmd: {
  side: Side;
  channel: string;
  total: number;
  batch: number;
  size: number;
}) {
  if (cmd.side === "iodine") {
    const p = needPublisher();
    const done = p.next("done burst", RUN_TIMEOUT_MS);
    const t0 = nowUs();
    p.send(`burst ${cmd.channel} ${cmd.total} ${cmd.batch} ${cmd.size}`);
    return { t0, publishMs: Number((await done).split(" ")[2]) };
  }
  // The same loop as bench/cluster-app.ts's burst, into one pipeline per turn (iodine's engine
  // sends what a turn of its event loop collected as one pipeline, too).
  const redis = needRawPub();
  const message = "#" + "x".repeat(Math.max(0, cmd.size - 1));
  const t0 = nowUs();
  const start = performance.now();
  let sent = 0;
  const execs: Promise<unknown>[] = [];
  await new Promise<void>((resolve) => {
    const step = () => {
      const end = Math.min(cmd.total, sent + cmd.batch);
      const pipeline = redis.pipeline();
      for (; sent < end; sent++) pipeline.publish(cmd.channel, message);
      execs.push(pipeline.exec());
      if (sent < cmd.total) setImmediate(step);
      else resolve();
    };
    step();
  });
  const publishMs = performance.now() - start;
  await Promise.all(execs);
  return { t0, publishMs };
}

async function rate(cmd: {
  side: Side;
  channel: string;
  perSecond: number;
  ms: number;
  size: number;
}) {
  if (cmd.side === "iodine") {
    const p = needPublisher();
    const done = p.next("done rate", cmd.ms + RUN_TIMEOUT_MS);
    const t0 = nowUs();
    p.send(`rate ${cmd.channel} ${cmd.perSecond} ${cmd.ms} ${cmd.size}`);
    const [, , sent, lag] = (await done).split(" ");
    return { t0, sent: Number(sent), lagMs: Number(lag) };
  }
  // bench/cluster-app.ts's rate loop, the messages of one tick in one pipeline.
  const redis = needRawPub();
  const total = Math.round((cmd.perSecond * cmd.ms) / 1000);
  let sent = 0;
  let lag = 0;
  const t0 = nowUs();
  const start = performance.now();
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = performance.now() - start;
      const due = Math.min(total, Math.floor((elapsed * cmd.perSecond) / 1000));
      if (due > sent) {
        lag = Math.max(lag, elapsed - (sent * 1000) / cmd.perSecond);
        const pipeline = redis.pipeline();
        for (; sent < due; sent++) {
          const stamp = "@" + Math.round(nowUs()) + " ";
          pipeline.publish(cmd.channel, stamp.padEnd(cmd.size, "x"));
        }
        void pipeline.exec();
      }
      if (sent >= total) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  return { t0, sent, lagMs: lag };
}

// --- commands ---

type Command = { seq: number } & (
  | { op: "subscribers"; port: number; channel: string; count: number }
  | { op: "rawSub"; redis: number; channel: string }
  | { op: "counts" }
  | { op: "arm"; side: Side; stamped: number }
  | { op: "wait"; side: Side; expected: number; since: number }
  | { op: "publisher"; port: number }
  | { op: "rawPub"; redis: number }
  | { op: "pub"; side: Side; channel: string; text: string }
  | { op: "burst"; side: Side; channel: string; total: number; batch: number; size: number }
  | { op: "rate"; side: Side; channel: string; perSecond: number; ms: number; size: number }
);

async function run(cmd: Command): Promise<object> {
  switch (cmd.op) {
    case "subscribers":
      return connectSubscribers(cmd.port, cmd.channel, cmd.count);
    case "rawSub":
      return connectRawSub(cmd.redis, cmd.channel);
    case "counts":
      return { iodine: subscribers.map((p) => p.tally.count), raw: [rawTally.count] };
    case "arm":
      for (const t of receivers(cmd.side)) t.reset(cmd.stamped);
      return {};
    case "wait":
      return wait(cmd);
    case "publisher":
      return connectPublisher(cmd.port);
    case "rawPub":
      return connectRawPub(cmd.redis);
    case "pub":
      return pub(cmd);
    case "burst":
      return burst(cmd);
    case "rate":
      return rate(cmd);
  }
  throw new Error(`unknown op ${(cmd as { op: unknown }).op}`);
}

// Commands run one after another; stdin closing means the parent is done or gone.
const { finished } = await serveCommands(run, "message");
await finished;
for (const p of [...subscribers, ...(publisher ? [publisher] : [])]) p.socket?.terminate();
rawSub?.disconnect();
rawPub?.disconnect();
process.exit(0);
