// The endpoints bench/pubsub.ts drives besides the subscriptions, the same on both of its servers
// (bench/pubsub-server.ts on iodine, bench/pubsub-baseline.ts on a raw Bun.serve):
//   POST /burst?n=N&size=S   `burst` publishes N messages of S bytes (`text(S)`) in a tight loop; answers {n, ms} when done
//   GET  /stats              {"ws": open WebSockets, "sse": open SSE streams}
//   POST /gc                 a full garbage collection, before reading the process's RSS

/** The answer to a request for `url` that is not a subscription. */
export function control(
  url: URL,
  burst: (n: number, message: string) => void,
  stats: () => { ws: number; sse: number },
): Response {
  switch (url.pathname) {
    case "/burst": {
      const n = Number(url.searchParams.get("n") ?? 1);
      const message = text(Number(url.searchParams.get("size") ?? 64));
      const t0 = performance.now();
      burst(n, message);
      return Response.json({ n, ms: performance.now() - t0 });
    }
    case "/stats":
      return Response.json(stats());
    case "/gc":
      Bun.gc(true);
      return new Response("ok");
    default:
      return new Response("not found", { status: 404 });
  }
}

const WORDS = (
  "the quick brown fox jumps over a lazy dog while chat users send short notes about their day and " +
  "some longer messages with numbers like 42 or 1337 and names such as alice bob carol dave"
).split(" ");

/**
 * `size` bytes of words drawn from a small vocabulary (a fixed sequence): text that deflate shrinks
 * about as much as chat messages or JSON (2.7× at 1 KiB, 3.5× at 4 KiB), where one repeated letter would
 * shrink 100× and flatter permessage-deflate. Plain frames cost the same either way.
 */
export function text(size: number): string {
  let s = "";
  let x = 1;
  while (s.length < size) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    s += WORDS[(x >>> 16) % WORDS.length] + " ";
  }
  return s.slice(0, size);
}
