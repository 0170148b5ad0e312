// The raw Bun.serve baseline for bench/http.ts: the least a Bun server can do, so what iodine
// adds on top shows in the ratio. Run as its own process, like the servers it is compared with.
//
// Run:   bun bench/baseline.ts              "Hello World!" for every request
//        bun bench/baseline.ts --ip         the same, after asking Bun for the client's address
//                                           (server.requestIP: what any access log must do)
//        bun bench/baseline.ts --dir DIR    new Response(Bun.file(DIR + pathname))
//        bun bench/baseline.ts --routes     Bun.serve with bench/routes-app.ts's routes
// Poke:  curl -i http://127.0.0.1:PORT/     (PORT is printed on stdout)
const at = process.argv.indexOf("--dir");
const dir = at > 0 ? process.argv[at + 1] : undefined;
if (at > 0 && !dir) {
  console.error("baseline: --dir needs a directory");
  process.exit(2);
}

// Bench traffic is loopback only, and a slice of req.url is the cheapest path a raw server has.
const askIP = process.argv.includes("--ip");
let noAddress = 0; // counts lookups without an address; the test on .address keeps the lookup from being dropped as unused
const fetch =
  dir !== undefined
    ? (req: Request) => new Response(Bun.file(dir + req.url.slice(req.url.indexOf("/", 8))))
    : askIP
      ? (req: Request, srv: Bun.Server<unknown>) => {
          if (srv.requestIP(req)?.address === undefined) noAddress++;
          return new Response("Hello World!");
        }
      : () => new Response("Hello World!");

// --routes: bench/routes-app.ts, the options object iodine serves in the "routes" scenario.
const routes = process.argv.includes("--routes")
  ? (await import("./routes-app.ts")).default
  : undefined;
const server = routes
  ? Bun.serve({ hostname: "127.0.0.1", port: 0, ...routes })
  : Bun.serve({ hostname: "127.0.0.1", port: 0, fetch });
console.log(`listening on http://127.0.0.1:${server.port}`);
