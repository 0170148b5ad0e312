// What a Redis engine published that Redis may send back to its own subscribing connection (SPEC §5:
// a cluster delivers its own publishes itself, so their echoes are dropped without wrapping the
// payload). Per channel, in publish order: an incoming message with the same channel and bytes as a
// remembered publish is its echo (echoes come back in publish order; a foreign message with the same
// bytes is indistinguishable, and delivering either one is the same). Each engine decides when a
// publish can no longer echo: the classic one at a PING fence, the sharded one after a while.

/** A remembered publish; `mark` orders them (a sequence number, or a time). */
export interface Sent {
  mark: number;
  /** undefined once its echo arrived or it cannot come */
  bytes: Buffer | undefined;
}

export class EchoLog {
  #byChannel = new Map<string, { items: Sent[]; head: number }>();
  #waiting = 0;

  /** Publishes still waiting for their echo. */
  get size(): number {
    return this.#waiting;
  }

  remember(channel: string, bytes: Buffer, mark: number): Sent {
    let q = this.#byChannel.get(channel);
    if (q === undefined) this.#byChannel.set(channel, (q = { items: [], head: 0 }));
    const sent = { mark, bytes };
    q.items.push(sent);
    this.#waiting++;
    return sent;
  }

  /** Is this incoming message the echo of a remembered publish? (That one is then forgotten.) */
  isEcho(channel: string, message: Buffer): boolean {
    const q = this.#byChannel.get(channel);
    if (q === undefined) return false;
    const { items } = q;
    for (let i = q.head; i < items.length; i++) {
      const sent = items[i]!;
      if (sent.bytes === undefined || !sent.bytes.equals(message)) continue;
      this.drop(sent);
      this.#trim(channel, q, -Infinity);
      return true;
    }
    return false;
  }

  /** This publish cannot echo (Redis said nobody received it). */
  drop(sent: Sent): void {
    if (sent.bytes === undefined) return;
    sent.bytes = undefined;
    this.#waiting--;
  }

  /** Is a publish marked before `limit` still waiting? */
  hasBefore(limit: number): boolean {
    for (const q of this.#byChannel.values())
      if (q.head < q.items.length && q.items[q.head]!.mark < limit) return true;
    return false;
  }

  /** Forgets every publish marked before `limit`. */
  forgetBefore(limit: number): void {
    for (const [channel, q] of this.#byChannel) this.#trim(channel, q, limit);
  }

  clear(): void {
    this.#byChannel.clear();
    this.#waiting = 0;
  }

  /** Drops the matched and the forgotten publishes at the head of a channel's queue. */
  #trim(channel: string, q: { items: Sent[]; head: number }, limit: number): void {
    const { items } = q;
    while (
      q.head < items.length &&
      (items[q.head]!.bytes === undefined || items[q.head]!.mark < limit)
    ) {
      this.drop(items[q.head]!);
      q.head++;
    }
    if (q.head === items.length) this.#byChannel.delete(channel);
    else if (q.head > 1024 && q.head * 2 > items.length) {
      q.items = items.slice(q.head);
      q.head = 0;
    }
  }
}
