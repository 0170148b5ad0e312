// EventSource (SSE) connections: a streamed `text/event-stream` response on Bun's direct streams
// (no queue in JS: writes go to Bun's buffer for the socket), with the WebSocket callbacks (SPEC §4).
// A connection's writes of one turn of the event loop go out in one flush (a microtask after the
// first): one syscall for a burst of publishes instead of one per event, which is what kept SSE
// fan-out at a tenth of WebSocket's (issue 21).
// Half-duplex: `write` sends a `data:` event, `writeEvent` the rest; comment pings keep proxies
// from cutting an idle stream; the stream is exempt from the HTTP idle timeout.
import { counts } from "../metrics/counters.ts";
import { BaseConnection, openConnections, OUTGOING_LIMIT } from "./connection.ts";
import { log } from "../log.ts";
import type {
  Handler,
  Message,
  Position,
  SnakeHandler,
  SSEEvent,
  SubscribeOptions,
} from "../types.ts";
import { parsePosition } from "../pubsub/history.ts";

const live = new Set<SseConnection>();
/** connections written to since the last flush; flushed together once the current task is done */
let unflushed: SseConnection[] = [];

function flushAll(): void {
  const list = unflushed;
  unflushed = [];
  for (const c of list) c.flushNow();
}
let pingSeconds = 40;
let pinger: ReturnType<typeof setInterval> | undefined;

/** The comment-ping interval (`--ping`), seconds. */
export function setSsePing(seconds: number): void {
  pingSeconds = seconds;
}

export class SseConnection extends BaseConnection {
  readonly protocol = "sse" as const;
  #ctl: ReadableStreamDirectController | undefined;
  #end: (() => void) | undefined;
  #pending = 0;
  #wrote = false;
  #dirty = false;
  /** this turn's events, written together by flushNow */
  #queue: Uint8Array[] = [];
  #queued = 0;

  constructor(handler: Handler | SnakeHandler, request: Request) {
    super(handler, request, "Iodine.upgrade");
  }

  /** The streamed response; onOpen runs when Bun starts sending it. */
  response(headers: Bun.HeadersInit | undefined): Response {
    const h = new Headers(headers);
    h.set("content-type", "text/event-stream");
    if (!h.has("cache-control")) h.set("cache-control", "no-cache");
    // Tells nginx not to buffer the stream (X-Accel-Buffering), so events arrive as written.
    if (!h.has("x-accel-buffering")) h.set("x-accel-buffering", "no");
    const source: Bun.DirectUnderlyingSource & { cancel: () => void } = {
      type: "direct",
      pull: (ctl: ReadableStreamDirectController) => {
        this.#ctl = ctl;
        openConnections.add(this);
        live.add(this);
        startPinger();
        this.dispatch("onOpen");
        // The stream stays open until this resolves (close()) or the client goes (cancel).
        return new Promise<void>((resolve) => (this.#end = resolve));
      },
      cancel: () => this.#gone(),
    };
    const stream = new ReadableStream(source);
    this.request?.signal.addEventListener("abort", () => this.#gone(), { once: true });
    return new Response(stream, { status: 200, headers: h });
  }

  /** Sends one `data:` event; lines of a multi-line message become several `data:` lines. */
  write(data: Message): boolean {
    const text = typeof data === "string" ? data : decoder.decode(data);
    return this.#send(dataLines(text) + "\n");
  }

  /** Sends an event with any of `event`, `id`, `data`, `retry`. CR or LF in `event`/`id` is refused. */
  writeEvent(e: SSEEvent): boolean {
    let out = "";
    if (e.event !== undefined) out += `event: ${field("event", e.event)}\n`;
    if (e.id !== undefined) out += `id: ${field("id", e.id)}\n`;
    if (e.retry !== undefined) {
      if (!Number.isInteger(e.retry) || e.retry < 0) {
        throw new RangeError(
          `client.writeEvent: "retry" must be an integer ≥ 0, got ${String(e.retry)}`,
        );
      }
      out += `retry: ${e.retry}\n`;
    }
    if (e.data !== undefined) out += dataLines(e.data);
    return out === "" ? false : this.#send(out + "\n");
  }

  close(): void {
    if (!this.isOpen) return;
    this.markClosed();
    this.#writeQueued();
    const ctl = this.#ctl;
    if (ctl) {
      try {
        ctl.flush();
        ctl.close();
      } catch {
        // the client is already gone
      }
    }
    this.#end?.();
    this.#gone();
  }

  /** Bytes written and not yet taken by the socket, this turn's queued ones included. */
  get pending(): number {
    return this.#pending + this.#queued;
  }

  /**
   * A published message: one `data:` event (bytes are read as UTF-8: SSE is text); a history
   * channel's carries its position as the event's `id`, which the browser sends back as
   * `Last-Event-ID` when it reconnects.
   */
  deliver(
    message: Message,
    _options: SubscribeOptions | undefined,
    _channel?: string,
    position?: Position,
  ): void {
    this.#send(eventBytes(message, position));
  }

  /** Where a subscription to a history channel resumes when it names no `since`: the browser's `Last-Event-ID`. */
  defaultSince(_channel: string): Position | undefined {
    return parsePosition(this.request?.headers.get("last-event-id") ?? undefined);
  }

  /** A comment line: ignored by EventSource, keeps the connection busy for proxies. */
  ping(): void {
    if (!this.#wrote) this.#send(": ping\n\n");
    this.#wrote = false;
  }

  /** What this turn wrote, to the socket in one write (flushAll calls it). */
  flushNow(): void {
    this.#dirty = false;
    if (this.isOpen) this.#writeQueued();
  }

  /** The events of this turn, as one buffer in one write and one flush. */
  #writeQueued(): void {
    const ctl = this.#ctl;
    const queue = this.#queue;
    if (ctl === undefined || queue.length === 0) return;
    const size = this.#queued;
    this.#queue = [];
    this.#queued = 0;
    let r: number | Promise<number>;
    try {
      r = ctl.write(queue.length === 1 ? queue[0]! : Buffer.concat(queue, size));
      ctl.flush();
    } catch {
      this.#gone();
      return;
    }
    if (typeof r === "number") return;
    // Behind a slow reader: counted until the socket takes it.
    this.#pending += size;
    r.then(
      () => (this.#pending -= size),
      () => (this.#pending -= size),
    );
  }

  /**
   * Queues an event for this turn's write. Bun's direct-stream write costs about a microsecond a
   * call even unflushed: a burst of events to many streams is queued here, then written in one go.
   */
  #send(text: string | Uint8Array): boolean {
    if (this.#ctl === undefined || !this.isOpen) return false;
    this.#wrote = true;
    const bytes = typeof text === "string" ? encoder.encode(text) : text;
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    if (!this.#dirty) {
      this.#dirty = true;
      if (unflushed.length === 0) queueMicrotask(flushAll);
      unflushed.push(this);
    }
    if (this.#pending + this.#queued > OUTGOING_LIMIT) {
      log.warn(
        `sse: closing a client that is ${this.#pending + this.#queued} bytes behind (limit ${OUTGOING_LIMIT}) on ${this.request?.url ?? "?"}`,
      );
      counts.slowCloses++;
      this.#queue = [];
      this.#queued = 0;
      this.close();
      return false;
    }
    return true;
  }

  #gone(): void {
    if (!live.delete(this)) {
      if (this.#ctl === undefined && this.isOpen) this.markClosed(); // cancelled before it started
      return;
    }
    openConnections.delete(this);
    this.#end?.();
    this.closed();
  }
}

function startPinger(): void {
  if (pinger !== undefined) return;
  pinger = setInterval(() => {
    if (live.size === 0) {
      clearInterval(pinger);
      pinger = undefined;
      return;
    }
    for (const c of live) c.ping();
  }, pingSeconds * 1000);
  pinger.unref();
}

// A publish reaches every SSE subscriber of this process in a row: its event is made once, as bytes
// (so Bun need not encode the text again for each connection), and reused while the same message
// comes by. Text only: the same string is the same message; an app may refill the same Uint8Array.
let lastText: string | undefined;
let lastPosition: Position | undefined;
let lastEvent = new Uint8Array(0);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A published message as an event's bytes: `id:` (a history channel's position) and `data:` lines. */
function eventBytes(message: Message, position: Position | undefined): Uint8Array {
  if (typeof message === "string" && message === lastText && position === lastPosition)
    return lastEvent;
  const text = typeof message === "string" ? message : decoder.decode(message);
  const id = position === undefined ? "" : `id: ${position.epoch}:${position.offset}\n`;
  const event = encoder.encode(`${id}${dataLines(text)}\n`);
  if (typeof message === "string") {
    lastText = message;
    lastPosition = position;
    lastEvent = event;
  }
  return event;
}

/** `data: line` for each line; a lone CR, LF or CRLF all end a line in SSE. */
function dataLines(text: string): string {
  if (text.indexOf("\n") === -1 && text.indexOf("\r") === -1) return `data: ${text}\n`;
  let out = "";
  for (const line of text.split(/\r\n|\r|\n/)) out += `data: ${line}\n`;
  return out;
}

function field(name: string, value: string): string {
  if (/[\r\n]/.test(value))
    throw new TypeError(`client.writeEvent: "${name}" must not contain CR or LF`);
  return value;
}
