// History, recovery and presence (SPEC §5) in one process and in a `-w 2` cluster: the suite in
// test/suites/history.ts (two clusters on one Redis run it in test/redis.test.ts).
import { historySuite } from "./suites/history.ts";
import { startCli } from "./harness.ts";

const NO_REDIS_ENV = { REDIS_URL: "", IODINE_REDIS_URL: "" };

historySuite({
  name: "one process",
  workers: 1,
  start: async (app) => [await startCli(["-p", "0", app], { env: NO_REDIS_ENV })],
});

historySuite({
  name: "-w 2 (cluster pub/sub)",
  workers: 2,
  start: async (app) => [
    await startCli(["-p", "0", "-w", "2", app], { env: NO_REDIS_ENV, timeout: 20_000 }),
  ],
});
