// Static files and X-Sendfile (SPEC §6), against a real Bun.serve on port 0: fetch for the HTTP
// rules, raw sockets for HEAD on the wire and for traversal attempts fetch would normalise.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import {
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brotliCompressSync } from "node:zlib";
import type { Server } from "bun";
import { log } from "../src/log.ts";
import { StaticFiles } from "../src/http/static.ts";
import { rawRequest, waitUntil } from "./harness.ts";

const SECRET = "TOP-SECRET-DO-NOT-SERVE";
const CSS = "body { color: #333; margin: 0 auto; }\n".repeat(60);
const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]);
const BIG = randomBytes(1024 * 1024);
const RANGE = "0123456789abcdef";
const LARGE_JS = "export const x = 1;\n".repeat(10_000); // 200 KB: above maxCachedFile

let tmp: string;
let root: string;
let files: StaticFiles;
let sender: StaticFiles;
let server: Server<unknown>;
let base: string;
let port: number;
const warnings: string[] = [];
const errors: string[] = [];
const realWarn = log.warn;
const realError = log.error;

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const get = (path: string, headers: Record<string, string> = {}) =>
  fetch(base + path, { headers, decompress: false });

beforeAll(() => {
  // The log lines are part of the contract (SPEC §6: such requests are logged), so collect them.
  log.warn = (m: string) => void warnings.push(m);
  log.error = (m: string) => void errors.push(m);

  tmp = mkdtempSync(join(tmpdir(), "iodine-static-"));
  root = join(tmp, "public");
  writeFileSync(join(tmp, "secret.txt"), SECRET);
  mkdirSync(join(root, "dir"), { recursive: true });
  mkdirSync(join(root, "empty"));
  mkdirSync(join(root, ".well-known"));
  mkdirSync(join(root, "sub"));
  const put = (name: string, data: string | Uint8Array) => writeFileSync(join(root, name), data);
  put("index.html", "<h1>home</h1>");
  put("dir/index.html", "<h1>dir</h1>");
  put("style.css", CSS);
  put("style.css.gz", Bun.gzipSync(Buffer.from(CSS)));
  put("style.css.br", brotliCompressSync(Buffer.from(CSS)));
  put("app.js", "console.log(1);");
  put("data.json", '{"a":1}');
  put("pixel.png", PNG);
  put("logo.svg", '<svg xmlns="http://www.w3.org/2000/svg"/>');
  put("notes.txt", "plain notes");
  put("range.txt", RANGE);
  put("big.bin", BIG);
  put("large.js", LARGE_JS);
  put(".env", "PASSWORD=hunter2");
  put(".well-known/security.txt", "Contact: mailto:security@example.com");
  put("sub/.hidden", "hidden");
  symlinkSync(join(tmp, "secret.txt"), join(root, "link-out.txt"));
  symlinkSync(join(root, "notes.txt"), join(root, "link-in.txt"));

  files = new StaticFiles({ root });
  // server.ts resolves X-Sendfile with a root of "/": do the same.
  sender = new StaticFiles({ root: "/" });
  server = Bun.serve({
    port: 0,
    fetch(req) {
      const url = req.url;
      const path = url.slice(url.indexOf("/", 8)).split("?")[0]!;
      if (path.startsWith("/send/")) {
        const abs = path === "/send/missing" ? join(tmp, "nope.bin") : join(root, path.slice(6));
        const res = new Response(null, {
          headers: {
            "x-sendfile": abs,
            "x-app": "kept",
            "cache-control": "private",
            vary: "Cookie",
          },
        });
        return sender.sendfile(req, res, abs);
      }
      return files.serve(req, req.method, path) ?? new Response("app", { status: 404 });
    },
  });
  port = server.port!;
  base = `http://127.0.0.1:${port}`;
});

afterAll(() => {
  log.warn = realWarn;
  log.error = realError;
  server?.stop(true);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** A raw request on its own connection, split into status, headers and body bytes. */
async function raw(method: string, target: string, extra = "") {
  const text = await rawRequest(
    port,
    `${method} ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${extra}\r\n`,
  );
  const end = text.indexOf("\r\n\r\n");
  const lines = text.slice(0, end).split("\r\n");
  const headers = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
  }
  return { status: Number(lines[0]!.split(" ")[1]), headers, body: text.slice(end + 4) };
}

describe("files and types", () => {
  test.each([
    ["/index.html", "text/html;charset=utf-8", "<h1>home</h1>"],
    ["/style.css", "text/css;charset=utf-8", CSS],
    ["/app.js", "text/javascript;charset=utf-8", "console.log(1);"],
    ["/data.json", "application/json;charset=utf-8", '{"a":1}'],
    ["/logo.svg", "image/svg+xml", '<svg xmlns="http://www.w3.org/2000/svg"/>'],
    ["/notes.txt", "text/plain;charset=utf-8", "plain notes"],
  ])("%s is served as %s", async (path, type, body) => {
    const res = await get(path, { "accept-encoding": "identity" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe(type);
    expect(res.headers.get("content-length")).toBe(String(Buffer.byteLength(body)));
    expect(res.headers.get("accept-ranges")).toBe("bytes");
    expect(await res.text()).toBe(body);
  });

  test("a large file keeps its type, and Bun adds no Content-Disposition to it", async () => {
    const res = await get("/large.js", { "accept-encoding": "identity" });
    expect(res.headers.get("content-type")).toBe("text/javascript;charset=utf-8");
    expect(res.headers.get("content-disposition")).toBeNull();
    expect(await res.text()).toBe(LARGE_JS);
  });

  test("binary files keep their bytes and type", async () => {
    const res = await get("/pixel.png");
    expect(res.headers.get("content-type")).toBe("image/png");
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(PNG);
  });

  test("a directory serves its index.html, with or without the slash, and no redirect", async () => {
    for (const path of ["/dir/", "/dir", "/"]) {
      const res = await get(path, {});
      expect(res.status).toBe(200);
      expect(res.redirected).toBe(false);
      expect(res.headers.get("content-type")).toBe("text/html;charset=utf-8");
      expect(await res.text()).toBe(path === "/" ? "<h1>home</h1>" : "<h1>dir</h1>");
    }
  });

  test("a directory without index.html, a missing file and a file with a trailing slash go to the app", async () => {
    for (const path of [
      "/empty/",
      "/empty",
      "/nope.txt",
      "/notes.txt/",
      "/%252e%252e/secret.txt",
    ]) {
      const res = await get(path);
      expect([path, res.status, await res.text()]).toEqual([path, 404, "app"]);
    }
  });

  test("methods other than GET and HEAD go to the app", async () => {
    for (const method of ["POST", "PUT", "DELETE", "OPTIONS"]) {
      const res = await fetch(base + "/notes.txt", { method });
      expect([method, res.status, await res.text()]).toEqual([method, 404, "app"]);
    }
  });

  test("dotfiles go to the app, except /.well-known/", async () => {
    for (const path of ["/.env", "/sub/.hidden", "/%2eenv"]) {
      const res = await get(path);
      expect([path, res.status, await res.text()]).toEqual([path, 404, "app"]);
    }
    const res = await get("/.well-known/security.txt");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("Contact: mailto:security@example.com");
  });

  test("a symlink that stays inside the public folder is served", async () => {
    const res = await get("/link-in.txt");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("plain notes");
  });

  test("Content-Length is in the response headers and only once on the wire", async () => {
    const direct = files.serve(new Request(base + "/notes.txt"), "GET", "/notes.txt");
    expect(direct?.headers.get("content-length")).toBe("11");
    const big = files.serve(new Request(base + "/big.bin"), "GET", "/big.bin");
    expect(big?.headers.get("content-length")).toBe(String(BIG.length));
    const { status, headers, body } = await raw("GET", "/notes.txt");
    expect(status).toBe(200);
    expect(headers.get("content-length")).toEqual(["11"]);
    expect(headers.get("date")?.length).toBe(1);
    expect(body).toBe("plain notes");
  });
});

describe("precompressed siblings", () => {
  const br = () => new Uint8Array(brotliCompressSync(Buffer.from(CSS)));
  const gz = () => new Uint8Array(Bun.gzipSync(Buffer.from(CSS)));

  test.each([
    ["br, gzip", "br"],
    ["gzip, deflate, br, zstd", "br"],
    ["gzip", "gzip"],
    ["x-gzip", "gzip"],
    ["gzip;q=1, br;q=0.5", "gzip"],
    ["br;q=0, gzip", "gzip"],
    ["BR;Q=0, GZIP;q=0.8", "gzip"],
    ["*", "br"],
    ["*;q=0, gzip", "gzip"],
    ["br;q=0, gzip;q=0", null],
    ["identity", null],
    ["deflate", null],
  ])("Accept-Encoding %p gives %p", async (ae, encoding) => {
    const res = await get("/style.css", { "accept-encoding": ae });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-encoding")).toBe(encoding);
    expect(res.headers.get("vary")).toBe("Accept-Encoding");
    // The type is the original file's, whatever the coding.
    expect(res.headers.get("content-type")).toBe("text/css;charset=utf-8");
    const body = new Uint8Array(await res.arrayBuffer());
    const want =
      encoding === "br" ? br() : encoding === "gzip" ? gz() : new TextEncoder().encode(CSS);
    expect(body).toEqual(want);
    expect(res.headers.get("content-length")).toBe(String(want.length));
  });

  test("no Accept-Encoding at all gives identity, still with Vary", async () => {
    const { status, headers, body } = await raw("GET", "/style.css");
    expect(status).toBe(200);
    expect(headers.has("content-encoding")).toBe(false);
    expect(headers.get("vary")).toEqual(["Accept-Encoding"]);
    expect(body).toBe(CSS);
  });

  test("each variant has its own strong ETag", async () => {
    const tags = new Set<string | null>();
    for (const ae of ["br", "gzip", "identity"])
      tags.add((await get("/style.css", { "accept-encoding": ae })).headers.get("etag"));
    expect(tags.size).toBe(3);
    for (const tag of tags) expect(tag).toMatch(/^"[^"]+"$/);
  });

  test("a file without siblings carries no Vary", async () => {
    const res = await get("/notes.txt", { "accept-encoding": "br, gzip" });
    expect(res.headers.get("vary")).toBeNull();
    expect(res.headers.get("content-encoding")).toBeNull();
  });
});

describe("conditional requests", () => {
  const validators = async (path: string, ae = "identity") => {
    const res = await get(path, { "accept-encoding": ae });
    await res.arrayBuffer();
    return { etag: res.headers.get("etag")!, lastModified: res.headers.get("last-modified")! };
  };

  test("ETag and Last-Modified match the file", async () => {
    const { etag, lastModified } = await validators("/notes.txt");
    expect(etag).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);
    expect(lastModified).toBe(new Date(statSync(join(root, "notes.txt")).mtimeMs).toUTCString());
  });

  test("If-None-Match: exact, in a list, weak and * give 304; another tag gives 200", async () => {
    const { etag } = await validators("/notes.txt");
    for (const inm of [etag, `"nope", ${etag}`, `W/${etag}`, "*"]) {
      const res = await get("/notes.txt", { "if-none-match": inm });
      expect([inm, res.status]).toEqual([inm, 304]);
      expect(res.headers.get("etag")).toBe(etag);
      expect(await res.text()).toBe("");
    }
    const res = await get("/notes.txt", { "if-none-match": '"other"' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("plain notes");
  });

  test("If-Modified-Since: the same or a later date gives 304, an earlier one 200", async () => {
    const { lastModified } = await validators("/notes.txt");
    const later = new Date(Date.parse(lastModified) + 60_000).toUTCString();
    const earlier = new Date(Date.parse(lastModified) - 60_000).toUTCString();
    expect((await get("/notes.txt", { "if-modified-since": lastModified })).status).toBe(304);
    expect((await get("/notes.txt", { "if-modified-since": later })).status).toBe(304);
    const res = await get("/notes.txt", { "if-modified-since": earlier });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("plain notes");
    expect((await get("/notes.txt", { "if-modified-since": "not a date" })).status).toBe(200);
  });

  test("If-None-Match takes precedence over If-Modified-Since (RFC 9110 §13.2.2)", async () => {
    const { lastModified } = await validators("/notes.txt");
    const res = await get("/notes.txt", {
      "if-none-match": '"other"',
      "if-modified-since": lastModified,
    });
    expect(res.status).toBe(200);
  });

  test("304 is per variant: the br tag matches the br answer only, and keeps Vary", async () => {
    const { etag } = await validators("/style.css", "br");
    const hit = await get("/style.css", { "accept-encoding": "br", "if-none-match": etag });
    expect(hit.status).toBe(304);
    expect(hit.headers.get("vary")).toBe("Accept-Encoding");
    const miss = await get("/style.css", { "accept-encoding": "identity", "if-none-match": etag });
    expect(miss.status).toBe(200);
    expect(await miss.text()).toBe(CSS);
  });
});

describe("ranges", () => {
  test.each([
    ["bytes=2-5", 2, 5],
    ["bytes=10-", 10, 15],
    ["bytes=-3", 13, 15],
    ["bytes=5-100", 5, 15],
    ["bytes=-100", 0, 15],
    ["bytes=0-0", 0, 0],
  ])("%s gives 206 with bytes %d-%d", async (range, start, end) => {
    const res = await get("/range.txt", { range });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe(`bytes ${start}-${end}/16`);
    expect(res.headers.get("content-length")).toBe(String(end - start + 1));
    expect(res.headers.get("accept-ranges")).toBe("bytes");
    expect(await res.text()).toBe(RANGE.slice(start, end + 1));
  });

  test.each(["bytes=16-", "bytes=100-200", "bytes=-0"])(
    "%s is unsatisfiable: 416",
    async (range) => {
      const res = await get("/range.txt", { range });
      expect(res.status).toBe(416);
      expect(res.headers.get("content-range")).toBe("bytes */16");
      await res.arrayBuffer();
    },
  );

  test.each(["bytes=0-1,4-5", "items=0-3", "bytes=5-2", "bytes=abc"])(
    "%s is ignored: 200 with the whole file",
    async (range) => {
      const res = await get("/range.txt", { range });
      expect(res.status).toBe(200);
      expect(await res.text()).toBe(RANGE);
    },
  );

  test("a range is served from the identity bytes even when br is accepted", async () => {
    const res = await get("/style.css", { range: "bytes=0-9", "accept-encoding": "br, gzip" });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-encoding")).toBeNull();
    expect(res.headers.get("vary")).toBe("Accept-Encoding");
    expect(await res.text()).toBe(CSS.slice(0, 10));
  });

  test("If-Range: a matching ETag or date gives 206; a stale or weak one gives the whole file", async () => {
    const first = await get("/range.txt");
    await first.arrayBuffer();
    const etag = first.headers.get("etag")!;
    const lastModified = first.headers.get("last-modified")!;
    const stale = new Date(Date.parse(lastModified) - 60_000).toUTCString();
    for (const [ifRange, status] of [
      [etag, 206],
      [lastModified, 206],
      ['"stale"', 200],
      [`W/${etag}`, 200],
      [stale, 200],
    ] as const) {
      const res = await get("/range.txt", { range: "bytes=0-3", "if-range": ifRange });
      expect([ifRange, res.status]).toEqual([ifRange, status]);
      expect(await res.text()).toBe(status === 206 ? "0123" : RANGE);
    }
  });

  test("a file larger than maxCachedFile streams intact, and ranges of it too", async () => {
    const res = await get("/big.bin");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/octet-stream");
    expect(res.headers.get("content-length")).toBe(String(BIG.length));
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(sha256(BIG));

    const part = await get("/big.bin", { range: "bytes=1000-200999" });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 1000-200999/${BIG.length}`);
    expect(sha256(new Uint8Array(await part.arrayBuffer()))).toBe(
      sha256(BIG.subarray(1000, 201000)),
    );

    const tail = await get("/big.bin", { range: "bytes=-100" });
    expect(tail.status).toBe(206);
    expect(new Uint8Array(await tail.arrayBuffer())).toEqual(
      new Uint8Array(BIG.subarray(BIG.length - 100)),
    );
  });
});

describe("HEAD", () => {
  test.each([
    ["/notes.txt", "text/plain;charset=utf-8", "11"],
    ["/big.bin", "application/octet-stream", String(1024 * 1024)],
    ["/dir/", "text/html;charset=utf-8", "12"],
  ])(
    "HEAD %s has GET's headers (Date, Content-Type, Content-Length) and no body",
    async (path, type, length) => {
      const { status, headers, body } = await raw("HEAD", path);
      expect(status).toBe(200);
      expect(headers.get("content-type")).toEqual([type]);
      expect(headers.get("content-length")).toEqual([length]);
      expect(headers.get("date")?.[0]).toMatch(/^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
      expect(headers.get("date")?.length).toBe(1);
      expect(headers.has("etag")).toBe(true);
      expect(body).toBe("");
    },
  );

  test("HEAD picks the variant like GET and ignores Range (RFC 9110 §14.2)", async () => {
    const { status, headers, body } = await raw(
      "HEAD",
      "/style.css",
      "Accept-Encoding: br\r\nRange: bytes=0-1\r\n",
    );
    expect(status).toBe(200);
    expect(headers.get("content-encoding")).toEqual(["br"]);
    expect(headers.get("content-length")).toEqual([
      String(brotliCompressSync(Buffer.from(CSS)).length),
    ]);
    expect(body).toBe("");
  });
});

describe("path safety", () => {
  const attempts = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/%252e%252e/secret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/%00secret.txt",
    "/a%00.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/./../secret.txt",
    "/dir/../../secret.txt",
    "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/..%c0%afsecret.txt",
    "/%%32%65%%32%65/secret.txt",
    "/link-out.txt",
  ];

  test.each(attempts)("raw %s gets 400 or 404, never the secret", async (target) => {
    const { status, body } = await raw("GET", target);
    expect([400, 404]).toContain(status);
    expect(body).not.toContain(SECRET);
    expect(body).not.toContain("root:");
  });

  test("encoded slashes, backslashes, NUL and bad percent-encoding get 400 and one warning naming the path", async () => {
    for (const target of [
      "/%2e%2e%2fsecret.txt",
      "/..%5csecret.txt",
      "/%00secret.txt",
      "/%2fetc%2fpasswd",
      "/%E0%A4%A",
    ]) {
      warnings.length = 0;
      const { status } = await raw("GET", target);
      expect([target, status]).toEqual([target, 400]);
      expect(warnings.length).toBe(1);
      expect(warnings[0]).toContain(JSON.stringify(target));
    }
  });

  test("paths Bun would normalise are refused by serve() itself", () => {
    // Bun.serve resolves `..` and `\` in the request line before fetch; other front ends may not.
    for (const path of [
      "/../secret.txt",
      "/dir/../../secret.txt",
      "/..\\secret.txt",
      "/dir/..",
      "/a\\b",
    ]) {
      warnings.length = 0;
      const res = files.serve(new Request(base + "/"), "GET", path);
      expect([path, res?.status]).toEqual([path, 400]);
      expect(warnings).toHaveLength(1);
    }
  });

  test("a symlink out of the public folder gets a 404 from here, not the app's answer", async () => {
    // The app is not asked: a fallback route there cannot be tricked into following the link.
    const res = await get("/link-out.txt");
    expect(res.status).toBe(404);
    expect(await res.text()).toBe("Not Found");
  });

  test("a symlink out is logged when it is found", () => {
    warnings.length = 0;
    const fresh = new StaticFiles({ root });
    expect(fresh.serve(new Request(base + "/"), "GET", "/link-out.txt")?.status).toBe(404);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('"/link-out.txt"');
  });
});

describe("cache", () => {
  test("a changed file is seen within about a second", async () => {
    const path = join(root, "changing.txt");
    writeFileSync(path, "v1");
    const t0 = performance.now(); // before the entry is cached, so it bounds the cache's own clock
    expect(await (await get("/changing.txt")).text()).toBe("v1");
    writeFileSync(path, "v2 is longer");
    const future = new Date(Date.now() + 10_000);
    utimesSync(path, future, future);
    // The cache looks at the disk again on its own clock: polled.
    await waitUntil(
      async () => (await (await get("/changing.txt")).text()) === "v2 is longer",
      5000,
      "the change to be seen",
      50,
    );
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1000); // cached, not re-read per request
  });

  test("a file created after a miss is found within about a second", async () => {
    expect((await get("/later.txt")).status).toBe(404);
    writeFileSync(join(root, "later.txt"), "here now");
    let res = await get("/later.txt");
    await waitUntil(
      async () => {
        if (res.status === 200) return true;
        await res.arrayBuffer();
        res = await get("/later.txt");
        return false;
      },
      5000,
      "the new file to be found",
      50,
    );
    expect(await res.text()).toBe("here now");
  });

  test("a small memory budget evicts old entries and still answers correctly", async () => {
    const small = new StaticFiles({ root, maxCacheBytes: 3000, maxCachedFile: 2500 });
    const req = new Request(base + "/");
    for (let round = 0; round < 3; round++) {
      for (const [path, want] of [
        ["/style.css", CSS],
        ["/range.txt", RANGE],
        ["/notes.txt", "plain notes"],
      ] as const) {
        const res = small.serve(req, "GET", path);
        expect(await res?.text()).toBe(want);
      }
    }
  });

  test("random misses stay bounded and do not disturb hits", async () => {
    const req = new Request(base + "/");
    for (let i = 0; i < 12_000; i++)
      expect(files.serve(req, "GET", `/random-${i}.txt`)).toBeUndefined();
    expect(await files.serve(req, "GET", "/notes.txt")?.text()).toBe("plain notes");
  });
});

describe("X-Sendfile", () => {
  test("the file replaces the body; the app's headers stay, X-Sendfile goes", async () => {
    const res = await get("/send/notes.txt");
    expect(res.status).toBe(200);
    expect(res.headers.get("x-sendfile")).toBeNull();
    expect(res.headers.get("x-app")).toBe("kept");
    expect(res.headers.get("cache-control")).toBe("private");
    expect(res.headers.get("content-type")).toBe("text/plain;charset=utf-8");
    expect(await res.text()).toBe("plain notes");
  });

  test("a range request gives 206 with the app's headers kept", async () => {
    const res = await get("/send/big.bin", { range: "bytes=100-199" });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe(`bytes 100-199/${BIG.length}`);
    expect(res.headers.get("x-app")).toBe("kept");
    expect(res.headers.get("x-sendfile")).toBeNull();
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(new Uint8Array(BIG.subarray(100, 200)));
  });

  test("siblings, ETag and 304 apply too; Vary is merged with the app's", async () => {
    const res = await get("/send/style.css", { "accept-encoding": "br" });
    expect(res.headers.get("content-encoding")).toBe("br");
    expect(res.headers.get("vary")).toBe("Cookie, Accept-Encoding");
    await res.arrayBuffer();
    const again = await get("/send/style.css", {
      "accept-encoding": "br",
      "if-none-match": res.headers.get("etag")!,
    });
    expect(again.status).toBe(304);
    expect(again.headers.get("x-app")).toBe("kept");
  });

  test("HEAD through X-Sendfile has the headers and no body", async () => {
    const { status, headers, body } = await raw("HEAD", "/send/big.bin");
    expect(status).toBe(200);
    expect(headers.get("content-length")).toEqual([String(BIG.length)]);
    expect(headers.has("date")).toBe(true);
    expect(headers.has("x-sendfile")).toBe(false);
    expect(body).toBe("");
  });

  test("a file rewritten just before the send is served fresh", async () => {
    const path = join(root, "report.txt");
    writeFileSync(path, "first");
    expect(await (await get("/send/report.txt")).text()).toBe("first");
    writeFileSync(path, "second, longer");
    expect(await (await get("/send/report.txt")).text()).toBe("second, longer");
  });

  test("the app's status is kept, without ranges or 304", async () => {
    const abs = join(root, "range.txt");
    const res = sender.sendfile(
      new Request(base + "/", { headers: { range: "bytes=0-1" } }),
      new Response(null, { status: 403, headers: { "x-sendfile": abs } }),
      abs,
    );
    const out = await res;
    expect(out.status).toBe(403);
    expect(await out.text()).toBe(RANGE);
  });

  test("a missing file gives 404 and an error line", async () => {
    errors.length = 0;
    const res = await get("/send/missing");
    expect(res.status).toBe(404);
    expect(res.headers.get("x-app")).toBeNull();
    await res.arrayBuffer();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain("nope.bin");
  });
});

describe("construction", () => {
  test("a missing root or a file as root throws a clear error", () => {
    expect(() => new StaticFiles({ root: join(tmp, "no-such-dir") })).toThrow(/does not exist/);
    expect(() => new StaticFiles({ root: join(tmp, "secret.txt") })).toThrow(/is not a directory/);
  });

  test("bad sizes throw a RangeError naming the option", () => {
    expect(() => new StaticFiles({ root, maxCachedFile: -1 })).toThrow(RangeError);
    expect(() => new StaticFiles({ root, maxCacheBytes: 1.5 })).toThrow(/maxCacheBytes/);
  });
});
