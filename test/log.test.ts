// The request log of SPEC §7 (exact line format, nothing lost on a graceful stop) and the graceful
// stop itself (in-flight requests finish, exit code 0).
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixture, startCli, tempDir } from "./harness.ts";

const LINE =
  /^127\.0\.0\.1 - - \[\d{2}\/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "(\w+) (\S+) HTTP\/1\.1" (\d{3}) (\d+|-) (\d+\.\d{2})ms$/;

describe("request log (-v)", () => {
  test("one line per request in the exact format, with the time of the request", async () => {
    using dir = tempDir();
    writeFileSync(join(dir.path, "twelve.txt"), "twelve bytes");
    await using srv = await startCli([
      "-v",
      "--www",
      dir.path,
      "-p",
      "0",
      fixture("function-app.ts"),
    ]);
    const before = new Date();
    expect((await fetch(srv.url + "/path?q=1")).status).toBe(200);
    expect(await (await fetch(srv.url + "/twelve.txt")).text()).toBe("twelve bytes");
    await fetch(srv.url + "/x", { method: "POST", body: "b" });
    const m = await srv.waitFor(/\n(.*"POST \/x HTTP\/1\.1".*)\n/);
    const lines = srv
      .stderr()
      .split("\n")
      .filter((l) => LINE.test(l));
    expect(lines.map((l) => LINE.exec(l)!.slice(2, 6))).toEqual([
      ["GET", "/path?q=1", "200", String("GET /path?q=1 server=true".length)],
      ["GET", "/twelve.txt", "200", "12"],
      ["POST", "/x", "200", String("POST /x server=true".length)],
    ]);
    expect(m[1]).toMatch(LINE);
    // The cached time string is at most a second old.
    const stamp = /\[(\d{2})\/(\w{3})\/(\d{4}):(\d{2}):(\d{2}):(\d{2})/.exec(lines[0]!)!;
    const logged = Date.parse(
      `${stamp[2]} ${stamp[1]} ${stamp[3]} ${stamp[4]}:${stamp[5]}:${stamp[6]} GMT`,
    );
    expect(Math.abs(logged - before.getTime())).toBeLessThan(2_000);
  });

  test("without -v nothing is logged per request", async () => {
    await using srv = await startCli(["-p", "0", fixture("function-app.ts")]);
    for (let i = 0; i < 5; i++) await (await fetch(srv.url + "/quiet")).text();
    expect(await srv.stop("SIGTERM")).toBe(0);
    expect(srv.stderr()).not.toContain("/quiet");
  });

  test("no line is lost on SIGTERM after 1,000 requests", async () => {
    await using srv = await startCli(["-v", "-p", "0", fixture("function-app.ts")]);
    const N = 1000;
    for (let i = 0; i < N; i += 50) {
      await Promise.all(
        [...Array(50).keys()].map((k) => fetch(`${srv.url}/r${i + k}`).then((r) => r.text())),
      );
    }
    expect(await srv.stop("SIGTERM")).toBe(0);
    const seen = new Set<string>();
    for (const l of srv.stderr().split("\n")) {
      const m = LINE.exec(l);
      if (m) seen.add(m[3]!);
    }
    expect(seen.size).toBe(N);
    for (let i = 0; i < N; i++) expect(seen.has(`/r${i}`)).toBe(true);
  });
});

describe("graceful stop", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`${signal}: an in-flight request finishes, then exit 0`, async () => {
      await using srv = await startCli(["-v", "-p", "0", fixture("slow-app.ts")]);
      const inFlight = fetch(srv.url + "/?ms=700").then((r) => r.text());
      await srv.waitFor(/slow request started/);
      srv.proc.kill(signal);
      expect(await inFlight).toBe("done after 700 ms");
      expect(await srv.proc.exited).toBe(0);
      expect(srv.stderr()).toMatch(/"GET \/\?ms=700 HTTP\/1\.1" 200 17 \d+\.\d{2}ms\n/);
    });
  }

  test("SIGUSR1 in a single process logs that hot restart needs cluster mode, and keeps serving", async () => {
    await using srv = await startCli(["-p", "0", fixture("function-app.ts")]);
    srv.proc.kill("SIGUSR1");
    await srv.waitFor(/SIGUSR1: hot restart needs cluster mode/);
    expect((await fetch(srv.url)).status).toBe(200);
  });
});
