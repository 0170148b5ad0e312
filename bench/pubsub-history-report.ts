// What the history phase (bench/pubsub-history.ts) measured and how it is shown: its results' shapes,
// the lines bench/pubsub.ts prints, and the ratio and absolute entries for bench/report.ts.
import {
  absoluteEntry,
  fmtRatio,
  fmtRps,
  notesText,
  ratioEntry,
  type Absolute,
  type Ratio,
  type Spread,
} from "./lib/stats.ts";

export const TARGET = { cluster: 0.7, redis: 0.5 } as const;
export type RigName = keyof typeof TARGET;
export const RIG_LABEL: Record<RigName, string> = { cluster: "-w 2", redis: "-w 2 on Redis" };
export type Kind = "ordinary" | "history";

/** What bench/pubsub-client.ts answers to a burst (the fields used here). */
export interface BurstAnswer {
  expected: number;
  received: number;
  complete: boolean;
  seconds: number;
  publishMs: number;
  perConnection: { min: number; max: number };
  closedDuring: number;
}

export type Run = BurstAnswer & {
  /** deliveries per second */
  rate: number;
  /** CPU of the cluster (master and workers) per publish, µs; and of redis-server */
  clusterCpuUs: number;
  redisCpuUs: number;
};

export interface Row extends Spread {
  kind: Kind;
  rounds: Run[];
  clusterCpuUs: number;
  redisCpuUs: number;
}

/** One fill: C × M messages of one size on channels not used before, and what grew. */
export interface Fill {
  messageBytes: number;
  messages: number;
  seconds: number;
  rssBefore: number;
  rssAfter: number;
  rssPerMessage: number;
  /** the master's JS heap after a full GC (bun:jsc heapSize: live objects and the bytes they own) */
  heapPerMessage: number;
  /** Redis's used_memory (rig "redis" only) */
  usedBefore?: number;
  usedAfter?: number;
  usedPerMessage?: number;
}

/** The fills of one message size: growth per message, the median fill and the range. */
export interface MemoryRow {
  messageBytes: number;
  channels: number;
  messagesPerFill: number;
  rss: Spread;
  heap: Spread;
  used?: Spread;
  fills: Fill[];
}

export interface Part {
  rig: RigName;
  command: string;
  /** where the history was: Redis when it holds keys after the fills (plain PUBLISH leaves none) */
  keptIn: "the master" | "Redis";
  subscribers: number;
  historySize: number;
  messagesPerBurst: number;
  rows: Row[];
  memory: MemoryRow[];
  churn: Churn;
}

/**
 * The master's JS heap across CHURN publishes on a channel already full (it keeps 1,000), published
 * while the fills' messages are held: bounded history means ≈ 0 per publish, whatever is held elsewhere.
 */
export interface Churn {
  publishes: number;
  heapBefore: number;
  heapAfter: number;
  perPublish: number;
}

export interface AppStats {
  plain: number;
  history: number;
  size: number;
  memorySize: number;
}

/** What the phase hands bench/pubsub.ts. */
export interface HistoryResults {
  parts: Part[];
  notes: string[];
  ratios: Ratio[];
  absolutes: Absolute[];
}

// --- the report ---

/** The lines bench/pubsub.ts prints for this phase. */
export function printHistory(h: HistoryResults): void {
  console.log("");
  console.log(
    `${"history".padEnd(18)}${"channel".padEnd(10)}${"msgs/burst".padStart(10)}${"median deliveries/s".padStart(21)}   ${"min–max".padEnd(23)}${"cluster µs CPU/publish".padStart(22)}`,
  );
  console.log("-".repeat(107));
  for (const p of h.parts) {
    p.rows.forEach((r, i) => {
      const redisCpu = p.rig === "redis" ? `   redis-server ${r.redisCpuUs.toFixed(1)} µs` : "";
      console.log(
        `${(i === 0 ? RIG_LABEL[p.rig] : "").padEnd(18)}${r.kind.padEnd(10)}${(i === 0 ? fmtRps(p.messagesPerBurst) : "").padStart(10)}${fmtRps(r.median).padStart(21)}   ${`${fmtRps(r.min)}–${fmtRps(r.max)}`.padEnd(23)}${r.clusterCpuUs.toFixed(1).padStart(22)}${redisCpu}${dropNote(r)}`,
      );
    });
    const [ordinary, history] = p.rows as [Row, Row];
    const ratio = history.median / ordinary.median;
    console.log(
      `${"".padEnd(18)}history ÷ ordinary ${fmtRatio(ratio)} (target ≥ ${TARGET[p.rig]}: ${ratio >= TARGET[p.rig] ? "PASS" : "MISS"})   ${p.command}`,
    );
  }
  console.log("");
  console.log(
    `${"retained message".padEnd(18)}${"size".padStart(6)}${"msgs/fill".padStart(11)}${"master RSS B/msg".padStart(18)}${"min–max".padStart(11)}${"JS heap B/msg".padStart(15)}${"min–max".padStart(11)}${"Redis used_memory B/msg".padStart(25)}${"min–max".padStart(11)}`,
  );
  console.log("-".repeat(126));
  for (const p of h.parts) {
    p.memory.forEach((m, i) => {
      const range = (x: Spread) => `${perMessage(x.min)}–${perMessage(x.max)}`;
      console.log(
        `${(i === 0 ? RIG_LABEL[p.rig] : "").padEnd(18)}${`${m.messageBytes} B`.padStart(6)}${fmtRps(m.messagesPerFill).padStart(11)}${perMessage(m.rss.median).padStart(18)}${range(m.rss).padStart(11)}` +
          `${perMessage(m.heap.median).padStart(15)}${range(m.heap).padStart(11)}` +
          (m.used === undefined
            ? "—".padStart(25)
            : `${perMessage(m.used.median).padStart(25)}${range(m.used).padStart(11)}`),
      );
    });
  }
  for (const p of h.parts) {
    const c = p.churn;
    console.log(
      `${RIG_LABEL[p.rig].padEnd(18)}master JS heap over ${fmtRps(c.publishes)} more publishes on a full channel (keeping 1,000), the above held: ` +
        `${signedMb(c.heapAfter - c.heapBefore)}, ${perMessage(c.perPublish)} B/publish (bounded: ≈ 0)`,
    );
  }
  console.log("");
  console.log(
    `history: ${h.parts[0]?.subscribers ?? 0} WebSockets on 2 workers, each on both channels; deliveries/s = K × N ÷ (burst request → last delivery).`,
  );
  console.log(
    "cluster µs CPU/publish: master and workers together ÷ N. Memory: growth after a full GC in the master ÷ messages kept",
  );
  console.log(
    "(median fill); JS heap: what the master's live objects take (bun:jsc heapSize), RSS adds the allocator's slack.",
  );
}

export function ratioOf(p: Part, size: number): Ratio {
  const [ordinary, history] = p.rows as [Row, Row];
  const where = `${p.command}${p.rig === "redis" ? " on a redis-server of the bench's" : ""}, history kept in ${p.keptIn}`;
  return ratioEntry(
    "pubsub",
    `history ÷ ordinary channel, ${RIG_LABEL[p.rig]}`,
    history.rounds.map((r) => r.rate),
    ordinary.rounds.map((r) => r.rate),
    {
      target: TARGET[p.rig],
      detail:
        `${where}: ${fmtRps(p.messagesPerBurst)} × ${size} B published in a tight loop in one worker's handler to ${p.subscribers} WebSockets ` +
        `on the 2 workers, each on both channels, history size ${fmtRps(p.historySize)}: ${fmtRps(history.median)} vs ${fmtRps(ordinary.median)} deliveries/s; ` +
        `cluster CPU ${history.clusterCpuUs.toFixed(1)} vs ${ordinary.clusterCpuUs.toFixed(1)} µs per publish`,
    },
  );
}

/** Master RSS per retained message without Redis; Redis used_memory per retained message with it. */
export function absolutesOf(p: Part): Absolute[] {
  return [...p.memory.flatMap((m) => memoryEntries(p, m)), ...churnEntries(p)];
}

/** The master's heap growth per publish on a full channel, in the rig where the master keeps the history. */
function churnEntries(p: Part): Absolute[] {
  if (p.rig !== "cluster") return [];
  const c = p.churn;
  return [
    absoluteEntry(
      "pubsub",
      "history, master JS heap growth per publish on a full channel",
      [c.perPublish],
      "B",
      {
        better: "lower",
        detail: `-w 2, ${fmtRps(c.publishes)} × 16 B on one channel keeping 1,000 while the fills above are held: ${signedMb(c.heapAfter - c.heapBefore)} (bounded history: ≈ 0)`,
      },
    ),
  ];
}

function memoryEntries(p: Part, m: MemoryRow): Absolute[] {
  const kept = `${m.fills.length} fills of ${fmtRps(m.messagesPerFill)} × ${m.messageBytes} B more kept on ${m.channels} channels`;
  const total = (f: Fill[], key: "rss" | "used") =>
    f.reduce(
      (sum, x) => sum + (key === "rss" ? x.rssAfter - x.rssBefore : x.usedAfter! - x.usedBefore!),
      0,
    );
  if (p.rig === "cluster")
    return [
      absoluteEntry(
        "pubsub",
        `history, master RSS per retained ${m.messageBytes} B message`,
        m.fills.map((f) => f.rssPerMessage),
        "B",
        {
          better: "lower",
          detail: `-w 2, ${kept} (each read after a full GC in the master): ${signedMb(total(m.fills, "rss"))} in all; its JS heap ${perMessage(m.heap.median)} B/message`,
        },
      ),
    ];
  if (m.used === undefined) return [];
  return [
    absoluteEntry(
      "pubsub",
      `history on Redis, used_memory per retained ${m.messageBytes} B message`,
      m.fills.map((f) => f.usedPerMessage!),
      "B",
      {
        better: "lower",
        detail: `-w 2 -r, history kept in ${p.keptIn}, ${kept}: ${signedMb(total(m.fills, "used"))} in all; the master's RSS +${perMessage(m.rss.median)} B/message meanwhile`,
      },
    ),
  ];
}

// --- formatting ---

export const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;
export const signedMb = (bytes: number) => `${bytes < 0 ? "−" : "+"}${mb(Math.abs(bytes))}`;
/** bytes per message to the unit, never "-0" */
export const perMessage = (x: number) => fmtRps(Math.round(x) || 0);

export function runNote(r: Run): string {
  const notes: string[] = [];
  if (!r.complete)
    notes.push(`${fmtRps(r.expected - r.received)} of ${fmtRps(r.expected)} never arrived`);
  if (r.closedDuring) notes.push(`${r.closedDuring} connections closed`);
  if (r.perConnection.min !== r.perConnection.max)
    notes.push(`per connection ${r.perConnection.min}–${r.perConnection.max}`);
  return notesText(notes);
}

function dropNote(r: Row): string {
  const bad = r.rounds.filter((x) => !x.complete).length;
  return bad ? `   !! ${bad} round(s) incomplete` : "";
}
