// A route-based hello world for bench/http.ts's "routes" scenario: iodine serves this export, and
// bench/baseline.ts --routes hands the same object to a raw Bun.serve.
export default {
  routes: {
    "/": new Response("Hello World!"),
    "/hello": () => new Response("Hello World!"),
  },
  fetch: () => new Response("Not Found", { status: 404 }),
};
