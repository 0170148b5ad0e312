// How the Redis engine (redis.ts) sends the publishes of one turn of the event loop, in order, on its
// publishing connection: one EVALSHA of a small Lua script per 512 messages where Redis runs scripts
// (a command of ioredis costs ~2 µs of CPU), the messages packed into the script's one argument
// (ioredis encodes every argument on its own: 1,024 of them cost more than the packing), else a
// pipeline of one PUBLISH per message (an ACL, a managed Redis without EVAL). Same order either way:
// one connection.
import type { Redis as IORedis } from "ioredis";
import { log } from "../log.ts";

/** Messages per EVALSHA of the publishing script (bounded so Redis serves others in between). */
const SCRIPT_BATCH = 512;
/**
 * Bytes per EVALSHA, about: the batch is one argument, and Redis refuses one over its
 * proto-max-bulk-len (512 MB by default), where each message on its own would pass.
 */
const SCRIPT_BATCH_BYTES = 8 * 1024 * 1024;
/**
 * Publishes, in order, the channel/message pairs packed in ARGV[1] (`pack`): each field a 4-byte
 * big-endian length and its bytes. Redis's Lua has the `struct` library for that.
 */
const PUBLISH_SCRIPT =
  "local unpack, s, at, n = struct.unpack, ARGV[1], 1, 0 " +
  "while at <= #s do local c, m, after = unpack('>I4c0I4c0', s, at) " +
  "redis.call('PUBLISH', c, m) at = after n = n + 1 end return n";
type ScriptConn = IORedis & { iodinePublish(packed: Buffer): Promise<unknown> };
const NOTHING = Buffer.alloc(0);

export class BatchSender {
  /** publish through PUBLISH_SCRIPT (see `prepare`) */
  #script = false;
  #refused = false;

  /**
   * Readies a new publishing connection: on every (re)connection it asks whether this Redis can run
   * the script; until it answers, and if it cannot, PUBLISHes. `isCurrent`: the connection is still
   * the engine's when the answer comes.
   */
  prepare(pub: IORedis, isCurrent: () => boolean): void {
    pub.defineCommand("iodinePublish", { numberOfKeys: 0, lua: PUBLISH_SCRIPT });
    pub.on("ready", () => {
      this.#script = false;
      // Publishes nothing; refused where Redis runs no scripts (or has no `struct`).
      (pub as ScriptConn).iodinePublish(NOTHING).then(
        () => void (this.#script = isCurrent()),
        (err: Error) => {
          if (err.name === "ReplyError") this.#refuse(err);
        },
      );
    });
  }

  /** Sends channel/message pairs (`queue`, read now); resolves once Redis answered them all. */
  send(pub: IORedis, queue: (string | Buffer)[]): Promise<unknown> {
    if (!this.#script) return pipeline(pub, queue);
    const batches: Promise<unknown>[] = [];
    for (let i = 0; i < queue.length;) {
      const end = batchEnd(queue, i);
      const args = queue.slice(i, end);
      i = end;
      batches.push(
        (pub as ScriptConn).iodinePublish(pack(args)).catch((err: Error) => {
          // Refused after the probe said yes (SCRIPT FLUSH and EVAL refused since): PUBLISH from now on.
          if (err.name !== "ReplyError") return;
          this.#refuse(err);
          return pipeline(pub, args);
        }),
      );
    }
    return Promise.all(batches);
  }

  #refuse(err: Error): void {
    this.#script = false;
    if (this.#refused) return;
    this.#refused = true;
    log.warn(
      `redis: cannot publish through a script (${err.message}); using one PUBLISH per message`,
    );
  }
}

function pipeline(pub: IORedis, queue: (string | Buffer)[]): Promise<unknown> {
  const p = pub.pipeline();
  for (let i = 0; i < queue.length; i += 2) p.publish(queue[i] as string, queue[i + 1]!);
  return p.exec();
}

/** Where the batch of pairs that starts at `from` ends: SCRIPT_BATCH of them, or the bytes past SCRIPT_BATCH_BYTES. */
function batchEnd(queue: (string | Buffer)[], from: number): number {
  let bytes = 0;
  let end = from;
  const last = Math.min(queue.length, from + SCRIPT_BATCH * 2);
  while (end < last && (end === from || bytes < SCRIPT_BATCH_BYTES)) {
    bytes += queue[end]!.length + queue[end + 1]!.length;
    end += 2;
  }
  return end;
}

/** Channel/message pairs as PUBLISH_SCRIPT reads them: each field's byte length (4 bytes, big-endian), then its bytes. */
function pack(pairs: (string | Buffer)[]): Buffer {
  let room = 0;
  for (const field of pairs)
    room += 4 + (typeof field === "string" ? field.length * 3 : field.length);
  const packed = Buffer.allocUnsafe(room);
  let at = 0;
  for (const field of pairs) {
    const n = typeof field === "string" ? packed.write(field, at + 4) : field.copy(packed, at + 4);
    packed.writeUInt32BE(n, at);
    at += 4 + n;
  }
  return packed.subarray(0, at);
}
