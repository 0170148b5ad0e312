// The clusters phase of bench/redis-history.ts: history against ordinary publishes end to end, as an
// app sees them. Two `iodine -w 2 -r URL bench/redis-history-app.ts` clusters on the bench's Redis; a
// WebSocket on B commands its worker to publish N messages (`burst`, 1,000 a turn); a WebSocket on A,
// subscribed to the channel (Bun's native topics), counts them. msg/s = N ÷ (burst sent → N-th
// frame); CPU per message is summed over both clusters (masters and workers) and redis-server.
import { ROOT } from "./lib/tools.ts";
import { iodineCmd, startServer, stopServer, type Server } from "./lib/processes.ts";
import { cpuMicros, cpuTicks } from "./lib/machine.ts";
import { inRounds } from "./lib/stats.ts";

export const CLUSTER_CHANNEL = { plain: "bench:plain", history: "bench:h:e2e" } as const;
export type ClusterSide = keyof typeof CLUSTER_CHANNEL;

export interface ClusterRun {
  side: ClusterSide;
  rate: number;
  /** µs of CPU per message: cluster A, cluster B, redis-server */
  cpu: { a: number; b: number; redis: number };
}

/** A WebSocket to a cluster whose frames are counted, and awaited by text. */
class Socket {
  frames = 0;
  #last = "";
  #wake: (() => void) | undefined;
  private constructor(readonly ws: WebSocket) {
    ws.onmessage = (e) => {
      this.frames++;
      this.#last = String(e.data);
      this.#wake?.();
    };
  }

  static async open(url: string): Promise<Socket> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot open ${url}`));
    });
    return new Socket(ws);
  }

  /** Resolves once `ok()` holds (checked on every frame), or rejects after `ms`. */
  until(ok: (last: string) => boolean, ms: number, what: string): Promise<void> {
    if (ok(this.#last)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        reject(new Error(`timed out after ${ms} ms: ${what} (${this.frames} frames)`));
      }, ms);
      this.#wake = () => {
        if (!ok(this.#last)) return;
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
  }
}

export async function clustersPhase(
  url: string,
  redisPid: number,
  o: { rounds: number; messages: number; size: number; servers: Server[] },
): Promise<ClusterRun[]> {
  const start = async (name: string) => {
    const s = await startServer(
      `cluster ${name}`,
      iodineCmd("-w", "2", "-r", url, "bench/redis-history-app.ts"),
      { cwd: ROOT },
    );
    o.servers.push(s);
    await s.stderr.match(/redis: connected to /);
    return s;
  };
  const a = await start("A");
  const b = await start("B");
  const wsUrl = (s: Server) => s.url.replace("http", "ws");
  const publisher = await Socket.open(wsUrl(b));
  const subscribers = {} as Record<ClusterSide, Socket>;
  for (const side of ["plain", "history"] as const) {
    const sub = (subscribers[side] = await Socket.open(wsUrl(a)));
    sub.ws.send(`sub ${CLUSTER_CHANNEL[side]}`);
    await sub.until((m) => m.startsWith("ok sub"), 5000, "the subscription");
    // The route through Redis is in place once a probe from B arrives.
    for (let i = 0; sub.frames < 3; i++) {
      if (i === 100) throw new Error(`no probe from B reached A on ${CLUSTER_CHANNEL[side]}`);
      publisher.ws.send(`pub ${CLUSTER_CHANNEL[side]} probe`);
      await sub.until(() => sub.frames >= 3, 100, "a probe").catch(() => {});
    }
  }
  const round = async (side: ClusterSide, n: number): Promise<ClusterRun> => {
    const sub = subscribers[side];
    const from = sub.frames;
    const ticks = [a.proc.pid, b.proc.pid, redisPid].map(cpuTicks);
    const t0 = performance.now();
    publisher.ws.send(`burst ${CLUSTER_CHANNEL[side]} ${n} 1000 ${o.size}`);
    await sub.until(() => sub.frames - from >= n, 120_000, `${n} ${side} messages at A`);
    const seconds = (performance.now() - t0) / 1000;
    await publisher.until((m) => m.startsWith("done burst"), 10_000, "the burst's end");
    const [ca, cb, cr] = [a.proc.pid, b.proc.pid, redisPid].map(
      (pid, i) => cpuMicros(cpuTicks(pid) - ticks[i]!, n) as number,
    );
    const run = { side, rate: n / seconds, cpu: { a: ca!, b: cb!, redis: cr! } };
    // Nothing more than N: a duplicate would show up as a frame past N.
    if (sub.frames - from !== n) throw new Error(`${side}: ${sub.frames - from} frames, not ${n}`);
    return run;
  };
  for (const side of ["plain", "history"] as const) await round(side, Math.min(o.messages, 20_000));
  const runs = await inRounds(o.rounds, ["plain", "history"] as const, async (side, r) => {
    const run = await round(side, o.messages);
    console.log(
      `round ${r + 1}  ${side.padEnd(8)} ${Math.round(run.rate).toLocaleString("en-US").padStart(10)} msg/s   ` +
        `CPU per message: A ${run.cpu.a.toFixed(1)} µs, B ${run.cpu.b.toFixed(1)} µs, redis-server ${run.cpu.redis.toFixed(1)} µs`,
    );
    return run;
  });
  publisher.ws.close();
  for (const s of Object.values(subscribers)) s.ws.close();
  for (const s of [a, b]) await stopServer(s);
  return runs;
}
