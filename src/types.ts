// Public types of iodine for Bun. Everything here is re-exported from src/index.ts.
import type { BunFile, Server, WebSocketHandler } from "bun";

/** The server an app's `fetch` receives: Bun's own, with `upgrade`, `publish`, `requestIP` … */
export type IodineServer = Server<unknown>;

/** An HTTP handler, as Bun.serve's `fetch` (SPEC §3, shape 1). */
export type FetchHandler = (req: Request, server: IodineServer) => Response | Promise<Response>;

/** An app object: Bun's own convention, so Hono, Elysia and `export default { fetch }` run unchanged. */
export interface AppObject {
  fetch: FetchHandler;
  /** Bun-native WebSocket handlers (SPEC §3, shape 3). */
  websocket?: WebSocketHandler<unknown>;
  /** Bun's `export default { port, fetch }` convention: used when neither `-p` nor `$PORT` is given. */
  port?: number | string;
  hostname?: string;
}

/** What an app module may export as `default`. */
export type AppModule = FetchHandler | AppObject;

/** TLS material: PEM text or a `Bun.file`. */
export interface TLSOptions {
  cert: string | BunFile;
  key: string | BunFile;
  /** passphrase of an encrypted key */
  passphrase?: string;
}

/** Options of `Iodine.listen` for an HTTP service (SPEC §3). */
export interface ListenOptions {
  /** @default "http" */
  service?: "http";
  /** TCP port; 0 picks a free one. @default the CLI's port, else 3000 */
  port?: number;
  /** address to bind. @default all interfaces */
  hostname?: string;
  /** a Unix socket path instead of a TCP port */
  unix?: string;
  /** the app: a fetch function or an object with `fetch` (and optionally Bun's `websocket`) */
  handler: AppModule;
  /** public folder served before the app (SPEC §6). @default the CLI's `--www` */
  public?: string;
  /** TLS for this listener. @default the CLI's `--tls*` options */
  tls?: TLSOptions;
}
