// The outgoing-limit check after Bun's native fan-out (registry.ts). SPEC §5 wants a subscriber past
// its outgoing limit closed and logged. Bun's native fan-out runs in C++: past backpressureLimit it
// drops the message and (closeOnBackpressureLimit) ends the socket on a later loop turn, where the
// close handler sees 1006 and an empty buffer, as for a client that vanished, and nothing is logged.
// So once per burst of native publishes (a microtask: before that close), the subscribers of the
// channels published to are checked: one getBufferedAmount() each.

/** A subscriber that can tell whether it is past its outgoing limit (an iodine WebSocket). */
export interface OutgoingChecked {
  /** after a native publish on `channel`: closes the connection (and logs) if it is past its outgoing limit */
  checkOutgoing(channel: string): void;
}

export class OutgoingCheck {
  /** native channels published to since the last check */
  #channels = new Set<string>();
  #queued = false;
  readonly #subscribers: (channel: string) => Iterable<OutgoingChecked> | undefined;

  constructor(subscribers: (channel: string) => Iterable<OutgoingChecked> | undefined) {
    this.#subscribers = subscribers;
  }

  /** `channel` was published to natively: its subscribers are checked before the loop turns. */
  watch(channel: string): void {
    this.#channels.add(channel);
    if (this.#queued) return;
    this.#queued = true;
    queueMicrotask(this.#check);
  }

  #check = (): void => {
    this.#queued = false;
    const channels = this.#channels;
    this.#channels = new Set();
    // A close may run onClose, which may subscribe or publish: Sets tolerate that during iteration.
    for (const channel of channels) {
      const subscribers = this.#subscribers(channel);
      if (subscribers !== undefined) for (const conn of subscribers) conn.checkOutgoing(channel);
    }
  };
}
