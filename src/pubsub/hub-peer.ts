// A peer of the master's hub (hub.ts): a worker's link, or the master itself, or the engine, with
// what it wants and what it was told; and a worker's `redis.cmd` run on the master's engine.
import { BusError } from "./bus.ts";
import type { PubSubEngine } from "./engine-api.ts";
import type { Link } from "./link.ts";

export function newPeer(name: string): Peer {
  return {
    name,
    link: undefined,
    channels: new Set(),
    patterns: new Set(),
    toldChannels: new Set(),
    toldPatterns: new Set(),
    stamp: 0,
    syncs: new Map(),
    counts: new Map(),
  };
}

export interface Peer {
  name: string;
  /** undefined for the master's own subscribers */
  link: Link | undefined;
  channels: Set<string>;
  patterns: Set<string>;
  /** what this peer was told the others want (see `#tell`) */
  toldChannels: Set<string>;
  toldPatterns: Set<string>;
  /** the publish that last reached this peer (dedupe without allocating) */
  stamp: number;
  /** the hub's SYNCs this peer has not answered yet: id → done */
  syncs: Map<number, () => void>;
  /** its subscriptions per exact channel, as it reported them (presence) */
  counts: Map<string, number>;
}

/** A command's reply as JSON can carry it: bytes as UTF-8 text, errors inside replies as their message. */
export function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString();
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Error) return v.message;
  return v;
}

/** A worker's `redis.cmd(...)` (a CMD frame's JSON array): run on the engine, the reply (or error) answered. */
export function runCommand(
  engine: PubSubEngine | undefined,
  json: string,
  answer: (ok: boolean, value: unknown) => void,
): void {
  const cmd = (engine as { cmd?: (...args: string[]) => Promise<unknown> } | undefined)?.cmd;
  if (typeof cmd !== "function") return answer(false, "the master's pub/sub engine has no cmd()");
  let args: unknown;
  try {
    args = JSON.parse(json);
  } catch {
    throw new BusError("a CMD frame that is not JSON");
  }
  if (!Array.isArray(args)) throw new BusError("a CMD frame that is not a JSON array");
  cmd.apply(engine, args as string[]).then(
    (reply) => answer(true, plain(reply)),
    (err: unknown) => answer(false, err instanceof Error ? err.message : String(err)),
  );
}
