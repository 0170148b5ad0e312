// Recovery (SPEC §5): a subscription with `since` is live at once but holds what arrives while the
// retained history after `since` is read; then it delivers the history, then what it held that the
// history did not already carry — no gap, no duplicate, in order — and resolves to whether the
// history reached back that far.
import { log } from "../log.ts";
import type { Message, Position, Subscribed } from "../types.ts";
import type { Retained } from "./engine-api.ts";
import { reachesBack } from "./history.ts";
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

/**
 * `sub` was added holding (`sub.held` is an array); `ready` settles once it is in effect everywhere.
 * Reads what `channel` retains after `since`, delivers it and then what was held, and lets go.
 */
export async function recover(
  sub: Subscription,
  channel: string,
  since: Position,
  ready: Promise<void>,
  read: (channel: string, after: number) => Promise<Retained>,
  deliver: Deliver,
): Promise<Subscribed> {
  let held: Retained | undefined;
  try {
    await ready;
    held = await read(channel, since.offset);
  } catch (err) {
    log.debug(`pub/sub: reading the history of ${JSON.stringify(channel)} failed: ${String(err)}`);
  }
  const live = sub.held ?? [];
  sub.held = undefined;
  const recovered = held !== undefined && reachesBack(since, held);
  let last = since.offset;
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
