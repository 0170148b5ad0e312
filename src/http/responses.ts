// What iodine answers by itself (SPEC §10), and the shape of an answer on the request path. The
// plain-text responses are built on the failure paths only, never for a request the app answers.

/** What the request path gives Bun: a Response, undefined once the socket was upgraded, or a promise of either. */
export type Answer = Response | undefined | Promise<Response | undefined>;

const TEXT = { "content-type": "text/plain;charset=utf-8" };

export const badRequest = (): Response =>
  new Response("Bad Request", { status: 400, headers: TEXT });
export const notFound = (): Response => new Response("Not Found", { status: 404, headers: TEXT });
export const internalError = (): Response =>
  new Response("Internal Server Error", { status: 500, headers: TEXT });
