// The iodine app for bench/cluster.ts, run as a cluster through the CLI:
//   bun cli.ts -p 0 -b 127.0.0.1 -w 2 bench/cluster-app.ts
//
// A WebSocket on /ws is told which process serves it (first message `pid N`) and then takes
// commands, one per text message. The publishing always happens in the worker that serves the
// commanding socket, so the load client picks the publisher by picking the socket.
//   sub CH                      subscribe this socket to CH (no callback: Bun's native topics) → `ok sub CH`
//   pub CH TEXT                 one Iodine.publish(CH, TEXT) (readiness probes)
//   clock                       → `clock µs`: this process's wall clock (timeOrigin + now), in µs
//   burst CH TOTAL BATCH SIZE   TOTAL publishes of a SIZE-byte `#xxx…` message on CH, BATCH per turn of
//                               the event loop (so the bus, the master and the other worker stream
//                               alongside) → `done burst MS` (ms spent publishing, first to last)
//   rate CH PER_S MS SIZE       PER_S publishes per second for MS ms from a 1 ms timer, each a SIZE-byte
//                               message `@µs …` stamped with the wall clock at its own publish
//                               → `done rate N LAG`: LAG is the most any message went out behind its
//                               schedule, ms (a stalled event loop here is not in the delays measured)
// GET / answers `pid N`.
import { Iodine, type Connection, type Handler } from "iodine";

const now = () => performance.timeOrigin + performance.now();

function burst(c: Connection, channel: string, total: number, batch: number, size: number): void {
  const message = "#" + "x".repeat(Math.max(0, size - 1));
  let sent = 0;
  const t0 = performance.now();
  const step = () => {
    const end = Math.min(total, sent + batch);
    for (; sent < end; sent++) Iodine.publish(channel, message);
    if (sent < total) setImmediate(step);
    else c.write(`done burst ${(performance.now() - t0).toFixed(3)}`);
  };
  step();
}

function rate(c: Connection, channel: string, perSecond: number, ms: number, size: number): void {
  const total = Math.round((perSecond * ms) / 1000);
  let sent = 0;
  let lag = 0;
  const t0 = performance.now();
  const timer = setInterval(() => {
    const elapsed = performance.now() - t0;
    const due = Math.min(total, Math.floor((elapsed * perSecond) / 1000));
    if (due > sent) lag = Math.max(lag, elapsed - (sent * 1000) / perSecond);
    for (; sent < due; sent++) {
      const stamp = "@" + Math.round(now() * 1000) + " ";
      Iodine.publish(channel, stamp.padEnd(size, "x"));
    }
    if (sent >= total) {
      clearInterval(timer);
      c.write(`done rate ${sent} ${lag.toFixed(3)}`);
    }
  }, 1);
}

const commands: Handler = {
  onOpen(c) {
    c.write(`pid ${process.pid}`);
  },
  onMessage(c, data) {
    const [op, channel = "", a = "", b = "", d = ""] = String(data).split(" ");
    switch (op) {
      case "sub":
        c.subscribe(channel);
        c.write(`ok sub ${channel}`);
        return;
      case "pub":
        Iodine.publish(channel, a);
        return;
      case "clock":
        c.write(`clock ${Math.round(now() * 1000)}`);
        return;
      case "burst":
        return burst(c, channel, Number(a), Number(b), Number(d));
      case "rate":
        return rate(c, channel, Number(a), Number(b), Number(d));
      default:
        c.write(`error unknown command ${JSON.stringify(op)}`);
    }
  },
};

export default {
  fetch(req: Request): Response {
    if (Iodine.upgradeKind(req) === "websocket") return Iodine.upgrade(req, commands);
    return new Response(`pid ${process.pid}`);
  },
};
