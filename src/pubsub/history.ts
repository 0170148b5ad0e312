// History channels (SPEC §5): which channels keep their last messages (`Iodine.history`), and the
// positions their messages get. This process's table; a worker also tells the master (member.ts),
// whose store (history-store.ts, or Redis) sequences every publish on such a channel.
import type { HistoryOptions, Position } from "../types.ts";
import { compileGlob } from "./match.ts";

/** What `Iodine.history` declared for a channel (or for every channel a pattern matches). */
export interface HistoryConfig {
  key: string;
  pattern: boolean;
  size: number;
  ttlMs: number;
}

export const HISTORY_SIZE = 100;
export const HISTORY_TTL = 300;
/** The most messages one channel may keep. */
const MAX_SIZE = 1_000_000;

const exact = new Map<string, HistoryConfig>();
const patterns = new Map<string, { test: (channel: string) => boolean; config: HistoryConfig }>();
/** channel → its pattern's config (null: none), so a publish tests the patterns once per channel */
const matched = new Map<string, HistoryConfig | null>();
const MATCHED_MAX = 10_000;
const watchers: ((config: HistoryConfig) => void)[] = [];

/** False until some channel keeps history: a publish then costs one boolean test. */
export let anyHistory = false;

/** `Iodine.history(channel, options)`: validates, records, and tells who watches (the master). */
export function declareHistory(channel: unknown, options: HistoryOptions = {}): HistoryConfig {
  if (typeof channel !== "string")
    throw new TypeError(`Iodine.history: "channel" must be a string, got ${typeof channel}`);
  const size = options.size ?? HISTORY_SIZE;
  const ttl = options.ttl ?? HISTORY_TTL;
  if (!Number.isInteger(size) || size < 1 || size > MAX_SIZE)
    throw new RangeError(
      `Iodine.history: "size" must be an integer from 1 to ${MAX_SIZE}, got ${String(size)}`,
    );
  if (typeof ttl !== "number" || !(ttl > 0) || !Number.isFinite(ttl))
    throw new RangeError(
      `Iodine.history: "ttl" must be a number of seconds > 0, got ${String(ttl)}`,
    );
  if (options.match !== undefined && options.match !== "redis")
    throw new TypeError(`Iodine.history: "match" must be "redis" or absent`);
  const config: HistoryConfig = {
    key: channel,
    pattern: options.match === "redis",
    size,
    ttlMs: Math.round(ttl * 1000),
  };
  record(config);
  for (const w of watchers) w(config);
  return config;
}

/** A declaration another process made (a worker's, heard by the master). */
export function record(config: HistoryConfig): void {
  if (config.pattern) patterns.set(config.key, { test: compileGlob(config.key), config });
  else exact.set(config.key, config);
  matched.clear();
  anyHistory = true;
}

/** The history a channel keeps, if any. */
export function historyFor(channel: string): HistoryConfig | undefined {
  const direct = exact.get(channel);
  if (direct !== undefined || patterns.size === 0) return direct;
  const known = matched.get(channel);
  if (known !== undefined) return known ?? undefined;
  let found: HistoryConfig | null = null;
  for (const p of patterns.values()) if (p.test(channel)) found = p.config;
  if (matched.size >= MATCHED_MAX) matched.clear();
  matched.set(channel, found);
  return found ?? undefined;
}

/** Every declaration so far, for a link to the master that (re)connects. */
export function declarations(): HistoryConfig[] {
  return [...exact.values(), ...[...patterns.values()].map((p) => p.config)];
}

/** Runs `fn` on every later declaration in this process; returns the stop. */
export function watchDeclarations(fn: (config: HistoryConfig) => void): () => void {
  watchers.push(fn);
  return () => {
    const i = watchers.indexOf(fn);
    if (i >= 0) watchers.splice(i, 1);
  };
}

/** `"<epoch>:<offset>"`. */
export function formatPosition(p: Position): string {
  return `${p.epoch}:${p.offset}`;
}

/** A Position, or its text (`Last-Event-ID`, `since`); undefined for anything else. */
export function parsePosition(x: unknown): Position | undefined {
  if (typeof x === "object" && x !== null) {
    const p = x as Partial<Position>;
    return typeof p.epoch === "string" && isOffset(p.offset)
      ? { epoch: p.epoch, offset: p.offset }
      : undefined;
  }
  if (typeof x !== "string") return undefined;
  const colon = x.lastIndexOf(":");
  if (colon < 0) return undefined;
  const offset = Number(x.slice(colon + 1));
  return isOffset(offset) && colon + 1 < x.length
    ? { epoch: x.slice(0, colon), offset }
    : undefined;
}

const isOffset = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;

/** Whether what a store holds reaches back to `since`: the same epoch, and nothing after it lost. */
export function reachesBack(
  since: Position,
  held: { epoch: string; top: number; first: number },
): boolean {
  return since.epoch === held.epoch && since.offset <= held.top && held.first <= since.offset + 1;
}
