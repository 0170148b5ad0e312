// The load client of bench/pubsub.ts: holds many WebSocket or SSE connections to ONE server and
// counts the messages they receive. Driven by JSON lines on stdin, answers JSON lines on stdout
// (each answer carries the `seq` of its command). Exits when stdin closes (the parent is gone).
//
//   {"seq":1,"op":"ws","n":10000,"port":PORT}    grow or shrink to n WebSocket connections
//   {"seq":2,"op":"sse","n":1000,"port":PORT}    the same with EventSource streams (GET /sse)
//   {"seq":3,"op":"burst","n":N,"size":64,"port":PORT}
//        POST /burst?n=N&size=64, then wait until every connection has its N messages; answers
//        {received, expected, seconds (burst request → last delivery), ...}
//
// The sockets are raw TCP (Bun.connect) with a minimal WebSocket frame walker / SSE `data:` counter:
// a WebSocket object would run one JS event per message, and the client, not the server, would
// then set the pace on a 2-core machine.
import type { Socket } from "bun";

const HOST = "127.0.0.1";
const BATCH = 500;
const OPEN_TIMEOUT_MS = 10_000;
/** after the burst answered, how long without a byte before the missing messages count as dropped */
const QUIET_MS = 3000;
const BURST_TIMEOUT_MS = 60_000;

type Kind = "ws" | "sse";

class Peer {
  readonly kind: Kind;
  socket: Socket<Peer> | undefined;
  /** before the 101 / 200 head has arrived */
  head = "";
  ready = false;
  onReady: ((ok: boolean) => void) | undefined;
  /** messages since the last burst started */
  count = 0;
  // WebSocket frame walker: payload bytes still to skip, partial header
  skip = 0;
  hdr = new Uint8Array(10);
  hlen = 0;
  // SSE: how much of "data:" the previous chunk ended with
  partial = 0;

  constructor(kind: Kind) {
    this.kind = kind;
  }
}

const peers: Record<Kind, Set<Peer>> = { ws: new Set(), sse: new Set() };
let received = 0;
let badSize = 0;
let closedLive = 0;
let lastByteAt = 0;
let expectedSize = 0;
let waiting: { expected: number; resolve: (at: number) => void } | undefined;

const PONG = new Uint8Array([0x8a, 0x80, 0, 0, 0, 0]); // empty masked pong
const DATA = Buffer.from("data:");

function onMessage(p: Peer, size: number): void {
  p.count++;
  received++;
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
      frame(p, buf[i]! & 0x0f, l);
      p.skip = l;
      i += 2;
      continue;
    }
    const h = p.hdr;
    h[p.hlen++] = buf[i++]!;
    if (p.hlen < 2) continue;
    const l7 = h[1]! & 0x7f;
    const need = l7 < 126 ? 2 : l7 === 126 ? 4 : 10;
    if (p.hlen < need) continue;
    let l = l7;
    if (l7 === 126) l = (h[2]! << 8) | h[3]!;
    else if (l7 === 127) l = Number(new DataView(h.buffer).getBigUint64(2));
    p.hlen = 0;
    frame(p, h[0]! & 0x0f, l);
    p.skip = l;
  }
}

function frame(p: Peer, opcode: number, length: number): void {
  if (opcode === 1 || opcode === 2) onMessage(p, length);
  else if (opcode === 9) p.socket?.write(PONG); // any bytes reset the server's idle timer
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
        ? `GET / HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        : `GET /sse HTTP/1.1\r\nHost: ${HOST}\r\nAccept: text/event-stream\r\n\r\n`,
    );
  },
  data(socket: Socket<Peer>, buf: Buffer) {
    const p = socket.data;
    lastByteAt = performance.now();
    let from = 0;
    if (!p.ready) {
      p.head += buf.toString("latin1");
      const end = p.head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const ok = p.head.startsWith(p.kind === "ws" ? "HTTP/1.1 101" : "HTTP/1.1 200");
      from = buf.length - (p.head.length - end - 4);
      p.head = "";
      p.ready = true;
      p.onReady?.(ok);
      if (!ok) return void socket.end();
    }
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
  error(socket: Socket<Peer>) {
    socket.data.onReady?.(false);
  },
  connectError(socket: Socket<Peer>) {
    socket.data.onReady?.(false);
  },
};

async function openOne(kind: Kind, port: number): Promise<boolean> {
  const p = new Peer(kind);
  const ready = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), OPEN_TIMEOUT_MS);
    p.onReady = (ok) => {
      clearTimeout(timer);
      p.onReady = undefined;
      resolve(ok);
    };
  });
  try {
    await Bun.connect({ hostname: HOST, port, data: p, socket: handlers });
  } catch {
    return false;
  }
  if (!(await ready)) {
    p.socket?.terminate();
    return false;
  }
  peers[kind].add(p);
  return true;
}

/** Grows or shrinks the set of `kind` connections to `n`. */
async function resize(kind: Kind, n: number, port: number) {
  const set = peers[kind];
  const t0 = performance.now();
  let failed = 0;
  for (const p of [...set].slice(n)) {
    set.delete(p);
    p.socket?.terminate();
  }
  while (set.size < n && failed < 100) {
    const batch = Math.min(BATCH, n - set.size);
    const oks = await Promise.all(Array.from({ length: batch }, () => openOne(kind, port)));
    failed += oks.filter((ok) => !ok).length;
  }
  return { live: set.size, failed, ms: performance.now() - t0 };
}

async function burst(cmd: { n: number; size: number; port: number }) {
  const live = [...peers.ws, ...peers.sse];
  for (const p of live) p.count = 0;
  received = 0;
  badSize = 0;
  closedLive = 0;
  expectedSize = cmd.size;
  const expected = live.length * cmd.n;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const last = new Promise<number>((resolve) => (waiting = { expected, resolve }));
  const answer = fetch(`http://${HOST}:${cmd.port}/burst?n=${cmd.n}&size=${cmd.size}`, { method: "POST" }).then(
    async (res) => ({ at: performance.now(), body: (await res.json()) as { ms: number } }),
  );
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
    closedDuring: closedLive,
    clientCpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

async function handle(line: string): Promise<void> {
  const cmd = JSON.parse(line) as { seq: number; op: string; n: number; size: number; port: number };
  let out: unknown;
  try {
    if (cmd.op === "ws" || cmd.op === "sse") out = await resize(cmd.op, cmd.n, cmd.port);
    else if (cmd.op === "burst") out = await burst(cmd);
    else throw new Error(`unknown op ${cmd.op}`);
  } catch (err) {
    out = { error: String(err instanceof Error ? err.stack : err) };
  }
  process.stdout.write(JSON.stringify({ seq: cmd.seq, ...(out as object) }) + "\n");
}

// Commands run one after another; stdin closing means the parent is done or gone.
let queue = Promise.resolve();
let rest = "";
for await (const chunk of Bun.stdin.stream()) {
  rest += new TextDecoder().decode(chunk);
  let nl: number;
  while ((nl = rest.indexOf("\n")) >= 0) {
    const line = rest.slice(0, nl);
    rest = rest.slice(nl + 1);
    if (line.trim()) queue = queue.then(() => handle(line));
  }
}
process.exit(0);
