// Raw TCP/Unix/TLS listeners (SPEC §4): `Iodine.listen({ port | unix, handler })` on Bun.listen, a
// RawConnection per accepted socket with a handler from the listener's factory, and the peers a
// TLS handshake refused kept from the handler.
import type { Socket, SocketHandler, SocketListener } from "bun";
import { log, logException } from "../log.ts";
import { serverTls, TLS } from "../tls.ts";
import type { Handler, RawListenOptions, SnakeHandler, TLSOptions, TLSSettings } from "../types.ts";
import { handlerMaker } from "./handler.ts";
import { describeTlsError, RawConnection, socketHandlers, startSweep } from "./raw.ts";

/** A bound raw listener. */
export interface RawListener {
  readonly port: number | undefined;
  /** Stops accepting; resolves once every connection it accepted has closed. */
  stop(): Promise<void>;
  /** Closes every remaining connection at once. */
  terminate(): void;
}

/** Binds a raw listener (TCP, TLS or Unix). */
export function listenRaw(o: {
  port: number;
  hostname: string | undefined;
  unix: string | undefined;
  handler: RawListenOptions["handler"];
  tls: TLSSettings | TLSOptions | undefined;
  timeout: number;
  /** share the port with the other workers of a cluster (SO_REUSEPORT) */
  reusePort: boolean;
}): RawListener {
  startSweep();
  const make = handlerMaker(o.handler, "Iodine.listen");
  const mine = new Set<RawConnection>();
  let idle: (() => void) | undefined;
  /** a fetch function was given as the factory: said once, not per connection */
  let toldHttp = false;
  const base = socketHandlers();
  const socket: SocketHandler<RawConnection, "uint8array"> = {
    ...base,
    open(s) {
      const peer = o.unix ?? `${s.remoteAddress}:${s.remotePort}`;
      // Bun calls open for a TLS peer that failed the handshake (a client certificate not
      // trusted, no common ALPN protocol), then closes it: it never reaches the handler.
      if (verifying !== undefined) {
        const refused = tlsRefusal(s, verifying);
        if (refused !== undefined) {
          log.warn(`raw connection ${peer} refused: ${refused}`);
          s.terminate();
          return;
        }
      }
      let handler: Handler | SnakeHandler;
      let c: RawConnection;
      try {
        handler = make();
        if (handler instanceof Response || handler instanceof Promise) {
          // A fetch function (`() => new Response(…)`) given without `service: "http"` is raw (SPEC §4).
          if (!toldHttp) {
            toldHttp = true;
            const http = `a listener without "service" is raw: for HTTP write Iodine.listen({ service: "http", handler, … })`;
            const what =
              handler instanceof Response
                ? `a Response, not a connection handler; ${http}`
                : `a Promise: a factory returns the connection handler itself (${http})`;
            log.error(
              `raw listener on ${o.unix ?? `port ${listener.port}`}: the handler returned ${what}`,
            );
          }
          s.terminate();
          return;
        }
        c = new RawConnection(handler, "Iodine.listen", peer);
      } catch (err) {
        logException(`raw connection ${peer}: the listener's handler factory failed`, err);
        s.terminate();
        return;
      }
      c.timeout = o.timeout;
      s.data = c;
      mine.add(c);
      c.attach(s);
    },
    close(s) {
      const c = s.data;
      if (c === undefined) return;
      mine.delete(c);
      c.ended();
      if (mine.size === 0) idle?.();
    },
  };
  const tls = o.tls === undefined ? {} : { tls: serverTls(o.tls) };
  /** undefined without TLS; else whether clients must present a trusted certificate */
  const verifying =
    o.tls === undefined
      ? undefined
      : o.tls instanceof TLS
        ? o.tls.verifiesPeer
        : (o.tls as { requestCert?: boolean }).requestCert === true;
  // Bun's types tie binaryType to the handler's second type parameter, which listen() does not pass on.
  const handlers = socket as unknown as SocketHandler<RawConnection>;
  const listener: SocketListener<RawConnection> & { port?: number } =
    o.unix !== undefined
      ? Bun.listen<RawConnection>({ unix: o.unix, socket: handlers, ...tls })
      : Bun.listen<RawConnection>({
          hostname: o.hostname ?? "0.0.0.0",
          port: o.port,
          socket: handlers,
          ...tls,
          // Bun.listen honours reusePort (Bun 1.4.5) though its types list it for connect only.
          ...(o.reusePort ? ({ reusePort: true } as object) : {}),
        });
  return {
    port: o.unix !== undefined ? undefined : listener.port,
    stop() {
      listener.stop(false);
      if (mine.size === 0) return Promise.resolve();
      return new Promise<void>((resolve) => (idle = resolve));
    },
    terminate() {
      listener.stop(true);
    },
  };
}

/** Why Bun's TLS handshake failed for this peer, or undefined when it did not. */
function tlsRefusal(s: Socket<RawConnection>, verifyingPeer: boolean): string | undefined {
  if (verifyingPeer && !s.authorized)
    return describeTlsError(s.getAuthorizationError()) ?? "no trusted certificate";
  const err = s.getAuthorizationError();
  // Without client certificates only a failed handshake (EPROTO: e.g. no common ALPN protocol) counts.
  if (err !== null && (err as NodeJS.ErrnoException).code === "EPROTO")
    return describeTlsError(err);
  return undefined;
}
