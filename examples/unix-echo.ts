// The echo server on a Unix socket: local clients only, no TCP port. The path comes from
// $ECHO_SOCKET (default /tmp/iodine-echo.sock); a stale socket file left by a killed server is
// replaced, and the file is removed on a graceful stop.
//
// Run:   bun examples/unix-echo.ts
// Poke:  nc -U /tmp/iodine-echo.sock
import { Iodine, defineHandler } from "iodine-bun";

const path = process.env.ECHO_SOCKET ?? "/tmp/iodine-echo.sock";

const Echo = defineHandler({
  onOpen(client) {
    client.write(`echo on unix:${path}\n`);
  },
  onMessage(client, data) {
    client.write(data);
  },
});

// A raw service (no `service` needed); one handler object serves every connection (it keeps no
// per-connection state).
Iodine.listen({ unix: path, handler: Echo });
await Iodine.start();
