// The load client of bench/cluster.ts: holds one WebSocket on each of two worker processes of an
// iodine cluster running bench/cluster-app.ts (or two on a single iodine process), commands them,
// and counts (or times) what arrives.
// Driven by JSON lines on stdin, answers JSON lines on stdout (each answer carries the `seq` of its
// command). Exits when stdin closes (the parent is gone).
//
//   {"seq":1,"op":"connect","port":PORT,"workers":2}
//        connects until it holds sockets on two different worker pids (workers 1: any two sockets, for
//        a server of one process); socket i subscribes to "to-i";
//        checks that a publish crosses in both directions; estimates each worker's clock offset
//        → {pids, attempts, clock: [{offsetUs, rttUs}, …]}
//   {"seq":2,"op":"burst","from":0,"to":1,"total":N,"batch":B,"size":64}
//        worker `from` publishes N messages on "to-<to>"; waits for all N on socket `to`
//        → {received, expected, seconds (command → last delivery), steadySeconds (first → last), …}
//   {"seq":3,"op":"rate","from":0,"to":1,"perSecond":10000,"ms":2500,"size":64}
//        worker `from` publishes at a fixed rate, each message stamped; socket `to` takes the delay
//        of each message on arrival → {received, expected, p50Us, p99Us, …}
//
// The sockets are raw TCP (Bun.connect, see bench/client-lib.ts) with a small WebSocket frame walker.
import type { Socket } from "bun";
import {
  afterHead,
  connectPeer,
  failHandlers,
  headerByte,
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
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HASH = 0x23; // '#': a counted message
const AT = 0x40; // '@': a timestamped message

/** The wall clock shared by every process on this machine (timeOrigin + now agree to a few µs), in µs. */
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;

class Peer extends RawPeer<Peer> {
  pid = 0;
  closed = false;
  texts: { prefix: string; resolve: (text: string) => void }[] = [];
  // frame walker state (besides the partial header): partial payload
  opcode = 0;
  part = new Uint8Array(256);
  partLen = 0;
  need = 0;
  // what arrived since the last reset
  count = 0;
  firstAt = 0;
  lastAt = 0;
  /** delays of timestamped messages, µs */
  delays: Float64Array | undefined;
  ndelays = 0;
  /** the arrival time of the chunk being walked, µs (read once per chunk) */
  chunkAt = 0;

  reset(expectStamped = 0): void {
    this.count = 0;
    this.firstAt = 0;
    this.lastAt = 0;
    this.ndelays = 0;
    this.delays = expectStamped > 0 ? new Float64Array(expectStamped + 1024) : undefined;
  }

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
    const first = end > start ? buf[start]! : 0;
    if (first === HASH || first === AT) {
      p.count++;
      if (p.firstAt === 0) p.firstAt = p.chunkAt;
      p.lastAt = p.chunkAt;
      if (first === AT && p.delays !== undefined) {
        let stamp = 0;
        for (let i = start + 1; i < end; i++) {
          const d = buf[i]! - 48;
          if (d < 0 || d > 9) break;
          stamp = stamp * 10 + d;
        }
        if (p.ndelays < p.delays.length) p.delays[p.ndelays++] = p.chunkAt - stamp;
      }
      return;
    }
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

let peers: [Peer, Peer] | undefined;

/** `workers` 2: sockets on two different pids (a cluster); 1: any two sockets (a single process). */
async function connect(port: number, workers: 1 | 2) {
  for (const p of peers ?? []) p.socket?.terminate();
  peers = undefined;
  const held: Peer[] = [];
  let attempts = 0;
  while (held.length < 2 && attempts < MAX_ATTEMPTS) {
    attempts++;
    const p = await openOne(port);
    if (p === undefined) continue;
    if (workers === 2 && held.some((h) => h.pid === p.pid)) p.socket?.terminate();
    else held.push(p);
  }
  if (held.length < 2)
    throw new Error(
      `${attempts} connections, and only pid ${held.map((p) => p.pid).join(", ") || "none"} answered`,
    );
  const two = held as [Peer, Peer];
  for (const [i, p] of two.entries()) {
    const ok = p.next(`ok sub to-${i}`);
    p.send(`sub to-${i}`);
    await ok;
  }
  // The SUB frames reach the master through each worker's own link: publish until it crosses.
  for (const [from, to] of [
    [0, 1],
    [1, 0],
  ] as const) {
    const deadline = Date.now() + 10_000;
    two[to].reset();
    while (two[to].count === 0) {
      if (Date.now() > deadline)
        throw new Error(`a publish in pid ${two[from].pid} never reached pid ${two[to].pid}`);
      two[from].send(`pub to-${to} #probe`);
      await Bun.sleep(20);
    }
  }
  await Bun.sleep(100); // late probes
  peers = two;
  return {
    pids: two.map((p) => p.pid),
    attempts,
    clock: [await clockOffset(two[0]), await clockOffset(two[1])],
  };
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

function need(): [Peer, Peer] {
  if (peers === undefined) throw new Error("not connected");
  for (const p of peers) if (p.closed) throw new Error(`the socket on pid ${p.pid} was closed`);
  return peers;
}

/** Resolves when `p` has `expected` messages, or nothing came for QUIET_MS after `since`, or at the hard limit. */
function arrival(p: Peer, expected: number, since: () => number): Promise<boolean> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const tick = setInterval(() => {
      const done = p.count >= expected;
      const quiet = nowUs() - Math.max(p.lastAt, since()) > QUIET_MS * 1000;
      if (done || quiet || p.closed || Date.now() - t0 > RUN_TIMEOUT_MS) {
        clearInterval(tick);
        resolve(done);
      }
    }, 1);
  });
}

async function burst(cmd: { from: 0 | 1; to: 0 | 1; total: number; batch: number; size: number }) {
  const [from, to] = [need()[cmd.from], need()[cmd.to]];
  to.reset();
  const cpu0 = process.cpuUsage();
  const done = from.next("done burst", RUN_TIMEOUT_MS);
  const t0 = nowUs();
  from.send(`burst to-${cmd.to} ${cmd.total} ${cmd.batch} ${cmd.size}`);
  let answeredAt = Infinity;
  const publishMs = done.then((text) => ((answeredAt = nowUs()), Number(text.split(" ")[2])));
  const complete = await arrival(to, cmd.total, () =>
    Math.min(answeredAt, t0 + RUN_TIMEOUT_MS * 1000),
  );
  const cpu = process.cpuUsage(cpu0);
  return {
    expected: cmd.total,
    received: to.count,
    complete,
    closed: to.closed,
    seconds: (to.lastAt - t0) / 1e6,
    steadySeconds: (to.lastAt - to.firstAt) / 1e6,
    firstSeconds: (to.firstAt - t0) / 1e6,
    publishMs: await Promise.race([publishMs, Bun.sleep(QUIET_MS).then(() => NaN)]),
    clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

async function rate(cmd: { from: 0 | 1; to: 0 | 1; perSecond: number; ms: number; size: number }) {
  const [from, to] = [need()[cmd.from], need()[cmd.to]];
  const expected = Math.round((cmd.perSecond * cmd.ms) / 1000);
  to.reset(expected);
  const cpu0 = process.cpuUsage();
  const done = from.next("done rate", cmd.ms + RUN_TIMEOUT_MS);
  const t0 = nowUs();
  from.send(`rate to-${cmd.to} ${cmd.perSecond} ${cmd.ms} ${cmd.size}`);
  let answeredAt = Infinity;
  let lagMs = NaN;
  void done.then((text) => ((answeredAt = nowUs()), (lagMs = Number(text.split(" ")[3]))));
  const complete = await arrival(to, expected, () =>
    Math.min(answeredAt, t0 + (cmd.ms + RUN_TIMEOUT_MS) * 1000),
  );
  await Promise.race([done, Bun.sleep(1000)]).catch(() => {});
  const cpu = process.cpuUsage(cpu0);
  const d = to.delays!.subarray(0, to.ndelays).sort();
  const q = (f: number) => (d.length ? d[Math.min(d.length - 1, Math.floor(f * d.length))]! : NaN);
  let sum = 0;
  for (const x of d) sum += x;
  return {
    expected,
    received: to.count,
    complete,
    closed: to.closed,
    seconds: (to.lastAt - t0) / 1e6,
    minUs: d[0] ?? NaN,
    p50Us: q(0.5),
    p90Us: q(0.9),
    p99Us: q(0.99),
    p999Us: q(0.999),
    maxUs: d[d.length - 1] ?? NaN,
    meanUs: sum / Math.max(1, d.length),
    publisherLagMs: lagMs,
    clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

type Command =
  | { seq: number; op: "connect"; port: number; workers: 1 | 2 }
  | { seq: number; op: "burst"; from: 0 | 1; to: 0 | 1; total: number; batch: number; size: number }
  | {
      seq: number;
      op: "rate";
      from: 0 | 1;
      to: 0 | 1;
      perSecond: number;
      ms: number;
      size: number;
    };

async function run(cmd: Command): Promise<object> {
  if (cmd.op === "connect") return connect(cmd.port, cmd.workers);
  if (cmd.op === "burst") return burst(cmd);
  if (cmd.op === "rate") return rate(cmd);
  throw new Error(`unknown op ${(cmd as { op: unknown }).op}`);
}

// Commands run one after another; stdin closing means the parent is done or gone.
const { finished } = await serveCommands(run, "message");
await finished;
for (const p of peers ?? []) p.socket?.terminate();
process.exit(0);
