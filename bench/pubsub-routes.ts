// The endpoints bench/pubsub.ts drives besides the subscriptions, the same on both of its servers
// (bench/pubsub-server.ts on iodine, bench/pubsub-baseline.ts on a raw Bun.serve):
//   POST /burst?n=N&size=S   `burst` publishes N messages of S bytes in a tight loop; answers {n, ms} when done
//   GET  /stats              {"ws": open WebSockets, "sse": open SSE streams}
//   POST /gc                 a full garbage collection, before reading the process's RSS

/** The answer to a request for `url` that is not a subscription. */
export function control(url: URL, burst: (n: number, message: string) => void, stats: () => { ws: number; sse: number }): Response {
  switch (url.pathname) {
    case "/burst": {
      const n = Number(url.searchParams.get("n") ?? 1);
      const message = "x".repeat(Number(url.searchParams.get("size") ?? 64));
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
