// The cluster bus's Unix sockets in the temp folder: each master's own, named after its pid, and
// those left behind by masters that were killed.
import { readdirSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BUS_SOCKET = /^iodine-(\d+)-[a-z0-9]+\.sock$/;

/** Bus sockets left in the temp folder by masters that were killed (SIGKILL cannot clean up). */
export function removeStaleBusSockets(): void {
  try {
    for (const name of readdirSync(tmpdir())) {
      const pid = Number(BUS_SOCKET.exec(name)?.[1]);
      if (!pid || pid === process.pid || alive(pid)) continue;
      try {
        unlinkSync(join(tmpdir(), name));
      } catch {
        // someone else's, or gone already
      }
    }
  } catch {
    // an unreadable temp folder is not ours to fix
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
