// Who wants what in the hub (hub.ts): the peers wanting each exact channel and each pattern, and
// what each worker was told the others want.
import type { Peer } from "./hub-peer.ts";
import { compileGlob } from "./match.ts";

export class Wants {
  readonly byChannel = new Map<string, Set<Peer>>();
  readonly byPattern = new Map<string, { test: (channel: string) => boolean; peers: Set<Peer> }>();

  /** Records that `peer` wants `key` or stopped; false when that was so already. */
  change(peer: Peer, subscribe: boolean, key: string, pattern: boolean): boolean {
    if (pattern) {
      if (subscribe === peer.patterns.has(key)) return false;
      let entry = this.byPattern.get(key);
      if (subscribe) {
        peer.patterns.add(key);
        if (entry === undefined)
          this.byPattern.set(key, (entry = { test: compileGlob(key), peers: new Set() }));
        entry.peers.add(peer);
      } else {
        peer.patterns.delete(key);
        entry?.peers.delete(peer);
        if (entry?.peers.size === 0) this.byPattern.delete(key);
      }
    } else {
      if (subscribe === peer.channels.has(key)) return false;
      let set = this.byChannel.get(key);
      if (subscribe) {
        peer.channels.add(key);
        if (set === undefined) this.byChannel.set(key, (set = new Set()));
        set.add(peer);
      } else {
        peer.channels.delete(key);
        set?.delete(peer);
        if (set?.size === 0) this.byChannel.delete(key);
      }
    }
    return true;
  }

  /** Tells a worker whether processes other than itself want `key`, if that changed. */
  tell(p: Peer, key: string, pattern: boolean): void {
    const holders = pattern ? this.byPattern.get(key)?.peers : this.byChannel.get(key);
    const others = holders === undefined ? 0 : holders.size - (holders.has(p) ? 1 : 0);
    const told = pattern ? p.toldPatterns : p.toldChannels;
    if (others > 0 === told.has(key)) return;
    if (others > 0) told.add(key);
    else told.delete(key);
    p.link!.out.interest(others > 0, key, pattern);
    p.link!.flushSoon();
  }
}
