// A peer of the master's hub (hub.ts): a worker's link, or the master itself, or the engine, with
// what it wants and what it was told; and the JSON shape of a command's reply.
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
}

/** A command's reply as JSON can carry it: bytes as UTF-8 text, errors inside replies as their message. */
export function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString();
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Error) return v.message;
  return v;
}
