// The load client of bench/pubsub.ts: holds many WebSocket or SSE connections to ONE server and
// counts the messages they receive. Driven by JSON lines on stdin, answers JSON lines on stdout
// (each answer carries the `seq` of its command). Exits when stdin closes (the parent is gone).
//
//   {"seq":1,"op":"ws","n":10000,"port":PORT}    grow or shrink to n WebSocket connections
//        (`"deflate":true`: new ones offer permessage-deflate; compressed frames are counted, not inflated)
//   {"seq":2,"op":"sse","n":1000,"port":PORT}    the same with EventSource streams (GET /sse)
//   {"seq":3,"op":"burst","n":N,"size":64,"port":PORT}
//        POST /burst?n=N&size=64, then wait until every connection has its N messages; answers
//        {received, expected, seconds (burst request → last delivery), compressed, payloadBytes, ...}
//        (`"channel":"C"` adds &channel=C: bench/history-app.ts publishes on the channel it names)
//
// The sockets are raw TCP (Bun.connect, see bench/client-lib.ts) with a minimal WebSocket frame
// walker / SSE `data:` counter.
import type { Socket } from "bun";
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

const BATCH = 500;
const OPEN_TIMEOUT_MS = 10_000;
/** after the burst answered, how long without a byte before the missing messages count as dropped */
const QUIET_MS = 3000;
const BURST_TIMEOUT_MS = 60_000;

type Kind = "ws" | "sse";

class Peer extends RawPeer<Peer> {
  readonly kind: Kind;
  /** offers permessage-deflate in its upgrade request */
  readonly deflate: boolean;
  /** messages since the last burst started */
  count = 0;
  // WebSocket frame walker (besides the partial header): payload bytes still to skip
  skip = 0;
  // SSE: how much of "data:" the previous chunk ended with
  partial = 0;

  constructor(kind: Kind, deflate: boolean) {
    super();
    this.kind = kind;
    this.deflate = deflate;
  }
}

const peers: Record<Kind, Set<Peer>> = { ws: new Set(), sse: new Set() };
let received = 0;
let badSize = 0;
/** messages that came compressed (RSV1 set), and the payload bytes of every message as sent */
let compressed = 0;
let payloadBytes = 0;
let closedLive = 0;
let lastByteAt = 0;
let expectedSize = 0;
let waiting: { expected: number; resolve: (at: number) => void } | undefined;

const DATA = Buffer.from("data:");

function onMessage(p: Peer, size: number): void {
  p.count++;
  received++;
  payloadBytes += size;
  if (size !== expectedSize && expectedSize !== 0) badSize++;
}

/** Walks WebSocket frames (server frames are never masked). */
function walkFrames(p: Peer, buf: Uint8Array, from: number): void {
  const len = buf.length;
  let i = from;
  while (i < len) {
    if (p.skip > 0) {
      const take = Math.min(p.skip, len - i);
      p.skip -= take;
      i += take;
      continue;
    }
    if (p.hlen === 0 && len - i >= 2 && (buf[i + 1]! & 0x7f) < 126) {
      const l = buf[i + 1]! & 0x7f;
      frame(p, buf[i]!, l);
      p.skip = l;
      i += 2;
      continue;
    }
    const l = headerByte(p, buf[i++]!);
    if (l < 0) continue;
    frame(p, p.hdr[0]!, l);
    p.skip = l;
  }
}

/** A frame's header is whole: its first byte (FIN, RSV1–3, opcode) and its payload length. */
function frame(p: Peer, first: number, length: number): void {
  const opcode = first & 0x0f;
  if (opcode === 1 || opcode === 2) {
    // RSV1: permessage-deflate compressed it (RFC 7692 §6), so its size is not the message's
    if (first & 0x40) {
      compressed++;
      p.count++;
      received++;
      payloadBytes += length;
    } else onMessage(p, length);
  } else if (opcode === 9) p.socket?.write(PONG); // any bytes reset the server's idle timer
}

/** Counts `data:` in an SSE stream; "data:" has no border, so one carried prefix length is enough. */
function countEvents(p: Peer, buf: Buffer, from: number): void {
  let i = from;
  if (p.partial > 0) {
    let m = p.partial;
    let j = i;
    while (m < 5 && j < buf.length && buf[j] === DATA[m]) (m++, j++);
    if (m === 5) {
      onMessage(p, expectedSize);
      i = j;
    } else if (j >= buf.length) {
      p.partial = m; // the whole chunk was more of the prefix
      return;
    }
    // else the prefix broke: the chunk is scanned from its start
    p.partial = 0;
  }
  for (;;) {
    const at = buf.indexOf(DATA, i);
    if (at < 0) break;
    onMessage(p, expectedSize);
    i = at + 5;
  }
  // the chunk may end inside "data:"
  for (let k = Math.min(4, buf.length - i); k > 0; k--) {
    if (buf.subarray(buf.length - k).equals(DATA.subarray(0, k))) {
      p.partial = k;
      break;
    }
  }
}

const handlers = {
  open(socket: Socket<Peer>) {
    const p = socket.data;
    p.socket = socket;
    socket.write(
      p.kind === "ws"
        ? upgradeRequest("/", p.deflate)
        : `GET /sse HTTP/1.1\r\nHost: ${HOST}\r\nAccept: text/event-stream\r\n\r\n`,
    );
  },
  data(socket: Socket<Peer>, buf: Buffer) {
    const p = socket.data;
    lastByteAt = performance.now();
    const from = p.ready ? 0 : afterHead(p, buf, p.kind === "ws" ? "HTTP/1.1 101" : "HTTP/1.1 200");
    if (from < 0) return;
    const before = received;
    if (p.kind === "ws") walkFrames(p, buf, from);
    else countEvents(p, buf, from);
    if (waiting && received !== before && received >= waiting.expected) {
      const w = waiting;
      waiting = undefined;
      w.resolve(performance.now());
    }
  },
  close(socket: Socket<Peer>) {
    const p = socket.data;
    if (peers[p.kind].delete(p) && p.ready) closedLive++;
    if (!p.ready) p.onReady?.(false);
  },
  ...failHandlers<Peer>(),
};

async function openOne(kind: Kind, port: number, deflate: boolean): Promise<boolean> {
  const p = new Peer(kind, deflate);
  if (!(await connectPeer(p, port, handlers, OPEN_TIMEOUT_MS))) return false;
  peers[kind].add(p);
  return true;
}

/** Grows or shrinks the set of `kind` connections to `n`. */
async function resize(kind: Kind, n: number, port: number, deflate: boolean) {
  const set = peers[kind];
  const t0 = performance.now();
  let failed = 0;
  for (const p of [...set].slice(n)) {
    set.delete(p);
    p.socket?.terminate();
  }
  while (set.size < n && failed < 100) {
    const batch = Math.min(BATCH, n - set.size);
    const oks = await Promise.all(
      Array.from({ length: batch }, () => openOne(kind, port, deflate)),
    );
    failed += oks.filter((ok) => !ok).length;
  }
  return { live: set.size, failed, ms: performance.now() - t0 };
}

async function burst(cmd: { n: number; size: number; port: number; channel?: string }) {
  const live = [...peers.ws, ...peers.sse];
  for (const p of live) p.count = 0;
  received = 0;
  badSize = 0;
  compressed = 0;
  payloadBytes = 0;
  closedLive = 0;
  expectedSize = cmd.size;
  const expected = live.length * cmd.n;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const last = new Promise<number>((resolve) => (waiting = { expected, resolve }));
  const on = cmd.channel === undefined ? "" : `&channel=${encodeURIComponent(cmd.channel)}`;
  const answer = fetch(`http://${HOST}:${cmd.port}/burst?n=${cmd.n}&size=${cmd.size}${on}`, {
    method: "POST",
  }).then(async (res) => ({ at: performance.now(), body: (await res.json()) as { ms: number } }));
  const { at: answeredAt, body } = await answer;
  // all in, or a quiet socket set (messages were dropped), or the hard limit
  const lastAt = await new Promise<number | null>((resolve) => {
    const tick = setInterval(() => {
      const now = performance.now();
      if (now - Math.max(lastByteAt, answeredAt) > QUIET_MS || now - t0 > BURST_TIMEOUT_MS) {
        clearInterval(tick);
        resolve(null);
      }
    }, 100);
    last.then((at) => {
      clearInterval(tick);
      resolve(at);
    });
  });
  waiting = undefined;
  const cpu = process.cpuUsage(cpu0);
  let min = Infinity;
  let max = 0;
  for (const p of live) {
    if (p.count < min) min = p.count;
    if (p.count > max) max = p.count;
  }
  const end = lastAt ?? lastByteAt;
  return {
    expected,
    received,
    complete: lastAt !== null && received === expected,
    seconds: (end - t0) / 1000,
    answeredSeconds: (answeredAt - t0) / 1000,
    publishMs: body.ms,
    perConnection: { min: live.length ? min : 0, max },
    badSize,
    compressed,
    payloadBytes,
    closedDuring: closedLive,
    clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

async function run(cmd: {
  seq: number;
  op: string;
  n: number;
  size: number;
  port: number;
  deflate?: boolean;
  channel?: string;
}): Promise<object> {
  if (cmd.op === "ws" || cmd.op === "sse")
    return resize(cmd.op, cmd.n, cmd.port, cmd.deflate === true);
  if (cmd.op === "burst") return burst(cmd);
  throw new Error(`unknown op ${cmd.op}`);
}

// Commands run one after another; stdin closing means the parent is done or gone (no waiting for a
// command still running).
await serveCommands(run, "stack");
process.exit(0);
