// Recovery (SPEC §5): a subscription with `since` is live at once but holds what arrives while the
// retained history after `since` is read; then it delivers the history, then what it held that the
// history did not already carry — no gap, no duplicate, in order — and resolves to whether the
// history reached back that far.
import { log } from "../log.ts";
import type { Message, Position, SubscribeOptions, Subscribed } from "../types.ts";
import type { Retained } from "./engine-api.ts";
import { historyFor, parsePosition, reachesBack } from "./history.ts";
import type { Subscription } from "./subscription.ts";

/** What a subscription without `since` resolves to: live, nothing asked to recover. */
export const LIVE: Subscribed = Object.freeze({ recovered: true, position: undefined });

type Deliver = (
  sub: Subscription,
  channel: string,
  message: Message,
  position: Position | undefined,
) => void;

const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** Where a recovering subscription starts: after a position, or at the last N retained messages. */
export type Since = Position | { readonly last: number };

/**
 * The start of a subscription: its `since`, else a stream's own default (SSE's Last-Event-ID), else
 * its `rewind`; undefined for a live one. Throws a TypeError for a bad value, or either on a pattern.
 */
export function sinceOf(
  where: string,
  channel: string,
  options: SubscribeOptions | undefined,
  defaultSince: ((channel: string) => Position | undefined) | undefined,
): Since | undefined {
  const given = options?.since;
  const rewind = options?.rewind;
  if (rewind !== undefined && !(Number.isSafeInteger(rewind) && rewind >= 1))
    throw new TypeError(`${where}: "rewind" must be an integer ≥ 1, got ${JSON.stringify(rewind)}`);
  if ((given !== undefined || rewind !== undefined) && options?.match === "redis")
    throw new TypeError(
      `${where}: "${given !== undefined ? "since" : "rewind"}" needs an exact channel, not a pattern`,
    );
  if (given === undefined) {
    const resumed =
      defaultSince !== undefined && historyFor(channel) !== undefined
        ? defaultSince(channel)
        : undefined;
    return resumed ?? (rewind !== undefined ? { last: rewind } : undefined);
  }
  const since = parsePosition(given);
  if (since === undefined)
    throw new TypeError(
      `${where}: "since" must be a position { epoch, offset } or its "epoch:offset" text, got ${JSON.stringify(given)}`,
    );
  return since;
}

/**
 * `sub` was added holding (`sub.held` is an array); `ready` settles once it is in effect everywhere.
 * Reads what `channel` retains after `since`, delivers it and then what was held, and lets go.
 */
export async function recover(
  sub: Subscription,
  channel: string,
  start: Since,
  ready: Promise<void>,
  read: (channel: string, after: number) => Promise<Retained>,
  deliver: Deliver,
): Promise<Subscribed> {
  let held: Retained | undefined;
  try {
    await ready;
    held = await read(channel, "last" in start ? 0 : start.offset);
  } catch (err) {
    log.debug(`pub/sub: reading the history of ${JSON.stringify(channel)} failed: ${String(err)}`);
  }
  const live = sub.held ?? [];
  sub.held = undefined;
  const since = "last" in start ? rewound(held, start.last) : start;
  const recovered = held !== undefined && since !== undefined && reachesBack(since, held);
  let last = since?.offset ?? 0;
  if (recovered && sub.dropped !== true) {
    for (const e of held!.entries) {
      if (e.offset <= last) continue;
      const message = e.text ? decoder.decode(e.bytes) : e.bytes.slice();
      deliver(sub, channel, message, { epoch: held!.epoch, offset: e.offset });
      last = e.offset;
    }
  }
  for (let i = 0; i < live.length && sub.dropped !== true; i += 3) {
    const position = live[i + 2] as Position | undefined;
    // Already delivered from the history (it was published before the read).
    if (
      recovered &&
      position !== undefined &&
      position.epoch === held!.epoch &&
      position.offset <= last
    )
      continue;
    deliver(sub, live[i] as string, live[i + 1] as Message, position);
  }
  const position =
    sub.position ?? (held !== undefined ? { epoch: held.epoch, offset: held.top } : undefined);
  return { recovered, position };
}

/** `rewind: n`: keeps the last `n` entries read, and the position just before them. */
function rewound(held: Retained | undefined, n: number): Position | undefined {
  if (held === undefined) return undefined;
  if (held.entries.length > n) held.entries = held.entries.slice(-n);
  const first = held.entries[0];
  return { epoch: held.epoch, offset: first === undefined ? held.top : first.offset - 1 };
}
