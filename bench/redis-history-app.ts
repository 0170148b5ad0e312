// bench/cluster-app.ts with history on `bench:h:*` (kept in Redis when the cluster runs with -r), for
// bench/redis-history.ts: `sub CH`, `burst CH TOTAL BATCH SIZE` and `pub CH TEXT` as there.
import { Iodine } from "iodine";
import app from "./cluster-app.ts";

Iodine.history("bench:h:*", { match: "redis", size: 1000 });

export default app;
