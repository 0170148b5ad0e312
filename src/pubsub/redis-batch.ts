// How the Redis engine (redis.ts) sends the publishes of one turn of the event loop, in order, on its
// publishing connection: one EVALSHA of a small Lua script per 512 messages where Redis runs scripts
// (a command of ioredis costs ~2 µs of CPU, a script argument a fraction), else a pipeline of one
// PUBLISH per message (an ACL, a managed Redis without EVAL). Same order either way: one connection.
import type { Redis as IORedis } from "ioredis";
import { log } from "../log.ts";

/** Messages per EVALSHA of the publishing script (bounded so Redis serves others in between). */
const SCRIPT_BATCH = 512;
/** Publishes channel/message pairs in order: `PUBLISH` for each, in one command. */
const PUBLISH_SCRIPT =
  "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end return #ARGV / 2";
type ScriptConn = IORedis & { iodinePublish(...args: (string | Buffer)[]): Promise<unknown> };

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
      (pub as ScriptConn).iodinePublish().then(
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
    for (let i = 0; i < queue.length; i += SCRIPT_BATCH * 2) {
      const args = queue.slice(i, i + SCRIPT_BATCH * 2);
      batches.push(
        (pub as ScriptConn).iodinePublish(...args).catch((err: Error) => {
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
