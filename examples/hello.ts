// Hello World: the smallest iodine app, a plain `fetch` handler.
//
// Run:   bun run iodine examples/hello.ts          (add -v to log every request)
// Poke:  curl -i http://localhost:3000/
export default {
  fetch(_req: Request): Response {
    return new Response("Hello World!");
  },
};
