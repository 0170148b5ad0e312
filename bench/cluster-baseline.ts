// The raw baseline of bench/cluster.ts: a Bun.serve "Hello World!" with reusePort, so two of these
// processes share one port the way iodine's workers do (the kernel spreads the connections).
//
// Run:   bun bench/cluster-baseline.ts          picks a port, prints `listening on http://127.0.0.1:PORT`
//        bun bench/cluster-baseline.ts PORT     joins PORT
const port = Number(process.argv[2] ?? 0);
if (!Number.isInteger(port) || port < 0) {
  console.error(`cluster-baseline: bad port ${JSON.stringify(process.argv[2])}`);
  process.exit(2);
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  reusePort: true,
  fetch: () => new Response("Hello World!"),
});
console.log(`listening on http://127.0.0.1:${server.port}`);
