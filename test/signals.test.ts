// Ctrl-C as a terminal delivers it (SPEC §8): SIGINT to every process of the foreground group at
// once, and again through `bun run` (which forwards it to its script) or the CLI's own header-size
// re-launch. One keystroke is one graceful stop: the request in flight is answered, exit code 0.
import { describe, expect, test } from "bun:test";
import { ctrlCDuringRequest, fixture, startCli, startCommand, type CliProcess } from "./harness.ts";

const slowApp = fixture("slow-app.ts");

const modes: [string, () => Promise<CliProcess>][] = [
  [
    "bun run iodine",
    () => startCommand([process.execPath, "run", "iodine", "-p", "0", slowApp], { group: true }),
  ],
  ["bun cli.ts (one process)", () => startCli(["-p", "0", slowApp], { group: true })],
  [
    "bun cli.ts --max-header 32 (the header-size re-launch)",
    () => startCli(["--max-header", "32", "-p", "0", slowApp], { group: true }),
  ],
  [
    "bun run iodine -w 2",
    () =>
      startCommand([process.execPath, "run", "iodine", "-p", "0", "-w", "2", slowApp], {
        group: true,
      }),
  ],
  [
    "bun cli.ts --max-header 32 -w 2 (the header-size re-launch)",
    () => startCli(["--max-header", "32", "-p", "0", "-w", "2", slowApp], { group: true }),
  ],
];

describe("Ctrl-C in a terminal: one keystroke is one graceful stop", () => {
  for (const [name, start] of modes) {
    test(
      name,
      async () => {
        await using srv = await start();
        const got = await ctrlCDuringRequest(srv);
        expect(got).toEqual({ status: 200, body: "done after 1200 ms", code: 0 });
        expect(srv.stderr()).not.toMatch(/stopping at once|exit(ed)? 130/);
      },
      20_000,
    );
  }

  test("a second Ctrl-C well after the first still stops at once", async () => {
    await using srv = await startCommand([process.execPath, "run", "iodine", "-p", "0", slowApp], {
      group: true,
    });
    const answer = fetch(`${srv.url}/?ms=8000`).then(
      (res) => res.status,
      () => 0,
    );
    await srv.waitFor(/slow request started/);
    srv.signalGroup("SIGINT");
    await srv.waitFor(/SIGINT: stopping gracefully/);
    await Bun.sleep(1200); // past the window in which a repeat counts as the same keystroke
    srv.signalGroup("SIGINT");
    expect(await srv.proc.exited).toBe(130);
    expect(await answer).toBe(0);
  }, 20_000);
});
