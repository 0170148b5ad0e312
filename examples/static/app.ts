// Static files: the public folder is served before the app is asked (iodine's order), with
// pre-compressed siblings (public/style.css.br, public/style.css.gz), ETag/Last-Modified,
// ranges and index.html for folders. This app only answers what is not a file.
//
// Run it:
//   bun run iodine --www examples/static/public examples/static/app.ts
//
// Poke it:
//   curl -H 'Accept-Encoding: br' -i localhost:3000/style.css     # Content-Encoding: br
//   curl -i localhost:3000/style.css -H 'Range: bytes=0-15'         # 206 Partial Content
//   curl -i localhost:3000/                                         # public/index.html
//   curl -i localhost:3000/nothing-here                             # this app's 404

export default {
  fetch: () => new Response("Not found", { status: 404 }),
};
