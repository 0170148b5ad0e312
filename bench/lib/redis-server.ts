// A redis-server of the bench's own on a free port (no persistence, so a run leaves nothing behind),
// and an ioredis connection to it for the bench's own questions (CLIENT LIST, INFO memory).
import IORedis from "ioredis";
import { redisServerFlags } from "../../test/redis-server.ts";
import { assertAlive, freePort, startServer, type Server } from "./processes.ts";

export interface RedisRig {
  server: Server;
  port: number;
  url: string;
  /** the bench's own connection (never one a cluster uses) */
  admin: IORedis;
}

/**
 * Starts `redis-server` (the path from requireTool) and waits until it answers PING. `started` hears
 * the process at once, before the wait, so a caller's cleanup can stop it whatever happens next.
 */
export async function startRedis(
  redisServer: string,
  started: (server: Server) => void,
): Promise<RedisRig> {
  const port = freePort();
  const server = await startServer("redis-server", [redisServer, ...redisServerFlags(port)], {
    port,
  });
  started(server);
  const admin = new IORedis({
    host: "127.0.0.1",
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => 50,
  });
  admin.on("error", () => {});
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if (admin.status === "wait") await admin.connect();
      if ((await admin.ping()) === "PONG") break;
    } catch (err) {
      assertAlive(server);
      if (Date.now() > deadline) {
        admin.disconnect();
        throw new Error(
          `redis-server on port ${port}: no PONG after 10 s (${err})\n${server.stdout.tail}`,
        );
      }
      await Bun.sleep(50);
    }
  }
  return { server, port, url: `redis://127.0.0.1:${port}`, admin };
}

/** `used_memory` from INFO memory: what Redis's allocator holds for data, bytes. */
export async function usedMemory(admin: IORedis): Promise<number> {
  const info = await admin.info("memory");
  const m = /^used_memory:(\d+)/m.exec(info);
  if (m === null) throw new Error("INFO memory has no used_memory line");
  return Number(m[1]);
}
