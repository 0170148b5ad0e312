// What a subscription is to the registry (registry.ts), and what a connection offers it.
import type { Connection, Message, Position, SubscribeOptions } from "../types.ts";
import type { OutgoingChecked } from "./outgoing.ts";

/** One subscription: of a connection or of the process (`Iodine.subscribe`). */
export interface Subscription {
  /** the channel, or the pattern for `{ match: "redis" }` */
  key: string;
  options: SubscribeOptions | undefined;
  /** delivered through Bun's native topic of a WebSocket (no JS per message) */
  native: boolean;
  deliver: (channel: string, message: Message, position: Position | undefined) => void;
  /** while a `since` subscription replays history: what arrived live meanwhile (channel, message, position …) */
  held?: (string | Message | Position | undefined)[] | undefined;
  /** the last position delivered (history channels) */
  position?: Position | undefined;
  /** set once unsubscribed (a replay under way stops) */
  dropped?: boolean;
}

/** A connection that can use Bun's native topics (WebSocket). */
export interface NativeTopics extends OutgoingChecked {
  nativeSubscribe(channel: string): void;
  nativeUnsubscribe(channel: string): void;
}

/** The connection side the registry needs: its subscription list and how to write to it. */
export interface Subscriber extends Connection {
  readonly subscriptions: Map<string, Subscription>;
  /** writes a published message as the subscription asked (`as: "binary"` …); `channel` is for logs */
  deliver(
    message: Message,
    options: SubscribeOptions | undefined,
    channel?: string,
    position?: Position,
  ): void;
  /** SSE: the position a subscription to `channel` resumes from when it names none (Last-Event-ID) */
  defaultSince?(channel: string): Position | undefined;
}
