// Mustache templates: the page is read and parsed once, at start-up, with its partial
// (examples/mustache/parts/head.mustache, found relative to the page); each request only renders.
// Values are HTML-escaped, so a visitor's name cannot inject markup.
//
// Run:   bun run iodine examples/mustache.ts
// Poke:  curl 'http://localhost:3000/?name=<ann>'
import { Iodine } from "iodine-bun";

const page = new Iodine.Mustache({ file: `${import.meta.dir}/mustache/page.mustache` });

const items = [
  { name: "parse once", done: true },
  { name: "render many", done: true },
  { name: "escape <html> & quotes", done: false },
];

export default {
  fetch(req: Request): Response {
    const visitor = new URL(req.url).searchParams.get("name") ?? "stranger";
    const html = page.render({ title: "iodine for Bun: Mustache", items, visitor });
    return new Response(html, { headers: { "content-type": "text/html;charset=utf-8" } });
  },
};
